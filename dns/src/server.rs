//! Listeners: the handler served over UDP and TCP with hickory-server.

use std::time::Duration;

use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::handler::AllowlistHandler;

/// A TCP client that sends nothing for this long is disconnected.
pub const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest response buffered per TCP connection (a DNS message is at most 64 KiB).
const TCP_RESPONSE_BUFFER: usize = 64 * 1024;

/// Serve `handler` on these sockets until the returned server is shut down or dropped.
pub fn serve(
    handler: AllowlistHandler,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
) -> Server<AllowlistHandler> {
    let mut server = Server::new(handler);
    for socket in udp {
        server.register_socket(socket);
    }
    for listener in tcp {
        server.register_listener(listener, TCP_IDLE, TCP_RESPONSE_BUFFER);
    }
    server
}
