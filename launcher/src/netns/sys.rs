//! The system calls of the netns backend, through the standard tools (`ip`, `nft`,
//! `sysctl`): running one command with a deadline, finding and killing the processes of a
//! namespace, and reading what exists.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;

use super::plan::Cmd;

/// Deadline of one tool invocation.
pub const TOOL_TIMEOUT: Duration = Duration::from_secs(15);
/// The most output kept from a tool.
const OUTPUT_LIMIT: usize = 1 << 20;
/// Where `ip netns` keeps its handles.
pub const NETNS_DIR: &str = "/run/netns";

/// A tool that failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// It could not be started.
    #[error("`{cmd}`: cannot start: {source}")]
    Spawn {
        /// The command.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited with an error.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        /// The command (first line).
        cmd: String,
        /// Its exit status.
        status: String,
        /// Its stderr.
        stderr: String,
    },
    /// It did not finish in time (and was killed).
    #[error("`{cmd}` did not finish within {after:?}")]
    Timeout {
        /// The command.
        cmd: String,
        /// The deadline.
        after: Duration,
    },
}

fn first_line(cmd: &Cmd) -> String {
    cmd.to_string()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Runs `cmd` to completion within [`TOOL_TIMEOUT`] and returns its stdout; a non-zero exit
/// is an error carrying stderr.
pub async fn run(cmd: &Cmd) -> Result<String, SysError> {
    let Some((program, args)) = cmd.argv.split_first() else {
        return Ok(String::new());
    };
    let mut command = tokio::process::Command::new(program);
    command
        .args(args)
        // Tools get nothing of the launcher's environment (its secrets above all).
        .env_clear()
        .env("PATH", crate::bottle::AGENT_PATH)
        .stdin(if cmd.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| SysError::Spawn {
        cmd: first_line(cmd),
        source,
    })?;
    if let (Some(input), Some(mut stdin)) = (&cmd.stdin, child.stdin.take()) {
        // A tool that exits early closes its stdin; its exit status tells what went wrong.
        let _ = stdin.write_all(input.as_bytes()).await;
        drop(stdin);
    }
    let output = match tokio::time::timeout(TOOL_TIMEOUT, child.wait_with_output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(SysError::Spawn {
                cmd: first_line(cmd),
                source,
            });
        }
        Err(_) => {
            return Err(SysError::Timeout {
                cmd: first_line(cmd),
                after: TOOL_TIMEOUT,
            });
        }
    };
    let cut = |b: &[u8]| String::from_utf8_lossy(&b[..b.len().min(OUTPUT_LIMIT)]).into_owned();
    if output.status.success() {
        Ok(cut(&output.stdout))
    } else {
        Err(SysError::Failed {
            cmd: first_line(cmd),
            status: output.status.to_string(),
            stderr: cut(&output.stderr).trim().to_owned(),
        })
    }
}

/// The names of the network namespaces under [`NETNS_DIR`].
pub fn namespaces() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// True if the namespace `name` exists.
pub fn namespace_exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// The pids of the processes in namespace `name` (never this process).
pub async fn pids_in(name: &str) -> Vec<i32> {
    if !namespace_exists(name) {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    match run(&Cmd::new(&["ip", "netns", "pids", name])).await {
        Ok(out) => out
            .split_whitespace()
            .filter_map(|p| p.parse::<i32>().ok())
            .filter(|&p| p != me && p > 1)
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, signal: Signal) {
    let _ = kill(Pid::from_raw(pid), signal);
}

/// SIGTERMs every process in the namespaces, waits up to `grace` for them to go, then
/// SIGKILLs what is left and waits a little more. Returns the pids that survived.
pub async fn stop_all_in(namespaces: &[&str], grace: Duration) -> Vec<i32> {
    let mut pids = Vec::new();
    for ns in namespaces {
        pids.extend(pids_in(ns).await);
    }
    for &pid in &pids {
        signal(pid, Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        let mut left = Vec::new();
        for ns in namespaces {
            left.extend(pids_in(ns).await);
        }
        if left.is_empty() {
            return left;
        }
        if Instant::now() >= deadline {
            for &pid in &left {
                signal(pid, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            let mut survivors = Vec::new();
            for ns in namespaces {
                survivors.extend(pids_in(ns).await);
            }
            return survivors;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads a sysctl of the root namespace (`net.ipv4.ip_forward` ->
/// `/proc/sys/net/ipv4/ip_forward`).
pub fn read_sysctl(name: &str) -> Option<String> {
    let path = Path::new("/proc/sys").join(name.replace('.', "/"));
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// True if process `pid` exists.
pub fn pid_alive(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    pid > 0
        && !matches!(
            kill(Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
}
