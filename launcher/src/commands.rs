//! The commands other than `policy check`: each takes its parsed arguments, does its job
//! and renders problems for people, returning the exit status.

use std::io::Write;
use std::path::Path;

use crate::ExitCode;
use crate::bottle::{self, ConfigError};
use crate::cli::{Backend, DemoArgs, Egress, ExecArgs, LogsArgs, LsArgs, RmArgs, RunArgs};
use crate::engine::{self, Engine};

fn config_error(err: &mut dyn Write, e: &ConfigError) -> u8 {
    // Nothing more useful can be done if stderr itself fails.
    let _ = writeln!(err, "error: {e}");
    ExitCode::Config as u8
}

/// The backend `run` uses when none is given: `apple` on macOS when `container` is
/// installed, else `netns` on Linux as root, else podman, else docker when installed;
/// otherwise the platform's own (which then says what it lacks).
pub fn default_backend() -> Backend {
    choose_backend(
        cfg!(target_os = "macos"),
        cfg!(target_os = "linux"),
        is_root(),
        on_path,
    )
}

/// [`default_backend`]'s decision, from the facts it looks at.
pub fn choose_backend(
    macos: bool,
    linux: bool,
    root: bool,
    installed: impl Fn(&str) -> bool,
) -> Backend {
    if macos && installed(crate::apple::CLI) {
        Backend::Apple
    } else if linux && root {
        Backend::Netns
    } else if installed("podman") {
        Backend::Podman
    } else if installed("docker") {
        Backend::Docker
    } else if linux {
        Backend::Netns
    } else {
        Backend::Apple
    }
}

/// The engine to use for `ls`, `rm` and `exec` without `--backend`: the default backend,
/// or for a container engine, the one that is installed.
fn default_engine() -> Engine {
    if on_path("podman") || !on_path("docker") {
        Engine::Podman
    } else {
        Engine::Docker
    }
}

fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .any(|dir| std::fs::metadata(dir.join(tool)).is_ok_and(|m| m.is_file()))
    })
}

#[cfg(target_os = "linux")]
fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

#[cfg(not(target_os = "linux"))]
fn is_root() -> bool {
    false
}

fn engine_of(backend: Backend) -> Option<Engine> {
    match backend {
        Backend::Podman => Some(Engine::Podman),
        Backend::Docker => Some(Engine::Docker),
        _ => None,
    }
}

/// `bottleneck run`.
pub fn run(args: &RunArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let backend = args.backend.unwrap_or_else(default_backend);
    let mut resolved = args.clone();
    resolved.backend = Some(backend);
    let args = &resolved;
    // The policy and secrets first: the same errors whatever the backend.
    let config = match bottle::prepare(args, |v| std::env::var(v).ok()) {
        Ok(config) => config,
        Err(e) => return config_error(err, &e),
    };
    if args.egress == Egress::Proxy && backend == Backend::Apple {
        return config_error(
            err,
            &ConfigError::Unsupported(format!(
                "--egress=proxy is not yet supported by the {} backend; use --egress=transparent",
                format!("{backend:?}").to_lowercase()
            )),
        );
    }
    match backend {
        Backend::Netns => run_netns(&config, args.dry_run, out, err),
        Backend::Apple => run_apple(&config, args, out, err),
        Backend::Podman => run_engine(Engine::Podman, &config, args, out, err),
        Backend::Docker => run_engine(Engine::Docker, &config, args, out, err),
    }
}

fn run_engine(
    engine: Engine,
    config: &bottle::RunConfig,
    args: &RunArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    let policy = match bottle::load_policy(&config.policy_path) {
        Ok(p) => p,
        Err(e) => return config_error(err, &e),
    };
    if config.uplink_netns.is_some() {
        return config_error(
            err,
            &ConfigError::Unsupported(
                "--uplink-netns is for the netns backend; use --egress-network".into(),
            ),
        );
    }
    let options = engine::EngineOptions {
        engine,
        image: args.image.clone(),
        gateway_image: args.gateway_image.clone(),
        gateway_dns: args
            .gateway_dns
            .clone()
            .or_else(|| policy.dns_upstream().first().map(|a| a.ip().to_string())),
        egress_network: args.egress_network.clone(),
        tty: std::io::IsTerminal::is_terminal(&std::io::stdin()),
    };
    if args.dry_run {
        let text = engine::dry_run_text(config, &options);
        return match out.write_all(text.as_bytes()) {
            Ok(()) => ExitCode::Ok as u8,
            Err(_) => ExitCode::Failure as u8,
        };
    }
    match engine::run(config, &options, err) {
        Ok(code) => code,
        Err(engine::EngineError::Config(e)) => config_error(err, &e),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::Failure as u8
        }
    }
}

/// `bottleneck exec NAME -- CMD`.
pub fn exec(args: &ExecArgs, err: &mut dyn Write) -> u8 {
    if let Err(e) = bottle::check_name(&args.name) {
        return config_error(err, &e);
    }
    let backend = args.backend.unwrap_or_else(|| {
        // A running netns bottle of that name wins; else the installed engine.
        if cfg!(target_os = "linux")
            && Path::new("/run/netns")
                .join(bottle::Names::new(&args.name).agent_ns)
                .exists()
        {
            Backend::Netns
        } else {
            match default_engine() {
                Engine::Podman => Backend::Podman,
                Engine::Docker => Backend::Docker,
            }
        }
    });
    if backend == Backend::Netns {
        return exec_netns(args, err);
    }
    let Some(engine) = engine_of(backend) else {
        return config_error(
            err,
            &ConfigError::Unsupported(
                "bottleneck exec supports the netns, podman and docker backends, not apple".into(),
            ),
        );
    };
    match engine::exec(engine, &args.name, &args.command) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::Failure as u8
        }
    }
}

fn run_apple(
    config: &bottle::RunConfig,
    args: &RunArgs,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    use crate::apple;
    let policy = match bottle::load_policy(&config.policy_path) {
        Ok(p) => p,
        Err(e) => return config_error(err, &e),
    };
    let Some(gateway_dns) = args
        .gateway_dns
        .clone()
        .or_else(|| policy.dns_upstream().first().map(|a| a.ip().to_string()))
    else {
        return config_error(err, &ConfigError::NoGatewayResolver);
    };
    let options = apple::AppleOptions {
        image: args.image.clone(),
        gateway_image: args.gateway_image.clone(),
        gateway_dns,
        interactive: std::io::IsTerminal::is_terminal(&std::io::stdin()),
    };
    if args.dry_run {
        let n = apple::AppleNames::new(&config.names.bottle);
        let state = apple::AppleState::new(&config.names.bottle);
        let secrets: Vec<String> = config.secrets.0.keys().cloned().collect();
        let mut text = String::new();
        for argv in [
            vec![
                "system".to_owned(),
                "status".into(),
                "--format".into(),
                "json".into(),
            ],
            apple::agent_network_create(&n),
            apple::egress_network_create(&n),
            apple::gateway_run(
                &n,
                &state,
                &options.gateway_dns,
                &secrets,
                &options.gateway_image,
            ),
            vec!["logs".to_owned(), n.gateway.clone()],
            vec!["inspect".to_owned(), n.gateway.clone()],
            apple::agent_run(
                &n,
                &state,
                "<gateway IP from inspect>",
                config,
                &options.image,
                options.interactive,
            ),
        ] {
            let words: Vec<String> = argv.iter().map(|w| bottle::shell_quote(w)).collect();
            text.push_str(&format!(
                "container {}
",
                words.join(" ")
            ));
        }
        text.push_str(&format!(
            "# teardown: container stop/delete --force {agent} {gw}; container network delete {egress} {anet}\n",
            agent = n.agent,
            gw = n.gateway,
            egress = n.egress_net,
            anet = n.agent_net
        ));
        return match out.write_all(text.as_bytes()) {
            Ok(()) => ExitCode::Ok as u8,
            Err(_) => ExitCode::Failure as u8,
        };
    }
    match apple::run(config, &options, err) {
        Ok(code) => code,
        Err(apple::AppleError::Config(e)) => config_error(err, &e),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::Failure as u8
        }
    }
}

#[cfg(target_os = "linux")]
fn exec_netns(args: &ExecArgs, err: &mut dyn Write) -> u8 {
    match crate::netns::exec::exec(&args.name, &args.command) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::Failure as u8
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn exec_netns(_args: &ExecArgs, err: &mut dyn Write) -> u8 {
    config_error(
        err,
        &ConfigError::Unsupported("the netns backend needs Linux".into()),
    )
}

#[cfg(target_os = "linux")]
fn run_netns(
    config: &bottle::RunConfig,
    dry_run: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    use crate::netns;
    let prepared = match netns::prepare(config, dry_run) {
        Ok(p) => p,
        Err(e) => return config_error(err, &e),
    };
    if dry_run {
        let text = netns::dry_run_text(config, &prepared);
        return match out.write_all(text.as_bytes()) {
            Ok(()) => ExitCode::Ok as u8,
            Err(_) => ExitCode::Failure as u8,
        };
    }
    match netns::run(config, &prepared, netns::AgentIo::Inherit, err) {
        Ok(outcome) => outcome.code,
        Err(netns::RunError::Config(e)) => config_error(err, &e),
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::Failure as u8
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn run_netns(
    _config: &bottle::RunConfig,
    _dry_run: bool,
    _out: &mut dyn Write,
    err: &mut dyn Write,
) -> u8 {
    config_error(
        err,
        &ConfigError::Unsupported("the netns backend needs Linux".into()),
    )
}

/// `bottleneck ls`.
pub fn ls(args: &LsArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let text = match args.backend.unwrap_or_else(default_backend) {
        Backend::Netns => ls_netns(),
        Backend::Apple => match crate::apple::list() {
            Ok(bottles) => {
                let mut text = format!("{:<12} {}\n", "NAME", "RESOURCES");
                for (name, ids) in bottles {
                    text.push_str(&format!("{name:<12} {}\n", ids.join(" ")));
                }
                text
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                return ExitCode::Failure as u8;
            }
        },
        b @ (Backend::Podman | Backend::Docker) => {
            let engine = engine_of(b).unwrap_or(Engine::Podman);
            match engine::list(engine) {
                Ok(bottles) => {
                    let mut text = format!("{:<12} {}\n", "NAME", "RESOURCES");
                    for (name, ids) in bottles {
                        text.push_str(&format!("{name:<12} {}\n", ids.join(" ")));
                    }
                    text
                }
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    return ExitCode::Failure as u8;
                }
            }
        }
    };
    match out.write_all(text.as_bytes()) {
        Ok(()) => ExitCode::Ok as u8,
        Err(_) => ExitCode::Failure as u8,
    }
}

#[cfg(target_os = "linux")]
fn ls_netns() -> String {
    let bottles = crate::netns::teardown::list();
    let mut text = format!(
        "{:<12} {:<8} {:<8} {:<24} {}\n",
        "NAME", "STATE", "PID", "UPLINK", "AGENT"
    );
    for b in &bottles {
        let (pid, uplink, agent) = match &b.record {
            Some(r) => (
                r.launcher_pid.to_string(),
                r.uplink.clone(),
                r.agent.join(" "),
            ),
            None => (
                "-".into(),
                "-".into(),
                format!("(no state; namespaces: {})", b.namespaces.join(" ")),
            ),
        };
        let agent: String = agent.chars().take(60).collect();
        text.push_str(&format!(
            "{:<12} {:<8} {:<8} {:<24} {}\n",
            b.name, b.state, pid, uplink, agent
        ));
    }
    text
}

#[cfg(not(target_os = "linux"))]
fn ls_netns() -> String {
    "NAME STATE PID UPLINK AGENT\n".into()
}

/// `bottleneck rm NAME|--all`.
pub fn rm(args: &RmArgs, err: &mut dyn Write) -> u8 {
    if let Some(name) = &args.name
        && let Err(e) = bottle::check_name(name)
    {
        return config_error(err, &e);
    }
    match args.backend.unwrap_or_else(default_backend) {
        Backend::Netns => rm_netns(args, err),
        Backend::Apple => match crate::apple::remove(args.name.as_deref(), err) {
            Ok(removed) if removed.is_empty() && args.name.is_some() => {
                let _ = writeln!(
                    err,
                    "error: no bottle named {}",
                    args.name.clone().unwrap_or_default()
                );
                ExitCode::Failure as u8
            }
            Ok(removed) => {
                for name in removed {
                    let _ = writeln!(err, "bottleneck: removed {name}");
                }
                ExitCode::Ok as u8
            }
            Err(e) => {
                let _ = writeln!(err, "error: {e}");
                ExitCode::Failure as u8
            }
        },
        b @ (Backend::Podman | Backend::Docker) => {
            let engine = engine_of(b).unwrap_or(Engine::Podman);
            match engine::remove(engine, args.name.as_deref(), err) {
                Ok(removed) if removed.is_empty() && args.name.is_some() => {
                    let _ = writeln!(
                        err,
                        "error: no bottle named {}",
                        args.name.clone().unwrap_or_default()
                    );
                    ExitCode::Failure as u8
                }
                Ok(removed) => {
                    for name in removed {
                        let _ = writeln!(err, "bottleneck: removed {name}");
                    }
                    ExitCode::Ok as u8
                }
                Err(e) => {
                    let _ = writeln!(err, "error: {e}");
                    ExitCode::Failure as u8
                }
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn rm_netns(args: &RmArgs, err: &mut dyn Write) -> u8 {
    let names: Vec<String> = if args.all {
        crate::netns::teardown::list()
            .into_iter()
            .map(|b| b.name)
            .collect()
    } else {
        vec![args.name.clone().unwrap_or_default()]
    };
    if !nix::unistd::geteuid().is_root() {
        let _ = writeln!(err, "error: removing bottles needs root");
        return ExitCode::Failure as u8;
    }
    let mut code = ExitCode::Ok as u8;
    for name in names {
        match crate::netns::remove(&name, err) {
            Ok(()) => {
                let _ = writeln!(err, "bottleneck: removed {name}");
            }
            Err(e) => {
                let _ = writeln!(err, "error: removing {name}: {e}");
                code = ExitCode::Failure as u8;
            }
        }
    }
    code
}

#[cfg(not(target_os = "linux"))]
fn rm_netns(_args: &RmArgs, err: &mut dyn Write) -> u8 {
    let _ = writeln!(err, "error: the netns backend needs Linux");
    ExitCode::Failure as u8
}

/// `bottleneck logs NAME [-f] [--json]`.
pub fn logs(args: &LogsArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    if let Err(e) = bottle::check_name(&args.name) {
        return config_error(err, &e);
    }
    let names = bottle::Names::new(&args.name);
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let state_dir = names.state_dir.clone();
    let keep = move || state_dir.exists();
    match crate::logs::show(
        &args.name,
        &names.audit_path(),
        args.json,
        args.follow,
        color,
        out,
        &keep,
    ) {
        Ok(()) => ExitCode::Ok as u8,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            ExitCode::Failure as u8
        }
    }
}

/// `bottleneck ca init DIR`: the gateway's own CA code, through its `ca-init` command.
pub fn ca_init(dir: &Path, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    let gateway = match bottle::find_binary("bottleneck-gateway") {
        Ok(g) => g,
        Err(e) => return config_error(err, &e),
    };
    let output = std::process::Command::new(&gateway)
        .arg("ca-init")
        .arg("--ca-dir")
        .arg(dir)
        .stdin(std::process::Stdio::null())
        .output();
    match output {
        Ok(o) if o.status.success() => {
            let _ = out.write_all(&o.stdout);
            let _ = writeln!(
                err,
                "bottleneck: created {}/ca.pem and ca.key (mode 0600)",
                dir.display()
            );
            ExitCode::Ok as u8
        }
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stderr);
            let msg = text
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("failed");
            let _ = writeln!(err, "error: ca init {}: {msg}", dir.display());
            ExitCode::Config as u8
        }
        Err(e) => {
            let _ = writeln!(err, "error: cannot run {}: {e}", gateway.display());
            ExitCode::Failure as u8
        }
    }
}

/// `bottleneck demo`.
#[cfg(target_os = "linux")]
pub fn demo(args: &DemoArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    crate::demo::run(args, out, err)
}

/// `bottleneck demo` (Linux only).
#[cfg(not(target_os = "linux"))]
pub fn demo(_args: &DemoArgs, _out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    config_error(
        err,
        &ConfigError::Unsupported("the demo needs Linux (network namespaces) and root".into()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_backend_follows_the_issue_order() {
        let none = |_: &str| false;
        let all = |_: &str| true;
        let docker = |t: &str| t == "docker";
        assert_eq!(choose_backend(true, false, false, all), Backend::Apple);
        assert_eq!(choose_backend(true, false, false, docker), Backend::Docker);
        assert_eq!(choose_backend(false, true, true, all), Backend::Netns);
        assert_eq!(choose_backend(false, true, false, all), Backend::Podman);
        assert_eq!(choose_backend(false, true, false, docker), Backend::Docker);
        assert_eq!(choose_backend(false, true, false, none), Backend::Netns);
        assert_eq!(choose_backend(true, false, false, none), Backend::Apple);
    }
}
