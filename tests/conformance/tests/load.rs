//! Load and faults (issue 8): the real gateway under load in the lab.
//!
//! * 10,000 HTTPS keep-alive requests over 500 concurrent connections: no errors, and the
//!   gateway's open file descriptors and RSS come back to a warm baseline afterwards.
//! * SIGKILL under load: while the gateway is down the agent has no egress at all (the
//!   nftables redirects stay with nothing listening: refused at once), the wan receives
//!   nothing; the same gateway restarted in the same lab serves again, and every request
//!   the client saw complete has its audit line.
//! * SIGHUP every 100 ms for 10 s under load: no failed request for a host both policies
//!   allow, and the last policy is the one in force.
//! * Bounded loads on the other paths (a few thousand requests each): h2 with concurrent
//!   streams on each connection, TLS to the origin's IPv6 address, HTTPS through CONNECT
//!   tunnels of the explicit proxy (HTTP/1.1, and h2 with concurrent streams), plain HTTP
//!   in absolute form through it. No errors, every response a 200 carrying the complete
//!   echo of its own request, the wan origin counted every request, every request
//!   audited, fds and RSS back near the baseline.
//!
//! Speed is never asserted, only correctness. The numbers are printed (`--nocapture`).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bottleneck_conformance::load::{self, Plan, Report, Route, Target};
use bottleneck_conformance::{Bottle, PROXY, py_statuses};
use bottleneck_lab::addr::{ECHO_V4, ORIGIN_V4, ORIGIN_V6};
use bottleneck_lab::{Host, RecordType, Transport};
use nix::sys::signal::Signal;

/// Both hosts allowed.
const POLICY_A: &str = r#"
version: 1
routes:
  - host: allowed.test
  - host: other.allowed.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// Only allowed.test: other.allowed.test is denied.
const POLICY_B: &str = r#"
version: 1
routes:
  - host: allowed.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

fn plan(connections: usize, per_connection: Option<usize>, prefix: &str) -> Plan {
    Plan {
        connections,
        requests_per_connection: per_connection,
        streams: 1,
        path_prefix: prefix.to_owned(),
        stop: Arc::new(AtomicBool::new(false)),
        // Generous: a timeout is an error and fails the test, and the debug-build gateway,
        // the origin and the client share two cores.
        request_timeout: Duration::from_secs(30),
        retry_pause: Duration::from_millis(50),
    }
}

fn summary(report: &Report) -> String {
    format!(
        "{} ok, statuses {:?}, {} errors {:?}, {:.1} s",
        report.ok(),
        report.statuses,
        report.errors,
        report.first_errors,
        report.elapsed.as_secs_f64()
    )
}

/// Waits until `done` holds (polling every 100 ms) or `timeout` passes; the last value.
fn settle<T>(timeout: Duration, mut probe: impl FnMut() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        let value = probe();
        if done(&value) || Instant::now() >= deadline {
            return value;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The hyper client pool of the gateway keeps up to 16 idle upstream connections per host
/// for 60 s (gateway/src/proxy.rs); either snapshot may hold any number of them.
const POOL_IDLE_PER_HOST: usize = 16;

#[test]
fn ten_thousand_requests_over_500_connections_leave_no_fd_or_memory_behind() {
    if !bottleneck_lab::require_root(
        "ten_thousand_requests_over_500_connections_leave_no_fd_or_memory_behind",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY_A, &[], &[]);
    let target = bottle.https_target("allowed.test");
    let (cold_rss, cold_fds) = bottle.stats();

    // Warm-up at the same concurrency: leaf certificate minted and cached, DNS cached,
    // the runtime's and the allocator's per-thread state and the connection pool at their
    // working size. The baseline is read once those connections have closed.
    let warm = bottle
        .lab
        .run_in(Host::Agent, {
            let (plan, target) = (plan(500, Some(2), "/echo/warm"), target.clone());
            move || load::run(plan, target)
        })
        .unwrap();
    assert_eq!(warm.errors, 0, "warm-up: {}", summary(&warm));
    std::thread::sleep(Duration::from_secs(1));
    let (base_rss, base_fds) = bottle.stats();

    let report = bottle
        .lab
        .run_in(Host::Agent, {
            let (plan, target) = (plan(500, Some(20), "/echo/load"), target.clone());
            move || load::run(plan, target)
        })
        .unwrap();
    // Peak as the last connection closes is not observable from here; read after.
    let slack = POOL_IDLE_PER_HOST + 4;
    let (after_fds, after_rss) = {
        let fds = settle(
            Duration::from_secs(10),
            || bottle.stats().1,
            |fds| *fds <= base_fds + slack,
        );
        (fds, bottle.stats().0)
    };
    let audit_ok = bottle
        .audit_lines()
        .iter()
        .filter(|l| {
            l["status"] == 200
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("/echo/load/"))
        })
        .count();
    println!(
        "LOAD 10k/500: {}\n  gateway cold: RSS {} kB, {} fds; warm baseline: RSS {} kB, {} fds; \
         after the run (connections closed, settled): RSS {} kB ({:+} kB), {} fds ({:+}); \
         {} audit lines with status 200; {:.0} requests/s",
        summary(&report),
        cold_rss,
        cold_fds,
        base_rss,
        base_fds,
        after_rss,
        after_rss as i64 - base_rss as i64,
        after_fds,
        after_fds as i64 - base_fds as i64,
        audit_ok,
        report.ok() as f64 / report.elapsed.as_secs_f64()
    );
    assert_eq!(report.errors, 0, "{}", summary(&report));
    assert_eq!(report.ok(), 10_000, "{}", summary(&report));
    assert_eq!(audit_ok, 10_000, "every request has its audit line");
    assert!(
        after_fds <= base_fds + slack,
        "file descriptors grew: {base_fds} before, {after_fds} after (slack {slack})"
    );
    // RSS: 500 concurrent TLS connections on each side hold buffers of a few tens of kB
    // each (rustls and hyper buffers, ~16-64 kB per connection); the allocator keeps part
    // of what was freed. 64 MiB over the warm baseline (which already served the same
    // concurrency) is far above that retained slack and far below a leak of per-request
    // state over 10,000 requests or of per-connection state over 500 connections.
    let growth_kb = after_rss.saturating_sub(base_rss);
    assert!(
        growth_kb < 64 * 1024,
        "RSS grew by {growth_kb} kB: {base_rss} kB before, {after_rss} kB after"
    );
}

/// curl in the agent: (exit success, status, stderr, seconds taken).
fn probe_curl(bottle: &Bottle, url: &str, resolve: &str) -> (u16, String, f64) {
    let started = Instant::now();
    let out = bottle.curl(&["--max-time", "5", "--resolve", resolve, url]);
    (out.status, out.stderr, started.elapsed().as_secs_f64())
}

#[test]
fn sigkill_under_load_fails_closed_then_resumes_without_losing_audit_lines() {
    if !bottleneck_lab::require_root(
        "sigkill_under_load_fails_closed_then_resumes_without_losing_audit_lines",
    ) {
        return;
    }
    let mut bottle = Bottle::start(POLICY_A, &[], &[]);
    let target = bottle.https_target("allowed.test");
    let plan = plan(32, None, "/echo/kill");
    let stop = plan.stop.clone();
    let load = load::spawn_in(&bottle.lab, Host::Agent, plan, target);

    // Let the load run, then kill the gateway in the middle of it.
    std::thread::sleep(Duration::from_secs(2));
    bottle.sigkill();
    let killed_at = Instant::now();
    // Packets the gateway sent before it died may still be on their way.
    std::thread::sleep(Duration::from_millis(300));
    let wan_before = (
        bottle.lab.https().requests(),
        bottle.lab.https().connections(),
        bottle.lab.http().requests(),
        bottle.lab.echo().tcp_connections(),
        bottle.lab.echo().udp_datagrams(),
        bottle.lab.dns().queries(),
    );

    // While it is down: new connections to allowed hosts are refused at once.
    let mut outage = Vec::new();
    for (url, resolve) in [
        (
            "https://allowed.test/echo/outage",
            format!("allowed.test:443:{ORIGIN_V4}"),
        ),
        (
            "http://http.test/echo/outage",
            "http.test:80:198.51.100.80".to_owned(),
        ),
    ] {
        let (status, stderr, secs) = probe_curl(&bottle, url, &resolve);
        assert_eq!(status, 0, "{url} got an answer with the gateway down");
        assert!(
            // curl's exit 7: the connection was refused (not a timeout, 28).
            stderr.contains("curl: (7)"),
            "{url}: {stderr}"
        );
        assert!(secs < 3.0, "{url} did not fail fast: {secs:.1} s");
        outage.push(format!("{url}: {:.2} s, {}", secs, stderr.trim()));
    }
    // Direct traffic: another port on an origin and a UDP datagram, both rejected.
    let py = bottle.python(&format!(
        r#"
for port in (8443, 7):
    try:
        conn('{ORIGIN_V4}', port, timeout=3); print('TCP', port, 'CONNECTED')
    except Exception as e: print('TCP', port, type(e).__name__)
u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(2); u.connect(('{ECHO_V4}',7))
t=time.time()
try:
    u.send(b'ping'); u.recv(100); print('UDP ANSWERED')
except socket.timeout: print('UDP SILENT')
except OSError as e: print('UDP rejected', round(time.time()-t,2), e)
"#
    ));
    assert!(
        py.contains("TCP 8443 ConnectionRefusedError")
            && py.contains("TCP 7 ConnectionRefusedError"),
        "{py}"
    );
    // icmpx admin-prohibited: the sender learns at once (EHOSTUNREACH), no timeout.
    assert!(py.contains("UDP rejected"), "{py}");
    assert!(py_statuses(&py).is_empty());
    outage.push(py.trim().replace('\n', "; "));
    // DNS (redirected to the gateway's resolver, which is gone): no answer, fast.
    for transport in [Transport::Udp, Transport::Tcp] {
        let started = Instant::now();
        let reply = bottle.lab.dns_query_with(
            Host::Agent,
            bottleneck_lab::addr::dns_v4(),
            "allowed.test",
            RecordType::A,
            transport,
        );
        let secs = started.elapsed().as_secs_f64();
        let err = reply
            .expect_err("a DNS answer with the gateway down")
            .to_string();
        assert!(
            secs < 2.5,
            "DNS over {transport:?} did not fail fast: {secs:.1} s ({err})"
        );
        outage.push(format!("DNS {transport:?}: {secs:.2} s, {err}"));
    }

    std::thread::sleep(Duration::from_millis(300));
    let wan_after = (
        bottle.lab.https().requests(),
        bottle.lab.https().connections(),
        bottle.lab.http().requests(),
        bottle.lab.echo().tcp_connections(),
        bottle.lab.echo().udp_datagrams(),
        bottle.lab.dns().queries(),
    );
    assert_eq!(
        wan_before, wan_after,
        "the wan received traffic while the gateway was down"
    );

    // Restart the same gateway in the same lab; the load client reconnects by itself.
    let restarted_at = Instant::now();
    bottle.launch();
    let ready_after = restarted_at.elapsed();
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let report = load.join().unwrap();

    let before_kill = report
        .completed
        .iter()
        .filter(|(_, t)| *t < killed_at)
        .count();
    // A response the gateway wrote just before it died may still be read by the client a
    // moment after the reap; the outage proper starts after that margin.
    let outage_from = killed_at + Duration::from_millis(300);
    let during = report
        .completed
        .iter()
        .filter(|(_, t)| *t > outage_from && *t < restarted_at)
        .count();
    let after_restart = report
        .completed
        .iter()
        .filter(|(_, t)| *t > restarted_at)
        .count();
    let failed_during = report
        .failed_at
        .iter()
        .filter(|t| **t > killed_at && **t < restarted_at)
        .count();

    // No audit line lost: every request the client saw complete with 200 has one.
    let audited: HashSet<String> = bottle
        .audit_lines()
        .iter()
        .filter(|l| l["status"] == 200)
        .filter_map(|l| l["path"].as_str().map(str::to_owned))
        .filter(|p| p.starts_with("/echo/kill/"))
        .collect();
    let missing: Vec<&String> = report
        .completed
        .iter()
        .map(|(p, _)| p)
        .filter(|p| !audited.contains(*p))
        .collect();
    println!(
        "SIGKILL: load {}\n  completed before the kill {before_kill}, during the outage {during}, \
         after the restart {after_restart}; failed attempts during the outage {failed_during}; \
         gateway ready {:.2} s after relaunch; audit lines for 200s: {} of {} present ({} \
         missing)\n  outage probes: {}",
        summary(&report),
        ready_after.as_secs_f64(),
        report.completed.len() - missing.len(),
        report.completed.len(),
        missing.len(),
        outage.join(" | ")
    );
    assert!(before_kill > 0, "no load before the kill");
    assert_eq!(during, 0, "requests completed while the gateway was down");
    assert!(
        after_restart > 0,
        "service did not resume after the restart"
    );
    assert!(
        missing.is_empty(),
        "{} completed requests have no audit line, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
}

/// Replaces the policy file atomically (the gateway never reads half a file).
fn write_policy(bottle: &Bottle, text: &str) {
    let tmp = bottle.policy_path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &bottle.policy_path).unwrap();
}

#[test]
fn sighup_every_100ms_under_load_fails_no_request_and_the_last_policy_wins() {
    if !bottleneck_lab::require_root(
        "sighup_every_100ms_under_load_fails_no_request_and_the_last_policy_wins",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY_A, &[], &[]);
    let other = format!("other.allowed.test:443:{ORIGIN_V4}");
    let first = bottle.curl(&["--resolve", &other, "https://other.allowed.test/echo"]);
    assert_eq!(
        first.status, 200,
        "policy A allows other.allowed.test: {first:?}"
    );

    let target = bottle.https_target("allowed.test");
    let plan = plan(32, None, "/echo/reload");
    let stop = plan.stop.clone();
    let load = load::spawn_in(&bottle.lab, Host::Agent, plan, target);
    std::thread::sleep(Duration::from_millis(500));

    // 100 reloads, alternating B and A, ending with B.
    let storm = Instant::now();
    let mut signals = 0;
    for i in 0..100 {
        write_policy(&bottle, if i % 2 == 0 { POLICY_B } else { POLICY_A });
        bottle.signal(Signal::SIGHUP);
        signals += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    write_policy(&bottle, POLICY_B);
    bottle.signal(Signal::SIGHUP);
    signals += 1;
    let storm_secs = storm.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let report = load.join().unwrap();

    std::thread::sleep(Duration::from_millis(200));
    let last = bottle.curl(&["-i", "--resolve", &other, "https://other.allowed.test/echo"]);
    let gateway_alive = bottle.stats();
    let gateway = bottle.gateway.as_ref().unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&gateway.stdout()),
        String::from_utf8_lossy(&gateway.stderr())
    );
    let reloaded = log.matches("policy reloaded").count();
    let refused = log.matches("reload refused").count();
    println!(
        "RELOAD: {signals} SIGHUPs in {storm_secs:.1} s; load on allowed.test: {}; \
         other.allowed.test after the storm: {}; gateway logged {reloaded} reloads, \
         {refused} refused; gateway RSS {} kB, {} fds",
        summary(&report),
        last.summary(),
        gateway_alive.0,
        gateway_alive.1
    );
    assert_eq!(report.errors, 0, "{}", summary(&report));
    assert_eq!(
        report.ok(),
        report.statuses.values().sum::<u64>(),
        "{}",
        summary(&report)
    );
    assert!(report.ok() > 0);
    assert_eq!(refused, 0, "a valid policy was refused:\n{log}");
    assert!(reloaded > 0, "no reload logged:\n{log}");
    assert_eq!(
        last.status, 403,
        "the last policy (B) denies other.allowed.test: {last:?}"
    );
    assert!(
        last.body
            .to_ascii_lowercase()
            .contains("x-bottleneck-deny: no_route"),
        "{last:?}"
    );
}

/// The heavier variant (a separate command, ~1 min):
/// `cargo test -p bottleneck-conformance --test load -- --ignored --nocapture`.
/// Five rounds of 10,000 requests over 500 connections on one gateway: RSS must level
/// off (the allocator's retained memory converges; a leak keeps growing by round).
#[test]
#[ignore = "heavier load test, run on demand"]
fn fifty_thousand_requests_in_five_rounds_rss_levels_off() {
    if !bottleneck_lab::require_root("fifty_thousand_requests_in_five_rounds_rss_levels_off") {
        return;
    }
    let bottle = Bottle::start(POLICY_A, &[], &[]);
    let target = bottle.https_target("allowed.test");
    let mut rounds = Vec::new();
    for round in 0..5 {
        let report = bottle
            .lab
            .run_in(Host::Agent, {
                let plan = plan(500, Some(20), &format!("/echo/round{round}"));
                let target = target.clone();
                move || load::run(plan, target)
            })
            .unwrap();
        assert_eq!(report.errors, 0, "round {round}: {}", summary(&report));
        assert_eq!(report.ok(), 10_000, "round {round}: {}", summary(&report));
        std::thread::sleep(Duration::from_secs(1));
        rounds.push(bottle.stats());
        println!(
            "ROUND {round}: {}; gateway RSS {} kB, {} fds",
            summary(&report),
            rounds[round].0,
            rounds[round].1
        );
    }
    let fds: Vec<usize> = rounds.iter().map(|r| r.1).collect();
    assert!(
        fds.iter().max().unwrap() - fds.iter().min().unwrap() <= POOL_IDLE_PER_HOST + 4,
        "fds by round: {fds:?}"
    );
    // Measured: +3 MiB, +3 MiB, then +0.1 MiB per round. 8 MiB over the last two rounds
    // (20,000 requests) would be 400 bytes per request: a leak, not allocator slack.
    let late_growth = rounds[4].0.saturating_sub(rounds[2].0);
    assert!(
        late_growth < 8 * 1024,
        "RSS still growing after round 2: {late_growth} kB; by round {rounds:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Bounded load on the other paths: h2 streams, IPv6, the explicit proxy.
// ---------------------------------------------------------------------------------------

/// How a bounded load is shaped.
struct Shape {
    connections: usize,
    per_connection: usize,
    /// Concurrent h2 streams per connection (1 for HTTP/1.1).
    streams: usize,
}

/// A bounded load on one path with the checks of the 10k test: a warm-up at the same
/// concurrency, then the run; no error, every response a 200 with the complete echo of its
/// request, the wan origin counted every request, each has its audit line, and the
/// gateway's fds come back to the warm baseline and its RSS grows a bounded amount.
/// Returns the run's audit lines (status 200, path under the run's prefix).
fn bounded_load(
    label: &str,
    bottle: &Bottle,
    target: Target,
    shape: Shape,
) -> Vec<serde_json::Value> {
    let origin_requests = |tls: bool| {
        if tls {
            bottle.lab.https().requests()
        } else {
            bottle.lab.http().requests()
        }
    };
    let shaped = |per_connection: usize, prefix: &str| Plan {
        streams: shape.streams,
        ..plan(shape.connections, Some(per_connection), prefix)
    };
    let (cold_rss, cold_fds) = bottle.stats();
    let warm = bottle
        .lab
        .run_in(Host::Agent, {
            let (plan, target) = (shaped(shape.streams, "/echo/warm"), target.clone());
            move || load::run(plan, target)
        })
        .unwrap();
    assert_eq!(warm.errors, 0, "{label} warm-up: {}", summary(&warm));
    std::thread::sleep(Duration::from_secs(1));
    let (base_rss, base_fds) = bottle.stats();
    let origin_before = origin_requests(target.tls);

    let prefix = format!("/echo/{}", label.replace(' ', "-"));
    let report = bottle
        .lab
        .run_in(Host::Agent, {
            let (plan, target) = (shaped(shape.per_connection, &prefix), target.clone());
            move || load::run(plan, target)
        })
        .unwrap();
    let slack = POOL_IDLE_PER_HOST + 4;
    let after_fds = settle(
        Duration::from_secs(10),
        || bottle.stats().1,
        |fds| *fds <= base_fds + slack,
    );
    let after_rss = bottle.stats().0;
    let origin_counted = origin_requests(target.tls) - origin_before;
    let audit: Vec<serde_json::Value> = bottle
        .audit_lines()
        .into_iter()
        .filter(|l| {
            l["status"] == 200
                && l["path"]
                    .as_str()
                    .is_some_and(|p| p.starts_with(&format!("{prefix}/")))
        })
        .collect();
    let expected = (shape.connections * shape.per_connection) as u64;
    println!(
        "LOAD {label} ({} connections x {} requests, {} streams each): {}\n  {} connections \
         made; gateway cold: RSS {cold_rss} kB, {cold_fds} fds; warm baseline: RSS {base_rss} \
         kB, {base_fds} fds; after (settled): RSS {after_rss} kB ({:+} kB), {after_fds} fds \
         ({:+}); the origin counted {origin_counted}; {} audit lines with status 200; {:.0} \
         requests/s",
        shape.connections,
        shape.per_connection,
        shape.streams,
        summary(&report),
        report.connections,
        after_rss as i64 - base_rss as i64,
        after_fds as i64 - base_fds as i64,
        audit.len(),
        report.ok() as f64 / report.elapsed.as_secs_f64()
    );
    assert_eq!(report.errors, 0, "{label}: {}", summary(&report));
    assert_eq!(report.ok(), expected, "{label}: {}", summary(&report));
    assert_eq!(report.attempts(), expected, "{label}: {}", summary(&report));
    assert_eq!(
        report.connections, shape.connections as u64,
        "{label}: every connection carried all its requests (keep-alive, no reconnect)"
    );
    assert_eq!(
        origin_counted, expected,
        "{label}: the wan origin counted {origin_counted} requests"
    );
    assert_eq!(
        audit.len() as u64,
        expected,
        "{label}: every request has its audit line"
    );
    assert!(
        after_fds <= base_fds + slack,
        "{label}: file descriptors grew: {base_fds} before, {after_fds} after (slack {slack})"
    );
    // A fraction of the 10k test's load: 32 MiB over the warm baseline is far above the
    // allocator's retained slack (+3 MiB measured for 10,000 requests) and far below a
    // leak of per-request or per-connection state.
    let growth_kb = after_rss.saturating_sub(base_rss);
    assert!(
        growth_kb < 32 * 1024,
        "{label}: RSS grew by {growth_kb} kB: {base_rss} kB before, {after_rss} kB after"
    );
    audit
}

/// Policy A with the explicit proxy listening.
fn proxied_bottle() -> Bottle {
    Bottle::start(POLICY_A, &[], &["--listen-proxy", PROXY])
}

#[test]
fn h2_load_with_four_concurrent_streams_per_connection_completes_and_leaves_nothing_behind() {
    if !bottleneck_lab::require_root(
        "h2_load_with_four_concurrent_streams_per_connection_completes_and_leaves_nothing_behind",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY_A, &[], &[]);
    let target = Target {
        h2: true,
        ..bottle.https_target("allowed.test")
    };
    let shape = Shape {
        connections: 100,
        per_connection: 40,
        streams: 4,
    };
    bounded_load("h2", &bottle, target, shape);
}

#[test]
fn load_to_the_origins_ipv6_address_completes_and_leaves_nothing_behind() {
    if !bottleneck_lab::require_root(
        "load_to_the_origins_ipv6_address_completes_and_leaves_nothing_behind",
    ) {
        return;
    }
    let bottle = Bottle::start(POLICY_A, &[], &[]);
    let target = Target {
        addr: SocketAddr::from((ORIGIN_V6, 443)),
        ..bottle.https_target("allowed.test")
    };
    let shape = Shape {
        connections: 150,
        per_connection: 20,
        streams: 1,
    };
    let audit = bounded_load("ipv6", &bottle, target, shape);
    // The gateway saw the agent's IPv6 connections (not a v4 fallback).
    let want = format!("[{ORIGIN_V6}]:443");
    let v4 = audit
        .iter()
        .filter(|l| l["original_dst"].as_str() != Some(want.as_str()))
        .count();
    assert_eq!(v4, 0, "audit lines not to {want}: {:?}", audit.first());
}

#[test]
fn https_load_through_connect_tunnels_of_the_explicit_proxy_completes_and_leaves_nothing_behind() {
    if !bottleneck_lab::require_root(
        "https_load_through_connect_tunnels_of_the_explicit_proxy_completes_and_leaves_nothing_behind",
    ) {
        return;
    }
    let bottle = proxied_bottle();
    let target = Target {
        addr: PROXY.parse().unwrap(),
        route: Route::Connect,
        ..bottle.https_target("allowed.test")
    };
    let shape = Shape {
        connections: 150,
        per_connection: 20,
        streams: 1,
    };
    bounded_load("connect", &bottle, target, shape);
}

#[test]
fn h2_load_inside_connect_tunnels_of_the_explicit_proxy_completes_and_leaves_nothing_behind() {
    if !bottleneck_lab::require_root(
        "h2_load_inside_connect_tunnels_of_the_explicit_proxy_completes_and_leaves_nothing_behind",
    ) {
        return;
    }
    let bottle = proxied_bottle();
    let target = Target {
        addr: PROXY.parse().unwrap(),
        route: Route::Connect,
        h2: true,
        ..bottle.https_target("allowed.test")
    };
    let shape = Shape {
        connections: 50,
        per_connection: 40,
        streams: 4,
    };
    bounded_load("connect-h2", &bottle, target, shape);
}

#[test]
fn absolute_form_http_load_through_the_explicit_proxy_completes_and_leaves_nothing_behind() {
    if !bottleneck_lab::require_root(
        "absolute_form_http_load_through_the_explicit_proxy_completes_and_leaves_nothing_behind",
    ) {
        return;
    }
    let bottle = proxied_bottle();
    let target = Target {
        addr: PROXY.parse().unwrap(),
        tls: false,
        route: Route::AbsoluteForm,
        ..bottle.https_target("allowed.test")
    };
    let shape = Shape {
        connections: 150,
        per_connection: 20,
        streams: 1,
    };
    bounded_load("absolute", &bottle, target, shape);
}
