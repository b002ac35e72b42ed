//! The gateway's DNS server end to end: real `dig`, `getent` and curl in the agent
//! namespace, the lab's authoritative DNS in the wan counting every query that reaches it.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use bottleneck_lab::addr::{DNS_V4, ORIGIN_V4, ORIGIN_V6, OTHER_ORIGIN_V4};
use bottleneck_lab::{ExecOutput, Host};
use common::Bottle;

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
  - host: "*.allowed.test"
  - host: cname.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// `dig` in the agent namespace, one try, short timeout.
fn dig(bottle: &Bottle, args: &[&str]) -> ExecOutput {
    let mut argv = vec!["dig", "+time=2", "+tries=1"];
    argv.extend_from_slice(args);
    bottle.lab.exec(Host::Agent, &argv).unwrap()
}

fn status(out: &ExecOutput) -> String {
    let text = out.stdout_str();
    text.split("status: ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or("<no answer>")
        .to_owned()
}

/// The answer section's data column (`+noall +answer` output's last field).
fn answers(out: &ExecOutput) -> Vec<String> {
    out.stdout_str()
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        .filter_map(|l| l.split_whitespace().last().map(str::to_owned))
        .collect()
}

fn gateway_dns() -> String {
    format!("@{}", bottleneck_lab::addr::GATEWAY_AGENT_V4)
}

/// Queries the wan DNS received from anything other than the gateway's wan side.
fn queries_from_the_agent(bottle: &Bottle) -> usize {
    bottle
        .lab
        .dns()
        .log()
        .iter()
        .filter(|q| {
            let ip = q.client.ip().to_canonical();
            ip != bottleneck_lab::addr::GATEWAY_WAN_V4 && ip != bottleneck_lab::addr::GATEWAY_WAN_V6
        })
        .count()
}

#[test]
fn an_allowed_name_resolves_through_the_gateway_and_repeats_come_from_its_cache() {
    if !bottleneck_lab::require_root(
        "an_allowed_name_resolves_through_the_gateway_and_repeats_come_from_its_cache",
    ) {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    bottle.lab.dns().reset_counters();
    let a = dig(&bottle, &[&gateway_dns(), "allowed.test", "A"]);
    assert_eq!(status(&a), "NOERROR", "{a:?}");
    let aaaa = dig(
        &bottle,
        &[&gateway_dns(), "+noall", "+answer", "allowed.test", "AAAA"],
    );
    assert_eq!(answers(&aaaa), vec![ORIGIN_V6.to_string()], "{aaaa:?}");
    assert_eq!(bottle.lab.dns().queries_for("allowed.test"), 2);

    // The system resolver (getent, through the agent's resolv.conf) and curl without
    // --resolve: both served from the gateway's cache.
    let getent = bottle
        .lab
        .exec(Host::Agent, &["getent", "ahostsv4", "allowed.test"])
        .unwrap();
    assert!(
        getent.stdout_str().contains(&ORIGIN_V4.to_string()),
        "{getent:?}"
    );
    let curl = bottle.curl(&["https://allowed.test/echo"]);
    assert!(curl.stdout_str().ends_with("200 2"), "{curl:?}");
    assert_eq!(
        bottle.lab.dns().queries_for("allowed.test"),
        2,
        "a cached answer was asked upstream again"
    );
    let audit = bottle.audit_text();
    assert!(
        audit.contains(r#""kind":"dns""#) && audit.contains(r#""cached":true"#),
        "{audit}"
    );
    assert_eq!(queries_from_the_agent(&bottle), 0);
}

#[test]
fn denied_names_are_nxdomain_and_the_wan_resolver_never_sees_them() {
    if !bottleneck_lab::require_root(
        "denied_names_are_nxdomain_and_the_wan_resolver_never_sees_them",
    ) {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    bottle.lab.dns().reset_counters();
    let exfil = format!("{}.{}.denied.test", "6a4f".repeat(15), "secret-chunk-0001");
    for (name, rtype) in [
        ("denied.test", "A"),
        ("denied.test", "AAAA"),
        ("denied.test", "TXT"),
        (exfil.as_str(), "TXT"),
        (exfil.as_str(), "A"),
    ] {
        let out = dig(&bottle, &[&gateway_dns(), name, rtype]);
        assert_eq!(status(&out), "NXDOMAIN", "{name} {rtype}: {out:?}");
    }
    let curl = bottle.curl(&["https://denied.test/"]);
    assert!(
        curl.stderr_str().contains("resolve"),
        "curl should fail to resolve: {curl:?}"
    );
    assert_eq!(
        bottle.lab.dns().queries(),
        0,
        "{:?}",
        bottle.lab.dns().log()
    );
    let audit = bottle.audit_text();
    assert!(audit.contains(r#""host":"denied.test""#) && audit.contains(r#""decision":"deny""#));
}

#[test]
fn queries_to_any_resolver_address_are_answered_by_the_gateway() {
    if !bottleneck_lab::require_root("queries_to_any_resolver_address_are_answered_by_the_gateway")
    {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    bottle.lab.dns().reset_counters();
    // The wan's own resolver address, and another address on the simulated internet
    // standing in for a public resolver: the agent ignores resolv.conf.
    for server in [DNS_V4.to_string(), OTHER_ORIGIN_V4.to_string()] {
        let allowed = dig(
            &bottle,
            &[
                &format!("@{server}"),
                "+noall",
                "+answer",
                "allowed.test",
                "A",
            ],
        );
        assert_eq!(
            answers(&allowed),
            vec![ORIGIN_V4.to_string()],
            "{allowed:?}"
        );
        let denied = dig(&bottle, &[&format!("@{server}"), "denied.test", "A"]);
        assert_eq!(status(&denied), "NXDOMAIN", "{denied:?}");
        let tcp = dig(
            &bottle,
            &[&format!("@{server}"), "+tcp", "other.allowed.test", "A"],
        );
        assert_eq!(status(&tcp), "NOERROR", "{tcp:?}");
    }
    assert_eq!(
        queries_from_the_agent(&bottle),
        0,
        "{:?}",
        bottle.lab.dns().log()
    );
    assert_eq!(bottle.lab.dns().queries_for("denied.test"), 0);
    let audit = bottle.audit_text();
    assert!(audit.contains(r#""client":"198.18.0.2:"#), "{audit}");
}

#[test]
fn ech_and_tunnel_query_types_get_no_records_and_malformed_packets_get_formerr() {
    if !bottleneck_lab::require_root(
        "ech_and_tunnel_query_types_get_no_records_and_malformed_packets_get_formerr",
    ) {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    bottle.lab.dns().reset_counters();
    for rtype in ["ANY", "NULL", "HTTPS", "SVCB"] {
        let out = dig(
            &bottle,
            &[
                &gateway_dns(),
                "+noall",
                "+answer",
                "+comments",
                "allowed.test",
                rtype,
            ],
        );
        assert_eq!(status(&out), "NOERROR", "{rtype}: {out:?}");
        assert!(answers(&out).is_empty(), "{rtype}: {out:?}");
    }
    let axfr = dig(&bottle, &[&gateway_dns(), "allowed.test", "AXFR"]);
    assert!(
        axfr.stdout_str().contains("Transfer failed") || axfr.stdout_str().contains("REFUSED"),
        "{axfr:?}"
    );
    assert_eq!(bottle.lab.dns().queries(), 0);

    // A header and a question that runs off the end of the datagram.
    let script = "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.settimeout(3)\ns.sendto(bytes([0x12,0x34,1,0,0,1,0,0,0,0,0,0,0x3f,0x61]),('198.18.0.1',53))\nd=s.recv(512)\nprint(d[0],d[1],d[3]&15)\n";
    let out = bottle
        .lab
        .exec(Host::Agent, &["python3", "-c", script])
        .unwrap();
    assert_eq!(
        out.stdout_str().trim(),
        "18 52 1",
        "FORMERR expected: {out:?}"
    );
    let after = dig(&bottle, &[&gateway_dns(), "allowed.test", "A"]);
    assert_eq!(
        status(&after),
        "NOERROR",
        "the server stopped serving: {after:?}"
    );
}

#[test]
fn a_truncated_udp_answer_is_retried_over_tcp_and_completes() {
    if !bottleneck_lab::require_root("a_truncated_udp_answer_is_retried_over_tcp_and_completes") {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    for i in 0..12 {
        bottle
            .lab
            .dns()
            .add_txt("big.allowed.test", &format!("{i:02}-{}", "x".repeat(180)))
            .unwrap();
    }
    let out = dig(
        &bottle,
        &[&gateway_dns(), "+noedns", "big.allowed.test", "TXT"],
    );
    let text = out.stdout_str();
    assert!(text.contains("Truncated, retrying in TCP mode"), "{out:?}");
    assert_eq!(status(&out), "NOERROR");
    assert_eq!(text.matches("\"11-xxx").count(), 1, "{out:?}");
}

#[test]
fn a_cname_from_an_allowed_name_to_a_denied_one_discloses_nothing() {
    if !bottleneck_lab::require_root(
        "a_cname_from_an_allowed_name_to_a_denied_one_discloses_nothing",
    ) {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    bottle
        .lab
        .dns()
        .add_cname("alias.allowed.test", "denied.test")
        .unwrap();
    let out = dig(&bottle, &[&gateway_dns(), "alias.allowed.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out:?}");
    let answer_part = out
        .stdout_str()
        .split("ANSWER SECTION")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    assert!(!answer_part.contains("denied"), "{out:?}");
    assert!(!out.stdout_str().contains("denied.test."), "{out:?}");
    // An allowed alias of an allowed name resolves, chain included.
    let ok = dig(
        &bottle,
        &[&gateway_dns(), "+noall", "+answer", "cname.test", "A"],
    );
    assert_eq!(
        answers(&ok),
        vec!["allowed.test.".to_string(), ORIGIN_V4.to_string()],
        "{ok:?}"
    );
}

#[test]
fn dns_over_tls_from_the_agent_fails_fast() {
    if !bottleneck_lab::require_root("dns_over_tls_from_the_agent_fails_fast") {
        return;
    }
    let bottle = Bottle::start_with_env(POLICY, &[]);
    let script = format!(
        "import socket,time\nt=time.time()\ntry:\n  socket.create_connection(('{DNS_V4}',853),timeout=5)\n  print('connected')\nexcept OSError as e:\n  print('refused', round(time.time()-t,2))\n"
    );
    let out = bottle
        .lab
        .exec(Host::Agent, &["python3", "-c", &script])
        .unwrap();
    let text = out.stdout_str();
    assert!(text.starts_with("refused"), "{out:?}");
    let seconds: f64 = text.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(
        seconds < 1.0,
        "DoT took {seconds}s to fail: a timeout, not a reject"
    );
}
