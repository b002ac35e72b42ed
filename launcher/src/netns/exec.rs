//! `bottleneck exec` for the netns backend: a command in a running bottle's agent,
//! through `bottleneck-init --drop-only`.
//!
//! The agent's PID 1 is the shim, in the bottle's agent network namespace and in a PID and
//! mount namespace of its own (the bottle's passwd, resolv.conf and CA bundle copies are
//! bound there). It is found among the processes of `bn-NAME-agent` as the
//! `bottleneck-init` whose innermost pid is 1; its environment gives the agent's user and
//! trust directory. Then `nsenter --target PID --net --mount --pid` runs `bottleneck-init
//! --drop-only --user USER --trust-dir DIR -- CMD`: every capability dropped (bounding set
//! included), no_new_privs, the agent's user, before CMD runs. The launcher's environment
//! is not passed on (PATH, TERM, LANG only).

use std::path::Path;
use std::process::{Command, Stdio};

use crate::bottle::{AGENT_PATH, Names, find_binary};

/// The agent's shim: its host pid, user and trust directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shim {
    /// Its pid in the host's PID namespace.
    pub pid: u32,
    /// `BOTTLENECK_USER` from its environment.
    pub user: String,
    /// `BOTTLENECK_TRUST_DIR` from its environment.
    pub trust_dir: Option<String>,
}

/// Whether `/proc/PID/status` text is that of a PID 1 in a nested PID namespace.
pub fn is_namespace_init(status: &str) -> bool {
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))
        .is_some_and(|ids| {
            let ids: Vec<&str> = ids.split_whitespace().collect();
            ids.len() > 1 && ids.last() == Some(&"1")
        })
}

/// A `NUL`-separated environment's value of `key`.
pub fn environ_value(environ: &[u8], key: &str) -> Option<String> {
    environ.split(|b| *b == 0).find_map(|entry| {
        let text = String::from_utf8_lossy(entry);
        text.strip_prefix(&format!("{key}="))
            .map(str::to_owned)
            .filter(|v| !v.is_empty())
    })
}

/// Finds bottle `name`'s shim.
pub fn find_shim(name: &str) -> Result<Shim, String> {
    let names = Names::new(name);
    let out = Command::new("ip")
        .args(["netns", "pids", &names.agent_ns])
        .env_clear()
        .env("PATH", AGENT_PATH)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("ip netns pids: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "no running bottle named {name} (no {})",
            names.agent_ns
        ));
    }
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        let proc = Path::new("/proc").join(pid.to_string());
        let comm = std::fs::read_to_string(proc.join("comm")).unwrap_or_default();
        let status = std::fs::read_to_string(proc.join("status")).unwrap_or_default();
        if comm.trim() != "bottleneck-init" || !is_namespace_init(&status) {
            continue;
        }
        let environ = std::fs::read(proc.join("environ")).unwrap_or_default();
        return Ok(Shim {
            pid,
            user: environ_value(&environ, "BOTTLENECK_USER").unwrap_or_else(|| "node".into()),
            trust_dir: environ_value(&environ, "BOTTLENECK_TRUST_DIR"),
        });
    }
    Err(format!("bottle {name} has no running agent"))
}

/// The `nsenter` command line for `command` in the agent of `shim`.
pub fn exec_argv(shim: &Shim, init: &Path, command: &[String]) -> Vec<String> {
    let mut argv = vec![
        "nsenter".to_owned(),
        "--target".into(),
        shim.pid.to_string(),
        "--net".into(),
        "--mount".into(),
        "--pid".into(),
        "--".into(),
        init.display().to_string(),
        "--drop-only".into(),
        "--user".into(),
        shim.user.clone(),
    ];
    if let Some(dir) = &shim.trust_dir {
        argv.extend(["--trust-dir".into(), dir.clone()]);
    }
    argv.push("--".into());
    argv.extend(command.iter().cloned());
    argv
}

/// Runs `command` in bottle `name`'s agent; returns its exit status (root).
pub fn exec(name: &str, command: &[String]) -> Result<u8, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("bottleneck exec on the netns backend needs root".into());
    }
    let init = find_binary("bottleneck-init").map_err(|e| e.to_string())?;
    let shim = find_shim(name)?;
    let argv = exec_argv(&shim, &init, command);
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]).env_clear().env("PATH", AGENT_PATH);
    for var in ["TERM", "LANG"] {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    let status = cmd.status().map_err(|e| format!("nsenter: {e}"))?;
    Ok(status
        .code()
        .and_then(|c| u8::try_from(c).ok())
        .unwrap_or(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shim_is_pid_1_of_a_nested_namespace() {
        assert!(is_namespace_init(
            "Name:\tbottleneck-init\nNSpid:\t4242\t1\n"
        ));
        assert!(!is_namespace_init("NSpid:\t1\n"));
        assert!(!is_namespace_init("NSpid:\t4242\t7\n"));
        assert!(!is_namespace_init("Name:\tx\n"));
    }

    #[test]
    fn environment_values_and_the_command_line() {
        let environ = b"PATH=/bin\0BOTTLENECK_USER=node\0BOTTLENECK_TRUST_DIR=/run/bottleneck/b1/agent/trust\0";
        assert_eq!(
            environ_value(environ, "BOTTLENECK_USER").as_deref(),
            Some("node")
        );
        assert_eq!(environ_value(environ, "MISSING"), None);
        let shim = Shim {
            pid: 4242,
            user: "node".into(),
            trust_dir: environ_value(environ, "BOTTLENECK_TRUST_DIR"),
        };
        assert_eq!(
            exec_argv(&shim, Path::new("/bin/bottleneck-init"), &["id".into()]).join(" "),
            "nsenter --target 4242 --net --mount --pid -- /bin/bottleneck-init --drop-only \
             --user node --trust-dir /run/bottleneck/b1/agent/trust -- id"
        );
    }
}
