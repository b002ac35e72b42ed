//! The apple backend: a bottle built with Apple's `container` CLI (1.0.0, macOS 26), in
//! the order and with the flags the seed reports verified (see
//! `../shared/APPLE-CONTAINER.md`):
//!
//! 1. `container system status --format json` must say `running`;
//! 2. the agent network, `--internal` (host-only), then the egress network (NAT);
//! 3. the gateway, detached, on the egress network **first** (the first network supplies
//!    the default route) and the agent network second, with an explicit `--dns` for
//!    itself and `--cap-add CAP_NET_ADMIN`; secrets as bare `--env NAME` (the CLI copies
//!    the value from its own environment: never on a command line);
//! 4. `container logs` until the gateway says it is ready, then `container inspect`: its
//!    address on the agent network (`status.networks[].ipv4Address`, with or without a
//!    `/prefix`) becomes the agent's `BOTTLENECK_GATEWAY` (there are no aliases);
//! 5. the agent in the foreground on the agent network only, with `--cap-add
//!    CAP_NET_ADMIN` only so that `bottleneck-init` (the image's ENTRYPOINT) can set the
//!    route; the shim drops it before the agent runs;
//! 6. teardown in reverse: containers before networks (a network referenced by any
//!    container cannot be deleted). A failure at any step undoes exactly the steps before
//!    it.
//!
//! Every resource carries the labels `bottleneck.bottle=NAME` and `bottleneck.role=...`
//! and a `bn-NAME-` name prefix; `ls` and `rm` filter `list --format json` output on the
//! client side (the CLI has no label filter). Portable: std only, so it builds on macOS.

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

/// The CLI's executable name.
pub const CLI: &str = "container";
/// The label naming a resource's bottle.
pub const LABEL_BOTTLE: &str = "bottleneck.bottle";
/// The label naming a resource's role.
pub const LABEL_ROLE: &str = "bottleneck.role";
/// Deadline of one CLI call (not the foreground agent).
/// The most output kept from one CLI call.
/// The gateway's readiness line.
const READY_LINE: &str = "bottleneck-gateway ready";
/// Where the gateway container sees its files.
const GW_CONFIG: &str = "/etc/bottleneck";
const GW_CA: &str = "/var/lib/bottleneck/ca";
const GW_AUDIT: &str = "/var/log/bottleneck";
/// Where the agent container sees the CA certificate.
const AGENT_CA: &str = "/etc/bottleneck-ca";

/// The names of one bottle's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppleNames {
    /// The bottle.
    pub bottle: String,
    /// The host-only agent network.
    pub agent_net: String,
    /// The NAT egress network.
    pub egress_net: String,
    /// The gateway container.
    pub gateway: String,
    /// The agent container.
    pub agent: String,
}

impl AppleNames {
    /// Names for bottle `name`.
    pub fn new(name: &str) -> AppleNames {
        AppleNames {
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

/// A failure of the apple backend.
#[derive(Debug, thiserror::Error)]
pub enum AppleError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A CLI call failed.
    #[error("`container {args}` failed (exit {code}): {stderr}")]
    Call {
        /// The arguments.
        args: String,
        /// Its exit status.
        code: i32,
        /// Its last error line.
        stderr: String,
    },
    /// The CLI could not be run or did not finish.
    #[error("`container {args}`: {message}")]
    Tool {
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

/// Runs `container ARGS` with `env` added to its environment, within [`CALL_TIMEOUT`].
pub fn call(args: &[String], env: &[(String, String)]) -> Result<Output, AppleError> {
    tool::call(CLI, args, env).map_err(|e| AppleError::Tool {
        args: args.join(" "),
        message: match e {
            CallError::NotFound => {
                "the `container` CLI is not installed (https://github.com/apple/container)".into()
            }
            CallError::Failed(message) => message,
        },
    })
}

/// [`call`], failing on a non-zero exit with the CLI's error line.
pub fn call_ok(args: &[String], env: &[(String, String)]) -> Result<Output, AppleError> {
    let out = call(args, env)?;
    if out.code == 0 {
        Ok(out)
    } else {
        Err(AppleError::Call {
            args: args.join(" "),
            code: out.code,
            stderr: out
                .stderr
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("")
                .to_owned(),
        })
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|w| (*w).to_owned()).collect()
}

/// `network create` for the agent network (`--internal`: host-only).
pub fn agent_network_create(n: &AppleNames) -> Vec<String> {
    let mut args = strings(&["network", "create", "--internal"]);
    args.extend(n.labels("agent-net"));
    args.push(n.agent_net.clone());
    args
}

/// `network create` for the egress network (NAT).
pub fn egress_network_create(n: &AppleNames) -> Vec<String> {
    let mut args = strings(&["network", "create"]);
    args.extend(n.labels("egress-net"));
    args.push(n.egress_net.clone());
    args
}

/// The state directory's layout for the apple backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppleState {
    /// The bottle's state directory.
    pub dir: PathBuf,
}

impl AppleState {
    /// `TMPDIR/bottleneck-state/NAME` (virtiofs shares it with the containers).
    pub fn new(name: &str) -> AppleState {
        AppleState {
            dir: std::env::temp_dir().join("bottleneck-state").join(name),
        }
    }
    fn sub(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// The gateway's read-only configuration (the policy).
    pub fn config(&self) -> PathBuf {
        self.sub("gateway")
    }
    /// The bottle CA, created by the gateway (key and certificate).
    pub fn ca(&self) -> PathBuf {
        self.sub("ca")
    }
    /// The audit log's directory.
    pub fn audit(&self) -> PathBuf {
        self.sub("audit")
    }
    /// The agent's copy of the CA certificate (nothing else).
    pub fn agent_ca(&self) -> PathBuf {
        self.sub("agent-ca")
    }
}

/// The gateway's `container run` (detached).
pub fn gateway_run(
    n: &AppleNames,
    state: &AppleState,
    dns: &str,
    secrets: &[String],
    image: &str,
) -> Vec<String> {
    let mut args = strings(&["run", "--detach", "--name"]);
    args.push(n.gateway.clone());
    args.extend(n.labels("gateway"));
    // Egress first: only the first network gets the default route.
    for net in [&n.egress_net, &n.agent_net] {
        args.push("--network".into());
        args.push(net.clone());
    }
    args.extend(strings(&["--dns", dns, "--cap-add", "CAP_NET_ADMIN"]));
    for var in secrets {
        // Bare name: the CLI copies the value from its environment.
        args.push("--env".into());
        args.push(var.clone());
    }
    for (host, guest, ro) in [
        (state.config(), GW_CONFIG, true),
        (state.ca(), GW_CA, false),
        (state.audit(), GW_AUDIT, false),
    ] {
        args.push("--volume".into());
        args.push(format!(
            "{}:{guest}{}",
            host.display(),
            if ro { ":ro" } else { "" }
        ));
    }
    args.push(image.into());
    args.extend(strings(&[
        "--policy",
        &format!("{GW_CONFIG}/policy.yaml"),
        "--agent-iface",
        "eth1",
        "--ca-dir",
        GW_CA,
        "--audit-log",
        &format!("{GW_AUDIT}/audit.jsonl"),
    ]));
    args
}

/// The agent's `container run` (foreground; exit status = the agent's).
pub fn agent_run(
    n: &AppleNames,
    state: &AppleState,
    gateway_ip: &str,
    config: &RunConfig,
    image: &str,
    interactive: bool,
) -> Vec<String> {
    let mut args = strings(&["run", "--name"]);
    args.push(n.agent.clone());
    args.extend(n.labels("agent"));
    args.extend(strings(&[
        "--network",
        &n.agent_net,
        // Only for bottleneck-init's route change; it drops every capability before the
        // agent runs.
        "--cap-add",
        "CAP_NET_ADMIN",
    ]));
    for (k, v) in [
        ("BOTTLENECK_GATEWAY", gateway_ip.to_owned()),
        ("BOTTLENECK_CA_FILE", format!("{AGENT_CA}/ca.pem")),
        ("BOTTLENECK_USER", config.user.clone()),
    ] {
        args.push("--env".into());
        args.push(format!("{k}={v}"));
    }
    for (k, _) in &config.agent_env {
        // Values travel in the CLI's environment, not on its command line.
        args.push("--env".into());
        args.push(k.clone());
    }
    args.push("--volume".into());
    args.push(format!("{}:{AGENT_CA}:ro", state.agent_ca().display()));
    for v in &config.volumes {
        args.push("--volume".into());
        args.push(format!(
            "{}:{}{}",
            v.src.display(),
            v.dst.display(),
            if v.read_only { ":ro" } else { "" }
        ));
    }
    if interactive {
        args.extend(strings(&["--interactive", "--tty"]));
    }
    args.push(image.into());
    args.extend(config.agent.iter().cloned());
    args
}

/// The gateway's address on the agent network, from `container inspect` JSON
/// (`status.networks[].network` / `.ipv4Address`, with or without a `/prefix`).
pub fn gateway_ip(inspect_json: &str, agent_net: &str) -> Result<String, AppleError> {
    let value: Value = serde_json::from_str(inspect_json)
        .map_err(|e| AppleError::Output(format!("container inspect: not JSON: {e}")))?;
    let networks = value
        .as_array()
        .and_then(|a| a.first())
        .and_then(|c| c.pointer("/status/networks"))
        .and_then(Value::as_array)
        .ok_or_else(|| AppleError::Output("container inspect: no status.networks".into()))?;
    let address = networks
        .iter()
        .find(|n| n.get("network").and_then(Value::as_str) == Some(agent_net))
        .and_then(|n| n.get("ipv4Address"))
        .and_then(Value::as_str)
        .ok_or_else(|| {
            AppleError::Output(format!(
                "container inspect: the gateway has no address on {agent_net} (is it running?)"
            ))
        })?;
    let ip = address.split('/').next().unwrap_or_default();
    ip.parse::<std::net::Ipv4Addr>()
        .map(|ip| ip.to_string())
        .map_err(|_| AppleError::Output(format!("container inspect: bad ipv4Address {address:?}")))
}

/// Resources of a bottle (or of every bottle) found in `list --format json` output.
pub fn labelled(list_json: &str, bottle: Option<&str>) -> Vec<(String, String, String)> {
    let Ok(Value::Array(items)) = serde_json::from_str::<Value>(list_json) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|item| {
            let id = item.get("id")?.as_str()?.to_owned();
            let labels = item.pointer("/configuration/labels")?;
            let owner = labels.get(LABEL_BOTTLE)?.as_str()?.to_owned();
            let role = labels
                .get(LABEL_ROLE)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned();
            // Label and name must agree: a label alone is not proof of ownership.
            let ours = id.starts_with(&format!("{PREFIX}{owner}-"));
            (ours && bottle.is_none_or(|b| b == owner)).then_some((id, owner, role))
        })
        .collect()
}

/// What was created so far, to undo in reverse.
#[derive(Debug, Default)]
struct Created {
    networks: Vec<String>,
    containers: Vec<String>,
}

/// Removing what is already gone succeeds (a failed `run` may or may not have created
/// its container).
fn is_not_found(e: &AppleError) -> bool {
    matches!(e, AppleError::Call { stderr, .. } if stderr.contains("not found"))
}

/// Removes what `created` lists: containers (stopped, then deleted) before networks.
fn undo(created: &Created, err: &mut dyn Write) -> Vec<String> {
    let mut problems = Vec::new();
    for id in created.containers.iter().rev() {
        // Stop first, so the gateway removes its rules cleanly; stopping a stopped
        // container succeeds.
        let _ = call(&strings(&["stop", id]), &[]);
        if let Err(e) = call_ok(&strings(&["delete", "--force", id]), &[])
            && !is_not_found(&e)
        {
            problems.push(e.to_string());
        }
    }
    for id in created.networks.iter().rev() {
        if let Err(e) = call_ok(&strings(&["network", "delete", id]), &[])
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
        // Without the handler the default action (exit) would skip the cleanup; a failure
        // to install one is not worth refusing to run over.
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    flag
}

/// Settings of an apple run beyond [`RunConfig`].
#[derive(Debug, Clone)]
pub struct AppleOptions {
    /// The agent image.
    pub image: String,
    /// The gateway image.
    pub gateway_image: String,
    /// The gateway's resolver.
    pub gateway_dns: String,
    /// `--interactive --tty` for the agent.
    pub interactive: bool,
}

fn progress(err: &mut dyn Write, step: &Instant, what: &str, detail: &str) {
    let _ = writeln!(
        err,
        "bottleneck: {what:<9} {:>5} ms  {detail}",
        step.elapsed().as_millis()
    );
}

/// Runs a bottle with the `container` CLI; returns the agent's exit status.
pub fn run(
    config: &RunConfig,
    options: &AppleOptions,
    err: &mut dyn Write,
) -> Result<u8, AppleError> {
    let stop = watch_signals();
    tool::scrub(config.secrets.0.keys().cloned().collect());
    let n = AppleNames::new(&config.names.bottle);
    let state = AppleState::new(&config.names.bottle);
    let mut created = Created::default();
    let result = bottle(config, options, &n, &state, &stop, &mut created, err);
    let step = Instant::now();
    let problems = undo(&created, err);
    let _ = std::fs::remove_dir_all(&state.dir);
    progress(
        err,
        &step,
        "cleanup",
        if problems.is_empty() {
            "containers, networks, state removed"
        } else {
            "INCOMPLETE (see above; `bottleneck rm --backend apple NAME` retries)"
        },
    );
    result
}

fn bottle(
    config: &RunConfig,
    options: &AppleOptions,
    n: &AppleNames,
    state: &AppleState,
    stop: &AtomicBool,
    created: &mut Created,
    err: &mut dyn Write,
) -> Result<u8, AppleError> {
    let check = |stop: &AtomicBool| {
        if stop.load(Ordering::SeqCst) {
            Err(AppleError::Interrupted)
        } else {
            Ok(())
        }
    };
    let mut step = Instant::now();
    let status = call_ok(&strings(&["system", "status", "--format", "json"]), &[]);
    let running = status
        .as_ref()
        .ok()
        .and_then(|o| serde_json::from_str::<Value>(o.stdout.trim()).ok())
        .and_then(|v| {
            v.get("status")
                .or_else(|| v.pointer("/server/status"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
    if running.as_deref() != Some("running") {
        return Err(ConfigError::Unsupported(
            "the container system service is not running: run `container system start`".into(),
        )
        .into());
    }

    // State files first: the policy for the gateway, empty CA and audit directories.
    let file_err = |p: &Path| {
        let shown = p.display().to_string();
        move |e| AppleError::File(shown.clone(), e)
    };
    for dir in [state.config(), state.ca(), state.audit(), state.agent_ca()] {
        std::fs::create_dir_all(&dir).map_err(file_err(&dir))?;
    }
    set_private(&state.ca()).map_err(file_err(&state.ca()))?;
    let policy_copy = state.config().join("policy.yaml");
    std::fs::copy(&config.policy_path, &policy_copy).map_err(file_err(&policy_copy))?;

    check(stop)?;
    call_ok(&agent_network_create(n), &[])?;
    created.networks.push(n.agent_net.clone());
    check(stop)?;
    call_ok(&egress_network_create(n), &[])?;
    created.networks.push(n.egress_net.clone());
    progress(
        err,
        &step,
        "networks",
        &format!("{} (internal), {} (NAT)", n.agent_net, n.egress_net),
    );

    step = Instant::now();
    check(stop)?;
    let secret_names: Vec<String> = config.secrets.0.keys().cloned().collect();
    let secret_env: Vec<(String, String)> = config
        .secrets
        .0
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let gw = gateway_run(
        n,
        state,
        &options.gateway_dns,
        &secret_names,
        &options.gateway_image,
    );
    // A failed `run` may still have created the container.
    created.containers.push(n.gateway.clone());
    call_ok(&gw, &secret_env)?;
    let deadline = Instant::now() + config.gateway_timeout;
    loop {
        check(stop)?;
        let logs = call_ok(&strings(&["logs", &n.gateway]), &[])?;
        let text = format!("{}{}", logs.stdout, logs.stderr);
        if text.contains(READY_LINE) {
            break;
        }
        if let Some(line) = text.lines().find(|l| l.starts_with("bottleneck-gateway: ")) {
            return Err(AppleError::Output(format!(
                "the gateway did not start: {line}"
            )));
        }
        if Instant::now() >= deadline {
            return Err(AppleError::Output(format!(
                "the gateway was not ready after {:?}",
                config.gateway_timeout
            )));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let inspect = call_ok(&strings(&["inspect", &n.gateway]), &[])?;
    let ip = gateway_ip(&inspect.stdout, &n.agent_net)?;
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
    let agent = agent_run(n, state, &ip, config, &options.image, options.interactive);
    let agent_env: Vec<(String, String)> = config.agent_env.clone();
    created.containers.push(n.agent.clone());
    let _ = writeln!(err, "bottleneck: agent     starting {}", n.agent);
    let mut child = scrubbed(&mut Command::new(CLI))
        .args(&agent)
        .envs(agent_env)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| AppleError::Tool {
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
                return Err(AppleError::Tool {
                    args: agent.join(" "),
                    message: e.to_string(),
                });
            }
        }
    };
    let code = match status {
        Some(s) => s.code().and_then(|c| u8::try_from(c).ok()).unwrap_or(1),
        None => {
            let _ = call(&strings(&["stop", &n.agent]), &[]);
            let _ = child.kill();
            let _ = child.wait();
            130
        }
    };
    let _ = writeln!(err, "bottleneck: agent exited with status {code}");
    Ok(code)
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

/// Bottles found by label: name -> roles of their containers and networks.
pub fn list() -> Result<BTreeMap<String, Vec<String>>, AppleError> {
    let containers = call_ok(&strings(&["list", "--all", "--format", "json"]), &[])?;
    let networks = call_ok(&strings(&["network", "list", "--format", "json"]), &[])?;
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (id, owner, _) in labelled(&containers.stdout, None)
        .into_iter()
        .chain(labelled(&networks.stdout, None))
    {
        out.entry(owner).or_default().push(id);
    }
    Ok(out)
}

/// Removes every resource of bottle `name` (or of every bottle): containers first.
pub fn remove(name: Option<&str>, err: &mut dyn Write) -> Result<Vec<String>, AppleError> {
    let containers = call_ok(&strings(&["list", "--all", "--format", "json"]), &[])?;
    let networks = call_ok(&strings(&["network", "list", "--format", "json"]), &[])?;
    let mut found = Created::default();
    let mut bottles: Vec<String> = Vec::new();
    // Agents before gateways: the reverse of creation.
    let mut cs = labelled(&containers.stdout, name);
    cs.sort_by_key(|(_, _, role)| role != "agent");
    for (id, owner, _) in cs.into_iter().rev() {
        found.containers.push(id);
        bottles.push(owner);
    }
    let mut ns = labelled(&networks.stdout, name);
    ns.sort_by_key(|(_, _, role)| role != "agent-net");
    for (id, owner, _) in ns {
        found.networks.push(id);
        bottles.push(owner);
    }
    bottles.sort();
    bottles.dedup();
    let problems = undo(&found, err);
    for b in &bottles {
        let _ = std::fs::remove_dir_all(AppleState::new(b).dir);
    }
    if problems.is_empty() {
        Ok(bottles)
    } else {
        Err(AppleError::Output(problems.join("\n")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_network_commands() {
        let n = AppleNames::new("b1");
        assert_eq!(
            agent_network_create(&n).join(" "),
            "network create --internal --label bottleneck.bottle=b1 --label bottleneck.role=agent-net bn-b1-agentnet"
        );
        assert_eq!(
            egress_network_create(&n).join(" "),
            "network create --label bottleneck.bottle=b1 --label bottleneck.role=egress-net bn-b1-egress"
        );
    }

    #[test]
    fn the_gateway_is_on_the_egress_network_first_and_gets_secrets_by_name_only() {
        let n = AppleNames::new("b1");
        let state = AppleState {
            dir: "/s/b1".into(),
        };
        let args = gateway_run(&n, &state, "203.0.113.53", &["API_KEY".into()], "gw:1");
        let text = args.join(" ");
        assert!(
            text.starts_with(
                "run --detach --name bn-b1-gw --label bottleneck.bottle=b1 --label bottleneck.role=gateway \
                 --network bn-b1-egress --network bn-b1-agentnet --dns 203.0.113.53 --cap-add CAP_NET_ADMIN \
                 --env API_KEY --volume /s/b1/gateway:/etc/bottleneck:ro"
            ),
            "{text}"
        );
        let image = args.iter().position(|a| a == "gw:1").unwrap();
        assert_eq!(
            args[image + 1..].join(" "),
            "--policy /etc/bottleneck/policy.yaml --agent-iface eth1 --ca-dir /var/lib/bottleneck/ca \
             --audit-log /var/log/bottleneck/audit.jsonl"
        );
    }

    #[test]
    fn the_gateway_address_comes_from_inspect_with_or_without_a_prefix() {
        let json = r#"[{"id":"bn-b1-gw","status":{"networks":[
            {"network":"bn-b1-egress","ipv4Address":"192.168.66.5\/24","ipv4Gateway":"192.168.66.1"},
            {"network":"bn-b1-agentnet","ipv4Address":"192.168.128.7\/24","ipv4Gateway":"192.168.128.1"}],
            "state":"running"}}]"#;
        assert_eq!(gateway_ip(json, "bn-b1-agentnet").unwrap(), "192.168.128.7");
        let bare = json.replace(r"192.168.128.7\/24", "192.168.128.9");
        assert_eq!(
            gateway_ip(&bare, "bn-b1-agentnet").unwrap(),
            "192.168.128.9"
        );
        let stopped = r#"[{"id":"bn-b1-gw","status":{"networks":[],"state":"stopped"}}]"#;
        assert!(gateway_ip(stopped, "bn-b1-agentnet").is_err());
        assert!(gateway_ip("not json", "x").is_err());
        let bad = json.replace(r"192.168.128.7\/24", "fe80::1/64");
        assert!(gateway_ip(&bad, "bn-b1-agentnet").is_err());
    }

    #[test]
    fn labelled_resources_need_label_and_name_prefix() {
        let json = r#"[
          {"id":"bn-b1-gw","configuration":{"labels":{"bottleneck.bottle":"b1","bottleneck.role":"gateway"}}},
          {"id":"bn-b2-agent","configuration":{"labels":{"bottleneck.bottle":"b2","bottleneck.role":"agent"}}},
          {"id":"someone-else","configuration":{"labels":{"bottleneck.bottle":"b1"}}},
          {"id":"default","configuration":{"labels":{"com.apple.container.resource.role":"builtin"}}}
        ]"#;
        let all: Vec<String> = labelled(json, None).into_iter().map(|r| r.0).collect();
        assert_eq!(all, ["bn-b1-gw", "bn-b2-agent"]);
        let b1: Vec<String> = labelled(json, Some("b1"))
            .into_iter()
            .map(|r| r.0)
            .collect();
        assert_eq!(b1, ["bn-b1-gw"]);
        assert!(labelled("garbage", None).is_empty());
    }
}
