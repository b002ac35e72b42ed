//! The wan's TCP and UDP echo servers (port 7).
//!
//! They send back whatever they receive and count connections, datagrams and bytes, so
//! tests can tell whether raw TCP or UDP from the agent reached the simulated internet.
//! A TCP connection idle for [`TCP_IDLE`] is closed; at most [`TCP_CONNECTIONS`] are
//! served at once per listener.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

/// An echo connection idle this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(30);
/// Concurrent TCP echo connections per listener.
pub const TCP_CONNECTIONS: usize = 256;

#[derive(Debug, Default)]
struct Counters {
    tcp_connections: AtomicU64,
    tcp_bytes: AtomicU64,
    udp_datagrams: AtomicU64,
    udp_bytes: AtomicU64,
}

/// Handle on the echo servers' counters. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct EchoServers {
    counters: Arc<Counters>,
}

impl EchoServers {
    /// TCP connections accepted so far.
    pub fn tcp_connections(&self) -> u64 {
        self.counters.tcp_connections.load(Ordering::Relaxed)
    }

    /// Bytes received (and echoed) over TCP so far.
    pub fn tcp_bytes(&self) -> u64 {
        self.counters.tcp_bytes.load(Ordering::Relaxed)
    }

    /// UDP datagrams received (and echoed) so far.
    pub fn udp_datagrams(&self) -> u64 {
        self.counters.udp_datagrams.load(Ordering::Relaxed)
    }

    /// UDP payload bytes received so far.
    pub fn udp_bytes(&self) -> u64 {
        self.counters.udp_bytes.load(Ordering::Relaxed)
    }

    /// Zeroes every counter.
    pub fn reset(&self) {
        let c = &self.counters;
        for counter in [
            &c.tcp_connections,
            &c.tcp_bytes,
            &c.udp_datagrams,
            &c.udp_bytes,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }
}

/// Serves TCP echo on `listener` until the runtime shuts down.
pub(crate) async fn serve_tcp(echo: EchoServers, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(TCP_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        echo.counters
            .tcp_connections
            .fetch_add(1, Ordering::Relaxed);
        let echo = echo.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = echo_stream(echo, stream).await;
        });
    }
}

async fn echo_stream(echo: EchoServers, mut stream: TcpStream) -> std::io::Result<()> {
    let _ = stream.set_nodelay(true);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(TCP_IDLE, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(()),
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(e),
        };
        echo.counters
            .tcp_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        match tokio::time::timeout(TCP_IDLE, stream.write_all(&buf[..n])).await {
            Ok(result) => result?,
            Err(_) => return Ok(()),
        }
    }
}

/// Serves UDP echo on `socket` until the runtime shuts down.
pub(crate) async fn serve_udp(echo: EchoServers, socket: UdpSocket) {
    let mut buf = vec![0u8; 65536];
    loop {
        let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        };
        echo.counters.udp_datagrams.fetch_add(1, Ordering::Relaxed);
        echo.counters
            .udp_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
        let _ = socket.send_to(&buf[..n], peer).await;
    }
}
