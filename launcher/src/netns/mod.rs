//! The netns backend (Linux, root, no container runtime): a bottle built from two network
//! namespaces and veth pairs.
//!
//! ```text
//!  bn-NAME-agent                 bn-NAME-gw                                uplink
//!  eth0 198.18.0.2/24 ---veth--- eth1 198.18.0.1/24   eth0 198.19.K.2/30 ---veth--- bn-NAME 198.19.K.1/30
//!  bottleneck-init (PID 1,       bottleneck-gateway                        in the host (NAT by
//!  own PID + mount ns) -> agent  (own mount ns: resolv.conf)               `table ip bottleneck-NAME`)
//!                                                                          or in a given netns
//! ```
//!
//! [`run`] validates everything first, records the bottle in its state directory before
//! changing anything (so `bottleneck rm` can undo a crashed run), builds the networks,
//! creates the bottle CA, starts the gateway and waits for it to say it is ready, runs the
//! agent, and on the agent's exit, a signal or a failure half-way removes everything
//! through [`teardown::teardown`], the same code `bottleneck rm` uses.

pub mod exec;
pub mod files;
pub mod plan;
pub mod sys;
pub mod teardown;

use std::io::Write;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::Notify;

use crate::bottle::{ConfigError, Record, RunConfig, find_binary};
use plan::{StatePaths, Uplink, UplinkNet};

/// The longest line kept from the gateway's stderr while waiting for it to be ready.
const LINE_LIMIT: usize = 8 << 10;
/// The most agent output kept when it is captured (the demo).
pub const CAPTURE_LIMIT: usize = 1 << 20;
/// The gateway's readiness line.
pub const READY_LINE: &str = "bottleneck-gateway ready";
/// The most bytes of the gateway's stderr kept in `STATE/gateway.log`.
const GATEWAY_LOG_LIMIT: usize = 16 << 20;
/// How long the gateway gets to stop after SIGTERM before SIGKILL.
const GATEWAY_STOP: Duration = Duration::from_secs(5);

/// How the agent's standard streams are connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AgentIo {
    /// Inherited from the launcher (interactive agents).
    Inherit,
    /// stdin from /dev/null, stdout captured (up to [`CAPTURE_LIMIT`]), stderr inherited.
    Capture,
}

/// What happened to the agent.
#[derive(Debug)]
pub struct Outcome {
    /// The exit status to report: the agent's code, or 128+N if signal N ended it.
    pub code: u8,
    /// The agent's stdout with [`AgentIo::Capture`].
    pub stdout: Vec<u8>,
    /// The audit log as it was when the bottle was removed.
    pub audit: String,
    /// Whether a signal to the launcher stopped the bottle.
    pub interrupted: bool,
}

/// Why a run failed before the agent could finish.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration (exit 3).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A set-up step failed; everything was removed again.
    #[error("{step}: {message}")]
    Setup {
        /// The step.
        step: String,
        /// What went wrong.
        message: String,
    },
    /// A signal arrived during set-up; everything was removed again.
    #[error("interrupted during {0}; the bottle was removed")]
    Interrupted(String),
}

/// Prints progress on stderr: one line per step with its duration.
pub struct Progress<'a> {
    out: &'a mut dyn Write,
    started: Instant,
    step: Instant,
}

impl<'a> Progress<'a> {
    /// Progress written to `out`.
    pub fn new(out: &'a mut dyn Write) -> Progress<'a> {
        Progress {
            out,
            started: Instant::now(),
            step: Instant::now(),
        }
    }

    /// Starts timing a step.
    pub fn begin(&mut self) {
        self.step = Instant::now();
    }

    /// Reports the step just finished.
    pub fn done(&mut self, what: &str, detail: &str) {
        let ms = self.step.elapsed().as_millis();
        // Progress is best effort: a closed stderr must not stop the bottle.
        let _ = writeln!(self.out, "bottleneck: {what:<9} {ms:>5} ms  {detail}");
        self.step = Instant::now();
    }

    /// A free-form line.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.out, "bottleneck: {text}");
    }

    /// Time since the start.
    pub fn total(&self) -> Duration {
        self.started.elapsed()
    }
}

/// The binaries and decisions a run needs, found before anything changes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// `bottleneck-gateway`.
    pub gateway_bin: PathBuf,
    /// `bottleneck-init`.
    pub shim_bin: PathBuf,
    /// The uplink.
    pub uplink: Uplink,
    /// Its /30.
    pub net: UplinkNet,
    /// Paths in the state directory.
    pub paths: StatePaths,
    /// The gateway's resolv.conf.
    pub gateway_resolv: String,
}

fn tool_missing(tool: &str) -> bool {
    std::process::Command::new(tool)
        .arg("--version")
        .env_clear()
        .env("PATH", crate::bottle::AGENT_PATH)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
}

/// Checks root (unless only a dry run is wanted), the tools and binaries, the name, and
/// picks the uplink and its subnet.
pub fn prepare(config: &RunConfig, dry_run: bool) -> Result<Prepared, ConfigError> {
    if !dry_run && !nix::unistd::geteuid().is_root() {
        return Err(ConfigError::Unsupported(
            "the netns backend needs root (it creates network namespaces)".into(),
        ));
    }
    let gateway_bin = find_binary("bottleneck-gateway")?;
    let shim_bin = find_binary("bottleneck-init")?;
    let uplink = match &config.uplink_netns {
        Some(ns) => {
            if !sys::namespace_exists(ns) {
                return Err(ConfigError::Unsupported(format!(
                    "--uplink-netns {ns}: no such network namespace"
                )));
            }
            Uplink::Netns(ns.clone())
        }
        None => Uplink::Host {
            enable_forwarding: sys::read_sysctl("net.ipv4.ip_forward").as_deref() != Some("1"),
        },
    };
    let mut tools = vec!["ip", "unshare", "mount", "sh"];
    if matches!(uplink, Uplink::Host { .. }) {
        tools.extend(["nft", "sysctl"]);
    }
    for tool in tools {
        if tool_missing(tool) {
            return Err(ConfigError::Unsupported(format!(
                "`{tool}` is not installed (packages iproute2, nftables, util-linux, procps)"
            )));
        }
    }
    let names = &config.names;
    if names.state_dir.exists()
        || sys::namespace_exists(&names.agent_ns)
        || sys::namespace_exists(&names.gateway_ns)
    {
        return Err(ConfigError::Unsupported(format!(
            "a bottle named {} already exists (see `bottleneck ls`; remove it with `bottleneck rm {}`)",
            names.bottle, names.bottle
        )));
    }
    let mut addr_cmd = vec!["ip"];
    if let Uplink::Netns(ns) = &uplink {
        addr_cmd.extend(["-n", ns.as_str()]);
    }
    addr_cmd.extend(["-4", "-o", "addr", "show"]);
    let used = std::process::Command::new(addr_cmd[0])
        .args(&addr_cmd[1..])
        .env_clear()
        .env("PATH", crate::bottle::AGENT_PATH)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let net = UplinkNet::pick(&used, &names.bottle)
        .ok_or_else(|| ConfigError::Unsupported("no free uplink subnet in 198.19.0.0/16".into()))?;
    let gateway_resolv = match &uplink {
        Uplink::Host { .. } => files::host_gateway_resolv(
            &std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
            std::fs::read_to_string("/run/systemd/resolve/resolv.conf")
                .ok()
                .as_deref(),
        )
        .unwrap_or_else(|| "# no usable host resolver: set dns.upstream in the policy\n".into()),
        Uplink::Netns(_) => {
            "# simulated uplink: the policy's dns.upstream names the resolver\n".into()
        }
    };
    Ok(Prepared {
        gateway_bin,
        shim_bin,
        uplink,
        net,
        paths: StatePaths::new(names),
        gateway_resolv,
    })
}

/// The `--dry-run` text: every step and command, in order, then the teardown.
pub fn dry_run_text(config: &RunConfig, p: &Prepared) -> String {
    let names = &config.names;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "# bottle {} (netns backend; dry run: nothing is changed)",
        names.bottle
    ));
    line(format!(
        "# state: mkdir -m 0755 {} and write bottle.json",
        names.state_dir.display()
    ));
    line("# 1. networks".into());
    for step in plan::network_steps(names, &p.uplink, p.net) {
        line(format!("#   {}", step.what));
        line(step.cmd.to_string());
    }
    line("# 2. bottle CA (the key stays in a 0700 directory, for the gateway only)".into());
    line(plan::ca_command(&p.gateway_bin, &p.paths).to_string());
    line(format!(
        "cp {} {}",
        p.paths.ca_dir.join("ca.pem").display(),
        p.paths.agent_ca.display()
    ));
    line("# 3. gateway (waits for `bottleneck-gateway ready` on its stderr)".into());
    line(format!(
        "# write {}:\n#   {}",
        p.paths.gateway_resolv.display(),
        p.gateway_resolv.trim_end().replace('\n', "\n#   ")
    ));
    let secrets: Vec<&String> = config.secrets.0.keys().collect();
    line(format!(
        "# environment: PATH{}",
        secrets
            .iter()
            .map(|s| format!(" {s}=<from this environment>"))
            .collect::<String>()
    ));
    line(
        plan::gateway_command(
            names,
            &p.gateway_bin,
            &config.policy_path,
            &p.paths,
            &config.upstream_ca,
            config.proxy,
        )
        .to_string(),
    );
    line("# 4. agent (bottleneck-init as PID 1 of its own PID and mount namespaces)".into());
    let added = std::fs::read_to_string("/etc/passwd").ok().and_then(|pw| {
        files::user_to_add(
            &config.user,
            &pw,
            &std::fs::read_to_string("/etc/group").unwrap_or_default(),
        )
    });
    if let Some(added) = &added {
        line(format!(
            "# user {} is not in /etc/passwd: added to the bottle's copy (uid {}, home {})",
            added.name,
            added.id,
            names.state_dir.join("home").display()
        ));
    }
    line(format!(
        "# write per-bottle copies under {} (resolv.conf, hosts, nsswitch.conf, CA bundles{})",
        p.paths.agent_dir.display(),
        if added.is_some() {
            ", passwd, group"
        } else {
            ""
        }
    ));
    let binds = dry_run_binds(config, &p.paths, added.is_some());
    let mut env: Vec<String> = vec![format!("PATH={}", agent_path(config))];
    if config.proxy {
        env.extend(
            plan::proxy_env()
                .into_iter()
                .map(|(k, v)| format!("{k}={v}")),
        );
    }
    env.extend(config.agent_env.iter().map(|(k, _)| format!("{k}=...")));
    env.extend(
        plan::shim_env(&p.paths, &config.user)
            .into_iter()
            .map(|(k, v)| format!("{k}={v}")),
    );
    line(format!("# environment: {}", env.join(" ")));
    line(plan::agent_command(names, &p.shim_bin, &binds, &config.agent).to_string());
    line("# 5. teardown (agent exit, Ctrl-C/SIGTERM, or a failure half-way)".into());
    line(format!(
        "# SIGTERM every process in {} and {} (SIGKILL after {}s)",
        names.agent_ns,
        names.gateway_ns,
        teardown::STOP_GRACE.as_secs()
    ));
    for step in plan::network_steps(names, &p.uplink, p.net).iter().rev() {
        if let Some(undo) = &step.undo {
            line(undo.to_string());
        }
    }
    line(format!("rm -rf {}", names.state_dir.display()));
    out
}

fn dry_run_binds(config: &RunConfig, paths: &StatePaths, added: bool) -> Vec<plan::Bind> {
    let dir = &paths.agent_dir;
    let mut binds = Vec::new();
    let mut push = |src: PathBuf, dst: &str| binds.push(plan::Bind::rw(src, dst));
    if added {
        push(dir.join("passwd"), "/etc/passwd");
        push(dir.join("group"), "/etc/group");
    }
    push(dir.join("resolv.conf"), "/etc/resolv.conf");
    push(dir.join("hosts"), "/etc/hosts");
    if std::path::Path::new("/etc/nsswitch.conf").exists() {
        push(dir.join("nsswitch.conf"), "/etc/nsswitch.conf");
    }
    for (i, bundle) in files::system_bundles().into_iter().enumerate() {
        binds.push(plan::Bind::rw(
            dir.join(format!("ca-bundle-{i}.pem")),
            bundle,
        ));
    }
    binds.extend(files::masks());
    binds.extend(config.volumes.iter().map(plan::Bind::from));
    binds
}

fn agent_path(config: &RunConfig) -> String {
    config
        .agent_env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| crate::bottle::AGENT_PATH.into())
}

/// Runs the bottle: networks, CA, gateway, agent, teardown. Progress goes to `err`.
pub fn run(
    config: &RunConfig,
    prepared: &Prepared,
    io: AgentIo,
    err: &mut dyn Write,
) -> Result<Outcome, RunError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| RunError::Setup {
            step: "start".into(),
            message: format!("cannot start the runtime: {e}"),
        })?;
    runtime.block_on(run_async(config, prepared, io, err))
}

/// Signals to the launcher, seen by every stage.
struct Stop {
    flag: AtomicBool,
    notify: Notify,
}

impl Stop {
    fn requested(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }
    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.requested() {
                return;
            }
            notified.await;
        }
    }
}

/// Installs handlers for SIGINT, SIGTERM and SIGHUP. A SIGINT while stdin is a terminal
/// reached the agent too (same foreground process group): the agent decides; a second
/// one within two seconds stops the bottle.
fn watch_signals(interactive: bool) -> Result<Arc<Stop>, std::io::Error> {
    let stop = Arc::new(Stop {
        flag: AtomicBool::new(false),
        notify: Notify::new(),
    });
    let mut int = signal(SignalKind::interrupt())?;
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    let s = stop.clone();
    tokio::spawn(async move {
        let mut last_int: Option<Instant> = None;
        loop {
            let stop_now = tokio::select! {
                _ = int.recv() => {
                    let again = last_int.is_some_and(|t| t.elapsed() < Duration::from_secs(2));
                    last_int = Some(Instant::now());
                    !interactive || again
                }
                _ = term.recv() => true,
                _ = hup.recv() => true,
            };
            if stop_now {
                s.flag.store(true, Ordering::SeqCst);
                s.notify.notify_waiters();
            }
        }
    });
    Ok(stop)
}

fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(255),
        _ => 1,
    }
}

async fn run_async(
    config: &RunConfig,
    p: &Prepared,
    io: AgentIo,
    err: &mut dyn Write,
) -> Result<Outcome, RunError> {
    let interactive = io == AgentIo::Inherit && std::io::IsTerminal::is_terminal(&std::io::stdin());
    let stop = watch_signals(interactive).map_err(|e| RunError::Setup {
        step: "signals".into(),
        message: e.to_string(),
    })?;
    let mut progress = Progress::new(err);
    let names = &config.names;
    let record = Record {
        name: names.bottle.clone(),
        launcher_pid: std::process::id(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        backend: "netns".into(),
        agent: config.agent.clone(),
        policy: config.policy_path.clone(),
        uplink: p.uplink.describe(),
        enabled_forwarding: matches!(
            p.uplink,
            Uplink::Host {
                enable_forwarding: true
            }
        ),
    };
    let mut gateway: Option<tokio::process::Child> = None;
    let result = bottle(config, p, io, &record, &stop, &mut progress, &mut gateway).await;
    // Teardown, whatever happened.
    progress.begin();
    if let Some(mut gw) = gateway.take() {
        stop_child(&mut gw, GATEWAY_STOP).await;
    }
    let audit = std::fs::read_to_string(&p.paths.audit).unwrap_or_default();
    let problems = teardown::teardown(names, Some(&record)).await;
    if problems.is_empty() {
        progress.done(
            "cleanup",
            &format!(
                "namespaces, veths{}, state removed",
                if matches!(p.uplink, Uplink::Host { .. }) {
                    ", nftables table"
                } else {
                    ""
                }
            ),
        );
    } else {
        progress.done("cleanup", "INCOMPLETE:");
        for problem in &problems {
            progress.note(&format!("  {problem}"));
        }
        progress.note(&format!("  run `bottleneck rm {}` to retry", names.bottle));
    }
    result.map(|(code, stdout, interrupted)| Outcome {
        code,
        stdout,
        audit,
        interrupted,
    })
}

async fn stop_child(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        sys::signal(pid, nix::sys::signal::Signal::SIGTERM);
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
    }
}

fn setup_err(step: &str, message: impl std::fmt::Display) -> RunError {
    RunError::Setup {
        step: step.into(),
        message: message.to_string(),
    }
}

/// Builds the bottle and runs the agent; returns (exit code, captured stdout,
/// interrupted). The caller tears down.
async fn bottle(
    config: &RunConfig,
    p: &Prepared,
    io: AgentIo,
    record: &Record,
    stop: &Stop,
    progress: &mut Progress<'_>,
    gateway_slot: &mut Option<tokio::process::Child>,
) -> Result<(u8, Vec<u8>, bool), RunError> {
    let names = &config.names;
    let check_stop = |stage: &str| {
        if stop.requested() {
            Err(RunError::Interrupted(stage.into()))
        } else {
            Ok(())
        }
    };

    // State first, so a crash from here on leaves something `rm` understands.
    progress.begin();
    for dir in [
        std::path::Path::new(crate::bottle::STATE_ROOT),
        &names.state_dir,
    ] {
        std::fs::create_dir_all(dir)
            .map_err(|e| setup_err("state", format!("{}: {e}", dir.display())))?;
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| setup_err("state", format!("{}: {e}", dir.display())))?;
    }
    teardown::write_record(names, record).map_err(|e| setup_err("state", e))?;

    for step in plan::network_steps(names, &p.uplink, p.net) {
        check_stop("networks")?;
        sys::run(&step.cmd)
            .await
            .map_err(|e| setup_err(&format!("networks ({})", step.what), e))?;
    }
    progress.done(
        "networks",
        &format!(
            "{} <-> {}, uplink {} via {}",
            names.agent_ns,
            names.gateway_ns,
            p.net.subnet(),
            match &p.uplink {
                Uplink::Host { .. } => format!("the host (NAT: table ip {})", names.nft_table),
                Uplink::Netns(ns) => format!("namespace {ns}"),
            }
        ),
    );

    check_stop("the CA")?;
    sys::run(&plan::ca_command(&p.gateway_bin, &p.paths))
        .await
        .map_err(|e| setup_err("CA", e))?;
    std::fs::create_dir_all(&p.paths.agent_dir).map_err(|e| setup_err("CA", e))?;
    std::fs::copy(p.paths.ca_dir.join("ca.pem"), &p.paths.agent_ca)
        .map_err(|e| setup_err("CA", e))?;
    progress.done("CA", &format!("{}", p.paths.ca_dir.display()));

    check_stop("the gateway")?;
    std::fs::write(&p.paths.gateway_resolv, &p.gateway_resolv)
        .map_err(|e| setup_err("gateway", e))?;
    let gw_cmd = plan::gateway_command(
        names,
        &p.gateway_bin,
        &config.policy_path,
        &p.paths,
        &config.upstream_ca,
        config.proxy,
    );
    let mut command = tokio::process::Command::new(&gw_cmd.argv[0]);
    command
        .args(&gw_cmd.argv[1..])
        .env_clear()
        .env("PATH", crate::bottle::AGENT_PATH)
        // Secrets: the gateway's environment only (never a command line).
        .envs(config.secrets.0.iter())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C meant for the agent must not stop it.
        .process_group(0)
        .kill_on_drop(true);
    let mut gw = command
        .spawn()
        .map_err(|e| setup_err("gateway", format!("cannot start {}: {e}", gw_cmd.argv[0])))?;
    let stderr = gw.stderr.take();
    *gateway_slot = Some(gw);
    let log = std::fs::File::create(&p.paths.gateway_log).map_err(|e| setup_err("gateway", e))?;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    if let Some(stderr) = stderr {
        tokio::spawn(copy_lines(stderr, log, Some(ready_tx)));
    }
    let gw_ref = gateway_slot.as_mut();
    let Some(gw) = gw_ref else {
        return Err(setup_err("gateway", "lost the gateway process"));
    };
    tokio::select! {
        ready = ready_rx => {
            if ready.is_err() {
                // Stderr closed without the line: it exited.
                let status = tokio::time::timeout(Duration::from_secs(2), gw.wait()).await;
                return Err(setup_err("gateway", format!(
                    "it exited before it was ready ({}):\n{}",
                    status.ok().and_then(Result::ok).map(|s| s.to_string()).unwrap_or_else(|| "still running".into()),
                    tail(&p.paths.gateway_log)
                )));
            }
        }
        _ = tokio::time::sleep(config.gateway_timeout) => {
            return Err(setup_err("gateway", format!(
                "not ready after {:?}:\n{}", config.gateway_timeout, tail(&p.paths.gateway_log)
            )));
        }
        _ = stop.wait() => return Err(RunError::Interrupted("the gateway start".into())),
    }
    progress.done(
        "gateway",
        &format!(
            "ready in {} (log {}, audit {})",
            names.gateway_ns,
            p.paths.gateway_log.display(),
            p.paths.audit.display()
        ),
    );

    check_stop("the agent")?;
    let (mut binds, added) =
        files::write_agent_files(&p.paths, &config.user).map_err(|e| setup_err("agent", e))?;
    binds.extend(config.volumes.iter().map(plan::Bind::from));
    let agent_cmd = plan::agent_command(names, &p.shim_bin, &binds, &config.agent);
    let mut command = tokio::process::Command::new(&agent_cmd.argv[0]);
    command.args(&agent_cmd.argv[1..]).env_clear();
    command.env("PATH", agent_path(config));
    for var in ["TERM", "COLORTERM", "LANG", "LC_ALL", "TZ"] {
        if let Some(value) = std::env::var_os(var) {
            command.env(var, value);
        }
    }
    if config.proxy {
        command.envs(plan::proxy_env());
    }
    command
        .envs(config.agent_env.iter().map(|(k, v)| (k, v)))
        .envs(plan::shim_env(&p.paths, &config.user))
        .kill_on_drop(true);
    match io {
        AgentIo::Inherit => {
            command
                .stdin(Stdio::inherit())
                .stdout(Stdio::inherit())
                .stderr(Stdio::inherit());
        }
        AgentIo::Capture => {
            command
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
        }
    }
    let mut agent = command
        .spawn()
        .map_err(|e| setup_err("agent", format!("cannot start: {e}")))?;
    progress.done(
        "agent",
        &format!(
            "started: bottleneck-init as user {}{} -> {}",
            config.user,
            added
                .as_ref()
                .map(|a| format!(" (added to the bottle's passwd as uid {})", a.id))
                .unwrap_or_default(),
            config
                .agent
                .iter()
                .map(|w| plan::quote(w))
                .collect::<Vec<_>>()
                .join(" ")
        ),
    );
    let capture = agent
        .stdout
        .take()
        .map(|out| tokio::spawn(read_bounded(out, CAPTURE_LIMIT)));
    let mut interrupted = false;
    let status = tokio::select! {
        status = agent.wait() => status.ok(),
        _ = stop.wait() => {
            interrupted = true;
            None
        }
        _ = gateway_exit(gateway_slot) => {
            progress.note("the gateway exited unexpectedly: stopping the agent (no egress without it)");
            None
        }
    };
    let code = match status {
        Some(status) => exit_code(status),
        None => {
            // Stop the agent: every process of its namespace, then the wrapper.
            let _ = sys::stop_all_in(&[&names.agent_ns], teardown::STOP_GRACE).await;
            match tokio::time::timeout(Duration::from_secs(3), agent.wait()).await {
                Ok(Ok(status)) => exit_code(status),
                _ => {
                    let _ = agent.start_kill();
                    130
                }
            }
        }
    };
    let stdout = match capture {
        Some(task) => tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default(),
        None => Vec::new(),
    };
    progress.note(&format!(
        "agent exited with status {code}{} after {:.1} s",
        if interrupted {
            " (stopped by a signal)"
        } else {
            ""
        },
        progress.total().as_secs_f64()
    ));
    Ok((code, stdout, interrupted))
}

async fn gateway_exit(slot: &mut Option<tokio::process::Child>) {
    match slot.as_mut() {
        Some(child) => {
            let _ = child.wait().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Copies the gateway's stderr to its log file; signals `ready` on the readiness line.
async fn copy_lines(
    mut from: impl AsyncRead + Unpin,
    mut log: std::fs::File,
    mut ready: Option<tokio::sync::oneshot::Sender<()>>,
) {
    let mut buf = vec![0u8; 8192];
    let mut line: Vec<u8> = Vec::new();
    let mut written = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Logging is best effort and bounded (the state directory is usually in RAM); the
        // gateway must never block on it, so past the bound its output is read and dropped.
        if written < GATEWAY_LOG_LIMIT {
            let keep = n.min(GATEWAY_LOG_LIMIT - written);
            let _ = log.write_all(&buf[..keep]);
            written += keep;
            if written == GATEWAY_LOG_LIMIT {
                let _ = log.write_all(b"\n[bottleneck: gateway log truncated here]\n");
            }
        }
        if ready.is_none() {
            continue;
        }
        for &b in &buf[..n] {
            if b == b'\n' {
                if String::from_utf8_lossy(&line).contains(READY_LINE)
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
                line.clear();
            } else if line.len() < LINE_LIMIT {
                line.push(b);
            }
        }
    }
}

async fn read_bounded(mut from: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 8192];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => {
                let room = limit.saturating_sub(out.len());
                // Past the limit keep reading (and dropping) so the agent never blocks.
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// The last lines of a log file, indented, for error messages.
fn tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..]
        .iter()
        .map(|l| format!("  | {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `bottleneck rm`: removes bottle `name` (stopping its launcher first if it still runs).
pub fn remove(name: &str, err: &mut dyn Write) -> Result<(), String> {
    let names = crate::bottle::Names::new(name);
    let record = teardown::read_record(&names);
    let exists = record.is_some()
        || names.state_dir.exists()
        || sys::namespace_exists(&names.agent_ns)
        || sys::namespace_exists(&names.gateway_ns);
    if !exists {
        return Err(format!("no bottle named {name} (see `bottleneck ls`)"));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async {
        if let Some(r) = &record
            && r.launcher_pid != std::process::id()
            && sys::pid_alive(r.launcher_pid)
            && let Ok(pid) = i32::try_from(r.launcher_pid)
        {
            // A running bottle: its launcher cleans up; give it the time to.
            let _ = writeln!(
                err,
                "bottleneck: {name} is running: stopping it (SIGTERM to pid {pid})"
            );
            sys::signal(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while sys::pid_alive(r.launcher_pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let problems = teardown::teardown(&names, record.as_ref()).await;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("\n"))
        }
    })
}
