//! End to end in the lab: the real `bottleneck-gateway` in the gateway namespace, real curl
//! in the agent namespace with no proxy variables, the wan origins counting what arrives.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use bottleneck_lab::addr::{ORIGIN_V4, ORIGIN_V6};
mod common;

use bottleneck_lab::{ExecOutput, Host};
use common::Bottle;

const SECRET: &str = "lab-secret-7f3a9c";

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
    matches:
      - paths: [{type: prefix, value: /echo}]
      - paths: [{type: exact, value: /upload}]
        methods: [POST]
        headers: [{name: x-client, value: agent}]
      - paths: [{type: prefix, value: /repo.git/}]
      - paths: [{type: exact, value: /sse}]
      - paths: [{type: exact, value: /ws}]
  - host: other.allowed.test
    auth: {scheme: Bearer, token_ref: LAB_TOKEN}
  - host: http.test
  - host: private.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

impl Bottle {
    fn start(policy: &str) -> Bottle {
        Bottle::start_with_env(policy, &[("LAB_TOKEN", SECRET)])
    }
}

fn resolve(name: &str) -> String {
    // The address is irrelevant to the gateway (it decides by SNI and resolves itself);
    // it only has to be routed towards the gateway.
    format!("{name}:443:{ORIGIN_V4}")
}

/// (status, http version, body) from the `-w` trailer.
fn split(out: &ExecOutput) -> (u16, String, String) {
    let text = out.stdout_str();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let mut words = trailer.split_whitespace();
    let status = words.next().and_then(|s| s.parse().ok()).unwrap_or(0);
    let version = words.next().unwrap_or_default().to_owned();
    (status, version, body.to_owned())
}

#[test]
fn allowed_https_is_intercepted_over_h1_and_h2_and_reaches_the_origin() {
    if !bottleneck_lab::require_root(
        "allowed_https_is_intercepted_over_h1_and_h2_and_reaches_the_origin",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    for (flag, expect_version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let before = bottle.lab.https().requests();
        let out = bottle.curl(&[
            flag,
            "--resolve",
            &resolve("allowed.test"),
            "https://allowed.test/echo?x=1",
        ]);
        let (status, version, body) = split(&out);
        assert_eq!(status, 200, "{out:?}");
        assert_eq!(version, expect_version, "{out:?}");
        let echo: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(echo["path"], "/echo?x=1");
        assert_eq!(echo["sni"], "allowed.test");
        assert_eq!(bottle.lab.https().requests(), before + 1);
    }
}

#[test]
fn ipv6_destinations_are_intercepted_too() {
    if !bottleneck_lab::require_root("ipv6_destinations_are_intercepted_too") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let target = format!("allowed.test:443:[{ORIGIN_V6}]");
    let out = bottle.curl(&["-6", "--resolve", &target, "https://allowed.test/echo"]);
    assert_eq!(split(&out).0, 200, "{out:?}");
}

#[test]
fn plain_http_goes_through_the_same_decision() {
    if !bottleneck_lab::require_root("plain_http_goes_through_the_same_decision") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let before = bottle.lab.http().requests();
    let out = bottle.curl(&[
        "--resolve",
        "http.test:80:198.51.100.80",
        "http://http.test/echo",
    ]);
    assert_eq!(split(&out).0, 200, "{out:?}");
    assert_eq!(bottle.lab.http().requests(), before + 1);

    let out = bottle.curl(&[
        "--resolve",
        "denied.test:80:198.51.100.80",
        "http://denied.test/echo",
    ]);
    let (status, _, body) = split(&out);
    assert_eq!(status, 403, "{out:?}");
    assert!(body.contains("- host: denied.test"), "{body}");
    assert_eq!(
        bottle.lab.http().requests(),
        before + 1,
        "the origin saw the denied request"
    );
}

#[test]
fn a_denied_host_gets_a_readable_403_and_the_origin_sees_nothing() {
    if !bottleneck_lab::require_root(
        "a_denied_host_gets_a_readable_403_and_the_origin_sees_nothing",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let before = bottle.lab.https().requests();
    let out = bottle.curl(&[
        "-i",
        "--resolve",
        &resolve("denied.test"),
        "https://denied.test/echo",
    ]);
    let (status, _, body) = split(&out);
    assert_eq!(status, 403, "{out:?}");
    assert!(
        body.to_ascii_lowercase()
            .contains("x-bottleneck-deny: no_route"),
        "{body}"
    );
    assert!(body.contains("- host: denied.test"), "{body}");
    assert_eq!(bottle.lab.https().requests(), before);
    let audit = bottle.audit_text();
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\"host\":\"denied.test\"") && l.contains("\"decision\":\"deny\"")),
        "{audit}"
    );
}

#[test]
fn a_host_header_that_differs_from_the_sni_gets_421_and_reaches_no_one() {
    if !bottleneck_lab::require_root(
        "a_host_header_that_differs_from_the_sni_gets_421_and_reaches_no_one",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let before = bottle.lab.https().requests();
    let out = bottle.curl(&[
        "--http1.1",
        "--resolve",
        &resolve("allowed.test"),
        "-H",
        "Host: other.allowed.test",
        "https://allowed.test/echo",
    ]);
    assert_eq!(split(&out).0, 421, "{out:?}");
    assert_eq!(bottle.lab.https().requests(), before);
}

#[test]
fn https_without_sni_or_by_ip_is_refused() {
    if !bottleneck_lab::require_root("https_without_sni_or_by_ip_is_refused") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let before = bottle.lab.https().requests();
    let out = bottle.curl(&["-k", &format!("https://{ORIGIN_V4}/echo")]);
    assert!(!out.success(), "a connection by IP must fail: {out:?}");
    assert_eq!(bottle.lab.https().requests(), before);
    assert!(bottle.audit_text().contains("\"reason\":\"no_sni\""));
}

#[test]
fn credentials_are_injected_replacing_the_agents_and_never_logged() {
    if !bottleneck_lab::require_root(
        "credentials_are_injected_replacing_the_agents_and_never_logged",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let out = bottle.curl(&[
        "--resolve",
        &resolve("other.allowed.test"),
        "-H",
        "Authorization: Bearer agent-made-this-up",
        "https://other.allowed.test/echo",
    ]);
    assert_eq!(split(&out).0, 200, "{out:?}");
    let last = bottle.lab.https().last().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(!format!("{:?}", last.header_all("authorization")).contains("agent-made-this-up"));
    let audit = bottle.audit_text();
    assert!(!audit.contains(SECRET), "the audit log holds the secret");
    assert!(!audit.is_empty());
}

#[test]
fn routes_without_auth_forward_no_injected_credentials() {
    if !bottleneck_lab::require_root("routes_without_auth_forward_no_injected_credentials") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let out = bottle.curl(&[
        "--resolve",
        &resolve("allowed.test"),
        "https://allowed.test/echo",
    ]);
    assert_eq!(split(&out).0, 200, "{out:?}");
    assert_eq!(
        bottle.lab.https().last().unwrap().header("authorization"),
        None
    );
}

#[test]
fn methods_paths_and_headers_decide_exactly_as_the_policy_says() {
    if !bottleneck_lab::require_root("methods_paths_and_headers_decide_exactly_as_the_policy_says")
    {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let r = resolve("allowed.test");
    let cases: [(&[&str], u16); 5] = [
        (&["https://allowed.test/admin"], 403),
        (
            &[
                "-X",
                "POST",
                "-H",
                "x-client: agent",
                "https://allowed.test/upload",
            ],
            200,
        ),
        (&["-X", "POST", "https://allowed.test/upload"], 403),
        (
            &[
                "-X",
                "PUT",
                "-H",
                "x-client: agent",
                "https://allowed.test/upload",
            ],
            403,
        ),
        (
            &[
                "-X",
                "POST",
                "https://allowed.test/repo.git/git-receive-pack",
            ],
            403,
        ),
    ];
    for (args, expected) in cases {
        let mut argv = vec!["--resolve", r.as_str()];
        argv.extend_from_slice(args);
        let out = bottle.curl(&argv);
        assert_eq!(split(&out).0, expected, "{args:?}: {out:?}");
    }
}

#[test]
fn an_allowed_name_that_resolves_to_a_private_address_is_refused_with_502() {
    if !bottleneck_lab::require_root(
        "an_allowed_name_that_resolves_to_a_private_address_is_refused_with_502",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let out = bottle.curl(&[
        "--resolve",
        &resolve("private.test"),
        "https://private.test/",
    ]);
    let (status, _, body) = split(&out);
    assert_eq!(status, 502, "{out:?}");
    assert!(body.contains("10.0.0.1"), "{body}");
}

#[test]
fn the_same_certificate_is_served_to_every_connection_for_a_name() {
    if !bottleneck_lab::require_root(
        "the_same_certificate_is_served_to_every_connection_for_a_name",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let fingerprint = || {
        let out = bottle.curl(&[
            "-v",
            "--resolve",
            &resolve("allowed.test"),
            "https://allowed.test/echo",
        ]);
        let err = out.stderr_str();
        err.lines()
            .find(|l| l.contains("start date"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no certificate details: {err}"))
    };
    assert_eq!(fingerprint(), fingerprint());
}

#[test]
fn killing_the_gateway_leaves_the_agent_with_no_egress() {
    if !bottleneck_lab::require_root("killing_the_gateway_leaves_the_agent_with_no_egress") {
        return;
    }
    let mut bottle = Bottle::start(POLICY);
    if let Some(gateway) = bottle.gateway.take() {
        gateway.kill();
    }
    let before = bottle.lab.https().requests();
    let out = bottle.curl(&[
        "--resolve",
        &resolve("allowed.test"),
        "https://allowed.test/echo",
    ]);
    assert!(!out.success(), "{out:?}");
    assert_eq!(bottle.lab.https().requests(), before);
}

#[test]
fn a_clean_stop_removes_the_firewall_and_still_leaves_no_egress() {
    if !bottleneck_lab::require_root("a_clean_stop_removes_the_firewall_and_still_leaves_no_egress")
    {
        return;
    }
    let mut bottle = Bottle::start(POLICY);
    let mut gateway = bottle.gateway.take().unwrap();
    gateway.signal(nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = gateway.wait_timeout(Duration::from_secs(20)).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{:?}", gateway.kill());
    let tables = bottle
        .lab
        .exec(Host::Gateway, &["nft", "list", "tables"])
        .unwrap();
    assert!(!tables.stdout_str().contains("bottleneck"), "{tables:?}");
    let before = bottle.lab.https().requests();
    let out = bottle.curl(&[
        "--max-time",
        "3",
        "--resolve",
        &resolve("allowed.test"),
        "https://allowed.test/echo",
    ]);
    assert!(!out.success(), "{out:?}");
    assert_eq!(
        bottle.lab.https().requests(),
        before,
        "the agent reached the origin after the gateway stopped"
    );
}

#[test]
fn sighup_with_a_broken_policy_keeps_the_old_one_and_a_good_one_takes_effect() {
    if !bottleneck_lab::require_root(
        "sighup_with_a_broken_policy_keeps_the_old_one_and_a_good_one_takes_effect",
    ) {
        return;
    }
    let mut bottle = Bottle::start(POLICY);
    let gateway = bottle.gateway.take().unwrap();
    let policy_path = bottle.lab.dir().join("policy.yaml");
    let fetch = |host: &str| {
        split(&bottle.curl(&["--resolve", &resolve(host), &format!("https://{host}/echo")])).0
    };

    std::fs::write(&policy_path, "version: 1\nroutes:\n  - host: a.*.broken\n").unwrap();
    gateway.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fetch("allowed.test"),
        200,
        "the old policy must stay in force"
    );

    std::fs::write(&policy_path, "version: 1\nroutes:\n  - host: denied.test\nallow_ranges: [198.51.100.0/24]\ndns:\n  upstream: [198.51.100.53]\n").unwrap();
    gateway.signal(nix::sys::signal::Signal::SIGHUP).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        fetch("denied.test"),
        200,
        "the new policy must allow denied.test"
    );
    assert_eq!(
        fetch("allowed.test"),
        403,
        "the new policy must deny allowed.test"
    );
}

#[test]
fn a_connection_to_another_ip_lands_on_the_vetted_address_of_the_sni_name() {
    if !bottleneck_lab::require_root(
        "a_connection_to_another_ip_lands_on_the_vetted_address_of_the_sni_name",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let elsewhere = format!("allowed.test:443:{}", bottleneck_lab::addr::OTHER_ORIGIN_V4);
    let out = bottle.curl(&["--resolve", &elsewhere, "https://allowed.test/echo"]);
    assert_eq!(split(&out).0, 200, "{out:?}");
    let landed = bottle.lab.https().last().unwrap().local().unwrap().ip();
    assert!(
        landed == std::net::IpAddr::V4(ORIGIN_V4) || landed == std::net::IpAddr::V6(ORIGIN_V6),
        "the gateway dialled {landed}, not an address of allowed.test"
    );
}

#[test]
fn server_sent_events_stream_through_without_buffering() {
    if !bottleneck_lab::require_root("server_sent_events_stream_through_without_buffering") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    for flag in ["--http1.1", "--http2"] {
        let out = bottle.curl(&[
            flag,
            "-N",
            "--resolve",
            &resolve("allowed.test"),
            "-w",
            "\n%{time_starttransfer} %{time_total}",
            "https://allowed.test/sse",
        ]);
        let text = out.stdout_str();
        let events = text.matches("data: event").count();
        assert_eq!(events as u32, bottleneck_lab::http::SSE_EVENTS, "{out:?}");
        let timing = text.lines().last().unwrap_or_default();
        let mut numbers = timing.split_whitespace().map(|n| n.parse::<f64>().unwrap());
        let (first, total) = (numbers.next().unwrap(), numbers.next().unwrap());
        let stream_time = bottleneck_lab::http::SSE_INTERVAL.as_secs_f64()
            * f64::from(bottleneck_lab::http::SSE_EVENTS - 1);
        assert!(
            total >= stream_time * 0.9,
            "{flag}: the origin streams for {stream_time}s, total {total}"
        );
        assert!(
            total - first >= stream_time * 0.8,
            "{flag}: the first byte came at {first}s of {total}s: the gateway buffered the stream"
        );
    }
}

#[test]
fn the_audit_line_counts_request_and_response_body_bytes() {
    if !bottleneck_lab::require_root("the_audit_line_counts_request_and_response_body_bytes") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let out = bottle.curl(&[
        "--resolve",
        &resolve("allowed.test"),
        "-X",
        "POST",
        "-H",
        "x-client: agent",
        "--data-binary",
        "hello world",
        "https://allowed.test/upload",
    ]);
    let (status, _, body) = split(&out);
    assert_eq!(status, 200, "{out:?}");
    let mut line = None;
    for _ in 0..50 {
        line = bottle
            .audit_text()
            .lines()
            .find(|l| l.contains("\"path\":\"/upload\""))
            .map(str::to_owned);
        if line.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let record: serde_json::Value =
        serde_json::from_str(&line.expect("no audit line for /upload")).unwrap();
    assert_eq!(record["bytes_up"], 11, "{record}");
    assert_eq!(record["bytes_down"], body.len() as u64, "{record}");
    assert_eq!(record["kind"], "https");
    assert!(
        record["upstream"]
            .as_str()
            .is_some_and(|u| u.ends_with(":443")),
        "{record}"
    );
}

#[test]
fn the_running_gateway_keeps_only_net_admin_and_net_bind_service() {
    if !bottleneck_lab::require_root(
        "the_running_gateway_keeps_only_net_admin_and_net_bind_service",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let pid = bottle.gateway.as_ref().unwrap().id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status.contains("Name:\tbottleneck-gate"),
        "pid {pid} is not the gateway:\n{status}"
    );
    // CAP_NET_BIND_SERVICE is bit 10, CAP_NET_ADMIN bit 12.
    let expected = (1u64 << 10) | (1u64 << 12);
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        let value = status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{set}:\t")))
            .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
            .unwrap();
        assert_eq!(value, expected, "{set} is {value:#x}");
    }
    for set in ["CapInh", "CapAmb"] {
        assert!(
            status.contains(&format!("{set}:\t0000000000000000")),
            "{set} not empty:\n{status}"
        );
    }
    // And it still works.
    let out = bottle.curl(&[
        "--resolve",
        &resolve("allowed.test"),
        "https://allowed.test/echo",
    ]);
    assert_eq!(split(&out).0, 200, "{out:?}");
}

/// A WebSocket opening handshake by hand from the agent (TLS when `tls`), then a message
/// each way; prints the status line, the accept header and what came back.
fn websocket_script(
    ca: &str,
    ip: std::net::IpAddr,
    port: u16,
    host: &str,
    path: &str,
    tls: bool,
) -> String {
    format!(
        r#"import socket,ssl
s=socket.create_connection(('{ip}',{port}),timeout=5)
if {tls}:
  s=ssl.create_default_context(cafile='{ca}').wrap_socket(s,server_hostname='{host}')
s.sendall(b'GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n')
head=b''
while b'\r\n\r\n' not in head:
  c=s.recv(1)
  if not c: break
  head+=c
lines=head.decode().split('\r\n')
print(lines[0])
print([l.split(': ',1)[1] for l in lines if l.lower().startswith('sec-websocket-accept')])
if ' 101 ' in lines[0]:
  s.sendall(b'hello-ws')
  got=b''
  while len(got)<8:
    c=s.recv(8-len(got))
    if not c: break
    got+=c
  print(got.decode())
"#,
        tls = if tls { "True" } else { "False" },
    )
}

#[test]
fn websocket_upgrades_flow_both_ways_when_the_route_allows_them() {
    if !bottleneck_lab::require_root("websocket_upgrades_flow_both_ways_when_the_route_allows_them")
    {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let ca = bottle.ca_pem.display().to_string();
    let accept = bottleneck_lab::http::websocket_accept("dGhlIHNhbXBsZSBub25jZQ==");
    let run = |script: String| {
        let out = bottle
            .lab
            .exec(Host::Agent, &["python3", "-c", &script])
            .unwrap();
        out.stdout_str().trim().to_owned()
    };
    let https = run(websocket_script(
        &ca,
        ORIGIN_V4.into(),
        443,
        "allowed.test",
        "/ws",
        true,
    ));
    assert_eq!(
        https,
        format!("HTTP/1.1 101 Switching Protocols\n['{accept}']\nhello-ws"),
        "{https}"
    );
    // Its audit line is written when the tunnel closes, with what the tunnel carried.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let tunnel_line = loop {
        let line = bottle.audit_text().lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["path"] == "/ws" && v["status"] == 101).then_some(v)
        });
        match line {
            Some(v) => break v,
            None if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50))
            }
            None => panic!("no audit line for the tunnel: {}", bottle.audit_text()),
        }
    };
    assert_eq!(tunnel_line["bytes_up"], 8, "{tunnel_line}");
    assert_eq!(tunnel_line["bytes_down"], 8, "{tunnel_line}");
    let http = run(websocket_script(
        &ca,
        bottleneck_lab::addr::HTTP_ORIGIN_V4.into(),
        80,
        "http.test",
        "/ws",
        false,
    ));
    assert!(http.ends_with("hello-ws"), "{http}");

    // The same handshake on a path the route does not allow: refused, never upgraded.
    let before = bottle.lab.https().requests();
    let denied = run(websocket_script(
        &ca,
        ORIGIN_V4.into(),
        443,
        "allowed.test",
        "/ws-admin",
        true,
    ));
    assert!(denied.starts_with("HTTP/1.1 403"), "{denied}");
    assert_eq!(bottle.lab.https().requests(), before);
}

/// An h2 connection opened for one name and reused for another (connection coalescing,
/// which browsers do when a certificate covers both): the second authority gets 421 and
/// reaches no one, even though the policy allows it on its own connection.
#[test]
fn an_h2_connection_reused_for_a_second_authority_gets_421() {
    if !bottleneck_lab::require_root("an_h2_connection_reused_for_a_second_authority_gets_421") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let ca = std::fs::read(&bottle.ca_pem).unwrap();
    let statuses = bottle
        .lab
        .run_in(Host::Agent, move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(h2_two_authorities(ca))
        })
        .unwrap();
    assert_eq!(statuses, (200, 421));
    let seen: Vec<_> = bottle
        .lab
        .https()
        .log()
        .into_iter()
        .filter_map(|r| r.sni)
        .collect();
    assert_eq!(
        seen,
        vec!["allowed.test".to_string()],
        "the second authority got through"
    );
}

async fn h2_two_authorities(ca_pem: Vec<u8>) -> (u16, u16) {
    use http_body_util::Empty;
    use rustls::pki_types::pem::PemObject;

    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&ca_pem).unwrap())
        .unwrap();
    let mut config =
        rustls::ClientConfig::builder_with_provider(bottleneck_gateway::tls::crypto_provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect((ORIGIN_V4, 443))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("allowed.test").unwrap();
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .unwrap();
    let (mut sender, connection) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(connection);
    let mut status = Vec::new();
    for uri in [
        "https://allowed.test/echo",
        "https://other.allowed.test/echo",
    ] {
        let request = http::Request::get(uri)
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        status.push(
            sender
                .send_request(request)
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    (status[0], status[1])
}

#[test]
fn the_gateway_sends_no_icmp_redirects_to_the_agent() {
    if !bottleneck_lab::require_root("the_gateway_sends_no_icmp_redirects_to_the_agent") {
        return;
    }
    let read = |lab: &bottleneck_lab::Lab, path: &str| {
        let out = lab.exec(Host::Gateway, &["cat", path]).unwrap();
        out.stdout_str().trim().to_owned()
    };
    let bottle = Bottle::start(POLICY);
    for path in [
        "/proc/sys/net/ipv4/conf/all/send_redirects",
        "/proc/sys/net/ipv4/conf/eth1/send_redirects",
    ] {
        assert_eq!(read(&bottle.lab, path), "0", "{path}");
    }
}

/// A keep-alive h1 connection: a second request naming another host gets 421 on the same
/// connection (found hanging by the conformance matrix), and reaches no one.
#[test]
fn a_second_request_for_another_host_on_a_kept_alive_connection_gets_421() {
    if !bottleneck_lab::require_root(
        "a_second_request_for_another_host_on_a_kept_alive_connection_gets_421",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let out = bottle.curl(&[
        "--http1.1",
        "--resolve",
        &resolve("allowed.test"),
        "https://allowed.test/echo",
        "--next",
        "--http1.1",
        "--cacert",
        &bottle.ca_pem.display().to_string(),
        "--resolve",
        &resolve("allowed.test"),
        "-H",
        "Host: other.allowed.test",
        "-w",
        "\n%{http_code} %{num_connects}",
        "https://allowed.test/echo",
    ]);
    let text = out.stdout_str();
    assert!(
        text.ends_with("421 0"),
        "expected 421 on the reused connection: {out:?}"
    );
    let hosts: Vec<_> = bottle
        .lab
        .https()
        .log()
        .into_iter()
        .filter_map(|r| r.sni)
        .collect();
    assert_eq!(hosts, vec!["allowed.test".to_string()]);
}

#[test]
fn an_oversized_request_head_gets_431_on_the_transparent_path() {
    if !bottleneck_lab::require_root("an_oversized_request_head_gets_431_on_the_transparent_path") {
        return;
    }
    let bottle = Bottle::start(POLICY);
    let header_file = bottle.lab.dir().join("big-header.txt");
    std::fs::write(&header_file, format!("X-Big: {}\n", "a".repeat(100 * 1024))).unwrap();
    let header_arg = format!("@{}", header_file.display());
    for url in ["http://http.test/echo", "https://allowed.test/echo"] {
        let out = bottle.curl(&["--http1.1", "-H", &header_arg, url]);
        assert!(out.stdout_str().ends_with("431 1.1"), "{url}: {out:?}");
    }
    // Over h2 the header list limit makes hyper refuse the stream itself.
    let out = bottle.curl(&["--http2", "-H", &header_arg, "https://allowed.test/echo"]);
    assert!(!out.stdout_str().contains("200"), "{out:?}");
    assert_eq!(bottle.lab.http().requests(), 0);
    assert_eq!(bottle.lab.https().requests(), 0);
}

#[test]
fn worker_threads_sets_the_size_of_the_runtime() {
    if !bottleneck_lab::require_root("worker_threads_sets_the_size_of_the_runtime") {
        return;
    }
    // A thread names itself once it first runs, which on a loaded machine can be after
    // "ready": wait (bounded) for the expected count rather than reading it once.
    let workers = |bottle: &Bottle, expected: usize| {
        let pid = bottle.gateway.as_ref().unwrap().id();
        let count = || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .unwrap()
                .filter_map(|task| std::fs::read_to_string(task.unwrap().path().join("comm")).ok())
                .filter(|comm| comm.trim() == "tokio-rt-worker")
                .count()
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while count() != expected && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        count()
    };
    let one = Bottle::start_with_args(POLICY, &[("LAB_TOKEN", SECRET)], &["--worker-threads", "1"]);
    let out = one.curl(&[
        "--resolve",
        &resolve("allowed.test"),
        "https://allowed.test/echo",
    ]);
    assert!(out.stdout_str().ends_with("200 2"), "{out:?}");
    assert_eq!(workers(&one, 1), 1);
    drop(one);
    let three =
        Bottle::start_with_args(POLICY, &[("LAB_TOKEN", SECRET)], &["--worker-threads", "3"]);
    assert_eq!(workers(&three, 3), 3);
}
