//! The podman and docker backends: a bottle built from two containers and two networks
//! with the `podman` or `docker` CLI (the same commands on both):
//!
//! 1. `ENGINE version` must answer (the engine runs);
//! 2. the agent network, `--internal`, with an explicit subnet from 198.18.0.0/15 (the next
//!    free /24 from one derived from the name), then the egress network (a normal,
//!    NATed network; `--egress-network` names an existing one instead, which is neither
//!    created nor removed: the tests' simulated internet);
//! 3. the gateway, `create`d on the egress network **first**, then `network connect`ed to
//!    the agent network with a fixed address (`.2`), then started. The order in which an
//!    engine numbers the interfaces is not fixed, so the gateway image's entry point
//!    (`images/bottleneck-gateway-entry`) finds the agent-side interface by that address
//!    (`BOTTLENECK_AGENT_ADDR`) and gives it to the gateway as `--agent-iface`. It gets
//!    `--cap-add NET_ADMIN`, `--sysctl net.ipv4.ip_forward=1` (and IPv6's: the gateway checks both), the policy (read-only),
//!    the CA directory and the audit log mounted, and the secrets as bare `-e NAME` (the
//!    CLI copies the value from its own environment: never on a command line);
//! 4. `logs` until the gateway says it is ready, then `inspect`: its address on the agent
//!    network (`.NetworkSettings.Networks.<name>.IPAddress`) becomes the agent's
//!    `BOTTLENECK_GATEWAY`;
//! 5. the agent in the foreground on the agent network only, with `--cap-add NET_ADMIN`
//!    only (for `bottleneck-init`, the image's ENTRYPOINT, which drops it), the CA
//!    certificate mounted read-only, `--dns` the gateway;
//! 6. teardown in reverse (containers before networks) on the agent's exit, a signal, or a
//!    failure at any step, which undoes exactly the steps before it.
//!
//! Every resource carries the labels `bottleneck.bottle=NAME` and `bottleneck.role=...` and
//! a `bn-NAME-` name prefix; `ls`/`rm` find them by label and check the prefix.
//! Portable: std only, so it builds on macOS (Docker Desktop, podman machine).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bottle::{ConfigError, PREFIX, RunConfig};
use crate::tool::{self, CallError, scrubbed};
pub use crate::tool::{CALL_TIMEOUT, Output};

/// The label naming a resource's bottle.
pub const LABEL_BOTTLE: &str = "bottleneck.bottle";
/// The label naming a resource's role.
pub const LABEL_ROLE: &str = "bottleneck.role";
/// The label giving the agent's user (for `bottleneck exec`).
pub const LABEL_USER: &str = "bottleneck.user";
/// Deadline of one CLI call (not the foreground agent).
/// The gateway's explicit proxy port (`--egress=proxy`).
pub const PROXY_PORT: u16 = 3128;
/// The shim's path in the agent image.
pub const INIT: &str = "/usr/local/bin/bottleneck-init";
/// The most output kept from one CLI call.
/// The gateway's readiness line.
const READY_LINE: &str = "bottleneck-gateway ready";
/// Where the gateway container sees its files.
const GW_CONFIG: &str = "/etc/bottleneck";
const GW_CA: &str = "/var/lib/bottleneck/ca";
const GW_AUDIT: &str = "/var/log/bottleneck/audit.jsonl";
/// Namespaced settings the agent container is created with.
pub const AGENT_SYSCTLS: &[&str] = &[
    "net.ipv4.conf.all.accept_redirects=0",
    "net.ipv4.conf.default.accept_redirects=0",
    "net.ipv6.conf.all.disable_ipv6=1",
    "net.ipv6.conf.default.disable_ipv6=1",
];
/// Where the agent container sees the CA certificate.
const AGENT_CA: &str = "/etc/bottleneck-ca";

/// A container engine with a docker-compatible CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// `podman`.
    Podman,
    /// `docker`.
    Docker,
}

impl Engine {
    /// The executable.
    pub fn program(self) -> &'static str {
        match self {
            Engine::Podman => "podman",
            Engine::Docker => "docker",
        }
    }
}

/// The names of one bottle's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineNames {
    /// The bottle.
    pub bottle: String,
    /// The internal agent network.
    pub agent_net: String,
    /// The egress network.
    pub egress_net: String,
    /// The gateway container.
    pub gateway: String,
    /// The agent container.
    pub agent: String,
}

impl EngineNames {
    /// Names for bottle `name`.
    pub fn new(name: &str) -> EngineNames {
        EngineNames {
            bottle: name.to_owned(),
            agent_net: format!("{PREFIX}{name}-agentnet"),
            egress_net: format!("{PREFIX}{name}-egress"),
            gateway: format!("{PREFIX}{name}-gw"),
            agent: format!("{PREFIX}{name}-agent"),
        }
    }

    fn labels(&self, role: &str) -> Vec<String> {
        vec![
            "--label".into(),
            format!("{LABEL_BOTTLE}={}", self.bottle),
            "--label".into(),
            format!("{LABEL_ROLE}={role}"),
        ]
    }
}

/// A failure of the podman/docker backend.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A CLI call failed.
    #[error("`{program} {args}` failed (exit {code}): {stderr}")]
    Call {
        /// The engine.
        program: &'static str,
        /// The arguments.
        args: String,
        /// Its exit status.
        code: i32,
        /// Its last error line.
        stderr: String,
    },
    /// The CLI could not be run or did not finish.
    #[error("`{program} {args}`: {message}")]
    Tool {
        /// The engine.
        program: &'static str,
        /// The arguments.
        args: String,
        /// What went wrong.
        message: String,
    },
    /// Unexpected output.
    #[error("{0}")]
    Output(String),
    /// A file in the state directory.
    #[error("{0}: {1}")]
    File(String, std::io::Error),
    /// A signal arrived during set-up.
    #[error("interrupted; the bottle was removed")]
    Interrupted,
}

/// Runs `ENGINE ARGS` with `env` added to its environment, within [`CALL_TIMEOUT`].
pub fn call(
    engine: Engine,
    args: &[String],
    env: &[(String, String)],
) -> Result<Output, EngineError> {
    let program = engine.program();
    tool::call(program, args, env).map_err(|e| EngineError::Tool {
        program,
        args: args.join(" "),
        message: match e {
            CallError::NotFound => format!("{program} is not installed"),
            CallError::Failed(message) => message,
        },
    })
}

fn last_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_owned()
}

/// [`call`], failing on a non-zero exit with the CLI's error line.
pub fn call_ok(
    engine: Engine,
    args: &[String],
    env: &[(String, String)],
) -> Result<Output, EngineError> {
    let out = call(engine, args, env)?;
    if out.code == 0 {
        Ok(out)
    } else {
        Err(EngineError::Call {
            program: engine.program(),
            args: args.join(" "),
            code: out.code,
            stderr: last_line(&out.stderr),
        })
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// The agent network's candidate subnets: /24s of 198.18.16.0-198.19.255.0 (DESIGN.md's
/// agent range), starting from one derived from the bottle name.
pub fn agent_subnets(name: &str) -> impl Iterator<Item = (u8, u8)> {
    // FNV-1a: stable across runs and platforms.
    let hash = name.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    let slots = 512 - 16;
    let start = hash % slots;
    (0..slots).map(move |i| {
        let slot = 16 + (start + i) % slots;
        (18 + (slot / 256) as u8, (slot % 256) as u8)
    })
}

/// The subnet string and the gateway's address for a candidate from [`agent_subnets`].
pub fn subnet_and_gateway((b, c): (u8, u8)) -> (String, String) {
    (format!("198.{b}.{c}.0/24"), format!("198.{b}.{c}.2"))
}

/// `network create` for the agent network (`--internal`).
pub fn agent_network_create(n: &EngineNames, subnet: &str) -> Vec<String> {
    let mut args = strings(&["network", "create", "--internal", "--subnet", subnet]);
    args.extend(n.labels("agent-net"));
    args.push(n.agent_net.clone());
    args
}

/// `network create` for the egress network.
pub fn egress_network_create(n: &EngineNames) -> Vec<String> {
    let mut args = strings(&["network", "create"]);
    args.extend(n.labels("egress-net"));
    args.push(n.egress_net.clone());
    args
}

/// The state directory's layout for the container backends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineState {
    /// The bottle's state directory.
    pub dir: PathBuf,
}

impl EngineState {
    /// `/run/bottleneck/NAME` when that is writable (root), else
    /// `TMPDIR/bottleneck-state/NAME`.
    pub fn new(names: &crate::bottle::Names) -> EngineState {
        let root = Path::new(crate::bottle::STATE_ROOT);
        let usable = std::fs::create_dir_all(root).is_ok()
            && std::fs::metadata(root).is_ok_and(|m| !m.permissions().readonly())
            && is_writable_dir(root);
        EngineState {
            dir: if usable {
                names.state_dir.clone()
            } else {
                std::env::temp_dir()
                    .join("bottleneck-state")
                    .join(&names.bottle)
            },
        }
    }
    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// The gateway's read-only configuration (the policy, upstream CAs).
    pub fn config(&self) -> PathBuf {
        self.sub("gateway")
    }
    /// The bottle CA, created by the gateway (key and certificate).
    pub fn ca(&self) -> PathBuf {
        self.sub("ca")
    }
    /// The audit log (where `bottleneck logs` reads it).
    pub fn audit(&self) -> PathBuf {
        self.sub("audit.jsonl")
    }
    /// The agent's copy of the CA certificate (nothing else).
    pub fn agent_ca(&self) -> PathBuf {
        self.sub("agent-ca")
    }
}

fn is_writable_dir(dir: &Path) -> bool {
    let probe = dir.join(format!(".probe-{}", std::process::id()));
    let ok = std::fs::write(&probe, b"").is_ok();
    let _ = std::fs::remove_file(&probe);
    ok
}

/// Settings of a podman/docker run beyond [`RunConfig`].
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Which engine.
    pub engine: Engine,
    /// The agent image.
    pub image: String,
    /// The gateway image.
    pub gateway_image: String,
    /// The gateway container's own resolver (`--dns`), if any.
    pub gateway_dns: Option<String>,
    /// An existing network to use for egress (neither created nor removed).
    pub egress_network: Option<String>,
    /// `--interactive --tty` for the agent (stdin is a terminal).
    pub tty: bool,
}

impl EngineOptions {
    fn egress(&self, n: &EngineNames) -> String {
        self.egress_network
            .clone()
            .unwrap_or_else(|| n.egress_net.clone())
    }
}

/// The gateway's `create` (started after it joined the agent network).
pub fn gateway_create(
    n: &EngineNames,
    state: &EngineState,
    options: &EngineOptions,
    gateway_ip: &str,
    config: &RunConfig,
) -> Vec<String> {
    let mut args = strings(&["create", "--name"]);
    args.push(n.gateway.clone());
    args.extend(n.labels("gateway"));
    // Egress first; the agent network is connected next, before the start.
    args.extend([
        "--network".into(),
        options.egress(n),
        "--cap-add".into(),
        "NET_ADMIN".into(),
        "--sysctl".into(),
        "net.ipv4.ip_forward=1".into(),
        "--sysctl".into(),
        "net.ipv6.conf.all.forwarding=1".into(),
    ]);
    if let Some(dns) = &options.gateway_dns {
        args.extend(["--dns".into(), dns.clone()]);
    }
    for var in config.secrets.0.keys() {
        // Bare name: the CLI copies the value from its environment.
        args.extend(["-e".into(), var.clone()]);
    }
    args.extend(["-e".into(), format!("BOTTLENECK_AGENT_ADDR={gateway_ip}")]);
    for (host, guest, ro) in [
        (state.config(), GW_CONFIG.to_owned(), true),
        (state.ca(), GW_CA.to_owned(), false),
        (state.audit(), GW_AUDIT.to_owned(), false),
    ] {
        args.push("-v".into());
        args.push(format!(
            "{}:{guest}{}",
            host.display(),
            if ro { ":ro" } else { "" }
        ));
    }
    args.push(options.gateway_image.clone());
    args.extend(strings(&[
        "--policy",
        &format!("{GW_CONFIG}/policy.yaml"),
        "--ca-dir",
        GW_CA,
        "--audit-log",
        GW_AUDIT,
    ]));
    for i in 0..config.upstream_ca.len() {
        args.push("--upstream-ca".into());
        args.push(format!("{GW_CONFIG}/upstream-ca-{i}.pem"));
    }
    if config.proxy {
        args.push("--listen-proxy".into());
        args.push(format!("{gateway_ip}:{PROXY_PORT}"));
    }
    args
}

/// `network connect` of the gateway to the agent network at its fixed address.
pub fn gateway_connect(n: &EngineNames, gateway_ip: &str) -> Vec<String> {
    let mut args = strings(&["network", "connect", "--ip", gateway_ip]);
    args.push(n.agent_net.clone());
    args.push(n.gateway.clone());
    args
}

/// The proxy variables of `--egress=proxy` (both spellings).
pub fn proxy_env(gateway_ip: &str) -> Vec<(String, String)> {
    let url = format!("http://{gateway_ip}:{PROXY_PORT}");
    let no_proxy = "localhost,127.0.0.1,::1".to_owned();
    vec![
        ("HTTP_PROXY".into(), url.clone()),
        ("HTTPS_PROXY".into(), url.clone()),
        ("http_proxy".into(), url.clone()),
        ("https_proxy".into(), url),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
    ]
}

/// The agent's `run` (foreground; exit status = the agent's).
pub fn agent_run(
    n: &EngineNames,
    state: &EngineState,
    gateway_ip: &str,
    config: &RunConfig,
    options: &EngineOptions,
) -> Vec<String> {
    let mut args = strings(&["run", "--name"]);
    args.push(n.agent.clone());
    args.extend(n.labels("agent"));
    args.extend([
        "--label".into(),
        format!("{LABEL_USER}={}", config.user),
        "--network".into(),
        n.agent_net.clone(),
        // Only for bottleneck-init's route change; it drops every capability before the
        // agent runs.
        "--cap-add".into(),
        "NET_ADMIN".into(),
        // The gateway from the first packet on (the shim rewrites resolv.conf anyway).
        "--dns".into(),
        gateway_ip.into(),
    ]);
    // What the shim would set but cannot where /proc/sys is read-only (as in both
    // engines): no ICMP redirects, no IPv6 on the agent's interfaces.
    for sysctl in AGENT_SYSCTLS {
        args.extend(["--sysctl".into(), (*sysctl).to_owned()]);
    }
    let mut fixed = vec![
        ("BOTTLENECK_GATEWAY".to_owned(), gateway_ip.to_owned()),
        ("BOTTLENECK_CA_FILE".into(), format!("{AGENT_CA}/ca.pem")),
        ("BOTTLENECK_USER".into(), config.user.clone()),
    ];
    if config.proxy {
        fixed.extend(proxy_env(gateway_ip));
    }
    for (k, v) in fixed {
        args.extend(["-e".into(), format!("{k}={v}")]);
    }
    for (k, _) in &config.agent_env {
        // Values travel in the CLI's environment, not on its command line.
        args.extend(["-e".into(), k.clone()]);
    }
    args.push("-v".into());
    args.push(format!("{}:{AGENT_CA}:ro", state.agent_ca().display()));
    for v in &config.volumes {
        args.push("-v".into());
        args.push(format!(
            "{}:{}{}",
            v.src.display(),
            v.dst.display(),
            if v.read_only { ":ro" } else { "" }
        ));
    }
    args.push("-i".into());
    if options.tty {
        args.push("-t".into());
    }
    args.push(options.image.clone());
    args.extend(config.agent.iter().cloned());
    args
}

/// `exec` of a command in a running agent through `bottleneck-init --drop-only`: the
/// engine would otherwise start it with the container's creation capabilities.
pub fn exec_args(agent: &str, user: &str, tty: bool, command: &[String]) -> Vec<String> {
    let mut args = strings(&["exec", "-i"]);
    if tty {
        args.push("-t".into());
    }
    args.extend([
        agent.to_owned(),
        INIT.into(),
        "--drop-only".into(),
        "--user".into(),
        user.to_owned(),
        "--".into(),
    ]);
    args.extend(command.iter().cloned());
    args
}

/// The gateway's address on `network` from `inspect` JSON
/// (`[0].NetworkSettings.Networks.<network>.IPAddress`).
pub fn gateway_ip(inspect_json: &str, network: &str) -> Result<String, EngineError> {
    let value: Value = serde_json::from_str(inspect_json)
        .map_err(|e| EngineError::Output(format!("inspect: not JSON: {e}")))?;
    let address = value
        .as_array()
        .and_then(|a| a.first())
        .and_then(|c| c.pointer("/NetworkSettings/Networks"))
        .and_then(|nets| nets.get(network))
        .and_then(|net| net.get("IPAddress"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            EngineError::Output(format!(
                "inspect: the gateway has no address on {network} (is it running?)"
            ))
        })?;
    let ip = address.split('/').next().unwrap_or_default();
    ip.parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| EngineError::Output(format!("inspect: bad IPAddress {address:?}")))
}

/// One labelled resource found by `inspect`: (name, bottle, role, user).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The container's or network's name.
    pub name: String,
    /// Its bottle.
    pub bottle: String,
    /// Its role label.
    pub role: String,
    /// The user label (agents).
    pub user: Option<String>,
}

/// Our resources in `inspect` / `network inspect` JSON (docker's `Name`/`Config.Labels`
/// and `Name`/`Labels`, podman's lowercase network keys): label and name prefix must agree.
pub fn labelled(inspect_json: &str, bottle: Option<&str>) -> Vec<Found> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(inspect_json) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let name = item
                .get("Name")
                .or_else(|| item.get("name"))?
                .as_str()?
                .trim_start_matches('/')
                .to_owned();
            let labels = item
                .pointer("/Config/Labels")
                .or_else(|| item.get("Labels"))
                .or_else(|| item.get("labels"))?;
            let owner = labels.get(LABEL_BOTTLE)?.as_str()?.to_owned();
            let label = |k: &str| labels.get(k).and_then(Value::as_str).map(str::to_owned);
            let ours = name.starts_with(&format!("{PREFIX}{owner}-"));
            (ours && bottle.is_none_or(|b| b == owner)).then(|| Found {
                name,
                bottle: owner,
                role: label(LABEL_ROLE).unwrap_or_default(),
                user: label(LABEL_USER),
            })
        })
        .collect()
}

/// What was created so far, to undo in reverse.
#[derive(Debug, Default)]
struct Created {
    bottle: String,
    networks: Vec<String>,
    containers: Vec<String>,
    /// The state directory was made by this run (never remove someone else's).
    state_dir: bool,
    /// The Docker bridge given a `DOCKER-USER` accept rule (see [`bridge_rule`]).
    bridge_rule: Option<String>,
}

fn is_not_found(e: &EngineError) -> bool {
    matches!(e, EngineError::Call { stderr, .. }
        if stderr.contains("No such") || stderr.contains("no such") || stderr.contains("not found"))
}

/// Removes what `created` lists: containers (stopped, then removed) before networks.
fn undo(engine: Engine, created: &Created, err: &mut dyn Write) -> Vec<String> {
    let mut problems = Vec::new();
    for id in created.containers.iter().rev() {
        // Stop first (SIGTERM, then SIGKILL after 5 s), so the gateway drains cleanly.
        let _ = call(engine, &strings(&["stop", "-t", "5", id]), &[]);
        if let Err(e) = call_ok(engine, &strings(&["rm", "-f", id]), &[])
            && !is_not_found(&e)
        {
            problems.push(e.to_string());
        }
    }
    if let Some(bridge) = &created.bridge_rule
        && let Err(e) = bridge_rule(&created.bottle, bridge, false)
    {
        problems.push(e);
    }
    for id in created.networks.iter().rev() {
        if let Err(e) = call_ok(engine, &strings(&["network", "rm", id]), &[])
            && !is_not_found(&e)
        {
            problems.push(e.to_string());
        }
    }
    for p in &problems {
        let _ = writeln!(err, "bottleneck: cleanup: {p}");
    }
    problems
}

/// Signals that stop the bottle.
fn watch_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        // Without the handler the default action (exit) would skip the cleanup.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

fn progress(err: &mut dyn Write, step: &Instant, what: &str, detail: &str) {
    let _ = writeln!(
        err,
        "bottleneck: {what:<9} {:>5} ms  {detail}",
        step.elapsed().as_millis()
    );
}

/// The commands a run would execute, one shell-quoted line each (`--dry-run`).
pub fn dry_run_text(config: &RunConfig, options: &EngineOptions) -> String {
    let n = EngineNames::new(&config.names.bottle);
    let state = EngineState {
        dir: config.names.state_dir.clone(),
    };
    let program = options.engine.program();
    let (subnet, ip) = subnet_and_gateway(agent_subnets(&n.bottle).next().unwrap_or((18, 16)));
    let mut steps = vec![strings(&["version"]), agent_network_create(&n, &subnet)];
    if options.egress_network.is_none() {
        steps.push(egress_network_create(&n));
    }
    steps.push(gateway_create(&n, &state, options, &ip, config));
    steps.push(gateway_connect(&n, &ip));
    steps.push(strings(&["start", &n.gateway]));
    steps.push(strings(&["logs", &n.gateway]));
    steps.push(strings(&["inspect", "--type", "container", &n.gateway]));
    steps.push(agent_run(&n, &state, &ip, config, options));
    let mut text = format!(
        "# state: {} (policy copy, CA dir 0700, audit log); the agent network's subnet is the first free of 198.18.16.0/24-198.19.255.0/24 from {subnet}\n",
        state.dir.display()
    );
    for argv in steps {
        let words: Vec<String> = argv.iter().map(|w| crate::bottle::shell_quote(w)).collect();
        text.push_str(&format!("{program} {}\n", words.join(" ")));
    }
    if options.engine == Engine::Docker && docker_drops_bridged_routes() {
        let words: Vec<String> = bridge_rule_args(&n.bottle, "br-<agent network id>", true)
            .iter()
            .map(|w| crate::bottle::shell_quote(w))
            .collect();
        text.push_str(&format!(
            "# after the agent network (br_netfilter is on): iptables {}\n",
            words.join(" ")
        ));
    }
    let mut nets = vec![n.agent_net.clone()];
    if options.egress_network.is_none() {
        nets.insert(0, n.egress_net.clone());
    }
    text.push_str(&format!(
        "# teardown: {program} stop -t 5 / rm -f {} {}; {program} network rm {}\n",
        n.agent,
        n.gateway,
        nets.join(" ")
    ));
    text
}

/// Runs a bottle with podman or docker; returns the agent's exit status.
pub fn run(
    config: &RunConfig,
    options: &EngineOptions,
    err: &mut dyn Write,
) -> Result<u8, EngineError> {
    let stop = watch_signals();
    tool::scrub(config.secrets.0.keys().cloned().collect());
    let n = EngineNames::new(&config.names.bottle);
    let state = EngineState::new(&config.names);
    let mut created = Created::default();
    let result = bottle(config, options, &n, &state, &stop, &mut created, err);
    let step = Instant::now();
    let problems = undo(options.engine, &created, err);
    if created.state_dir {
        let _ = std::fs::remove_dir_all(&state.dir);
    }
    progress(
        err,
        &step,
        "cleanup",
        if problems.is_empty() {
            "containers, networks, state removed"
        } else {
            "INCOMPLETE (see above; `bottleneck rm --backend ENGINE NAME` retries)"
        },
    );
    result
}

impl Created {
    fn mark_state(&mut self) {
        self.state_dir = true;
    }
}

fn bottle(
    config: &RunConfig,
    options: &EngineOptions,
    n: &EngineNames,
    state: &EngineState,
    stop: &AtomicBool,
    created: &mut Created,
    err: &mut dyn Write,
) -> Result<u8, EngineError> {
    let engine = options.engine;
    let program = engine.program();
    let check = |stop: &AtomicBool| {
        if stop.load(Ordering::SeqCst) {
            Err(EngineError::Interrupted)
        } else {
            Ok(())
        }
    };
    let mut step = Instant::now();
    if let Err(e) = call_ok(engine, &strings(&["version"]), &[]) {
        return Err(ConfigError::Unsupported(format!("{program} does not answer: {e}")).into());
    }
    // A leftover of the same name would be adopted by `rm`, never reused.
    let existing = call(
        engine,
        &strings(&["inspect", "--type", "container", &n.gateway]),
        &[],
    )?;
    if existing.code == 0 {
        return Err(ConfigError::Unsupported(format!(
            "a bottle named {} exists ({} {}); remove it with `bottleneck rm --backend {program} {}`",
            n.bottle, program, n.gateway, n.bottle
        ))
        .into());
    }

    // State files first: the policy for the gateway, an empty CA directory and audit log.
    let file_err = |p: &Path| {
        let shown = p.display().to_string();
        move |e| EngineError::File(shown.clone(), e)
    };
    if state.dir.exists() {
        return Err(ConfigError::Unsupported(format!(
            "{} exists: a bottle named {} runs or crashed (`bottleneck rm --backend {program} {}`)",
            state.dir.display(),
            n.bottle,
            n.bottle
        ))
        .into());
    }
    created.mark_state();
    for dir in [state.config(), state.ca(), state.agent_ca()] {
        std::fs::create_dir_all(&dir).map_err(file_err(&dir))?;
    }
    set_private(&state.ca()).map_err(file_err(&state.ca()))?;
    std::fs::write(state.audit(), b"").map_err(file_err(&state.audit()))?;
    let policy_copy = state.config().join("policy.yaml");
    std::fs::copy(&config.policy_path, &policy_copy).map_err(file_err(&policy_copy))?;
    for (i, ca) in config.upstream_ca.iter().enumerate() {
        let copy = state.config().join(format!("upstream-ca-{i}.pem"));
        std::fs::copy(ca, &copy).map_err(file_err(ca))?;
    }

    check(stop)?;
    // The first free subnet: engines refuse overlapping ones.
    let mut chosen = None;
    let mut last = None;
    for candidate in agent_subnets(&n.bottle).take(32) {
        let (subnet, ip) = subnet_and_gateway(candidate);
        match call_ok(engine, &agent_network_create(n, &subnet), &[]) {
            Ok(_) => {
                chosen = Some((subnet, ip));
                break;
            }
            Err(e) => {
                let text = e.to_string().to_lowercase();
                let overlap = text.contains("overlap") || text.contains("already");
                if !overlap {
                    return Err(e);
                }
                last = Some(e);
            }
        }
    }
    let Some((subnet, gw_ip)) = chosen else {
        return Err(last.unwrap_or_else(|| EngineError::Output("no free subnet".into())));
    };
    created.networks.push(n.agent_net.clone());
    created.bottle = n.bottle.clone();
    if engine == Engine::Docker && docker_drops_bridged_routes() {
        // Docker's isolation rules for internal networks would drop everything the agent
        // routes through the gateway (see `bridge_rule`).
        let id = call_ok(
            engine,
            &strings(&["network", "inspect", "--format", "{{.Id}}", &n.agent_net]),
            &[],
        )?;
        let bridge = format!(
            "br-{}",
            id.stdout.trim().chars().take(12).collect::<String>()
        );
        match bridge_rule(&n.bottle, &bridge, true) {
            Ok(()) => created.bridge_rule = Some(bridge),
            Err(e) => {
                let _ = writeln!(
                    err,
                    "bottleneck: warning: {e}; Docker's internal-network rules will drop the agent's routed traffic (no egress except --egress=proxy)"
                );
            }
        }
    }
    check(stop)?;
    if options.egress_network.is_none() {
        call_ok(engine, &egress_network_create(n), &[])?;
        created.networks.push(n.egress_net.clone());
    }
    progress(
        err,
        &step,
        "networks",
        &format!(
            "{} {subnet} (internal), {} (egress)",
            n.agent_net,
            options.egress(n)
        ),
    );

    step = Instant::now();
    check(stop)?;
    let secret_env: Vec<(String, String)> = config
        .secrets
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // A failed `create` may still have created the container.
    created.containers.push(n.gateway.clone());
    call_ok(
        engine,
        &gateway_create(n, state, options, &gw_ip, config),
        &secret_env,
    )?;
    call_ok(engine, &gateway_connect(n, &gw_ip), &[])?;
    call_ok(engine, &strings(&["start", &n.gateway]), &[])?;
    let deadline = Instant::now() + config.gateway_timeout;
    loop {
        check(stop)?;
        let logs = call_ok(engine, &strings(&["logs", &n.gateway]), &[])?;
        let text = format!("{}{}", logs.stdout, logs.stderr);
        if text.contains(READY_LINE) {
            break;
        }
        if let Some(line) = text.lines().find(|l| l.starts_with("bottleneck-gateway: ")) {
            return Err(EngineError::Output(format!(
                "the gateway did not start: {line}"
            )));
        }
        let running = call_ok(
            engine,
            &strings(&[
                "inspect",
                "--type",
                "container",
                "--format",
                "{{.State.Running}}",
                &n.gateway,
            ]),
            &[],
        )?;
        if running.stdout.trim() == "false" {
            return Err(EngineError::Output(format!(
                "the gateway exited before it was ready: {}",
                last_line(&text)
            )));
        }
        if Instant::now() >= deadline {
            return Err(EngineError::Output(format!(
                "the gateway was not ready after {:?}",
                config.gateway_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let inspect = call_ok(
        engine,
        &strings(&["inspect", "--type", "container", &n.gateway]),
        &[],
    )?;
    let ip = gateway_ip(&inspect.stdout, &n.agent_net)?;
    if ip != gw_ip {
        return Err(EngineError::Output(format!(
            "inspect: the gateway is at {ip} on {}, not at {gw_ip} as asked",
            n.agent_net
        )));
    }
    progress(
        err,
        &step,
        "gateway",
        &format!("{} ready at {ip} on {}", n.gateway, n.agent_net),
    );

    step = Instant::now();
    let ca = state.ca().join("ca.pem");
    let agent_ca = state.agent_ca().join("ca.pem");
    std::fs::copy(&ca, &agent_ca).map_err(file_err(&ca))?;
    progress(
        err,
        &step,
        "CA",
        "created by the gateway; the agent gets the certificate only",
    );

    check(stop)?;
    let agent = agent_run(n, state, &ip, config, options);
    created.containers.push(n.agent.clone());
    let _ = writeln!(err, "bottleneck: agent     starting {}", n.agent);
    let mut child = scrubbed(&mut Command::new(program))
        .args(&agent)
        .envs(config.agent_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| EngineError::Tool {
            program,
            args: agent.join(" "),
            message: e.to_string(),
        })?;
    // The agent may run for as long as it likes; a signal stops it.
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if stop.load(Ordering::SeqCst) => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(100)),
            Err(e) => {
                return Err(EngineError::Tool {
                    program,
                    args: agent.join(" "),
                    message: e.to_string(),
                });
            }
        }
    };
    let code = match status {
        Some(s) => s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
        None => {
            let _ = call(engine, &strings(&["stop", "-t", "5", &n.agent]), &[]);
            let _ = child.kill();
            let _ = child.wait();
            130
        }
    };
    let _ = writeln!(err, "bottleneck: agent exited with status {code}");
    Ok(code)
}

/// The comment that marks a bottle's `DOCKER-USER` rule.
fn rule_comment(bottle: &str) -> String {
    format!("bottleneck:{bottle}")
}

/// Whether bridged packets pass through iptables (`br_netfilter` with
/// `net.bridge.bridge-nf-call-iptables=1`, as Docker sets it up): then Docker's
/// `DOCKER-ISOLATION-STAGE-1` rules for an `--internal` network (`! -d SUBNET -i BRIDGE
/// -j DROP`, `! -s SUBNET -o BRIDGE -j DROP`) drop every packet the agent routes through
/// the gateway, since its destination is outside the agent subnet.
pub fn docker_drops_bridged_routes() -> bool {
    std::fs::read_to_string("/proc/sys/net/bridge/bridge-nf-call-iptables")
        .is_ok_and(|v| v.trim() == "1")
}

/// The `iptables` arguments of a bottle's rule in Docker's `DOCKER-USER` chain (which
/// `FORWARD` evaluates before Docker's own rules): accept what is bridged from the agent
/// network's bridge to itself, i.e. between the agent and the gateway. Nothing leaves the
/// bridge through it; the network stays internal. `-I` to add, `-D` to remove.
pub fn bridge_rule_args(bottle: &str, bridge: &str, add: bool) -> Vec<String> {
    let mut args = strings(&["-w", "5", if add { "-I" } else { "-D" }, "DOCKER-USER"]);
    args.extend(strings(&[
        "-i",
        bridge,
        "-o",
        bridge,
        "-m",
        "comment",
        "--comment",
    ]));
    args.push(rule_comment(bottle));
    args.extend(strings(&["-j", "ACCEPT"]));
    args
}

/// Adds or removes a bottle's `DOCKER-USER` rule with `iptables` (root).
fn bridge_rule(bottle: &str, bridge: &str, add: bool) -> Result<(), String> {
    let args = bridge_rule_args(bottle, bridge, add);
    let out = Command::new("iptables")
        .args(&args)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`iptables {}` failed: {}",
            args.join(" "),
            last_line(&String::from_utf8_lossy(&out.stderr))
        ))
    }
}

/// Removes the `DOCKER-USER` rules of bottle `name` (or of every bottle) found by their
/// comment, after a crash.
fn remove_bridge_rules(name: Option<&str>) -> Vec<String> {
    let Ok(out) = Command::new("iptables")
        .args(["-w", "5", "-S", "DOCKER-USER"])
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .stdin(Stdio::null())
        .output()
    else {
        return Vec::new();
    };
    let mut problems = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let words: Vec<&str> = line.split_whitespace().collect();
        let Some(comment) = words
            .iter()
            .position(|w| *w == "--comment")
            .and_then(|i| words.get(i + 1))
        else {
            continue;
        };
        let comment = comment.trim_matches('"');
        let Some(bottle) = comment.strip_prefix("bottleneck:") else {
            continue;
        };
        let bridge = words
            .iter()
            .position(|w| *w == "-i")
            .and_then(|i| words.get(i + 1));
        if name.is_none_or(|n| n == bottle)
            && let Some(bridge) = bridge
            && let Err(e) = bridge_rule(bottle, bridge, false)
        {
            problems.push(e);
        }
    }
    problems
}

#[cfg(unix)]
fn set_private(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

#[cfg(not(unix))]
fn set_private(_dir: &Path) -> std::io::Result<()> {
    Ok(())
}

/// Every labelled container and network: (containers, networks).
fn find(engine: Engine, bottle: Option<&str>) -> Result<(Vec<Found>, Vec<Found>), EngineError> {
    let filter = format!("label={LABEL_BOTTLE}");
    let ids = call_ok(
        engine,
        &strings(&["ps", "-a", "-q", "--filter", &filter]),
        &[],
    )?;
    let mut containers = Vec::new();
    let ids: Vec<String> = ids.stdout.split_whitespace().map(str::to_owned).collect();
    if !ids.is_empty() {
        let mut args = strings(&["inspect"]);
        args.extend(ids);
        // A container removed in between makes inspect fail for it only: keep the rest.
        let out = call(engine, &args, &[])?;
        containers = labelled(&out.stdout, bottle);
    }
    let nets = call_ok(
        engine,
        &strings(&["network", "ls", "-q", "--filter", &filter]),
        &[],
    )?;
    let mut networks = Vec::new();
    let ids: Vec<String> = nets.stdout.split_whitespace().map(str::to_owned).collect();
    if !ids.is_empty() {
        let mut args = strings(&["network", "inspect"]);
        args.extend(ids);
        let out = call(engine, &args, &[])?;
        networks = labelled(&out.stdout, bottle);
    }
    Ok((containers, networks))
}

/// Bottles found by label: name -> their containers and networks.
pub fn list(engine: Engine) -> Result<BTreeMap<String, Vec<String>>, EngineError> {
    let (containers, networks) = find(engine, None)?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for f in containers.into_iter().chain(networks) {
        out.entry(f.bottle).or_default().push(f.name);
    }
    Ok(out)
}

/// Removes every resource of bottle `name` (or of every bottle): containers first, and
/// their state directories.
pub fn remove(
    engine: Engine,
    name: Option<&str>,
    err: &mut dyn Write,
) -> Result<Vec<String>, EngineError> {
    let (mut containers, mut networks) = find(engine, name)?;
    let mut found = Created::default();
    let mut bottles: Vec<String> = Vec::new();
    // Gateways first in the list, so that undo (reverse order) stops agents first.
    containers.sort_by_key(|f| f.role == "agent");
    for f in containers {
        found.containers.push(f.name);
        bottles.push(f.bottle);
    }
    networks.sort_by_key(|f| f.role == "agent-net");
    for f in networks {
        found.networks.push(f.name);
        bottles.push(f.bottle);
    }
    bottles.sort();
    bottles.dedup();
    let mut problems = undo(engine, &found, err);
    if engine == Engine::Docker {
        problems.extend(remove_bridge_rules(name));
    }
    for b in &bottles {
        let _ = std::fs::remove_dir_all(EngineState::new(&crate::bottle::Names::new(b)).dir);
    }
    if problems.is_empty() {
        Ok(bottles)
    } else {
        Err(EngineError::Output(problems.join("\n")))
    }
}

/// Runs `command` in bottle `name`'s agent through `bottleneck-init --drop-only`, with
/// the terminal passed through; returns its exit status.
pub fn exec(engine: Engine, name: &str, command: &[String]) -> Result<u8, EngineError> {
    let n = EngineNames::new(name);
    let (containers, _) = find(engine, Some(name))?;
    let agent = containers
        .iter()
        .find(|f| f.role == "agent" && f.name == n.agent)
        .ok_or_else(|| EngineError::Output(format!("no running agent of bottle {name}")))?;
    let user = agent.user.clone().unwrap_or_else(|| "node".into());
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdin());
    let args = exec_args(&n.agent, &user, tty, command);
    let status = scrubbed(&mut Command::new(engine.program()))
        .args(&args)
        .status()
        .map_err(|e| EngineError::Tool {
            program: engine.program(),
            args: args.join(" "),
            message: e.to_string(),
        })?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bottle::{Names, Secrets};

    fn config(proxy: bool) -> RunConfig {
        RunConfig {
            names: Names::new("b1"),
            policy_path: "/p/policy.yaml".into(),
            secrets: Secrets([("API_KEY".to_owned(), "s3cret".to_owned())].into()),
            agent_env: vec![("FOO".into(), "bar".into())],
            volumes: Vec::new(),
            agent: vec!["sh".into(), "-c".into(), "curl x".into()],
            user: "node".into(),
            uplink_netns: None,
            upstream_ca: vec!["/ca.pem".into()],
            gateway_timeout: Duration::from_secs(20),
            proxy,
        }
    }

    fn options() -> EngineOptions {
        EngineOptions {
            engine: Engine::Podman,
            image: "agent:1".into(),
            gateway_image: "gw:1".into(),
            gateway_dns: Some("203.0.113.53".into()),
            egress_network: None,
            tty: false,
        }
    }

    #[test]
    fn subnets_are_in_the_agent_range_and_start_from_the_name() {
        let all: Vec<(u8, u8)> = agent_subnets("b1").collect();
        assert_eq!(all.len(), 496);
        assert!(all.iter().all(|(b, c)| (*b == 18 && *c >= 16) || *b == 19));
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), all.len());
        assert_eq!(agent_subnets("b1").next(), agent_subnets("b1").next());
        assert_ne!(agent_subnets("b1").next(), agent_subnets("b2").next());
        assert_eq!(
            subnet_and_gateway((19, 7)),
            ("198.19.7.0/24".to_owned(), "198.19.7.2".to_owned())
        );
    }

    #[test]
    fn the_gateway_joins_egress_first_and_gets_secrets_by_name_only() {
        let n = EngineNames::new("b1");
        let state = EngineState {
            dir: "/s/b1".into(),
        };
        let args = gateway_create(&n, &state, &options(), "198.18.9.2", &config(true));
        let text = args.join(" ");
        assert_eq!(
            text,
            "create --name bn-b1-gw --label bottleneck.bottle=b1 --label bottleneck.role=gateway \
             --network bn-b1-egress --cap-add NET_ADMIN --sysctl net.ipv4.ip_forward=1 --sysctl net.ipv6.conf.all.forwarding=1 --dns 203.0.113.53 \
             -e API_KEY -e BOTTLENECK_AGENT_ADDR=198.18.9.2 -v /s/b1/gateway:/etc/bottleneck:ro \
             -v /s/b1/ca:/var/lib/bottleneck/ca -v /s/b1/audit.jsonl:/var/log/bottleneck/audit.jsonl gw:1 \
             --policy /etc/bottleneck/policy.yaml --ca-dir /var/lib/bottleneck/ca \
             --audit-log /var/log/bottleneck/audit.jsonl --upstream-ca /etc/bottleneck/upstream-ca-0.pem \
             --listen-proxy 198.18.9.2:3128"
        );
        assert!(!text.contains("s3cret"));
        assert_eq!(
            gateway_connect(&n, "198.18.9.2").join(" "),
            "network connect --ip 198.18.9.2 bn-b1-agentnet bn-b1-gw"
        );
        assert_eq!(
            agent_network_create(&n, "198.18.9.0/24").join(" "),
            "network create --internal --subnet 198.18.9.0/24 --label bottleneck.bottle=b1 \
             --label bottleneck.role=agent-net bn-b1-agentnet"
        );
    }

    #[test]
    fn the_agent_has_net_admin_only_the_gateway_and_no_values_on_its_command_line() {
        let n = EngineNames::new("b1");
        let state = EngineState {
            dir: "/s/b1".into(),
        };
        let text = agent_run(&n, &state, "198.18.9.2", &config(false), &options()).join(" ");
        assert_eq!(
            text,
            "run --name bn-b1-agent --label bottleneck.bottle=b1 --label bottleneck.role=agent \
             --label bottleneck.user=node --network bn-b1-agentnet --cap-add NET_ADMIN --dns 198.18.9.2 \
             --sysctl net.ipv4.conf.all.accept_redirects=0 --sysctl net.ipv4.conf.default.accept_redirects=0 \
             --sysctl net.ipv6.conf.all.disable_ipv6=1 --sysctl net.ipv6.conf.default.disable_ipv6=1 \
             -e BOTTLENECK_GATEWAY=198.18.9.2 -e BOTTLENECK_CA_FILE=/etc/bottleneck-ca/ca.pem \
             -e BOTTLENECK_USER=node -e FOO -v /s/b1/agent-ca:/etc/bottleneck-ca:ro -i agent:1 sh -c curl x"
        );
        let proxy = agent_run(&n, &state, "198.18.9.2", &config(true), &options()).join(" ");
        assert!(proxy.contains("-e HTTPS_PROXY=http://198.18.9.2:3128"));
        assert!(proxy.contains("-e no_proxy=localhost,127.0.0.1,::1"));
    }

    #[test]
    fn the_docker_bridge_rule_accepts_only_within_the_agent_bridge() {
        assert_eq!(
            bridge_rule_args("b1", "br-0123456789ab", true).join(" "),
            "-w 5 -I DOCKER-USER -i br-0123456789ab -o br-0123456789ab -m comment --comment bottleneck:b1 -j ACCEPT"
        );
        assert!(
            bridge_rule_args("b1", "br-x", false)
                .join(" ")
                .contains(" -D DOCKER-USER ")
        );
    }

    #[test]
    fn the_dry_run_shows_every_command_in_order() {
        let text = dry_run_text(&config(false), &options());
        let commands: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("podman "))
            .map(|l| l.split_whitespace().nth(1).unwrap_or(""))
            .collect();
        assert_eq!(
            commands,
            [
                "version", "network", "network", "create", "network", "start", "logs", "inspect",
                "run"
            ]
        );
        assert!(text.contains("network create --internal --subnet 198."));
        assert!(text.contains("-e API_KEY "));
        assert!(!text.contains("s3cret"));
        assert!(text.contains("# teardown: podman stop -t 5 / rm -f bn-b1-agent bn-b1-gw"));
        let mut existing = options();
        existing.egress_network = Some("wan".into());
        let text = dry_run_text(&config(false), &existing);
        assert!(text.contains("--network wan "));
        assert!(!text.contains("bn-b1-egress"));
    }

    #[test]
    fn exec_goes_through_the_shim() {
        assert_eq!(
            exec_args("bn-b1-agent", "node", false, &["id".into()]).join(" "),
            "exec -i bn-b1-agent /usr/local/bin/bottleneck-init --drop-only --user node -- id"
        );
    }

    #[test]
    fn the_gateway_address_comes_from_inspect() {
        let json = r#"[{"Name":"/bn-b1-gw","NetworkSettings":{"Networks":{
            "bn-b1-egress":{"IPAddress":"198.51.100.3"},
            "bn-b1-agentnet":{"IPAddress":"198.18.9.2"}}}}]"#;
        assert_eq!(gateway_ip(json, "bn-b1-agentnet").unwrap(), "198.18.9.2");
        assert!(gateway_ip(json, "other").is_err());
        assert!(gateway_ip("nope", "x").is_err());
        let empty = json.replace("198.18.9.2", "");
        assert!(gateway_ip(&empty, "bn-b1-agentnet").is_err());
    }

    #[test]
    fn labelled_resources_need_label_and_name_prefix() {
        let containers = r#"[
          {"Name":"/bn-b1-gw","Config":{"Labels":{"bottleneck.bottle":"b1","bottleneck.role":"gateway"}}},
          {"Name":"bn-b1-agent","Config":{"Labels":{"bottleneck.bottle":"b1","bottleneck.role":"agent","bottleneck.user":"node"}}},
          {"Name":"/impostor","Config":{"Labels":{"bottleneck.bottle":"b1"}}}
        ]"#;
        let found = labelled(containers, Some("b1"));
        assert_eq!(found.len(), 2);
        assert_eq!(found[1].user.as_deref(), Some("node"));
        let networks = r#"[{"name":"bn-b2-agentnet","labels":{"bottleneck.bottle":"b2","bottleneck.role":"agent-net"}},
          {"Name":"bn-b3-egress","Labels":{"bottleneck.bottle":"b3"}}]"#;
        let names: Vec<String> = labelled(networks, None)
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(names, ["bn-b2-agentnet", "bn-b3-egress"]);
        assert!(labelled(networks, Some("b1")).is_empty());
        assert!(labelled("garbage", None).is_empty());
    }
}
