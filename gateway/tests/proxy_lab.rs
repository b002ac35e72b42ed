//! The explicit proxy (`--listen-proxy`) end to end: curl and Python in the agent namespace
//! with a proxy configured get the same answers as through the transparent path.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bottleneck_lab::Host;
use common::Bottle;

const SECRET: &str = "proxy-lab-secret-41d2";
const PROXY: &str = "198.18.0.1:3128";

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
    matches:
      - paths: [{type: prefix, value: /echo}]
  - host: other.allowed.test
    auth: {scheme: Bearer, token_ref: LAB_TOKEN}
  - host: http.test
  - host: echo.test
    tcp: [7]
  - host: private.test
    tcp: [7]
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

fn start() -> Bottle {
    Bottle::start_with_args(POLICY, &[("LAB_TOKEN", SECRET)], &["--listen-proxy", PROXY])
}

fn via_proxy(bottle: &Bottle, args: &[&str]) -> (u16, String, String) {
    let proxy = format!("http://{PROXY}");
    let mut argv = vec!["-x", proxy.as_str(), "-D", "-"];
    argv.extend_from_slice(args);
    let out = bottle.curl(&argv);
    let text = out.stdout_str();
    let (body, trailer) = text.rsplit_once('\n').unwrap_or(("", &text));
    let status = trailer
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned(), out.stderr_str())
}

/// A CONNECT by hand: print the proxy's status line, then what the tunnel gives back.
fn connect_script(target: &str, then: &str) -> String {
    format!(
        "import socket,ssl\ns=socket.create_connection(('198.18.0.1',3128),timeout=5)\ns.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\nhead=b''\nwhile b'\\r\\n\\r\\n' not in head:\n  c=s.recv(1)\n  if not c: break\n  head+=c\nprint(head.split(b'\\r\\n')[0].decode())\n{then}\n"
    )
}

#[test]
fn https_through_connect_is_intercepted_and_decided_like_the_transparent_path() {
    if !bottleneck_lab::require_root(
        "https_through_connect_is_intercepted_and_decided_like_the_transparent_path",
    ) {
        return;
    }
    let bottle = start();
    for flag in ["--http1.1", "--http2"] {
        let (status, body, stderr) = via_proxy(&bottle, &[flag, "https://allowed.test/echo?q=1"]);
        assert_eq!(status, 200, "{flag}: {stderr}");
        let json = body.rsplit("\r\n\r\n").next().unwrap_or_default();
        let echo: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(echo["sni"], "allowed.test", "{body}");
    }
    // A path the route does not list: the request inside the tunnel is refused.
    let (status, body, _) = via_proxy(&bottle, &["https://allowed.test/admin"]);
    assert_eq!(status, 403);
    assert!(body.contains("x-bottleneck-deny"), "{body}");

    // A denied host: the CONNECT itself is refused, nothing reaches the origin.
    let before = bottle.lab.https().requests();
    let (status, body, stderr) = via_proxy(&bottle, &["https://denied.test/"]);
    assert_eq!(status, 0, "curl must not get through: {body}");
    assert!(
        body.contains("403") && body.contains("x-bottleneck-deny: no_route"),
        "{body} {stderr}"
    );
    assert_eq!(bottle.lab.https().requests(), before);
    let audit = bottle.audit_text();
    assert!(audit.contains(r#""kind":"proxy""#) && audit.contains(r#""host":"denied.test""#));
}

#[test]
fn credentials_are_injected_inside_connect_tunnels_too() {
    if !bottleneck_lab::require_root("credentials_are_injected_inside_connect_tunnels_too") {
        return;
    }
    let bottle = start();
    let (status, _, stderr) = via_proxy(
        &bottle,
        &[
            "-H",
            "Authorization: Bearer agent-guess",
            "https://other.allowed.test/echo",
        ],
    );
    assert_eq!(status, 200, "{stderr}");
    let seen = bottle.lab.https().last().unwrap();
    assert_eq!(
        seen.header("authorization"),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert!(!bottle.audit_text().contains(SECRET));
}

#[test]
fn plain_http_in_absolute_form_goes_through_the_same_decision() {
    if !bottleneck_lab::require_root("plain_http_in_absolute_form_goes_through_the_same_decision") {
        return;
    }
    let bottle = start();
    let (status, body, stderr) = via_proxy(&bottle, &["http://http.test/echo"]);
    assert_eq!(status, 200, "{body} {stderr}");
    let (status, body, _) = via_proxy(&bottle, &["http://denied.test/"]);
    assert_eq!(status, 403);
    assert!(body.contains("x-bottleneck-deny: no_route"), "{body}");
    // Credentials are never injected over plain HTTP.
    let (status, body, _) = via_proxy(&bottle, &["http://other.allowed.test/echo"]);
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("auth_requires_tls"), "{body}");
}

#[test]
fn connect_by_ip_with_a_fronted_sni_or_to_an_unlisted_port_is_refused() {
    if !bottleneck_lab::require_root(
        "connect_by_ip_with_a_fronted_sni_or_to_an_unlisted_port_is_refused",
    ) {
        return;
    }
    let bottle = start();
    let run = |script: String| {
        let out = bottle
            .lab
            .exec(Host::Agent, &["python3", "-c", &script])
            .unwrap();
        out.stdout_str()
    };
    let by_ip = run(connect_script("198.51.100.10:443", ""));
    assert!(by_ip.starts_with("HTTP/1.1 403"), "{by_ip}");

    let before = bottle.lab.https().requests();
    let fronted = run(connect_script(
        "allowed.test:443",
        "ctx=ssl.create_default_context(cafile='CA')\ntry:\n  t=ctx.wrap_socket(s,server_hostname='denied.test')\n  t.sendall(b'GET / HTTP/1.1\\r\\nHost: denied.test\\r\\n\\r\\n')\n  print('tunnel answered', t.recv(100))\nexcept (OSError, ssl.SSLError) as e:\n  print('tunnel closed')",
    )
    .replace("CA", &bottle.ca_pem.display().to_string()));
    assert!(fronted.starts_with("HTTP/1.1 200"), "{fronted}");
    assert!(fronted.contains("tunnel closed"), "{fronted}");
    assert_eq!(bottle.lab.https().requests(), before);
    assert!(bottle.audit_text().contains(r#""reason":"sni_mismatch""#));

    let unlisted = run(connect_script("echo.test:8", ""));
    assert!(unlisted.starts_with("HTTP/1.1 403"), "{unlisted}");
}

#[test]
fn connect_to_a_tcp_rule_port_is_spliced() {
    if !bottleneck_lab::require_root("connect_to_a_tcp_rule_port_is_spliced") {
        return;
    }
    let bottle = start();
    let out = bottle
        .lab
        .exec(
            Host::Agent,
            &[
                "python3",
                "-c",
                &connect_script(
                    "echo.test:7",
                    "s.sendall(b'ping-via-connect')\nprint(s.recv(100).decode())",
                ),
            ],
        )
        .unwrap();
    assert_eq!(
        out.stdout_str().trim(),
        "HTTP/1.1 200 OK\nping-via-connect",
        "{out:?}"
    );
    assert_eq!(bottle.lab.echo().tcp_connections(), 1);
}

/// Regression: the explicit proxy forwarded a 100 KB request head that the transparent
/// listeners refuse with 431 (found by the conformance matrix, row 15).
#[test]
fn an_oversized_request_head_is_refused_by_the_explicit_proxy_too() {
    if !bottleneck_lab::require_root(
        "an_oversized_request_head_is_refused_by_the_explicit_proxy_too",
    ) {
        return;
    }
    let bottle = start();
    let header_file = bottle.lab.dir().join("big-header.txt");
    std::fs::write(&header_file, format!("X-Big: {}\n", "a".repeat(100 * 1024))).unwrap();
    let before = bottle.lab.http().requests();
    let header_arg = format!("@{}", header_file.display());
    let (status, _, stderr) = via_proxy(&bottle, &["-H", &header_arg, "http://http.test/echo"]);
    assert_eq!(status, 431, "{stderr}");
    assert_eq!(
        bottle.lab.http().requests(),
        before,
        "the oversized head reached the origin"
    );
}

/// Regression (found by the conformance matrix): a CONNECT to a `tcp` port of a name that
/// resolves only to an address the gateway may not dial got 200 and then a reset; it now
/// gets a 502 naming the refused address, before any tunnel exists.
#[test]
fn connect_to_a_name_with_only_refused_addresses_gets_502_not_a_tunnel() {
    if !bottleneck_lab::require_root(
        "connect_to_a_name_with_only_refused_addresses_gets_502_not_a_tunnel",
    ) {
        return;
    }
    let bottle = start();
    let out = bottle
        .lab
        .exec(
            Host::Agent,
            &[
                "python3",
                "-c",
                &connect_script("private.test:7", "print(s.recv(2000).decode())"),
            ],
        )
        .unwrap();
    let text = out.stdout_str();
    assert!(text.starts_with("HTTP/1.1 502"), "{out:?}");
    assert!(
        text.contains("10.0.0.1"),
        "the refused address is not named: {text}"
    );
    assert_eq!(bottle.lab.echo().tcp_connections(), 0);
}
