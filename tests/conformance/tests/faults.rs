//! Upstream faults the lab's origins cannot produce (issue 8, load and faults item 2): an
//! origin that resets the connection before its response or in the middle of the body, and
//! one that answers with bytes that are not HTTP. Certificate faults and stalls are covered
//! by gateway/tests/upstream_faults_lab.rs.
//!
//! The faulty origin is a small raw server run by this test inside the wan namespace, on
//! the wan's own address (198.51.100.2, where the lab listens on nothing) on 443 (TLS, leaf
//! from the lab CA) and 80 (plain); `reset.test` and `garbage.test` resolve to it.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bottleneck_conformance::Bottle;
use bottleneck_lab::Host;
use bottleneck_lab::addr::{HTTP_ORIGIN_V4, ORIGIN_V4, WAN_V4};
use rustls::pki_types::PrivateKeyDer;

const POLICY: &str = r#"
version: 1
routes:
  - host: reset.test
  - host: garbage.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// What the faulty origin sends for a request path.
fn misbehave<S: Read + Write>(stream: &mut S, reset: impl FnOnce(&mut S)) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let line = String::from_utf8_lossy(&head);
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    if path.starts_with("/reset/head") {
        reset(stream);
    } else if path.starts_with("/reset/body") {
        let mut out =
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 1000000\r\n\r\n"
                .to_vec();
        out.extend(std::iter::repeat_n(b'x', 4000));
        let _ = stream.write_all(&out);
        let _ = stream.flush();
        // Let the gateway forward the head and the first bytes before the reset.
        std::thread::sleep(Duration::from_millis(300));
        reset(stream);
    } else {
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2p1\r\n\x00\x01\x02 not http at all\r\n\r\n");
        let _ = stream.flush();
    }
}

/// Closes `tcp` with a RST (SO_LINGER 0) instead of a FIN.
fn arm_reset(tcp: &TcpStream) {
    let linger = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    nix::sys::socket::setsockopt(tcp, nix::sys::socket::sockopt::Linger, &linger).unwrap();
}

/// The faulty origin: TLS on WAN_V4:443, plain on WAN_V4:80; stops on drop.
struct FaultyOrigin {
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicU64>,
}

impl FaultyOrigin {
    fn start(bottle: &Bottle) -> FaultyOrigin {
        let leaf = bottle
            .lab
            .ca()
            .issue(&["reset.test", "garbage.test"])
            .unwrap();
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.cert_der.clone()],
            PrivateKeyDer::Pkcs8(leaf.key_der.clone_key()),
        )
        .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let config = Arc::new(config);
        let listeners: Vec<(TcpListener, bool)> = bottle
            .lab
            .run_in(Host::Wan, || {
                [(443u16, true), (80, false)]
                    .into_iter()
                    .map(|(port, tls)| {
                        let l = TcpListener::bind(SocketAddr::from((WAN_V4, port))).unwrap();
                        l.set_nonblocking(true).unwrap();
                        (l, tls)
                    })
                    .collect()
            })
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let (s, c) = (stop.clone(), connections.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for (listener, tls) in &listeners {
                    while let Ok((tcp, _)) = listener.accept() {
                        c.fetch_add(1, Ordering::SeqCst);
                        let (tls, config) = (*tls, config.clone());
                        std::thread::spawn(move || serve(tcp, tls, config));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        FaultyOrigin { stop, connections }
    }
}

fn serve(tcp: TcpStream, tls: bool, config: Arc<rustls::ServerConfig>) {
    tcp.set_nonblocking(false).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if tls {
        let conn = rustls::ServerConnection::new(config).unwrap();
        let mut stream = rustls::StreamOwned::new(conn, tcp);
        misbehave(&mut stream, |s| arm_reset(&s.sock));
    } else {
        let mut stream = tcp;
        misbehave(&mut stream, |s| arm_reset(s));
    }
}

impl Drop for FaultyOrigin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn start() -> (Bottle, FaultyOrigin) {
    let bottle = Bottle::start(POLICY, &[], &[]);
    for name in ["reset.test", "garbage.test"] {
        bottle.lab.dns().add_a(name, WAN_V4).unwrap();
    }
    let origin = FaultyOrigin::start(&bottle);
    (bottle, origin)
}

/// Transparent HTTPS and plain HTTP: (scheme, port, the address the agent dials).
const PATHS: [(&str, u16, std::net::Ipv4Addr); 2] =
    [("https", 443, ORIGIN_V4), ("http", 80, HTTP_ORIGIN_V4)];

#[test]
fn an_origin_that_resets_before_answering_or_answers_garbage_gives_a_502_and_an_audit_line() {
    if !bottleneck_lab::require_root(
        "an_origin_that_resets_before_answering_or_answers_garbage_gives_a_502_and_an_audit_line",
    ) {
        return;
    }
    let (bottle, origin) = start();
    let mut results = Vec::new();
    for (scheme, port, addr) in PATHS {
        for (name, path) in [("reset.test", "/reset/head"), ("garbage.test", "/garbage")] {
            let url = format!("{scheme}://{name}{path}");
            let resolve = format!("{name}:{port}:{addr}");
            let out = bottle.curl(&["--http1.1", "-i", "--resolve", &resolve, &url]);
            assert_eq!(out.status, 502, "{url}: {out:?}");
            let text = out.body.to_ascii_lowercase();
            assert!(
                text.contains("x-bottleneck-deny: upstream_failed"),
                "{url}: {out:?}"
            );
            // The reason, as the agent reads it.
            let reason = out
                .body
                .lines()
                .find(|l| l.starts_with("the upstream"))
                .unwrap_or("")
                .to_owned();
            assert!(!reason.is_empty(), "{url}: no reason given: {out:?}");
            results.push(format!("{url}: {} / {reason}", out.summary()));
            let audit = bottle.audit_lines();
            assert!(
                audit.iter().any(|l| l["host"] == name
                    && l["path"] == path
                    && l["status"] == 502
                    && l["reason"] == "upstream_failed"),
                "{url}: no audit line: {audit:?}"
            );
        }
    }
    println!(
        "FAULTS ({} connections to the faulty origin):\n  {}",
        origin.connections.load(Ordering::SeqCst),
        results.join("\n  ")
    );
}

#[test]
fn an_origin_that_resets_mid_body_cuts_the_body_off_and_the_audit_line_says_so() {
    if !bottleneck_lab::require_root(
        "an_origin_that_resets_mid_body_cuts_the_body_off_and_the_audit_line_says_so",
    ) {
        return;
    }
    let (bottle, _origin) = start();
    let mut results = Vec::new();
    let mut problems = Vec::new();
    for (scheme, port, addr) in PATHS {
        // The head (200) has been forwarded before the reset, so the agent must see a
        // cut-off body (an error, never a complete response: curl 18 or 56), and the audit
        // line must not read like a success.
        let url = format!("{scheme}://reset.test/reset/body");
        let resolve = format!("reset.test:{port}:{addr}");
        let out = bottle.curl(&["--http1.1", "--resolve", &resolve, &url]);
        results.push(format!(
            "{url}: {} bytes, {}",
            out.body.len(),
            out.stderr.trim()
        ));
        if !(out.stderr.contains("curl: (18)") || out.stderr.contains("curl: (56)")) {
            problems.push(format!("{url}: the cut-off body was not an error: {out:?}"));
        }
        std::thread::sleep(Duration::from_millis(200));
        let line = bottle
            .audit_lines()
            .into_iter()
            .rev()
            .find(|l| l["host"] == "reset.test" && l["path"] == "/reset/body");
        results.push(format!(
            "  audit: {}",
            line.as_ref().map_or("none".into(), |l| l.to_string())
        ));
        match line {
            None => problems.push(format!("{url}: no audit line")),
            Some(line) if line["reason"] == "allowed" => problems.push(format!(
                "{url}: the audit line of a body cut off by an upstream reset reads like a \
                 success (reason \"allowed\", status 200, only bytes_down {} differs)",
                line["bytes_down"]
            )),
            Some(_) => {}
        }
    }
    println!("FAULTS mid-body reset:\n  {}", results.join("\n  "));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
