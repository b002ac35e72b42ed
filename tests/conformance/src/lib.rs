//! Support for the conformance matrix and the load and fault tests: the real
//! `bottleneck-gateway` started in a lab (found next to the test executable), clients run
//! in the agent namespace, snapshots of what the wan received, canary listeners that
//! catch any dial of the gateway to itself, a bounded load generator (HTTP/1.1 and h2,
//! IPv4 and IPv6, transparent or through the explicit proxy), and the real
//! `bottleneck-init` with a neighbour host on the agent network for the shim cells.

// Test support code: a failed setup is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod load;
pub mod shim;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bottleneck_lab::{ExecOutput, GatewayMode, Host, Lab, LabProcess};

/// The explicit proxy address the matrix's gateways listen on.
pub const PROXY: &str = "198.18.0.1:3128";

/// A workspace binary next to the test executable (`target/<profile>/<name>`).
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let path = dir.join(name);
    assert!(
        path.is_file(),
        "{} not found: run `cargo build --workspace` (or `cargo test --workspace`, which \
         builds every workspace binary first) with the same target dir and profile",
        path.display()
    );
    path
}

/// A lab with the real gateway in its gateway namespace.
pub struct Bottle {
    /// The lab.
    pub lab: Lab,
    /// The running gateway (None while it is down).
    pub gateway: Option<LabProcess>,
    /// The bottle CA the agent trusts.
    pub ca_pem: PathBuf,
    /// The audit log file.
    pub audit: PathBuf,
    /// The policy file (rewrite + SIGHUP to reload).
    pub policy_path: PathBuf,
    argv: Vec<String>,
    env: Vec<(String, String)>,
}

impl Bottle {
    /// Starts a bare lab and the gateway with `policy`, environment and extra flags.
    pub fn start(policy: &str, env: &[(&str, &str)], extra: &[&str]) -> Bottle {
        let lab = Lab::new(GatewayMode::Bare).expect("lab");
        let policy_path = lab.dir().join("policy.yaml");
        std::fs::write(&policy_path, policy).unwrap();
        let ca_dir = lab.dir().join("bottle-ca");
        let audit = lab.dir().join("audit.jsonl");
        let mut argv: Vec<String> = vec![
            workspace_bin("bottleneck-gateway").display().to_string(),
            "--policy".into(),
            policy_path.display().to_string(),
            "--agent-iface".into(),
            "eth1".into(),
            "--ca-dir".into(),
            ca_dir.display().to_string(),
            "--upstream-ca".into(),
            lab.ca_pem_path().display().to_string(),
            "--audit-log".into(),
            audit.display().to_string(),
        ];
        argv.extend(extra.iter().map(|a| a.to_string()));
        let mut bottle = Bottle {
            lab,
            gateway: None,
            ca_pem: ca_dir.join("ca.pem"),
            audit,
            policy_path,
            argv,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        bottle.launch();
        bottle
    }

    /// (Re)starts the same gateway in the same lab and waits until it is ready.
    pub fn launch(&mut self) {
        assert!(self.gateway.is_none(), "the gateway is already running");
        let mut command = self
            .lab
            .command(Host::Gateway, &self.argv)
            .timeout(Duration::from_secs(900))
            .output_limit(256 << 10);
        for (key, value) in &self.env {
            command = command.env(key, value);
        }
        let mut gateway = command.spawn().expect("spawn the gateway");
        if let Err(e) = gateway.wait_for_output("bottleneck-gateway ready", Duration::from_secs(20))
        {
            let out = gateway.kill();
            panic!("gateway did not start: {e}\n{out:?}");
        }
        self.gateway = Some(gateway);
    }

    /// The gateway's pid.
    pub fn pid(&self) -> u32 {
        self.gateway.as_ref().expect("gateway running").id()
    }

    /// The gateway's own process id (not the lab's wrapper).
    pub fn gateway_pid(&self) -> u32 {
        gateway_process(self.pid())
    }

    /// The gateway's RSS (kB) and open file descriptors.
    pub fn stats(&self) -> (u64, usize) {
        proc_stats(self.gateway_pid())
    }

    /// Sends `signal` to the gateway process only (not the lab's process group).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = i32::try_from(self.gateway_pid()).unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal).unwrap();
    }

    /// A load target: transparent HTTPS/1.1 to `host` (SNI and Host), connecting to the
    /// origin's IPv4 address; the agent trusts the bottle CA. Change the fields for h2,
    /// IPv6 or the explicit proxy.
    pub fn https_target(&self, host: &str) -> load::Target {
        load::Target {
            addr: SocketAddr::from((bottleneck_lab::addr::ORIGIN_V4, 443)),
            host: host.to_owned(),
            tls: true,
            h2: false,
            route: load::Route::Transparent,
            ca_pem: std::fs::read(&self.ca_pem).unwrap(),
        }
    }

    /// SIGKILLs the gateway (its nftables rules stay in place) and reaps it.
    pub fn sigkill(&mut self) {
        let mut gateway = self.gateway.take().expect("gateway running");
        gateway.signal(nix::sys::signal::Signal::SIGKILL).unwrap();
        let status = gateway.wait_timeout(Duration::from_secs(10)).unwrap();
        assert!(status.is_some(), "the gateway survived SIGKILL");
        drop(gateway.kill());
    }

    /// curl in the agent namespace trusting the bottle CA; `-w` appends the status.
    pub fn curl(&self, args: &[&str]) -> Curl {
        let mut argv: Vec<String> = vec![
            "curl".into(),
            "-sS".into(),
            "--max-time".into(),
            "8".into(),
            "--cacert".into(),
            self.ca_pem.display().to_string(),
            "-w".into(),
            "\n@@%{http_code}".into(),
        ];
        argv.extend(args.iter().map(|a| a.to_string()));
        let out = self.lab.exec(Host::Agent, &argv).unwrap();
        Curl::from(out)
    }

    /// python3 `script` (after [`PY_PRELUDE`]) in the agent namespace; stdout + stderr.
    pub fn python(&self, script: &str) -> String {
        let full = format!("{PY_PRELUDE}\n{script}\n");
        let out = self
            .lab
            .command(Host::Agent, &["python3", "-c", &full])
            .timeout(Duration::from_secs(60))
            .run()
            .unwrap();
        format!("{}{}", out.stdout_str(), out.stderr_str())
    }

    /// Any command in the agent namespace.
    pub fn agent(&self, argv: &[&str]) -> ExecOutput {
        self.lab.exec(Host::Agent, argv).unwrap()
    }

    /// The audit log's text.
    pub fn audit_text(&self) -> String {
        std::fs::read_to_string(&self.audit).unwrap_or_default()
    }

    /// The audit log's lines, parsed.
    pub fn audit_lines(&self) -> Vec<serde_json::Value> {
        self.audit_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

impl Drop for Bottle {
    fn drop(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            let out = gateway.kill();
            if std::thread::panicking() {
                eprintln!("gateway output:\n{out:?}");
            }
        }
    }
}

/// A curl run: status from the `-w` trailer (0 when no response), body, stderr.
#[derive(Debug)]
pub struct Curl {
    /// HTTP status, 0 when curl got no response.
    pub status: u16,
    /// The body (and headers with `-i`/`-D -`).
    pub body: String,
    /// curl's stderr.
    pub stderr: String,
}

impl From<ExecOutput> for Curl {
    fn from(out: ExecOutput) -> Curl {
        let text = out.stdout_str();
        let (body, trailer) = text.rsplit_once("\n@@").unwrap_or((&text, "0"));
        Curl {
            status: trailer.trim().parse().unwrap_or(0),
            body: body.to_owned(),
            stderr: out.stderr_str(),
        }
    }
}

impl Curl {
    /// A one-line summary for the matrix's evidence column.
    pub fn summary(&self) -> String {
        let deny = self
            .body
            .lines()
            .find(|l| l.to_ascii_lowercase().starts_with("x-bottleneck-deny"))
            .map(|l| l.trim().to_owned())
            .unwrap_or_default();
        if self.status == 0 {
            let err = self.stderr.lines().last().unwrap_or("").trim();
            format!("no response ({err})")
        } else {
            format!("{} {deny}", self.status).trim().to_owned()
        }
    }
}

/// Python helpers for raw, malformed input: `attempt(ip, port, payload, sni, tls, alpn)`
/// prints `STATUSES <codes>` (or `CONNECT-ERR`/`TLS-ERR`) and the first bytes received.
pub const PY_PRELUDE: &str = r#"
import socket,ssl,sys,time
def conn(ip,port,sni=None,tls=False,alpn=None,timeout=4):
    fam=socket.AF_INET6 if ':' in ip else socket.AF_INET
    s=socket.socket(fam,socket.SOCK_STREAM); s.settimeout(timeout); s.connect((ip,port))
    if tls:
        c=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); c.check_hostname=False; c.verify_mode=ssl.CERT_NONE
        if alpn: c.set_alpn_protocols(alpn)
        s=c.wrap_socket(s,server_hostname=sni)
    return s
def readall(s,limit=1<<20):
    # Until close, error, or 0.4 s of silence after a complete response head.
    out=b''
    try:
        while len(out)<limit:
            d=s.recv(65536)
            if not d: break
            out+=d
            if b'\r\n\r\n' in out: s.settimeout(0.4)
    except Exception as e:
        out+=('<'+type(e).__name__+'>').encode()
    return out
def attempt(ip,port,payload,sni=None,tls=False,alpn=None,timeout=4):
    try:
        s=conn(ip,port,sni,tls,alpn,timeout)
    except ssl.SSLError as e:
        print('TLS-ERR',e); return
    except Exception as e:
        print('CONNECT-ERR',type(e).__name__,e); return
    try:
        s.sendall(payload)
    except Exception as e:
        print('SEND-ERR',type(e).__name__)
    r=readall(s)
    st=[l.split(b' ')[1].decode() for l in r.split(b'\r\n') if l.startswith(b'HTTP/1.') and len(l.split(b' '))>1]
    print('STATUSES',' '.join(st) or '-')
    print('RAW',r[:200])
"#;

/// Statuses printed by the Python `attempt` helper (empty when none).
pub fn py_statuses(out: &str) -> Vec<u16> {
    out.lines()
        .find_map(|l| l.strip_prefix("STATUSES "))
        .map(|s| {
            s.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What the simulated internet had received at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WanSnapshot {
    /// HTTPS origin requests and connections.
    pub https: (u64, u64),
    /// Plain HTTP origin requests and connections.
    pub http: (u64, u64),
    /// Echo TCP connections and UDP datagrams.
    pub echo: (u64, u64),
    /// Accepts on the canary listeners inside the gateway namespace.
    pub canary: u64,
}

impl WanSnapshot {
    /// Takes a snapshot of `bottle`'s wan counters and `canary`.
    pub fn take(bottle: &Bottle, canary: &Canary) -> WanSnapshot {
        let lab = &bottle.lab;
        WanSnapshot {
            https: (lab.https().requests(), lab.https().connections()),
            http: (lab.http().requests(), lab.http().connections()),
            echo: (lab.echo().tcp_connections(), lab.echo().udp_datagrams()),
            canary: canary.count(),
        }
    }
}

/// Listeners on ports 80, 443, 7 and 22 of every address of the gateway namespace
/// (IPv4 and IPv6): agent traffic is redirected before it reaches them, so an accept
/// means the gateway dialled itself (loopback, its own addresses).
pub struct Canary {
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Canary {
    /// Binds the canary listeners in `lab`'s gateway namespace.
    pub fn start(lab: &Lab) -> Canary {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let listeners: Vec<TcpListener> = lab
            .run_in(Host::Gateway, || {
                let mut all = Vec::new();
                for port in [80u16, 443, 7, 22] {
                    // Dual-stack: a new namespace has net.ipv6.bindv6only = 0.
                    let socket = TcpListener::bind(SocketAddr::from(([0u16; 8], port))).unwrap();
                    socket.set_nonblocking(true).unwrap();
                    all.push(socket);
                }
                all
            })
            .unwrap();
        let (c, s) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                for l in &listeners {
                    while let Ok((stream, _)) = l.accept() {
                        c.fetch_add(1, Ordering::SeqCst);
                        drop(stream);
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        Canary { count, stop }
    }

    /// Connections accepted so far.
    pub fn count(&self) -> u64 {
        // Let the poller catch up with a connection that just arrived.
        std::thread::sleep(Duration::from_millis(20));
        self.count.load(Ordering::SeqCst)
    }
}

impl Drop for Canary {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// RSS (kB) and open file descriptors of process `pid`.
pub fn proc_stats(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    (rss, fds)
}

/// The gateway's process (not the lab's wrapper): the pid whose `comm` starts with
/// `bottleneck-gate`, among `pid` and its descendants.
pub fn gateway_process(pid: u32) -> u32 {
    let mut queue = vec![pid];
    while let Some(p) = queue.pop() {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        if comm.starts_with("bottleneck-gate") {
            return p;
        }
        let children =
            std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")).unwrap_or_default();
        queue.extend(
            children
                .split_whitespace()
                .filter_map(|c| c.parse::<u32>().ok()),
        );
    }
    panic!("no bottleneck-gateway process under pid {pid}");
}

/// Reads a file that must exist (for messages).
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<{}: {e}>", path.display()))
}
