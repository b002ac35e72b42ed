//! The contenders and how each is started in a lab.
//!
//! * `direct`: no gateway; the lab's gateway namespace only routes (the physical limit).
//! * `bottleneck`: `bottleneck-gateway` (release build) in a bare gateway namespace; it
//!   installs its own nftables redirects and serves DNS on the agent's port 53.
//! * `mitmproxy`: `mitmdump --mode transparent` in a routing gateway namespace, agent TCP
//!   443 redirected to it by an nftables rule of ours.
//! * `squid`: Squid (squid-openssl) with `https_port ... intercept ssl-bump`, likewise.
//! * `httpjail`: see [`crate::httpjail`]; it wraps the agent command itself.
//!
//! Every contender's upstream trusts the lab CA only; mitmproxy and Squid sign their leaves
//! with one ECDSA P-256 CA minted per run (the gateway's own CA is ECDSA P-256 too), and
//! the agent trusts the CA of the contender it talks to.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bottleneck_lab::{GatewayMode, Host, Lab, LabProcess, addr};
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// One of the measured set-ups.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// No gateway at all.
    Direct,
    /// bottleneck-gateway.
    Bottleneck,
    /// mitmproxy (mitmdump) in transparent mode.
    Mitmproxy,
    /// Squid with intercept + ssl-bump.
    Squid,
    /// httpjail (Linux jail mode).
    Httpjail,
}

impl Kind {
    /// Every contender, in report order.
    pub const ALL: [Kind; 5] = [
        Kind::Direct,
        Kind::Bottleneck,
        Kind::Mitmproxy,
        Kind::Squid,
        Kind::Httpjail,
    ];

    /// The contender's name in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Bottleneck => "bottleneck",
            Kind::Mitmproxy => "mitmproxy",
            Kind::Squid => "squid",
            Kind::Httpjail => "httpjail",
        }
    }

    /// Parses a name of [`Kind::name`].
    pub fn parse(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// How the agent's traffic reaches a contender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// No contender: routed.
    NoGateway,
    /// Intercepted transparently (nftables redirect in the gateway namespace).
    Transparent,
    /// Transparent, but in the contender's own jail namespace (httpjail).
    TransparentJail,
}

/// The external programs the harness runs, found once at start.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Tools {
    /// bottleneck-gateway.
    pub gateway: PathBuf,
    /// Whether `gateway` is a release build.
    pub gateway_release: bool,
    /// bottleneck-init.
    pub init: Option<PathBuf>,
    /// mitmdump, or why it is missing.
    pub mitmdump: std::result::Result<PathBuf, String>,
    /// squid, or why it is missing.
    pub squid: std::result::Result<PathBuf, String>,
    /// Squid's certificate generator helper.
    pub squid_certgen: Option<PathBuf>,
    /// httpjail, or why it is missing.
    pub httpjail: std::result::Result<PathBuf, String>,
    /// Extra environment variables for bottleneck-gateway (experiments, e.g.
    /// `TOKIO_WORKER_THREADS=1`); recorded in the results.
    #[serde(default)]
    pub gateway_env: Vec<(String, String)>,
    /// Extra flags for bottleneck-gateway (experiments); recorded in the results.
    #[serde(default)]
    pub gateway_args: Vec<String>,
}

fn first_existing(candidates: &[PathBuf]) -> Option<PathBuf> {
    candidates.iter().find(|p| p.is_file()).cloned()
}

/// The cargo target directories next to the running binary: for
/// `.../target/release/bottleneck-bench` or `.../target/debug/deps/quick-…`, the
/// `release` and `debug` directories of that target.
fn profile_dirs() -> Vec<(PathBuf, bool)> {
    let Ok(exe) = std::env::current_exe() else {
        return Vec::new();
    };
    let mut dir = exe.parent().map(Path::to_path_buf);
    let mut out = Vec::new();
    while let Some(d) = dir {
        let name = d.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name == "release" || name == "debug" {
            if let Some(target) = d.parent() {
                out.push((target.join("release"), true));
                out.push((target.join("debug"), false));
            }
            break;
        }
        dir = d.parent().map(Path::to_path_buf);
    }
    out
}

impl Tools {
    /// Finds the binaries: the gateway and init shim next to this binary's cargo target
    /// (release preferred; a debug build only if `allow_debug`), the peers under
    /// `peers_dir` or on `PATH`.
    pub fn locate(peers_dir: &Path, allow_debug: bool) -> Result<Tools> {
        let dirs = profile_dirs();
        let find = |name: &str| -> (Option<(PathBuf, bool)>, Vec<PathBuf>) {
            let looked: Vec<PathBuf> = dirs.iter().map(|(d, _)| d.join(name)).collect();
            let found = dirs
                .iter()
                .filter(|(_, release)| *release || allow_debug)
                .map(|(d, release)| (d.join(name), *release))
                .find(|(p, _)| p.is_file());
            (found, looked)
        };
        let (gateway, looked) = find("bottleneck-gateway");
        let Some((gateway, gateway_release)) = gateway else {
            return Err(BenchError::MissingBinary {
                what: "bottleneck-gateway (release build)".into(),
                looked,
                hint: "build it with the same CARGO_TARGET_DIR: `cargo build --release -p \
                       bottleneck-gateway -p bottleneck-init`"
                    .into(),
            });
        };
        let init = find("bottleneck-init").0.map(|(p, _)| p);
        let on_path = |name: &str| -> Option<PathBuf> {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|d| d.join(name))
                    .find(|p| p.is_file())
            })
        };
        let mitmdump = first_existing(&[peers_dir.join("mitm-venv/bin/mitmdump")])
            .or_else(|| on_path("mitmdump"))
            .ok_or_else(|| {
                format!(
                    "mitmdump not found in {}/mitm-venv/bin or on PATH (install: python3 -m venv \
                     {0}/mitm-venv && {0}/mitm-venv/bin/pip install mitmproxy)",
                    peers_dir.display()
                )
            });
        let squid = first_existing(&[PathBuf::from("/usr/sbin/squid")])
            .or_else(|| on_path("squid"))
            .ok_or_else(|| "squid not found (install: apt-get install squid-openssl)".to_owned());
        let squid_certgen = first_existing(&[
            PathBuf::from("/usr/lib/squid/security_file_certgen"),
            PathBuf::from("/usr/lib/squid/ssl_crtd"),
        ]);
        let httpjail = first_existing(&[peers_dir.join("httpjail/bin/httpjail")])
            .or_else(|| on_path("httpjail"))
            .ok_or_else(|| {
                format!(
                    "httpjail not found in {}/httpjail/bin or on PATH (install: cargo install \
                     --root {0}/httpjail httpjail@0.1.0)",
                    peers_dir.display()
                )
            });
        Ok(Tools {
            gateway,
            gateway_release,
            init,
            mitmdump,
            squid,
            squid_certgen,
            httpjail,
            gateway_env: Vec::new(),
            gateway_args: Vec::new(),
        })
    }

    /// The version string of a contender's program, for the report.
    pub fn version(&self, kind: Kind) -> String {
        let run = |path: &Path, arg: &str| -> String {
            Command::new(path)
                .arg(arg)
                .output()
                .ok()
                .map(|o| {
                    let text = String::from_utf8_lossy(&o.stdout).into_owned()
                        + &String::from_utf8_lossy(&o.stderr);
                    text.lines().next().unwrap_or("").trim().to_owned()
                })
                .unwrap_or_default()
        };
        match kind {
            Kind::Direct => "-".into(),
            Kind::Bottleneck => {
                let v = run(&self.gateway, "--version");
                if self.gateway_release {
                    v
                } else {
                    format!("{v} (DEBUG build)")
                }
            }
            Kind::Mitmproxy => self
                .mitmdump
                .as_ref()
                .map(|p| run(p, "--version"))
                .unwrap_or_default(),
            Kind::Squid => self
                .squid
                .as_ref()
                .map(|p| run(p, "-v"))
                .unwrap_or_default(),
            Kind::Httpjail => self
                .httpjail
                .as_ref()
                .map(|p| run(p, "--version"))
                .unwrap_or_default(),
        }
    }
}

/// A contender running in its own lab.
pub struct Running {
    /// Which contender.
    pub kind: Kind,
    /// How traffic reaches it.
    pub mode: Mode,
    /// The lab (dropped last).
    pub lab: Lab,
    /// The contender's process (None for direct).
    pub process: Option<LabProcess>,
    /// The CA certificate the agent trusts for this contender.
    pub agent_ca: PathBuf,
}

impl Running {
    /// The contender's process group, for CPU and memory readings.
    pub fn pgid(&self) -> Option<u32> {
        self.process.as_ref().map(LabProcess::id)
    }

    /// Stops the contender; returns its captured output (for diagnostics).
    pub fn stop(mut self) -> String {
        let out = self.process.take().map(|p| p.kill());
        drop(self.lab);
        out.map(|o| format!("{}{}", o.stdout_str(), o.stderr_str()))
            .unwrap_or_default()
    }
}

/// The policy bottleneck runs with: the two measured origins, allowed without conditions.
pub const BOTTLENECK_POLICY: &str = "version: 1
routes:
  - host: allowed.test
  - host: other.allowed.test
dns:
  upstream: [198.51.100.53]
allow_ranges: [198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32]
";

const STARTUP: Duration = Duration::from_secs(30);

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))
}

/// A CA for the peers: ECDSA P-256, certificate and PKCS#8 key as PEM.
pub fn mint_peer_ca() -> Result<(String, String)> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let err = |e: rcgen::Error| BenchError::Tls(format!("minting the peer CA: {e}"));
    let key = KeyPair::generate().map_err(err)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, "bottleneck-bench peer CA");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// Redirects the agent's TCP 443 (arriving on the gateway's `eth1`) to `port` on the
/// gateway, in the lab's gateway namespace only.
fn redirect_443(lab: &Lab, kind: Kind, port: u16) -> Result<()> {
    let rules = lab.dir().join("bench-redirect.nft");
    write(
        &rules,
        &format!(
            "table ip bnbench {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n    iifname \"eth1\" tcp dport 443 redirect to :{port}\n  }}\n}}\n"
        ),
    )?;
    let out = lab.exec(
        Host::Gateway,
        &["nft".as_ref(), "-f".as_ref(), rules.as_os_str()],
    )?;
    if !out.success() {
        return Err(BenchError::setup(
            kind.name(),
            format!("nft -f: {}", out.stderr_str()),
        ));
    }
    Ok(())
}

/// Starts `kind` in a fresh lab.
pub fn start(kind: Kind, tools: &Tools) -> Result<Running> {
    match kind {
        Kind::Direct => {
            let lab = Lab::new(GatewayMode::Router)?;
            let agent_ca = lab.ca_pem_path().to_owned();
            Ok(Running {
                kind,
                mode: Mode::NoGateway,
                lab,
                process: None,
                agent_ca,
            })
        }
        Kind::Bottleneck => start_bottleneck(tools),
        Kind::Mitmproxy => start_mitmproxy(tools),
        Kind::Squid => start_squid(tools),
        Kind::Httpjail => Err(BenchError::setup(
            "httpjail",
            "httpjail wraps the agent command; it is run by crate::httpjail, not started here",
        )),
    }
}

fn start_bottleneck(tools: &Tools) -> Result<Running> {
    let lab = Lab::new(GatewayMode::Bare)?;
    let policy = lab.dir().join("policy.yaml");
    write(&policy, BOTTLENECK_POLICY)?;
    let ca_dir = lab.dir().join("bottle-ca");
    let audit = lab.dir().join("audit.jsonl");
    let argv: Vec<String> = vec![
        tools.gateway.display().to_string(),
        "--policy".into(),
        policy.display().to_string(),
        "--agent-iface".into(),
        "eth1".into(),
        "--ca-dir".into(),
        ca_dir.display().to_string(),
        "--upstream-ca".into(),
        lab.ca_pem_path().display().to_string(),
    ];
    // The audit log goes to a file in the lab unless an experiment sends it elsewhere.
    let audit_overridden = tools
        .gateway_args
        .iter()
        .any(|a| a.starts_with("--audit-log"));
    let own_audit = ["--audit-log".to_owned(), audit.display().to_string()];
    let argv: Vec<String> = argv
        .into_iter()
        .chain(own_audit.into_iter().filter(|_| !audit_overridden))
        .chain(tools.gateway_args.iter().cloned())
        .collect();
    let mut command = lab
        .command(Host::Gateway, &argv)
        .timeout(Duration::from_secs(24 * 3600));
    for (k, v) in &tools.gateway_env {
        command = command.env(k, v);
    }
    let mut process = command.spawn()?;
    if let Err(e) = process.wait_for_output("bottleneck-gateway ready", STARTUP) {
        let out = process.kill();
        return Err(BenchError::setup(
            "bottleneck",
            format!("did not start: {e}; {}", out.stderr_str()),
        ));
    }
    Ok(Running {
        kind: Kind::Bottleneck,
        mode: Mode::Transparent,
        lab,
        process: Some(process),
        agent_ca: ca_dir.join("ca.pem"),
    })
}

/// The port mitmproxy listens on in the gateway namespace.
pub const MITMPROXY_PORT: u16 = 18443;
/// The port Squid's intercepting TLS listener uses.
pub const SQUID_TLS_PORT: u16 = 13129;

fn start_mitmproxy(tools: &Tools) -> Result<Running> {
    let mitmdump = tools
        .mitmdump
        .as_ref()
        .map_err(|why| BenchError::setup("mitmproxy", why.clone()))?;
    let lab = Lab::new(GatewayMode::Router)?;
    let confdir = lab.dir().join("mitmproxy");
    fs::create_dir(&confdir).map_err(|e| BenchError::io("creating the mitmproxy confdir", e))?;
    let (cert, key) = mint_peer_ca()?;
    write(&confdir.join("mitmproxy-ca.pem"), &format!("{key}{cert}"))?;
    let agent_ca = confdir.join("bench-ca-cert.pem");
    write(&agent_ca, &cert)?;
    redirect_443(&lab, Kind::Mitmproxy, MITMPROXY_PORT)?;
    let argv: Vec<String> = vec![
        mitmdump.display().to_string(),
        "--mode".into(),
        "transparent".into(),
        "--listen-port".into(),
        MITMPROXY_PORT.to_string(),
        "--set".into(),
        format!("confdir={}", confdir.display()),
        "--set".into(),
        format!(
            "ssl_verify_upstream_trusted_ca={}",
            lab.ca_pem_path().display()
        ),
        // Stream big bodies instead of buffering them whole (mitmproxy's default buffers).
        "--set".into(),
        "stream_large_bodies=1m".into(),
        "--set".into(),
        "flow_detail=0".into(),
        "--set".into(),
        "termlog_verbosity=warn".into(),
    ];
    let process = lab
        .command(Host::Gateway, &argv)
        .timeout(Duration::from_secs(24 * 3600))
        .spawn()?;
    let listening = std::net::SocketAddr::from((addr::GATEWAY_AGENT_V4, MITMPROXY_PORT));
    if let Err(e) = lab.wait_for_tcp(Host::Gateway, listening, STARTUP) {
        let out = process.kill();
        return Err(BenchError::setup(
            "mitmproxy",
            format!("did not start: {e}; {}", out.stderr_str()),
        ));
    }
    Ok(Running {
        kind: Kind::Mitmproxy,
        mode: Mode::Transparent,
        lab,
        process: Some(process),
        agent_ca,
    })
}

fn start_squid(tools: &Tools) -> Result<Running> {
    let squid = tools
        .squid
        .as_ref()
        .map_err(|why| BenchError::setup("squid", why.clone()))?;
    let certgen = tools.squid_certgen.as_ref().ok_or_else(|| {
        BenchError::setup(
            "squid",
            "security_file_certgen not found (squid-openssl provides it)",
        )
    })?;
    let lab = Lab::new(GatewayMode::Router)?;
    let dir = lab.dir().join("squid");
    fs::create_dir(&dir).map_err(|e| BenchError::io("creating the squid dir", e))?;
    let (cert, key) = mint_peer_ca()?;
    let ca_cert = dir.join("ca.pem");
    let ca_key = dir.join("ca.key");
    write(&ca_cert, &cert)?;
    write(&ca_key, &key)?;
    let ssl_db = dir.join("ssl_db");
    let init = Command::new(certgen)
        .args(["-c", "-s"])
        .arg(&ssl_db)
        .args(["-M", "16MB"])
        .output()
        .map_err(|e| BenchError::io("running security_file_certgen -c", e))?;
    if !init.status.success() {
        return Err(BenchError::setup(
            "squid",
            format!(
                "security_file_certgen -c: {}",
                String::from_utf8_lossy(&init.stderr)
            ),
        ));
    }
    let conf = dir.join("squid.conf");
    let d = dir.display();
    write(
        &conf,
        &format!(
            "# bottleneck-bench: Squid intercepting TLS in the lab's gateway namespace.
http_port 127.0.0.1:13128
https_port {port} intercept ssl-bump tls-cert={d}/ca.pem tls-key={d}/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program {certgen} -s {d}/ssl_db -M 16MB
sslcrtd_children 8 startup=2 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile={lab_ca}
http_access allow all
dns_nameservers {dns}
cache deny all
cache_mem 8 MB
pid_filename {d}/squid.pid
cache_log {d}/cache.log
access_log stdio:{d}/access.log
coredump_dir {d}
netdb_filename none
pinger_enable off
logfile_rotate 0
shutdown_lifetime 0 seconds
max_filedescriptors 16384
workers 1
",
            port = SQUID_TLS_PORT,
            certgen = certgen.display(),
            lab_ca = lab.ca_pem_path().display(),
            dns = addr::DNS_V4,
        ),
    )?;
    // Squid drops to the `proxy` user: let it write its logs and certificate database.
    let chown = Command::new("chown")
        .args(["-R", "proxy:proxy"])
        .arg(&dir)
        .output()
        .map_err(|e| BenchError::io("chown proxy", e))?;
    if !chown.status.success() {
        return Err(BenchError::setup(
            "squid",
            format!("chown: {}", String::from_utf8_lossy(&chown.stderr)),
        ));
    }
    for p in [lab.dir(), &dir] {
        let mode = fs::metadata(p)
            .map_err(|e| BenchError::io(format!("stat {}", p.display()), e))?
            .permissions()
            .mode();
        fs::set_permissions(p, fs::Permissions::from_mode(mode | 0o755))
            .map_err(|e| BenchError::io(format!("chmod {}", p.display()), e))?;
    }
    redirect_443(&lab, Kind::Squid, SQUID_TLS_PORT)?;
    let argv: Vec<String> = vec![
        squid.display().to_string(),
        "-N".into(),
        "-f".into(),
        conf.display().to_string(),
    ];
    let process = lab
        .command(Host::Gateway, &argv)
        .timeout(Duration::from_secs(24 * 3600))
        .spawn()?;
    let listening = std::net::SocketAddr::from((addr::GATEWAY_AGENT_V4, SQUID_TLS_PORT));
    if let Err(e) = lab.wait_for_tcp(Host::Gateway, listening, STARTUP) {
        let log = fs::read_to_string(dir.join("cache.log")).unwrap_or_default();
        let out = process.kill();
        return Err(BenchError::setup(
            "squid",
            format!("did not start: {e}; {}; {log}", out.stderr_str()),
        ));
    }
    Ok(Running {
        kind: Kind::Squid,
        mode: Mode::Transparent,
        lab,
        process: Some(process),
        agent_ca: ca_cert,
    })
}
