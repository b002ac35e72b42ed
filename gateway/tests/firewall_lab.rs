//! The firewall layer in the network lab: the ruleset is applied inside the lab's gateway
//! namespace (never the machine's own), and real traffic from the agent namespace shows
//! what it redirects, what it rejects, and that nothing reaches the simulated internet.
//!
//! The labs run in `GatewayMode::Bare` (no forwarding); the tests switch forwarding on
//! with the firewall's own `enable_forwarding`, as the gateway does, so the forward chain
//! (not the absence of routing) is what stops the agent.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket,
};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bottleneck_gateway::firewall::{self, Counters, FirewallConfig, original_dst, set_mark};
use bottleneck_lab::addr::{
    AGENT_V4, AGENT_V6, DNS_V4, DNS_V6, ECHO_V4, ECHO_V6, GATEWAY_AGENT_V4, GATEWAY_AGENT_V6,
    HTTP_ORIGIN_V4, HTTP_ORIGIN_V6, ORIGIN_V4, ORIGIN_V6,
};
use bottleneck_lab::{GatewayMode, Host, Lab, RecordType, RootSnapshot, Transport, require_root};

/// Listener ports inside the gateway namespace (each lab has its own namespace, so
/// parallel tests do not collide).
const HTTP_LISTENER: u16 = 15080;
const TLS_LISTENER: u16 = 15443;
const DNS_LISTENER: u16 = 15053;
const RELAY_LISTENER: u16 = 15022;
const PROXY_LISTENER: u16 = 15128;
/// The port of the test policy's `tcp` rule.
const TCP_RULE_PORT: u16 = 22;
const MARK: u32 = 0x6274;
/// A gateway port that is not a listener the firewall admits.
const UNLISTED_PORT: u16 = 9999;

/// Fail-fast bound: a rejected attempt must fail well before any client timeout.
const FAST: Duration = Duration::from_secs(2);
const PROBE_TIMEOUT: Duration = Duration::from_secs(4);

/// A made-up public address no lab host owns (in the routed 203.0.113.0/24).
const NOWHERE_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 99);
/// A made-up IPv6 address no lab host owns (in the routed 2001:db8:203::/48).
const NOWHERE_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x203, 0, 0, 0, 0, 0x99);
/// The address the test DNS responder answers with, to tell its answers apart.
const ANSWER_MARKER: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 53);

fn config() -> FirewallConfig {
    FirewallConfig {
        agent_iface: "eth1".into(),
        http_port: HTTP_LISTENER,
        tls_port: TLS_LISTENER,
        dns_port: DNS_LISTENER,
        tcp_relay_port: RELAY_LISTENER,
        tcp_ports: vec![TCP_RULE_PORT],
        proxy_port: Some(PROXY_LISTENER),
        upstream_mark: MARK,
    }
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

/// A bare lab whose gateway has forwarding on and the firewall applied, both from a
/// thread inside the gateway namespace.
fn lab_with_firewall() -> Lab {
    let lab = Lab::new(GatewayMode::Bare).expect("lab");
    lab.run_in(Host::Gateway, firewall::enable_forwarding)
        .expect("gateway thread")
        .expect("enable forwarding");
    lab.run_in(Host::Gateway, || firewall::apply(&config()))
        .expect("gateway thread")
        .expect("apply the firewall");
    lab
}

fn counters(lab: &Lab) -> Counters {
    lab.run_in(Host::Gateway, firewall::counters)
        .expect("gateway thread")
        .expect("read counters")
}

/// A non-blocking TCP listener bound inside `host`'s namespace.
fn listen(lab: &Lab, host: Host, addr: SocketAddr) -> TcpListener {
    let listener = lab
        .run_in(host, move || TcpListener::bind(addr))
        .expect("thread")
        .unwrap_or_else(|e| panic!("bind {addr} in {host}: {e}"));
    listener.set_nonblocking(true).expect("non-blocking");
    listener
}

/// Accepts one connection within `timeout`.
fn accept(listener: &TcpListener, timeout: Duration) -> (TcpStream, SocketAddr) {
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                stream.set_nonblocking(false).expect("blocking");
                return (stream, peer);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!(
                "no connection on {:?} within {timeout:?}: {e}",
                listener.local_addr()
            ),
        }
    }
}

fn assert_nothing_pending(listener: &TcpListener) {
    match listener.accept() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Ok((_, peer)) => panic!(
            "unexpected connection from {peer} on {:?}",
            listener.local_addr()
        ),
        Err(e) => panic!("accept: {e}"),
    }
}

/// Connects from `host`'s namespace; returns the stream (or error) and the time taken.
fn connect_from(lab: &Lab, host: Host, dst: SocketAddr) -> (io::Result<TcpStream>, Duration) {
    lab.run_in(host, move || {
        let start = Instant::now();
        let result = TcpStream::connect_timeout(&dst, PROBE_TIMEOUT);
        (result, start.elapsed())
    })
    .expect("thread")
}

/// Sends one datagram from `host` on a connected UDP socket and waits for an answer or
/// an error; returns the outcome and the time taken.
fn udp_probe(lab: &Lab, host: Host, dst: SocketAddr) -> (io::Result<Vec<u8>>, Duration) {
    lab.run_in(host, move || {
        let start = Instant::now();
        let result = (|| {
            let local = match dst {
                SocketAddr::V4(_) => sa(Ipv4Addr::UNSPECIFIED, 0),
                SocketAddr::V6(_) => sa(Ipv6Addr::UNSPECIFIED, 0),
            };
            let socket = UdpSocket::bind(local)?;
            socket.connect(dst)?;
            socket.set_read_timeout(Some(PROBE_TIMEOUT))?;
            socket.send(b"bottleneck probe")?;
            let mut buf = [0u8; 512];
            let n = socket.recv(&mut buf)?;
            Ok(buf[..n].to_vec())
        })();
        (result, start.elapsed())
    })
    .expect("thread")
}

/// Asserts a TCP connect from the agent to `dst` was reset, fast.
fn assert_tcp_reset(lab: &Lab, dst: SocketAddr) {
    let (result, elapsed) = connect_from(lab, Host::Agent, dst);
    match result {
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
        other => panic!("TCP to {dst}: expected a reset, got {other:?} after {elapsed:?}"),
    }
    assert!(elapsed < FAST, "TCP to {dst} took {elapsed:?} to fail");
}

/// Asserts a UDP datagram from the agent to `dst` got an ICMP error back, fast (not a
/// silent drop ending in a timeout).
fn assert_udp_rejected(lab: &Lab, dst: SocketAddr) {
    let (result, elapsed) = udp_probe(lab, Host::Agent, dst);
    let error = match result {
        Err(e) => e,
        Ok(reply) => panic!("UDP to {dst} was answered: {reply:?}"),
    };
    assert!(
        !matches!(
            error.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "UDP to {dst} timed out instead of being rejected: {error}"
    );
    // ICMP admin-prohibited: EHOSTUNREACH for IPv4, EACCES for IPv6.
    let expected = match dst {
        SocketAddr::V4(_) => nix::libc::EHOSTUNREACH,
        SocketAddr::V6(_) => nix::libc::EACCES,
    };
    assert_eq!(
        error.raw_os_error(),
        Some(expected),
        "UDP to {dst}: unexpected error {error}"
    );
    assert!(elapsed < FAST, "UDP to {dst} took {elapsed:?} to fail");
}

/// Connects from the agent to `dst`, expects the connection on `listener` with `dst` as
/// its original destination, and returns the gateway-side stream.
fn assert_redirected(lab: &Lab, dst: SocketAddr, listener: &TcpListener) -> TcpStream {
    let (client, elapsed) = connect_from(lab, Host::Agent, dst);
    let client = client.unwrap_or_else(|e| panic!("agent connect to {dst}: {e} ({elapsed:?})"));
    // The agent believes it talks to `dst`: conntrack undoes the redirect on replies.
    assert_eq!(client.peer_addr().expect("peer"), dst);
    let (server, peer) = accept(listener, PROBE_TIMEOUT);
    let agent: IpAddr = match dst {
        SocketAddr::V4(_) => AGENT_V4.into(),
        SocketAddr::V6(_) => AGENT_V6.into(),
    };
    assert_eq!(
        peer.ip().to_canonical(),
        agent,
        "peer of the redirected {dst}"
    );
    assert_eq!(
        original_dst(&server).unwrap_or_else(|e| panic!("original_dst for {dst}: {e}")),
        dst,
        "original destination (local address {:?})",
        server.local_addr()
    );
    drop(client);
    server
}

#[test]
fn agent_https_to_any_address_is_redirected_to_the_tls_listener_with_its_original_destination() {
    if !require_root(
        "agent_https_to_any_address_is_redirected_to_the_tls_listener_with_its_original_destination",
    ) {
        return;
    }
    let lab = lab_with_firewall();
    // Dual-stack: IPv4 clients arrive as ::ffff:a.b.c.d (the IPv4-mapped case).
    let tls = listen(&lab, Host::Gateway, sa(Ipv6Addr::UNSPECIFIED, TLS_LISTENER));
    // Address-specific: a plain AF_INET socket and a plain AF_INET6 one; this also shows
    // where `redirect` sends each family (the gateway's address on the agent interface).
    let http_v4 = listen(&lab, Host::Gateway, sa(GATEWAY_AGENT_V4, HTTP_LISTENER));
    let http_v6 = listen(&lab, Host::Gateway, sa(GATEWAY_AGENT_V6, HTTP_LISTENER));
    let relay = listen(
        &lab,
        Host::Gateway,
        sa(Ipv6Addr::UNSPECIFIED, RELAY_LISTENER),
    );

    for dst in [
        sa(ORIGIN_V4, 443),
        sa(ORIGIN_V6, 443),
        sa(NOWHERE_V4, 443),
        sa(NOWHERE_V6, 443),
        sa(GATEWAY_AGENT_V4, 443),
    ] {
        assert_redirected(&lab, dst, &tls);
    }
    assert_redirected(&lab, sa(HTTP_ORIGIN_V4, 80), &http_v4);
    assert_redirected(&lab, sa(HTTP_ORIGIN_V6, 80), &http_v6);
    assert_redirected(&lab, sa(ECHO_V4, TCP_RULE_PORT), &relay);
    assert_redirected(&lab, sa(ECHO_V6, TCP_RULE_PORT), &relay);

    // A real client: curl, no proxy settings, straight at the origin's address.
    let mut curl = lab
        .command(
            Host::Agent,
            &[
                "curl",
                "-sS",
                "--max-time",
                "8",
                "-k",
                "https://198.51.100.10/",
            ],
        )
        .spawn()
        .expect("spawn curl");
    let (server, _) = accept(&tls, Duration::from_secs(5));
    assert_eq!(
        original_dst(&server).expect("curl's original dst"),
        sa(ORIGIN_V4, 443)
    );
    drop(server);
    assert!(
        curl.wait_timeout(Duration::from_secs(8))
            .expect("wait for curl")
            .is_some(),
        "curl did not end after the listener closed"
    );

    let c = counters(&lab);
    assert_eq!(c.redirected_tls.packets, 6, "{c:?}");
    assert_eq!(c.redirected_http.packets, 2, "{c:?}");
    assert_eq!(c.redirected_tcp.packets, 2, "{c:?}");
    assert_eq!(c.forward_rejected_tcp.packets, 0, "{c:?}");
    // Nothing reached the simulated internet.
    assert_eq!(lab.https().connections(), 0);
    assert_eq!(lab.http().connections(), 0);
    assert_eq!(lab.echo().tcp_connections(), 0);
}

/// Answers every DNS query with one A record, [`ANSWER_MARKER`], and remembers who asked.
/// Serves UDP and TCP on `[::]:DNS_LISTENER` in the gateway namespace until dropped.
struct DnsResponder {
    stop: Arc<AtomicBool>,
    clients: Arc<Mutex<Vec<(SocketAddr, &'static str)>>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl DnsResponder {
    fn start(lab: &Lab) -> DnsResponder {
        let addr = sa(Ipv6Addr::UNSPECIFIED, DNS_LISTENER);
        let udp = lab
            .run_in(Host::Gateway, move || UdpSocket::bind(addr))
            .expect("thread")
            .expect("bind DNS/udp");
        let tcp = listen(lab, Host::Gateway, addr);
        let stop = Arc::new(AtomicBool::new(false));
        let clients = Arc::new(Mutex::new(Vec::new()));
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let udp_thread = {
            let (stop, clients) = (stop.clone(), clients.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::Relaxed) {
                    let Ok((n, peer)) = udp.recv_from(&mut buf) else {
                        continue;
                    };
                    clients.lock().unwrap().push((peer, "udp"));
                    if let Some(answer) = dns_answer(&buf[..n]) {
                        let _ = udp.send_to(&answer, peer);
                    }
                }
            })
        };
        let tcp_thread = {
            let (stop, clients) = (stop.clone(), clients.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut stream, peer)) = tcp.accept() else {
                        thread::sleep(Duration::from_millis(5));
                        continue;
                    };
                    clients.lock().unwrap().push((peer, "tcp"));
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    if stream.read_exact(&mut len).is_err() {
                        continue;
                    }
                    let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if stream.read_exact(&mut query).is_err() {
                        continue;
                    }
                    if let Some(answer) = dns_answer(&query) {
                        let mut framed = (answer.len() as u16).to_be_bytes().to_vec();
                        framed.extend_from_slice(&answer);
                        let _ = stream.write_all(&framed);
                    }
                }
            })
        };
        DnsResponder {
            stop,
            clients,
            threads: vec![udp_thread, tcp_thread],
        }
    }

    fn clients(&self) -> Vec<(SocketAddr, &'static str)> {
        self.clients.lock().unwrap().clone()
    }
}

impl Drop for DnsResponder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// A minimal DNS response: the query's id and question, one A record [`ANSWER_MARKER`].
fn dns_answer(query: &[u8]) -> Option<Vec<u8>> {
    let mut i = 12;
    loop {
        let len = usize::from(*query.get(i)?);
        i += 1;
        if len == 0 {
            break;
        }
        i += len;
    }
    let question = query.get(12..i + 4)?;
    let mut out = query.get(..2)?.to_vec();
    // QR, RD, RA, NOERROR; one question, one answer.
    out.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
    out.extend_from_slice(question);
    // Name: pointer to the question's; type A, class IN, TTL 60, 4 bytes.
    out.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
    out.extend_from_slice(&ANSWER_MARKER.octets());
    Some(out)
}

#[test]
fn agent_dns_to_any_resolver_address_is_answered_by_the_gateway_dns_port() {
    if !require_root("agent_dns_to_any_resolver_address_is_answered_by_the_gateway_dns_port") {
        return;
    }
    let lab = lab_with_firewall();
    let responder = DnsResponder::start(&lab);

    let servers = [
        (sa(DNS_V4, 53), Transport::Udp),
        (sa(NOWHERE_V4, 53), Transport::Udp),
        (sa(DNS_V6, 53), Transport::Udp),
        (sa(NOWHERE_V6, 53), Transport::Udp),
        (sa(DNS_V4, 53), Transport::Tcp),
        (sa(NOWHERE_V6, 53), Transport::Tcp),
    ];
    for (server, transport) in servers {
        let reply = lab
            .dns_query_with(
                Host::Agent,
                server,
                "allowed.test",
                RecordType::A,
                transport,
            )
            .unwrap_or_else(|e| panic!("query via {server}/{transport:?}: {e}"));
        assert_eq!(
            reply.ips(),
            vec![IpAddr::V4(ANSWER_MARKER)],
            "via {server}/{transport:?}: answered by someone else"
        );
    }

    // A real client: glibc's resolver with the agent's resolv.conf naming the wan's DNS.
    let out = lab
        .command(Host::Agent, &["getent", "ahostsv4", "probe.allowed.test"])
        .timeout(Duration::from_secs(10))
        .run()
        .expect("getent ran");
    assert!(out.success(), "{out:?}");
    assert!(
        out.stdout_str().contains(&ANSWER_MARKER.to_string()),
        "{out:?}"
    );

    // Every query came from the agent and reached the gateway's port; the wan resolver
    // saw none.
    let clients = responder.clients();
    // The six queries above plus at least one from getent.
    assert!(clients.len() > servers.len(), "{clients:?}");
    for (client, _) in &clients {
        assert!(
            [IpAddr::V4(AGENT_V4), IpAddr::V6(AGENT_V6)].contains(&client.ip().to_canonical()),
            "{clients:?}"
        );
    }
    assert_eq!(lab.dns().queries(), 0, "{:?}", lab.dns().log());
    let c = counters(&lab);
    assert!(c.redirected_dns.packets >= 7, "{c:?}");
    assert_eq!(c.forward_rejected_other.packets, 0, "{c:?}");
}

/// Asserts that nothing is routed from the wan to the agent either (the forward chain's
/// drop policy): a datagram from the wan to a socket in the agent namespace never
/// arrives. (TCP would not show it: the agent's answer is rejected on its way out.)
fn assert_wan_cannot_reach_the_agent(lab: &Lab, agent_ip: IpAddr) {
    let inbox = lab
        .run_in(Host::Agent, move || UdpSocket::bind(sa(agent_ip, 8000)))
        .expect("thread")
        .expect("bind in the agent");
    inbox
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let sent = lab
        .run_in(Host::Wan, move || {
            let local = match agent_ip {
                IpAddr::V4(_) => sa(Ipv4Addr::UNSPECIFIED, 0),
                IpAddr::V6(_) => sa(Ipv6Addr::UNSPECIFIED, 0),
            };
            UdpSocket::bind(local)?.send_to(b"inbound", sa(agent_ip, 8000))
        })
        .expect("thread");
    sent.expect("send from the wan");
    let mut buf = [0u8; 64];
    if let Ok((n, from)) = inbox.recv_from(&mut buf) {
        panic!("the agent received {n} bytes from {from} through the gateway");
    }
}

#[test]
fn the_wan_receives_nothing_the_agent_sends_directly() {
    if !require_root("the_wan_receives_nothing_the_agent_sends_directly") {
        return;
    }
    let lab = Lab::new(GatewayMode::Bare).expect("lab");
    lab.run_in(Host::Gateway, firewall::enable_forwarding)
        .expect("thread")
        .expect("enable forwarding");
    // Without the firewall the probe path is open: a routed gateway lets the agent reach
    // the wan's echo server directly. This is what the firewall must stop.
    let (open, _) = connect_from(&lab, Host::Agent, sa(ECHO_V4, 7));
    let mut open = open.expect("agent reaches the wan echo before the firewall");
    open.write_all(b"x").expect("write");
    let mut byte = [0u8; 1];
    open.set_read_timeout(Some(PROBE_TIMEOUT)).expect("timeout");
    open.read_exact(&mut byte).expect("echo");
    drop(open);
    assert_eq!(lab.echo().tcp_connections(), 1);
    lab.echo().reset();

    lab.run_in(Host::Gateway, || firewall::apply(&config()))
        .expect("thread")
        .expect("apply");
    // A gateway service the firewall does not list, and one it does.
    let unlisted = listen(
        &lab,
        Host::Gateway,
        sa(Ipv6Addr::UNSPECIFIED, UNLISTED_PORT),
    );
    let proxy = listen(
        &lab,
        Host::Gateway,
        sa(Ipv6Addr::UNSPECIFIED, PROXY_LISTENER),
    );

    // TCP that is not redirected: reset at once (forward chain).
    for dst in [sa(ECHO_V4, 7), sa(ORIGIN_V4, 853), sa(DNS_V4, 853)] {
        assert_tcp_reset(&lab, dst);
    }
    // UDP: echo, QUIC on 443, DNS-over-QUIC on 853 -> ICMP admin-prohibited at once.
    for dst in [sa(ECHO_V4, 7), sa(ORIGIN_V4, 443), sa(DNS_V4, 853)] {
        assert_udp_rejected(&lab, dst);
    }
    // A real client fails fast too: curl's "couldn't connect" (exit 7), not a timeout.
    let out = lab
        .command(
            Host::Agent,
            &["curl", "-sS", "--max-time", "10", "http://198.51.100.7:7/"],
        )
        .run()
        .expect("curl ran");
    assert_eq!(out.code(), Some(7), "{out:?}");
    assert!(out.elapsed < FAST, "curl took {:?}: {out:?}", out.elapsed);

    // Input: the gateway's own unlisted port is refused, the listed proxy port is open.
    assert_tcp_reset(&lab, sa(GATEWAY_AGENT_V4, UNLISTED_PORT));
    assert_nothing_pending(&unlisted);
    assert_udp_rejected(&lab, sa(GATEWAY_AGENT_V4, UNLISTED_PORT));
    let (client, _) = connect_from(&lab, Host::Agent, sa(GATEWAY_AGENT_V4, PROXY_LISTENER));
    client.expect("the explicit proxy port is reachable");
    accept(&proxy, PROBE_TIMEOUT);

    assert_eq!(lab.echo().tcp_connections(), 0);
    assert_eq!(lab.echo().udp_datagrams(), 0);
    assert_eq!(lab.https().connections(), 0);
    assert_eq!(lab.dns().queries(), 0);
    let c = counters(&lab);
    assert!(c.forward_rejected_tcp.packets >= 4, "{c:?}");
    assert!(c.forward_rejected_other.packets >= 3, "{c:?}");
    assert!(c.input_rejected_tcp.packets >= 1, "{c:?}");
    assert!(c.input_rejected_other.packets >= 1, "{c:?}");
    assert_wan_cannot_reach_the_agent(&lab, AGENT_V4.into());
}

#[test]
fn ipv6_is_filtered_like_ipv4() {
    if !require_root("ipv6_is_filtered_like_ipv4") {
        return;
    }
    let lab = lab_with_firewall();
    let unlisted = listen(
        &lab,
        Host::Gateway,
        sa(Ipv6Addr::UNSPECIFIED, UNLISTED_PORT),
    );
    let tls = listen(&lab, Host::Gateway, sa(Ipv6Addr::UNSPECIFIED, TLS_LISTENER));

    for dst in [sa(ECHO_V6, 7), sa(ORIGIN_V6, 853), sa(DNS_V6, 853)] {
        assert_tcp_reset(&lab, dst);
    }
    for dst in [sa(ECHO_V6, 7), sa(ORIGIN_V6, 443), sa(DNS_V6, 853)] {
        assert_udp_rejected(&lab, dst);
    }
    let out = lab
        .command(
            Host::Agent,
            &[
                "curl",
                "-sS",
                "--max-time",
                "10",
                "http://[2001:db8:100::7]:7/",
            ],
        )
        .run()
        .expect("curl ran");
    assert_eq!(out.code(), Some(7), "{out:?}");
    assert!(out.elapsed < FAST, "curl took {:?}: {out:?}", out.elapsed);

    assert_tcp_reset(&lab, sa(GATEWAY_AGENT_V6, UNLISTED_PORT));
    assert_nothing_pending(&unlisted);
    assert_udp_rejected(&lab, sa(GATEWAY_AGENT_V6, UNLISTED_PORT));
    // Neighbour discovery works (else nothing would), and 443 is redirected.
    assert_redirected(&lab, sa(ORIGIN_V6, 443), &tls);

    assert_eq!(lab.echo().tcp_connections(), 0);
    assert_eq!(lab.echo().udp_datagrams(), 0);
    assert_eq!(lab.https().connections(), 0);
    let c = counters(&lab);
    assert!(c.forward_rejected_tcp.packets >= 4, "{c:?}");
    assert!(c.forward_rejected_other.packets >= 3, "{c:?}");
    assert!(c.input_rejected_tcp.packets >= 1, "{c:?}");
    assert!(c.input_rejected_other.packets >= 1, "{c:?}");
    assert_eq!(c.redirected_tls.packets, 1, "{c:?}");
    assert_wan_cannot_reach_the_agent(&lab, AGENT_V6.into());
}

/// `nft list table` with counter values masked (traffic may move them between two
/// listings; the rules are what must not change).
fn list_table(lab: &Lab) -> String {
    let out = lab
        .exec(
            Host::Gateway,
            &["nft", "list", "table", "inet", "bottleneck"],
        )
        .expect("nft ran");
    assert!(out.success(), "{out:?}");
    out.stdout_str()
        .lines()
        .map(|l| {
            let mut words: Vec<&str> = l.split(' ').collect();
            for i in 1..words.len() {
                if matches!(words[i - 1].trim(), "packets" | "bytes") {
                    words[i] = "*";
                }
            }
            words.join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn applying_twice_does_not_duplicate_rules_and_remove_leaves_nothing() {
    if !require_root("applying_twice_does_not_duplicate_rules_and_remove_leaves_nothing") {
        return;
    }
    let before = RootSnapshot::take().expect("root snapshot");
    let lab = Lab::new(GatewayMode::Bare).expect("lab");
    let script = firewall::render(&config()).expect("render");

    // Once with the nft binary directly, once through `apply`.
    let out = lab
        .command(Host::Gateway, &["nft", "-f", "-"])
        .stdin(script.clone())
        .run()
        .expect("nft ran");
    assert!(out.success(), "{out:?}");
    let first = list_table(&lab);
    lab.run_in(Host::Gateway, || firewall::apply(&config()))
        .expect("thread")
        .expect("second apply");
    let second = list_table(&lab);
    assert_eq!(first, second);
    assert_eq!(second.matches("redirect to").count(), 5, "{second}");
    assert_eq!(second.matches("chain ").count(), 3, "{second}");

    // A script that fails halfway changes nothing, although it starts by deleting the
    // table: nft applies a script as one transaction.
    let broken = format!("{script}add rule inet bottleneck input tcp dport 1 frobnicate\n");
    let out = lab
        .command(Host::Gateway, &["nft", "-f", "-"])
        .stdin(broken)
        .run()
        .expect("nft ran");
    assert!(!out.success(), "{out:?}");
    assert_eq!(list_table(&lab), first);

    lab.run_in(Host::Gateway, firewall::remove)
        .expect("thread")
        .expect("remove");
    let tables = lab
        .exec(Host::Gateway, &["nft", "list", "tables"])
        .expect("nft ran");
    assert!(tables.success(), "{tables:?}");
    assert!(
        !tables.stdout_str().contains("bottleneck"),
        "{}",
        tables.stdout_str()
    );
    // Removing what is gone is fine; reading counters of a missing table is an error
    // carrying nft's message.
    lab.run_in(Host::Gateway, firewall::remove)
        .expect("thread")
        .expect("second remove");
    let err = lab
        .run_in(Host::Gateway, firewall::counters)
        .expect("thread")
        .expect_err("no table, no counters");
    assert!(
        matches!(&err, firewall::FirewallError::NftFailed { stderr, .. } if !stderr.is_empty()),
        "{err}"
    );

    let after = RootSnapshot::take().expect("root snapshot");
    let diff = before.diff(&after);
    assert!(
        diff.is_empty(),
        "the root namespace changed:\n{}",
        diff.join("\n")
    );
}

/// Opens a TCP connection from the calling thread's namespace with `SO_MARK` set before
/// `connect`, as the gateway's upstream dialer does.
fn connect_marked(dst: SocketAddrV4, mark: u32) -> io::Result<TcpStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, SockaddrIn, connect, socket};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    set_mark(&fd, mark)?;
    connect(fd.as_raw_fd(), &SockaddrIn::from(dst))?;
    Ok(TcpStream::from(fd))
}

#[test]
fn marked_upstream_sockets_are_not_redirected() {
    if !require_root("marked_upstream_sockets_are_not_redirected") {
        return;
    }
    let lab = lab_with_firewall();
    // Would catch the gateway's own connection if the firewall captured it.
    let tls = listen(&lab, Host::Gateway, sa(Ipv6Addr::UNSPECIFIED, TLS_LISTENER));
    let ca = lab.ca().cert_der().clone();

    let response = lab
        .run_in(Host::Gateway, move || -> io::Result<(u32, String)> {
            let tcp = connect_marked(SocketAddrV4::new(ORIGIN_V4, 443), MARK)?;
            let mark = firewall::sockopt::mark(&tcp)?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca).map_err(io::Error::other)?;
            let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                rustls::crypto::ring::default_provider(),
            ))
            .with_safe_default_protocol_versions()
            .map_err(io::Error::other)?
            .with_root_certificates(roots)
            .with_no_client_auth();
            let name = rustls::pki_types::ServerName::try_from("allowed.test")
                .map_err(io::Error::other)?;
            let conn =
                rustls::ClientConnection::new(Arc::new(config), name).map_err(io::Error::other)?;
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            tls.write_all(
                b"GET /marked HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n",
            )?;
            let mut body = Vec::new();
            // The origin may close without close_notify; what arrived is enough.
            let _ = tls.read_to_end(&mut body);
            Ok((mark, String::from_utf8_lossy(&body).into_owned()))
        })
        .expect("gateway thread");
    let (mark, response) = response.expect("marked connection to the wan origin");
    assert_eq!(mark, MARK);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert_nothing_pending(&tls);
    assert_eq!(lab.https().connections(), 1);
    let record = lab.https().last().expect("the origin logged the request");
    assert_eq!(record.path, "/marked");
    assert_eq!(record.local_addr, sa(ORIGIN_V4, 443).to_string());
    assert!(
        record.peer_addr.starts_with("198.51.100.1:"),
        "the origin saw {}, not the gateway's wan address",
        record.peer_addr
    );

    // Unmarked traffic of the gateway is not captured either: prerouting only sees
    // packets arriving from the agent interface, never locally generated ones. The mark
    // is still set on upstream sockets so the `meta mark ... return` rule keeps the
    // gateway's own traffic exempt in topologies where it could re-enter through the
    // agent interface, and so operators can route or account for it (`ip rule fwmark`).
    let plain = lab
        .run_in(Host::Gateway, || {
            TcpStream::connect_timeout(&sa(ORIGIN_V4, 443), PROBE_TIMEOUT)
        })
        .expect("thread")
        .expect("unmarked connection from the gateway");
    assert_eq!(plain.peer_addr().expect("peer"), sa(ORIGIN_V4, 443));
    assert_nothing_pending(&tls);
    assert_eq!(counters(&lab).redirected_tls.packets, 0);
}

#[test]
fn an_agent_socket_carrying_the_upstream_mark_is_still_redirected() {
    if !require_root("an_agent_socket_carrying_the_upstream_mark_is_still_redirected") {
        return;
    }
    let lab = lab_with_firewall();
    let tls = listen(&lab, Host::Gateway, sa(Ipv6Addr::UNSPECIFIED, TLS_LISTENER));
    // The agent (root in its namespace here) marks its socket like the gateway's: the
    // kernel clears the mark when the packet crosses into the gateway's namespace, so
    // the exemption cannot be borrowed.
    let dst = SocketAddrV4::new(ORIGIN_V4, 443);
    let client = lab
        .run_in(Host::Agent, move || connect_marked(dst, MARK))
        .expect("thread")
        .expect("marked agent connect");
    assert_eq!(firewall::sockopt::mark(&client).expect("mark"), MARK);
    let (server, _) = accept(&tls, PROBE_TIMEOUT);
    assert_eq!(
        original_dst(&server).expect("original dst"),
        SocketAddr::V4(dst)
    );
    assert_eq!(lab.https().connections(), 0);
    assert_eq!(counters(&lab).redirected_tls.packets, 1);
}

#[test]
fn the_agent_cannot_dial_the_transparent_listeners_directly() {
    if !bottleneck_lab::require_root("the_agent_cannot_dial_the_transparent_listeners_directly") {
        return;
    }
    let lab = lab_with_firewall();
    let gateway = IpAddr::V4(bottleneck_lab::addr::GATEWAY_AGENT_V4);
    let listeners: Vec<TcpListener> = [HTTP_LISTENER, TLS_LISTENER, RELAY_LISTENER, PROXY_LISTENER]
        .iter()
        .map(|port| listen(&lab, Host::Gateway, sa(Ipv6Addr::UNSPECIFIED, *port)))
        .collect();
    // Only redirected connections reach the transparent listeners...
    for port in [HTTP_LISTENER, TLS_LISTENER, RELAY_LISTENER, DNS_LISTENER] {
        assert_tcp_reset(&lab, sa(gateway, port));
    }
    for listener in &listeners[..3] {
        assert_nothing_pending(listener);
    }
    // ...while the explicit proxy is the one listener the agent addresses itself.
    let (proxy, _) = connect_from(&lab, Host::Agent, sa(gateway, PROXY_LISTENER));
    assert!(proxy.is_ok(), "{proxy:?}");
    accept(&listeners[3], PROBE_TIMEOUT);
}
