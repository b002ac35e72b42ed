//! Upstream faults end to end: an origin with a certificate for another name, an expired
//! one, a self-signed one, an origin that never answers and one that stops mid-body. Each
//! gives the agent a clear answer (502/504 naming the reason, or a cut-off body) within the
//! configured idle time, and an audit line.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::Bottle;

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
  - host: wrongcert.test
  - host: expired.test
  - host: selfsigned.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

fn start() -> Bottle {
    Bottle::start_with_args(POLICY, &[], &["--upstream-idle-seconds", "2"])
}

#[test]
fn an_upstream_certificate_that_fails_verification_gives_a_502_naming_the_cause() {
    if !bottleneck_lab::require_root(
        "an_upstream_certificate_that_fails_verification_gives_a_502_naming_the_cause",
    ) {
        return;
    }
    let bottle = start();
    for (name, cause) in [
        ("wrongcert.test", "not valid for name"),
        ("expired.test", "expired"),
        ("selfsigned.test", "UnknownIssuer"),
    ] {
        let out = bottle.curl(&["-D", "-", &format!("https://{name}/echo")]);
        let text = out.stdout_str();
        assert!(
            text.ends_with("502 1.1") || text.ends_with("502 2"),
            "{name}: {out:?}"
        );
        assert!(
            text.contains("x-bottleneck-deny: upstream_failed"),
            "{name}: {text}"
        );
        assert!(
            text.contains(cause),
            "{name}: the cause {cause} is not named: {text}"
        );
    }
    // None of them got a request through.
    let reached: Vec<_> = bottle
        .lab
        .https()
        .log()
        .into_iter()
        .filter_map(|r| r.sni)
        .collect();
    assert!(reached.is_empty(), "{reached:?}");
    let audit = bottle.audit_text();
    assert_eq!(audit.matches(r#""status":502"#).count(), 3, "{audit}");
}

#[test]
fn an_upstream_that_never_answers_gets_504_after_the_idle_time() {
    if !bottleneck_lab::require_root("an_upstream_that_never_answers_gets_504_after_the_idle_time")
    {
        return;
    }
    let bottle = start();
    let started = Instant::now();
    let out = bottle.curl(&["-D", "-", "https://allowed.test/stall/head"]);
    let waited = started.elapsed();
    let text = out.stdout_str();
    assert!(
        text.contains("x-bottleneck-deny: upstream_timeout"),
        "{out:?}"
    );
    assert!(text.ends_with("504 2"), "{out:?}");
    // The idle time is 2 s; curl's own limit (10 s) must not be what ended it.
    assert!(waited < Duration::from_secs(8), "took {waited:?}");
    assert!(
        bottle
            .audit_text()
            .contains(r#""reason":"upstream_timeout""#)
    );
}

#[test]
fn an_upstream_that_stops_mid_body_is_cut_off_after_the_idle_time() {
    if !bottleneck_lab::require_root(
        "an_upstream_that_stops_mid_body_is_cut_off_after_the_idle_time",
    ) {
        return;
    }
    let bottle = start();
    let started = Instant::now();
    let out = bottle.curl(&["--http1.1", "https://allowed.test/stall/body"]);
    let waited = started.elapsed();
    assert!(
        out.stdout_str().starts_with("first chunk, then silence"),
        "{out:?}"
    );
    assert!(
        !out.status.success(),
        "a cut-off body must be an error for the client: {out:?}"
    );
    assert!(waited < Duration::from_secs(8), "took {waited:?}");
    let audit = bottle.audit_text();
    assert!(
        audit.contains(r#""reason":"upstream_idle_timeout""#),
        "{audit}"
    );
}
