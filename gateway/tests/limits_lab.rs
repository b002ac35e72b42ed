//! Resource limits end to end: a request body over `--max-request-body-bytes` (declared
//! or streamed, h1 and h2, TLS and plain HTTP) gets 413 and never reaches the origin as a
//! whole request; a client over `--max-connections-per-client` has its extra connections
//! closed at once while another client keeps being served.

// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bottleneck_lab::Host;
use bottleneck_lab::addr::{AGENT_V4, ORIGIN_V4};
use common::Bottle;

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
  - host: http.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// The body bound the tests run with.
const LIMIT: usize = 100_000;

fn body_file(bottle: &Bottle, bytes: usize) -> String {
    let path = bottle.lab.dir().join(format!("body-{bytes}"));
    std::fs::write(&path, vec![b'x'; bytes]).unwrap();
    format!("@{}", path.display())
}

fn reached(bottle: &Bottle, path: &str) -> usize {
    let https = bottle.lab.https().log();
    let http = bottle.lab.http().log();
    https
        .iter()
        .chain(http.iter())
        .filter(|r| r.path == path)
        .count()
}

#[test]
fn a_request_body_over_the_bound_gets_413_and_never_reaches_the_origin_whole() {
    if !bottleneck_lab::require_root(
        "a_request_body_over_the_bound_gets_413_and_never_reaches_the_origin_whole",
    ) {
        return;
    }
    let limit = LIMIT.to_string();
    let bottle = Bottle::start_with_args(POLICY, &[], &["--max-request-body-bytes", &limit]);
    let small = body_file(&bottle, LIMIT);
    let large = body_file(&bottle, LIMIT * 3);

    // Exactly the bound passes, with every byte.
    let out = bottle.curl(&[
        "--http1.1",
        "--data-binary",
        &small,
        "https://allowed.test/at-limit",
    ]);
    assert!(out.stdout_str().ends_with("200 1.1"), "{out:?}");
    let log = bottle.lab.https().log();
    let at_limit = log.iter().find(|r| r.path == "/at-limit").unwrap();
    assert_eq!(at_limit.body_len, LIMIT as u64);

    let cases: [(&str, Vec<&str>); 4] = [
        (
            "/declared-h1",
            vec!["--http1.1", "https://allowed.test/declared-h1"],
        ),
        ("/declared-plain", vec!["http://http.test/declared-plain"]),
        (
            "/chunked-h1",
            vec![
                "--http1.1",
                "-H",
                "Transfer-Encoding: chunked",
                "https://allowed.test/chunked-h1",
            ],
        ),
        (
            "/chunked-plain",
            vec![
                "-H",
                "Transfer-Encoding: chunked",
                "http://http.test/chunked-plain",
            ],
        ),
    ];
    for (path, args) in cases {
        let mut argv = vec!["-D", "-", "--data-binary", large.as_str()];
        argv.extend(args);
        let out = bottle.curl(&argv);
        let text = out.stdout_str();
        assert!(
            text.contains(" 413") && text.contains("x-bottleneck-deny: body_too_large"),
            "{path}: {out:?}"
        );
        assert_eq!(reached(&bottle, path), 0, "{path} reached the origin");
    }

    // HTTP/2, declared and streamed. curl 7.88 reports a server's early response followed
    // by RST_STREAM(NO_ERROR) (RFC 9113 section 8.1) as a framing error, so Node's client,
    // which shows the response, speaks for HTTP/2 here.
    for (path, declared) in [("/declared-h2", true), ("/streamed-h2", false)] {
        let out = bottle
            .lab
            .command(
                Host::Agent,
                &[
                    "node",
                    "-e",
                    H2_UPLOAD,
                    &bottle.ca_pem.display().to_string(),
                    path,
                    &(LIMIT * 3).to_string(),
                    if declared { "declared" } else { "streamed" },
                ],
            )
            .timeout(Duration::from_secs(20))
            .run()
            .unwrap();
        assert_eq!(
            out.stdout_str().trim(),
            "413 body_too_large",
            "{path}: {out:?}"
        );
        assert_eq!(reached(&bottle, path), 0, "{path} reached the origin");
    }

    let audit = bottle.audit_text();
    assert_eq!(
        audit.matches(r#""reason":"body_too_large""#).count(),
        6,
        "{audit}"
    );
    assert!(
        audit.contains(r#""decision":"deny""#) && audit.contains(r#""status":413"#),
        "{audit}"
    );
}

/// POSTs `size` bytes over HTTP/2 to `https://allowed.test{path}` (with a content-length,
/// or streamed in pieces without one) and prints the status and `x-bottleneck-deny` once
/// the response has been read.
const H2_UPLOAD: &str = r#"
const http2 = require("http2"), fs = require("fs");
const [ca, path, size, mode] = process.argv.slice(1);
const session = http2.connect("https://allowed.test", { ca: fs.readFileSync(ca) });
session.on("error", (e) => { console.log("session error " + e.code); process.exit(1); });
const headers = { ":method": "POST", ":path": path };
if (mode === "declared") headers["content-length"] = size;
const req = session.request(headers);
let status = "no response";
req.on("response", (h) => { status = h[":status"] + " " + h["x-bottleneck-deny"]; });
req.on("error", (e) => { console.log("stream error " + e.code); process.exit(1); });
// The whole response read is the answer, whether or not the upload could finish.
req.on("end", () => { console.log(status); process.exit(0); });
req.resume();
const piece = Buffer.alloc(16384, 120);
let left = Number(size);
(function write() {
  while (left > 0) {
    const n = Math.min(left, piece.length);
    left -= n;
    if (!req.write(piece.subarray(0, n))) { req.once("drain", write); return; }
  }
  req.end();
})();
"#;

/// Opens `held` connections to the TLS port and keeps them silent, then opens `extra`
/// more and reports how many of those the gateway closed within two seconds; prints
/// `closed=N alive=M` and waits (at most 30 s) for the file `release` before closing the
/// held ones.
const FLOOD: &str = r#"
import os, socket, sys, time
addr, held, extra, release = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
keep = []
for _ in range(held):
    s = socket.create_connection((addr, 443), timeout=5)
    keep.append(s)
time.sleep(0.3)
closed = 0
for _ in range(extra):
    s = socket.create_connection((addr, 443), timeout=5)
    s.settimeout(2)
    try:
        if s.recv(1) == b"":
            closed += 1
    except ConnectionResetError:
        closed += 1
    except socket.timeout:
        pass
    s.close()
# The held ones must still be open (the gateway waits for their ClientHello).
alive = 0
for s in keep:
    s.settimeout(0.2)
    try:
        s.recv(1)
    except socket.timeout:
        alive += 1
    except OSError:
        pass
print(f"closed={closed} alive={alive}", flush=True)
deadline = time.time() + 30
while not os.path.exists(release) and time.time() < deadline:
    time.sleep(0.05)
for s in keep:
    s.close()
time.sleep(0.5)
"#;

#[test]
fn a_client_at_its_connection_bound_is_refused_while_another_client_is_served() {
    if !bottleneck_lab::require_root(
        "a_client_at_its_connection_bound_is_refused_while_another_client_is_served",
    ) {
        return;
    }
    let bottle = Bottle::start_with_args(POLICY, &[], &["--max-connections-per-client", "4"]);
    // A second client on the agent network (a second address in the lab's own namespace).
    bottle
        .lab
        .exec(
            Host::Agent,
            &["ip", "addr", "add", "198.18.0.3/24", "dev", "eth0"],
        )
        .unwrap();

    let origin = ORIGIN_V4.to_string();
    let release = bottle.lab.dir().join("release");
    let release_arg = release.display().to_string();
    let mut flood = bottle
        .lab
        .command(
            Host::Agent,
            &["python3", "-c", FLOOD, &origin, "4", "20", &release_arg],
        )
        .timeout(Duration::from_secs(60))
        .spawn()
        .unwrap();
    flood
        .wait_for_output("closed=", Duration::from_secs(30))
        .unwrap();

    // While the first client is at its bound, the second is served, and a further
    // connection of the first is refused.
    let other = bottle.curl(&["--interface", "198.18.0.3", "https://allowed.test/other"]);
    assert!(other.stdout_str().ends_with("200 2"), "{other:?}");
    let refused = bottle.curl(&["-4", "https://allowed.test/refused"]);
    assert!(!refused.status.success(), "{refused:?}");
    assert_eq!(reached(&bottle, "/refused"), 0);

    std::fs::write(&release, "").unwrap();
    let exited = flood.wait_timeout(Duration::from_secs(20)).unwrap();
    let text = String::from_utf8_lossy(&flood.stdout()).into_owned();
    assert!(exited.is_some_and(|s| s.success()), "{text}");
    assert!(text.contains("closed=20 alive=4"), "{text}");

    // Its slots came back once its connections closed.
    let again = bottle.curl(&["-4", "https://allowed.test/again"]);
    assert!(again.stdout_str().ends_with("200 2"), "{again:?}");

    // Audited: one line at the first refusal, one counting the rest when a slot returned.
    let audit = bottle.audit_text();
    let lines: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v["reason"] == "client_connection_limit")
        .collect();
    assert!(!lines.is_empty(), "{audit}");
    let client = format!("{AGENT_V4}:0");
    assert!(
        lines.iter().all(|l| l["client"] == client.as_str()),
        "{lines:?}"
    );
    let refused_total: u64 = lines.iter().map(|l| l["refused"].as_u64().unwrap()).sum();
    assert_eq!(refused_total, 21, "{lines:?}");
}
