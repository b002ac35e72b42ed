//! `bottleneck run --backend podman|docker` end to end with real containers built from
//! `images/` (`Containerfile.agent`, `Containerfile.gateway`) on a local Debian base
//! (`images/base-image.sh`: debootstrap once per machine, then cached by tag; no registry).
//!
//! The simulated internet is a "wan" container on an `--internal` network of the test's
//! own (so both of the bottle's networks are internal and nothing can leave): the test
//! process enters that container's network namespace to bind the wan's sockets (DNS for
//! `*.test` from `bottleneck_lab`, an HTTPS origin signed by a test CA that records what
//! it received) and serves them itself. The gateway's upstream DNS is the wan (the
//! policy's `dns.upstream`); the launcher attaches the gateway to the wan network with
//! the hidden `--egress-network`.
//!
//! Per engine: the allowed/denied matrix with `--egress=transparent` and `--egress=proxy`,
//! the secret injected by the gateway and absent from the agent, from every process's
//! command line and from the audit log, `bottleneck exec` running without capabilities,
//! SIGINT mid-run, a failure half-way, and nothing left behind (containers, networks,
//! state). podman must run in CI (installed by .ci/run); docker runs where
//! `docker info` succeeds, and the output says when either was skipped and why.
//!
//! Needs `bottleneck-gateway` and `bottleneck-init` built next to `bottleneck`
//! (`cargo test --workspace` builds them).
#![cfg(target_os = "linux")]
// Test support code may panic: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bottleneck_lab::{DnsServer, TestCa};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BIN: &str = env!("CARGO_BIN_EXE_bottleneck");
const BASE_TAG: &str = "bottleneck-base:bookworm";
const SECRET_VAR: &str = "BN_ENGINE_TEST_TOKEN";
/// Deadline of one whole `bottleneck run` in these tests.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

fn in_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty())
}

/// Skips (outside CI) or fails (in CI, where `.ci/run` installs what is missing).
fn unavailable(test: &str, reason: &str, ci_can_fix: bool) -> bool {
    if in_ci() && ci_can_fix {
        panic!("{test}: cannot run in CI: {reason}");
    }
    eprintln!("SKIPPED {test}: {reason}");
    println!("SKIPPED {test}: {reason}");
    false
}

/// One engine as the tests drive it.
#[derive(Clone)]
struct Eng {
    program: &'static str,
    /// podman on this machine kind: runc, cgroupfs, explicit ulimits (CRATES.md).
    conf: Option<PathBuf>,
    /// The wan network's /24 (distinct per engine: engines refuse overlapping subnets).
    wan: [u8; 3],
}

impl Eng {
    fn cmd(&self) -> Command {
        let mut c = Command::new(self.program);
        if let Some(conf) = &self.conf {
            c.env("CONTAINERS_CONF", conf);
        }
        c.stdin(Stdio::null());
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{} {}: {}",
            self.program,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn wan_ip(&self, last: u8) -> Ipv4Addr {
        Ipv4Addr::new(self.wan[0], self.wan[1], self.wan[2], last)
    }

    fn wan_subnet(&self) -> String {
        format!("{}.{}.{}.0/24", self.wan[0], self.wan[1], self.wan[2])
    }
}

/// Why `program` cannot run containers here, if it cannot.
fn engine_problem(eng: &Eng) -> Option<String> {
    match eng.cmd().args(["info"]).output() {
        Err(e) => Some(format!("{} is not installed ({e})", eng.program)),
        Ok(o) if !o.status.success() => Some(format!(
            "`{} info` failed: {}",
            eng.program,
            String::from_utf8_lossy(&o.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
        Ok(_) => None,
    }
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// Test-only images, removed on drop (the cached base image stays).
struct Images {
    eng: Eng,
    agent: String,
    gateway: String,
    base: String,
}

impl Drop for Images {
    fn drop(&mut self) {
        let _ = self
            .eng
            .run(&["rmi", "-f", self.agent.as_str(), self.gateway.as_str()]);
    }
}

fn build_images(eng: &Eng) -> Images {
    let started = Instant::now();
    let mut script = Command::new(repo().join("images/base-image.sh"));
    if let Some(conf) = &eng.conf {
        script.env("CONTAINERS_CONF", conf);
    }
    let out = script
        .args([eng.program, BASE_TAG])
        .env_remove("CACHE")
        .stdin(Stdio::null())
        .output();
    let out = match out {
        Ok(o) => o,
        Err(e) => panic!("images/base-image.sh: {e}"),
    };
    let log = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "images/base-image.sh failed:\n{log}");
    println!(
        "{}: {} ({} ms)",
        eng.program,
        log.trim().replace('\n', "; "),
        started.elapsed().as_millis()
    );
    let base = if eng.program == "podman" {
        format!("localhost/{BASE_TAG}")
    } else {
        BASE_TAG.to_owned()
    };
    // A build context with the binaries (debug info stripped: smaller, faster to send).
    let ctx = tempdir(&format!("ctx-{}", eng.program));
    let bin_dir = Path::new(BIN).parent().unwrap();
    for name in ["bottleneck-init", "bottleneck-gateway"] {
        let src = bin_dir.join(name);
        assert!(
            src.is_file(),
            "{} is missing: run `cargo build --workspace` first",
            src.display()
        );
        let dst = ctx.join(name);
        let stripped = Command::new("objcopy")
            .arg("--strip-debug")
            .arg(&src)
            .arg(&dst)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            fs::copy(&src, &dst).unwrap();
        }
    }
    fs::copy(
        repo().join("images/bottleneck-gateway-entry"),
        ctx.join("bottleneck-gateway-entry"),
    )
    .unwrap();
    let pid = std::process::id();
    let images = Images {
        eng: eng.clone(),
        agent: format!("localhost/bn-test-agent:{pid}"),
        gateway: format!("localhost/bn-test-gateway:{pid}"),
        base,
    };
    for (file, tag) in [
        ("Containerfile.agent", &images.agent),
        ("Containerfile.gateway", &images.gateway),
    ] {
        let started = Instant::now();
        let base_arg = format!("BASE={}", images.base);
        let containerfile = repo().join("images").join(file);
        let out = eng
            .cmd()
            .args(["build", "-q", "-f"])
            .arg(&containerfile)
            .args(["--build-arg", &base_arg, "-t", tag])
            .arg(&ctx)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{} build {file}: {}",
            eng.program,
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "{}: built {tag} from images/{file} ({} ms)",
            eng.program,
            started.elapsed().as_millis()
        );
    }
    let _ = fs::remove_dir_all(&ctx);
    images
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("bn-engines-{}-{tag}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// One request the wan's HTTPS origin received.
#[derive(Debug, Clone)]
struct Seen {
    host: String,
    path: String,
    authorization: Option<String>,
}

/// The simulated internet: a container on an internal network of its own whose sockets
/// this process binds and serves.
struct Wan {
    eng: Eng,
    network: String,
    container: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    dns: DnsServer,
    ca_pem: PathBuf,
    dir: PathBuf,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Wan {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(2));
        }
        let _ = self.eng.run(&["rm", "-f", self.container.as_str()]);
        let _ = self.eng.run(&["network", "rm", self.network.as_str()]);
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn bind_in(pid: u32, ip: Ipv4Addr) -> (UdpSocket, TcpListener, TcpListener) {
    std::thread::spawn(move || {
        let ns = fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
        // This thread only: the test's other threads stay in the host's namespace.
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let udp = UdpSocket::bind(SocketAddr::from((ip, 53))).unwrap();
        let tcp = TcpListener::bind(SocketAddr::from((ip, 53))).unwrap();
        let https = TcpListener::bind(SocketAddr::from((ip, 443))).unwrap();
        (udp, tcp, https)
    })
    .join()
    .unwrap()
}

/// Removes test containers and networks whose test process is gone (a SIGKILLed run):
/// their subnets would block the next run's.
fn sweep_stale(eng: &Eng) {
    let alive = |label: &str| {
        label
            .trim()
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    };
    let ids = eng.ok(&["ps", "-a", "-q", "--filter", "label=bottleneck.test"]);
    for id in ids.split_whitespace() {
        let label = eng.ok(&[
            "inspect",
            "--format",
            "{{index .Config.Labels \"bottleneck.test\"}}",
            id,
        ]);
        if !alive(&label) {
            let _ = eng.run(&["rm", "-f", id]);
        }
    }
    let nets = eng.ok(&["network", "ls", "-q", "--filter", "label=bottleneck.test"]);
    for id in nets.split_whitespace() {
        let label = eng.ok(&[
            "network",
            "inspect",
            "--format",
            "{{index .Labels \"bottleneck.test\"}}",
            id,
        ]);
        if !alive(&label) {
            let _ = eng.run(&["network", "rm", id]);
        }
    }
}

impl Wan {
    fn start(eng: &Eng, images: &Images) -> Wan {
        sweep_stale(eng);
        let pid = std::process::id();
        let network = format!("bn-test-wan-{pid}");
        let container = format!("bn-test-wan-{pid}");
        let dir = tempdir(&format!("wan-{}", eng.program));
        let label = format!("bottleneck.test={pid}");
        let _ = eng.run(&["rm", "-f", &container]);
        let _ = eng.run(&["network", "rm", &network]);
        eng.ok(&[
            "network",
            "create",
            "--internal",
            "--subnet",
            &eng.wan_subnet(),
            "--label",
            &label,
            &network,
        ]);
        let mut wan = Wan {
            eng: eng.clone(),
            network: network.clone(),
            container: container.clone(),
            seen: Arc::default(),
            dns: DnsServer::default(),
            ca_pem: dir.join("wan-ca.pem"),
            dir,
            runtime: None,
        };
        let ip = eng.wan_ip(10);
        eng.ok(&[
            "run",
            "-d",
            "--name",
            &container,
            "--label",
            &label,
            "--network",
            &network,
            "--ip",
            &ip.to_string(),
            "--entrypoint",
            "sleep",
            &images.base,
            "900",
        ]);
        let holder: u32 = eng
            .ok(&["inspect", "--format", "{{.State.Pid}}", &container])
            .parse()
            .unwrap();
        let (udp, tcp, https) = bind_in(holder, ip);
        for name in ["allowed.test", "denied.test"] {
            wan.dns.add_a(name, ip).unwrap();
        }
        let ca = TestCa::new("bn-engines").unwrap();
        fs::write(&wan.ca_pem, ca.cert_pem()).unwrap();
        let leaf = ca.issue(&["allowed.test", "denied.test"]).unwrap();
        let tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.cert_der.clone()], leaf.key_der.clone_key().into())
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        {
            let _entered = rt.enter();
            udp.set_nonblocking(true).unwrap();
            tcp.set_nonblocking(true).unwrap();
            https.set_nonblocking(true).unwrap();
            rt.spawn(bottleneck_lab::dns::serve_udp(
                wan.dns.clone(),
                tokio::net::UdpSocket::from_std(udp).unwrap(),
            ));
            rt.spawn(bottleneck_lab::dns::serve_tcp(
                wan.dns.clone(),
                tokio::net::TcpListener::from_std(tcp).unwrap(),
            ));
            let listener = tokio::net::TcpListener::from_std(https).unwrap();
            let seen = wan.seen.clone();
            rt.spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let acceptor = acceptor.clone();
                    let seen = seen.clone();
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(10),
                            serve_one(acceptor, conn, seen),
                        )
                        .await;
                    });
                }
            });
        }
        wan.runtime = Some(rt);
        wan
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// One HTTP/1.1 request over TLS: recorded, answered with `origin saw HOST PATH`.
async fn serve_one(
    acceptor: tokio_rustls::TlsAcceptor,
    conn: tokio::net::TcpStream,
    seen: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    let mut tls = acceptor.accept(conn).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 65536 {
        let n = tls.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("")
        .to_owned();
    let mut host = String::new();
    let mut authorization = None;
    for line in lines {
        if let Some((k, v)) = line.split_once(':') {
            match k.trim().to_ascii_lowercase().as_str() {
                "host" => host = v.trim().to_owned(),
                "authorization" => authorization = Some(v.trim().to_owned()),
                _ => {}
            }
        }
    }
    let body = format!("origin saw {host} {path}\n");
    seen.lock().unwrap().push(Seen {
        host,
        path,
        authorization,
    });
    let response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(response.as_bytes()).await?;
    tls.shutdown().await
}

fn policy(wan: &Eng, dir: &Path) -> PathBuf {
    let path = dir.join("policy.yaml");
    fs::write(
        &path,
        format!(
            "version: 1\nroutes:\n  - host: allowed.test\n    auth: {{scheme: Bearer, token_ref: {SECRET_VAR}}}\n\
             dns:\n  upstream: [{}]\nallow_ranges: [{}]\n",
            wan.wan_ip(10),
            wan.wan_subnet()
        ),
    )
    .unwrap();
    path
}

/// The agent's probes, one `key=value` line each.
fn probe_script(wan_ip: Ipv4Addr) -> String {
    format!(
        r#"code() {{ c=$(curl -sS -o /dev/null -w '%{{http_code}}' -m 10 "$@" 2>/dev/null); echo "$c rc=$?"; }}
echo "allowed=$(code https://allowed.test/hello)"
echo "body=$(curl -sS -m 10 https://allowed.test/body)"
echo "denied=$(code https://denied.test/denied)"
echo "forced=$(code --resolve denied.test:443:{wan_ip} https://denied.test/forced)"
echo "direct=$(code -k https://{wan_ip}/direct)"
echo "proxy=${{HTTPS_PROXY:-none}}"
echo "uid=$(id -u)"
echo "capeff=$(grep ^CapEff /proc/self/status | tr -d '\t')"
echo "env-begin"; env; echo "env-end"
"#
    )
}

fn secret_value() -> String {
    format!("bn-secret-{}-value", std::process::id())
}

fn bottleneck(eng: &Eng) -> Command {
    let mut c = Command::new(BIN);
    if let Some(conf) = &eng.conf {
        c.env("CONTAINERS_CONF", conf);
    }
    c.env(SECRET_VAR, secret_value());
    c
}

fn wait_with_timeout(mut child: Child, timeout: Duration) -> (i32, String, String) {
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let o = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let e = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("bottleneck did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    (
        status.code().unwrap_or(-1),
        o.join().unwrap(),
        e.join().unwrap(),
    )
}

fn run_args<'a>(
    eng: &'a Eng,
    images: &'a Images,
    wan: &'a Wan,
    policy: &'a Path,
    name: &'a str,
    egress: &'a str,
) -> Vec<String> {
    vec![
        "run".into(),
        "--backend".into(),
        eng.program.into(),
        format!("--egress={egress}"),
        "--name".into(),
        name.into(),
        "--image".into(),
        images.agent.clone(),
        "--gateway-image".into(),
        images.gateway.clone(),
        "--egress-network".into(),
        wan.network.clone(),
        "--upstream-ca".into(),
        wan.ca_pem.display().to_string(),
        "--policy".into(),
        policy.display().to_string(),
        "--gateway-timeout".into(),
        "60".into(),
    ]
}

/// Everything bottle `name` may leave behind.
fn leftovers(eng: &Eng, name: &str) -> Vec<String> {
    let filter = format!("label=bottleneck.bottle={name}");
    let mut out = Vec::new();
    let c = eng.ok(&["ps", "-a", "-q", "--filter", &filter]);
    if !c.is_empty() {
        out.push(format!("containers {c}"));
    }
    let n = eng.ok(&["network", "ls", "-q", "--filter", &filter]);
    if !n.is_empty() {
        out.push(format!("networks {n}"));
    }
    if Path::new("/run/bottleneck").join(name).exists() {
        out.push(format!("/run/bottleneck/{name}"));
    }
    out
}

fn value<'a>(stdout: &'a str, key: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or("(missing)")
}

/// The matrix with one egress mode; returns a summary line.
fn matrix(eng: &Eng, images: &Images, wan: &Wan, egress: &str, tag: &str) -> String {
    let started = Instant::now();
    let name = format!("t{tag}{:x}", std::process::id() % 0xffff);
    let policy = policy(eng, &wan.dir);
    let before = wan.seen().len();
    let mut args = run_args(eng, images, wan, &policy, &name, egress);
    args.extend([
        "--".into(),
        "sh".into(),
        "-c".into(),
        probe_script(eng.wan_ip(10)),
    ]);
    let child = bottleneck(eng)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, stdout, stderr) = wait_with_timeout(child, RUN_TIMEOUT);
    let ctx = format!(
        "{} {egress}:\nstdout:\n{stdout}\nstderr:\n{stderr}",
        eng.program
    );
    assert_eq!(code, 0, "{ctx}");
    let seen: Vec<Seen> = wan.seen()[before..].to_vec();

    // Allowed: through the gateway, with the secret injected by the gateway.
    assert!(
        value(&stdout, "allowed").starts_with("200 "),
        "allowed: {ctx}"
    );
    assert_eq!(
        value(&stdout, "body"),
        "origin saw allowed.test /body",
        "{ctx}"
    );
    let allowed: Vec<&Seen> = seen.iter().filter(|s| s.host == "allowed.test").collect();
    let paths: Vec<&str> = allowed.iter().map(|s| s.path.as_str()).collect();
    assert_eq!(paths, ["/hello", "/body"], "{ctx}\nseen: {seen:?}");
    let bearer = format!("Bearer {}", secret_value());
    assert!(
        allowed
            .iter()
            .all(|s| s.authorization.as_deref() == Some(bearer.as_str())),
        "the gateway injects the credential: {seen:?}"
    );
    // Denied: never reaches the origin, whatever the agent tries.
    for key in ["denied", "forced", "direct"] {
        assert!(
            !value(&stdout, key).starts_with("200 "),
            "{key} must fail: {ctx}"
        );
    }
    assert!(
        seen.iter().all(|s| s.host == "allowed.test"),
        "only allowed.test reached the origin: {seen:?}"
    );
    if egress == "transparent" {
        // NXDOMAIN from the gateway's DNS; with the address forced, the gateway's 403.
        assert_eq!(value(&stdout, "denied"), "000 rc=6", "{ctx}");
        assert_eq!(value(&stdout, "forced"), "403 rc=0", "{ctx}");
        assert_eq!(value(&stdout, "proxy"), "none", "{ctx}");
    } else {
        assert!(
            value(&stdout, "proxy").ends_with(":3128"),
            "proxy variables: {ctx}"
        );
    }
    // The agent: unprivileged, no capabilities, never the secret.
    assert_eq!(value(&stdout, "uid"), "1000", "{ctx}");
    assert_eq!(value(&stdout, "capeff"), "CapEff:0000000000000000", "{ctx}");
    let env = stdout
        .split("env-begin")
        .nth(1)
        .and_then(|s| s.split("env-end").next())
        .unwrap_or("");
    assert!(!env.is_empty(), "{ctx}");
    assert!(!env.contains(&secret_value()), "the agent saw the secret");
    assert!(!env.contains(SECRET_VAR), "the agent saw the secret's name");
    assert!(!stderr.contains(&secret_value()), "{ctx}");
    for step in ["networks", "gateway", "CA", "cleanup"] {
        assert!(
            stderr.contains(&format!("bottleneck: {step}")),
            "{step}: {ctx}"
        );
    }
    assert_eq!(leftovers(eng, &name), Vec::<String>::new(), "{ctx}");
    let line = format!(
        "{} --egress={egress}: allowed 200 with the credential injected; denied {}, forced {}, direct {}: none reached the origin; nothing left ({} ms)",
        eng.program,
        value(&stdout, "denied"),
        value(&stdout, "forced"),
        value(&stdout, "direct"),
        started.elapsed().as_millis()
    );
    println!("{line}");
    line
}

/// `bottleneck exec` drops every capability, a raw exec keeps them; SIGINT mid-run
/// removes everything.
fn exec_and_sigint(eng: &Eng, images: &Images, wan: &Wan) {
    let started = Instant::now();
    let name = format!("tx{:x}", std::process::id() % 0xffff);
    let policy = policy(eng, &wan.dir);
    let mut args = run_args(eng, images, wan, &policy, &name, "transparent");
    args.extend(["--".into(), "sleep".into(), "300".into()]);
    let child = bottleneck(eng)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let agent = format!("bn-{name}-agent");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let out = eng.run(&["inspect", "--format", "{{.State.Running}}", &agent]);
        if String::from_utf8_lossy(&out.stdout).trim() == "true" {
            // The shim has set the bottle up once it rewrote resolv.conf.
            let conf = eng.run(&["exec", &agent, "cat", "/etc/resolv.conf"]);
            if String::from_utf8_lossy(&conf.stdout).contains("bottleneck-init") {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the agent did not start");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Secrets: on no command line of any process while the bottle runs.
    let secret = secret_value();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = fs::read(entry.path().join("cmdline")) {
            assert!(
                !String::from_utf8_lossy(&cmdline).contains(&secret),
                "the secret is on the command line of pid {:?}",
                entry.file_name()
            );
        }
    }
    let probe = "id -u; grep ^CapEff /proc/self/status; ip link set lo down && echo ROUTE-CHANGED || echo refused; \
                 curl -sS -m 10 -o /dev/null -w 'curl=%{http_code}\\n' https://allowed.test/audited";
    let out = bottleneck(eng)
        .args([
            "exec",
            "--backend",
            eng.program,
            &name,
            "--",
            "sh",
            "-c",
            probe,
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "exec: {out:?}");
    assert!(text.contains("1000\n"), "exec runs as node: {text}");
    assert!(
        text.contains("CapEff:\t0000000000000000"),
        "exec has no capabilities: {text}"
    );
    assert!(
        text.contains("refused"),
        "exec cannot change the network: {text}"
    );
    assert!(
        text.contains("curl=200"),
        "exec's traffic goes through the gateway: {text}"
    );
    // The audit log (where `bottleneck logs` reads it) has the request, never the secret.
    let audit = fs::read_to_string(format!("/run/bottleneck/{name}/audit.jsonl")).unwrap();
    assert!(audit.contains("/audited"), "{audit}");
    assert!(!audit.contains(&secret), "the secret is in the audit log");
    let raw = eng.ok(&["exec", &agent, "grep", "^CapEff", "/proc/self/status"]);
    println!(
        "{}: bottleneck exec: uid 1000, CapEff 0, `ip link set` refused; a raw `{} exec` has {raw} (why bottleneck exec exists)",
        eng.program, eng.program
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let (code, _, stderr) = wait_with_timeout(child, Duration::from_secs(60));
    assert_eq!(code, 130, "{stderr}");
    assert!(
        stderr.contains("containers, networks, state removed"),
        "{stderr}"
    );
    assert_eq!(leftovers(eng, &name), Vec::<String>::new(), "{stderr}");
    println!(
        "{}: SIGINT mid-run: exit 130, everything removed ({} ms)",
        eng.program,
        started.elapsed().as_millis()
    );
}

/// A gateway image that does not exist: the run fails after the networks were created and
/// removes them again.
fn failure_half_way(eng: &Eng, images: &Images, wan: &Wan) {
    let name = format!("tf{:x}", std::process::id() % 0xffff);
    let policy = policy(eng, &wan.dir);
    let mut args = run_args(eng, images, wan, &policy, &name, "transparent");
    let gw = args.iter().position(|a| a == "--gateway-image").unwrap();
    args[gw + 1] = "localhost/bn-test-missing:none".into();
    args.extend(["--".into(), "true".into()]);
    let child = bottleneck(eng)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (code, _, stderr) = wait_with_timeout(child, RUN_TIMEOUT);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("bottleneck: networks"), "{stderr}");
    assert!(
        stderr.contains("containers, networks, state removed"),
        "{stderr}"
    );
    assert_eq!(leftovers(eng, &name), Vec::<String>::new(), "{stderr}");
    println!(
        "{}: a gateway that cannot be created: exit 1 after the networks, everything removed",
        eng.program
    );
}

fn podman_conf() -> PathBuf {
    let dir = tempdir("podman-conf");
    let conf = dir.join("containers.conf");
    fs::write(
        &conf,
        "[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=1000:1000\"]\n\
         [engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n",
    )
    .unwrap();
    conf
}

fn prerequisites(test: &str, eng: &Eng, ci_can_install: bool) -> bool {
    if let Some(reason) = bottleneck_lab::lab_unavailable_reason() {
        return unavailable(test, &reason, true);
    }
    if let Some(reason) = engine_problem(eng) {
        return unavailable(test, &reason, ci_can_install);
    }
    let have_base = eng.run(&["image", "inspect", BASE_TAG]).status.success();
    let debootstrap = Command::new("debootstrap")
        .arg("--version")
        .output()
        .is_ok();
    if !have_base
        && !debootstrap
        && !Path::new("/var/cache/bottleneck/bookworm-minbase.tar").is_file()
    {
        return unavailable(
            test,
            "debootstrap is not installed (the base image is built with it)",
            true,
        );
    }
    true
}

#[test]
fn podman_backend_end_to_end() {
    let eng = Eng {
        program: "podman",
        conf: Some(podman_conf()),
        wan: [203, 0, 113],
    };
    if !prerequisites("podman_backend_end_to_end", &eng, true) {
        return;
    }
    let images = build_images(&eng);
    let wan = Wan::start(&eng, &images);
    matrix(&eng, &images, &wan, "transparent", "pt");
    matrix(&eng, &images, &wan, "proxy", "pp");
    exec_and_sigint(&eng, &images, &wan);
    failure_half_way(&eng, &images, &wan);
}

fn docker_user_chain() -> String {
    let out = Command::new("iptables")
        .args(["-w", "5", "-S", "DOCKER-USER"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn docker_backend_end_to_end() {
    let eng = Eng {
        program: "docker",
        conf: None,
        wan: [198, 51, 100],
    };
    // Docker cannot be installed by CI on this machine kind: a skip, said clearly.
    if !prerequisites("docker_backend_end_to_end", &eng, false) {
        return;
    }
    let images = build_images(&eng);
    let wan = Wan::start(&eng, &images);
    // With br_netfilter on, the launcher adds one DOCKER-USER rule per bottle (accept
    // within the agent bridge) and removes it again: the chain must be as it was.
    let chain = docker_user_chain();
    matrix(&eng, &images, &wan, "transparent", "dt");
    matrix(&eng, &images, &wan, "proxy", "dp");
    exec_and_sigint(&eng, &images, &wan);
    failure_half_way(&eng, &images, &wan);
    assert_eq!(docker_user_chain(), chain, "DOCKER-USER restored");
    if bottleneck::engine::docker_drops_bridged_routes() {
        println!(
            "docker: br_netfilter is on: each bottle had its DOCKER-USER accept rule for the agent bridge, removed again (chain byte-identical)"
        );
    }
}
