//! The TCP relay for `tcp` rules end to end: the agent resolves through the gateway's DNS,
//! connects to the address it was given, and the relay decides by the pinned name.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::IpAddr;

use bottleneck_lab::Host;
use bottleneck_lab::addr::{ECHO_V4, ECHO_V6, ORIGIN_V4};
use common::Bottle;

const POLICY: &str = r#"
version: 1
routes:
  - host: echo.test
    tcp: [7]
  - host: allowed.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// Connect from the agent, send a line, print `ok <reply>` or `refused <seconds>`.
fn echo(bottle: &Bottle, ip: IpAddr, port: u16) -> String {
    let script = format!(
        "import socket,time\nt=time.time()\ntry:\n  s=socket.create_connection(('{ip}',{port}),timeout=5)\n  s.sendall(b'ping-through-relay')\n  s.settimeout(5)\n  print('ok', s.recv(100).decode())\nexcept OSError as e:\n  print('refused', round(time.time()-t,2), e)\n"
    );
    let out = bottle
        .lab
        .exec(Host::Agent, &["python3", "-c", &script])
        .unwrap();
    out.stdout_str().trim().to_owned()
}

fn resolve(bottle: &Bottle, name: &str) {
    let out = bottle
        .lab
        .exec(Host::Agent, &["getent", "ahosts", name])
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

fn assert_refused_fast(reply: &str) {
    assert!(reply.starts_with("refused"), "{reply}");
    let seconds: f64 = reply.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(seconds < 1.0, "refused only after {seconds}s: {reply}");
}

#[test]
fn a_tcp_rule_reaches_only_addresses_the_agent_resolved_for_its_name() {
    if !bottleneck_lab::require_root(
        "a_tcp_rule_reaches_only_addresses_the_agent_resolved_for_its_name",
    ) {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    let echo_server = bottle.lab.echo();

    // Never resolved: the address alone opens nothing.
    assert_refused_fast(&echo(&bottle, IpAddr::V4(ECHO_V4), 7));
    assert_eq!(echo_server.tcp_connections(), 0);
    assert!(
        bottle
            .audit_text()
            .contains(r#""reason":"unpinned_address""#)
    );

    resolve(&bottle, "echo.test");
    assert_eq!(
        echo(&bottle, IpAddr::V4(ECHO_V4), 7),
        "ok ping-through-relay"
    );
    assert_eq!(
        echo(&bottle, IpAddr::V6(ECHO_V6), 7),
        "ok ping-through-relay"
    );
    assert_eq!(echo_server.tcp_connections(), 2);
    let audit = bottle.audit_text();
    let relayed: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["kind"] == "tcp" && v["decision"] == "allow")
        .collect();
    assert_eq!(relayed.len(), 2, "{audit}");
    assert_eq!(relayed[0]["host"], "echo.test");
    assert_eq!(relayed[0]["bytes_up"], 18);
    assert_eq!(relayed[0]["bytes_down"], 18);
}

#[test]
fn a_pinned_address_of_a_name_without_that_tcp_port_is_refused() {
    if !bottleneck_lab::require_root("a_pinned_address_of_a_name_without_that_tcp_port_is_refused")
    {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    resolve(&bottle, "allowed.test");
    // allowed.test is pinned to ORIGIN_V4 but has no `tcp` rule for port 7.
    assert_refused_fast(&echo(&bottle, IpAddr::V4(ORIGIN_V4), 7));
    let audit = bottle.audit_text();
    assert!(
        audit.contains(r#""host":"allowed.test""#)
            && audit.contains(r#""reason":"port_not_allowed""#),
        "{audit}"
    );
}

#[test]
fn a_port_without_any_tcp_rule_is_reset_by_the_firewall() {
    if !bottleneck_lab::require_root("a_port_without_any_tcp_rule_is_reset_by_the_firewall") {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    resolve(&bottle, "echo.test");
    assert_refused_fast(&echo(&bottle, IpAddr::V4(ECHO_V4), 2222));
    assert_eq!(bottle.lab.echo().tcp_connections(), 0);
}
