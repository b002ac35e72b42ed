//! The allowlist handler served on loopback by hickory-server, in front of the lab's
//! authoritative DNS server (also on loopback) acting as the upstream. The upstream counts
//! every message it receives, so each test can say exactly what left the gateway.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottleneck_dns::resolver::LookupError;
use bottleneck_dns::server::serve;
use bottleneck_dns::{
    AllowlistHandler, DnsConfig, GateDecision, Pins, QueryEntry, QueryLog, Resolver,
};
use bottleneck_lab::addr::{ORIGIN_V4, ORIGIN_V6};
use bottleneck_lab::dns::{self, DnsReply};
use bottleneck_lab::{DnsServer, RecordType, ResponseCode, Transport};
use hickory_proto::op::{Edns, Message, Query};
use hickory_proto::rr::{DNSClass, Name};

const TIMEOUT: Duration = Duration::from_secs(5);

/// Allowed: `allowed.test` and below, `cname.test`; everything else is denied.
fn gate(name: &str) -> GateDecision {
    let allowed = name == "allowed.test" || name.ends_with(".allowed.test") || name == "cname.test";
    GateDecision {
        allowed,
        reason: if allowed { "allowed" } else { "no_route" },
    }
}

#[derive(Default)]
struct Recorder(Mutex<Vec<QueryEntry>>);

impl QueryLog for Recorder {
    fn record(&self, entry: &QueryEntry) {
        self.0.lock().unwrap().push(entry.clone());
    }
}

impl Recorder {
    fn entries(&self) -> Vec<QueryEntry> {
        self.0.lock().unwrap().clone()
    }

    /// The entries once there are `n` of them: the handler logs after sending, so a client
    /// can hold its answer before the entry exists.
    fn wait_for(&self, n: usize) -> Vec<QueryEntry> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let entries = self.entries();
            if entries.len() >= n || Instant::now() > deadline {
                return entries;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

struct Harness {
    runtime: tokio::runtime::Runtime,
    resolver: Arc<Resolver>,
    upstream: DnsServer,
    addr: SocketAddr,
    pins: Arc<Pins>,
    log: Arc<Recorder>,
}

/// A UDP+TCP pair of sockets on one loopback port.
fn bind_pair(
    runtime: &tokio::runtime::Runtime,
) -> (tokio::net::UdpSocket, tokio::net::TcpListener) {
    runtime.block_on(async {
        loop {
            let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                return (udp, tcp);
            }
        }
    })
}

impl Harness {
    fn start() -> Harness {
        Harness::start_with(|_| {}, None)
    }

    /// `upstream`: use this address instead of the lab server (e.g. one that never answers).
    fn start_with(tweak: impl FnOnce(&mut DnsConfig), upstream: Option<SocketAddr>) -> Harness {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let server = DnsServer::with_default_zone();
        let (up_udp, up_tcp) = bind_pair(&runtime);
        let upstream_addr = up_udp.local_addr().unwrap();
        runtime.spawn(dns::serve_udp(server.clone(), up_udp));
        runtime.spawn(dns::serve_tcp(server.clone(), up_tcp));

        let mut config = DnsConfig {
            upstreams: vec![upstream.unwrap_or(upstream_addr)],
            ..DnsConfig::default()
        };
        tweak(&mut config);
        let pins = Arc::new(Pins::new(1024));
        let log = Arc::new(Recorder::default());
        let (udp, tcp) = bind_pair(&runtime);
        let addr = udp.local_addr().unwrap();
        let resolver = {
            let _guard = runtime.enter();
            Arc::new(Resolver::new(&config, Arc::new(gate)).unwrap())
        };
        let handler = AllowlistHandler::new(&config, resolver.clone(), log.clone(), pins.clone());
        let server_future = {
            let _guard = runtime.enter();
            serve(handler, vec![udp], vec![tcp])
        };
        // Keep the server alive for the harness's lifetime.
        runtime.spawn(async move {
            let mut server = server_future;
            let _ = server.block_until_done().await;
        });
        Harness {
            runtime,
            resolver,
            upstream: server,
            addr,
            pins,
            log,
        }
    }

    fn query(&self, name: &str, rtype: RecordType) -> DnsReply {
        dns::query(self.addr, name, rtype, Transport::Udp, TIMEOUT).unwrap()
    }

    fn query_tcp(&self, name: &str, rtype: RecordType) -> DnsReply {
        dns::query(self.addr, name, rtype, Transport::Tcp, TIMEOUT).unwrap()
    }
}

/// Send raw bytes over UDP; the reply, if one comes within `wait`.
fn raw_udp(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket.set_read_timeout(Some(wait)).unwrap();
    socket.send(bytes).unwrap();
    let mut buf = vec![0u8; 65535];
    socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

fn message(name: &str, rtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_str(name).unwrap(), rtype));
    message
}

fn exchange(addr: SocketAddr, message: &Message) -> Message {
    let reply = raw_udp(addr, &message.to_vec().unwrap(), TIMEOUT).expect("a reply");
    Message::from_vec(&reply).unwrap()
}

#[test]
fn an_allowed_name_resolves_and_the_second_lookup_is_served_from_the_cache() {
    let h = Harness::start();
    let a = h.query("allowed.test", RecordType::A);
    let aaaa = h.query("allowed.test", RecordType::AAAA);
    assert_eq!(a.rcode(), ResponseCode::NoError);
    assert_eq!(a.ips(), vec![IpAddr::V4(ORIGIN_V4)]);
    assert_eq!(aaaa.ips(), vec![IpAddr::V6(ORIGIN_V6)]);
    assert_eq!(h.upstream.queries_for("allowed.test"), 2);

    let again = h.query("ALLOWED.test", RecordType::A);
    assert_eq!(again.ips(), vec![IpAddr::V4(ORIGIN_V4)]);
    assert!(again.min_ttl().unwrap() <= dns::DEFAULT_TTL);
    h.query_tcp("allowed.test", RecordType::AAAA);
    assert_eq!(
        h.upstream.queries_for("allowed.test"),
        2,
        "cached answers went upstream"
    );

    let entries = h.log.wait_for(4);
    assert_eq!(entries.len(), 4);
    assert_eq!(entries.iter().filter(|e| e.cached).count(), 2);
    assert!(
        entries
            .iter()
            .all(|e| e.allowed && e.name == "allowed.test")
    );
    assert_eq!(entries[3].transport, "tcp");
    assert!(entries[0].upstream.is_some() && entries[2].upstream.is_none());
}

#[test]
fn a_denied_name_is_nxdomain_and_never_leaves_in_any_shape() {
    let h = Harness::start();
    // Base64 of stolen data in long labels under a denied zone: the tunnel shape.
    let exfil = format!(
        "c2VjcmV0LWRhdGEtZnJvbS10aGUtYWdlbnQ.{}.denied.test",
        "a1b2c3d4e5f6".repeat(5)
    );
    for (name, rtype) in [
        ("denied.test", RecordType::A),
        ("denied.test", RecordType::AAAA),
        ("denied.test", RecordType::TXT),
        (exfil.as_str(), RecordType::TXT),
        (exfil.as_str(), RecordType::A),
        ("nope.example", RecordType::MX),
        ("denied.test", RecordType::HTTPS),
        ("denied.test", RecordType::ANY),
    ] {
        let reply = h.query(name, rtype);
        assert_eq!(reply.rcode(), ResponseCode::NXDomain, "{name} {rtype}");
        assert!(reply.message.answers.is_empty());
    }
    assert_eq!(
        h.upstream.queries(),
        0,
        "a denied name reached the upstream"
    );
    let entries = h.log.wait_for(8);
    assert_eq!(entries.len(), 8);
    assert!(entries.iter().all(|e| !e.allowed && e.reason == "no_route"));
    assert!(entries.iter().all(|e| e.upstream.is_none()));
}

#[test]
fn ech_tunnel_and_transfer_types_are_answered_locally() {
    let h = Harness::start();
    for rtype in [
        RecordType::ANY,
        RecordType::NULL,
        RecordType::HTTPS,
        RecordType::SVCB,
        RecordType::CAA,
    ] {
        let reply = h.query("allowed.test", rtype);
        assert_eq!(reply.rcode(), ResponseCode::NoError, "{rtype}");
        assert!(reply.message.answers.is_empty(), "{rtype}");
    }
    let axfr = h.query_tcp("allowed.test", RecordType::AXFR);
    assert_eq!(axfr.rcode(), ResponseCode::Refused);
    assert_eq!(h.upstream.queries(), 0);
}

#[test]
fn malformed_queries_get_formerr_and_the_server_keeps_serving() {
    let h = Harness::start();
    // A header claiming one question, followed by a label running off the end.
    let mut garbage = vec![0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    garbage.extend_from_slice(&[0x3f, b'a', b'b']);
    let reply = Message::from_vec(&raw_udp(h.addr, &garbage, TIMEOUT).unwrap()).unwrap();
    assert_eq!(reply.metadata.id, 0x1234);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Too short to hold a header: nothing to answer to.
    assert!(raw_udp(h.addr, &[1, 2, 3], Duration::from_millis(300)).is_none());
    // Two questions in one message.
    let mut two = message("allowed.test.", RecordType::A);
    two.add_query(Query::query(
        Name::from_str("other.allowed.test.").unwrap(),
        RecordType::A,
    ));
    assert_eq!(
        exchange(h.addr, &two).metadata.response_code,
        ResponseCode::FormErr
    );
    // Class CHAOS (version.bind and friends).
    let mut chaos = Query::query(Name::from_str("version.bind.").unwrap(), RecordType::TXT);
    chaos.set_query_class(DNSClass::CH);
    let mut chaos_message = Message::query();
    chaos_message.add_query(chaos);
    assert_eq!(
        exchange(h.addr, &chaos_message).metadata.response_code,
        ResponseCode::Refused
    );

    assert_eq!(
        h.query("allowed.test", RecordType::A).ips(),
        vec![IpAddr::V4(ORIGIN_V4)]
    );
    assert_eq!(h.upstream.queries(), 1);
}

#[test]
fn a_large_answer_is_truncated_over_udp_and_complete_over_tcp() {
    let h = Harness::start();
    for i in 0..12 {
        h.upstream
            .add_txt("big.allowed.test", &format!("{i:02}-{}", "x".repeat(180)))
            .unwrap();
    }
    // No EDNS: the 512-byte limit of RFC 1035 applies.
    let udp = h.query("big.allowed.test", RecordType::TXT);
    assert!(udp.truncated(), "a 2 KB answer fit in 512 bytes?");
    let tcp = h.query_tcp("big.allowed.test", RecordType::TXT);
    assert!(!tcp.truncated());
    assert_eq!(tcp.txts().len(), 12);

    // With EDNS the client's payload size (capped at 1232) is honoured.
    let mut edns_query = message("big.allowed.test.", RecordType::TXT);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    edns_query.set_edns(edns);
    let reply = exchange(h.addr, &edns_query);
    assert!(reply.metadata.truncation);
    assert!(
        reply.edns.is_some(),
        "an EDNS query must get an EDNS answer"
    );
    assert!(reply.to_vec().unwrap().len() <= 1232);
}

#[test]
fn a_cname_into_a_denied_name_does_not_disclose_the_target() {
    let h = Harness::start();
    h.upstream
        .add_cname("alias.allowed.test", "denied.test")
        .unwrap();
    for rtype in [RecordType::A, RecordType::CNAME, RecordType::TXT] {
        let wire = raw_udp(
            h.addr,
            &message("alias.allowed.test.", rtype).to_vec().unwrap(),
            TIMEOUT,
        )
        .unwrap();
        let reply = Message::from_vec(&wire).unwrap();
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::NXDomain,
            "{rtype}"
        );
        assert!(reply.answers.is_empty() && reply.authorities.is_empty());
        assert!(
            !wire.windows(6).any(|w| w.eq_ignore_ascii_case(b"denied")),
            "the denied target is in the {rtype} answer"
        );
    }
    assert_eq!(h.upstream.queries_for("denied.test"), 0);
    let entries = h.log.wait_for(3);
    assert_eq!(entries.len(), 3);
    assert!(entries.iter().all(|e| e.reason == "cname_target_denied"));
}

#[test]
fn every_address_handed_out_is_pinned_for_each_name_of_its_chain() {
    let h = Harness::start();
    assert!(h.pins.is_empty());
    let reply = h.query("cname.test", RecordType::A);
    assert_eq!(reply.cnames(), vec!["allowed.test".to_string()]);
    assert_eq!(reply.ips(), vec![IpAddr::V4(ORIGIN_V4)]);
    assert_eq!(
        h.pins.names_for(IpAddr::V4(ORIGIN_V4)),
        vec!["allowed.test".to_string(), "cname.test".to_string()]
    );
    // Addresses never handed out are not pinned, whatever the upstream holds.
    assert!(h.pins.names_for(IpAddr::V6(ORIGIN_V6)).is_empty());
    h.query("denied.test", RecordType::AAAA);
    assert!(h.pins.names_for(IpAddr::V6(ORIGIN_V6)).is_empty());
}

#[test]
fn reverse_lookups_are_answered_from_the_pins_only() {
    let h = Harness::start();
    let reverse = |ip: Ipv4Addr| {
        let [a, b, c, d] = ip.octets();
        format!("{d}.{c}.{b}.{a}.in-addr.arpa")
    };
    let before = h.query(&reverse(ORIGIN_V4), RecordType::PTR);
    assert_eq!(before.rcode(), ResponseCode::NXDomain);
    h.query("allowed.test", RecordType::A);
    let after = h.query(&reverse(ORIGIN_V4), RecordType::PTR);
    assert_eq!(after.rcode(), ResponseCode::NoError);
    let Some(hickory_proto::rr::RData::PTR(ptr)) = after.message.answers.first().map(|r| &r.data)
    else {
        panic!("no PTR answer: {after:?}");
    };
    assert_eq!(ptr.0.to_ascii(), "allowed.test.");
    assert_eq!(h.upstream.queries(), 1, "a reverse name went upstream");
}

#[test]
fn a_client_over_its_in_flight_bound_is_refused_at_once() {
    // An upstream that never answers keeps the first query in flight.
    let silent = UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let h = Harness::start_with(
        |c| {
            c.per_client_in_flight = 1;
            c.upstream_deadline = Duration::from_secs(3);
        },
        Some(silent_addr),
    );
    let addr = h.addr;
    let first = std::thread::spawn(move || {
        raw_udp(
            addr,
            &message("allowed.test.", RecordType::A).to_vec().unwrap(),
            Duration::from_secs(6),
        )
    });
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let second = exchange(addr, &message("other.allowed.test.", RecordType::A));
    assert_eq!(second.metadata.response_code, ResponseCode::Refused);
    assert!(started.elapsed() < Duration::from_secs(1));
    // The first one fails closed once the upstream deadline passes.
    let first = Message::from_vec(&first.join().unwrap().expect("an answer")).unwrap();
    assert_eq!(first.metadata.response_code, ResponseCode::ServFail);
    let reasons: Vec<&str> = h.log.wait_for(2).iter().map(|e| e.reason).collect();
    assert!(reasons.contains(&"client_busy") && reasons.contains(&"upstream_failed"));
    drop(h.runtime);
}

#[test]
fn the_gateways_own_lookups_share_the_agents_cache_and_obey_the_gate() {
    let h = Harness::start();
    h.query("allowed.test", RecordType::A);
    h.query("allowed.test", RecordType::AAAA);
    let addrs = h
        .runtime
        .block_on(h.resolver.lookup_ip("allowed.test"))
        .unwrap();
    assert_eq!(addrs, vec![IpAddr::V4(ORIGIN_V4), IpAddr::V6(ORIGIN_V6)]);
    assert_eq!(
        h.upstream.queries_for("allowed.test"),
        2,
        "the gateway asked again"
    );
    // The gateway's own lookups pin nothing: the agent did not learn anything.
    assert!(
        h.runtime
            .block_on(h.resolver.lookup_ip("other.allowed.test"))
            .is_ok()
    );
    assert!(h.pins.addrs_for("other.allowed.test").is_empty());

    let denied = h.runtime.block_on(h.resolver.lookup_ip("denied.test"));
    assert!(
        matches!(denied, Err(LookupError::Denied { .. })),
        "{denied:?}"
    );
    let missing = h
        .runtime
        .block_on(h.resolver.lookup_ip("missing.allowed.test"));
    assert!(
        matches!(missing, Err(LookupError::NoAddress { .. })),
        "{missing:?}"
    );
    assert_eq!(h.upstream.queries_for("denied.test"), 0);
}

/// Regression (found by the `dns_query` fuzz target): a question written with compression
/// pointers into the client's own message was echoed byte for byte, which made the
/// response unparseable; the question is now encoded afresh.
#[test]
fn a_compressed_question_still_gets_a_well_formed_response() {
    let h = Harness::start();
    let query: &[u8] = &[
        0x00, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x26, 0x47, 0x3b,
        0x07, 0x07, 0x80, 0x00, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xc0, 0xc0, 0xc0, 0xc0,
        0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0,
        0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0xc0, 0x02, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x02, 0x07, 0x07, 0x07, 0x9b, 0x5e, 0x5e, 0x02, 0x07, 0x07, 0x07, 0x26,
        0x47, 0x3b, 0x07, 0x07, 0x80, 0x00, 0x00, 0x5d, 0x00, 0x00, 0x00, 0x00, 0x26, 0x26, 0x26,
        0x61, 0x26, 0x00,
    ];
    let reply = raw_udp(h.addr, query, TIMEOUT).expect("a reply");
    let message = Message::from_vec(&reply).expect("the response parses");
    assert!(message.answers.is_empty());
    assert_eq!(h.upstream.queries(), 0);
}
