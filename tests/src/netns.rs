//! Network namespaces: naming, creation, deletion, stale sweeping, and entering one from
//! a thread.
//!
//! Names are `bnlab-<pid>-<counter>-<role>`: unique per lab within a process, and tied to
//! the process that owns them, so a later run can delete what a SIGKILLed run left behind
//! (its pid is no longer alive). Namespaces are created with `ip netns add`, which
//! bind-mounts them under `/run/netns`; a thread enters one with `setns(2)`, which affects
//! only that thread, and sockets it creates stay in that namespace for their whole life.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::Duration;

use nix::sched::{CloneFlags, setns};
use nix::sys::signal::kill;
use nix::unistd::Pid;

use crate::error::{LabError, Result};
use crate::process::{self, ExecOutput, Spec, display_command};

/// The prefix of every namespace and temporary directory the lab creates.
pub const PREFIX: &str = "bnlab-";
/// Where `ip netns` keeps its namespace handles.
pub const NETNS_DIR: &str = "/run/netns";
/// Time limit for one `ip` or `sysctl` invocation.
pub(crate) const TOOL_TIMEOUT: Duration = Duration::from_secs(15);

/// Serialises `ip netns add/del` within this process: the first `ip netns add` on a
/// machine sets up the `/run/netns` mount, and concurrent first calls can stack mounts.
static NETNS_LOCK: Mutex<()> = Mutex::new(());
/// Distinguishes labs created by one process.
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A fresh `<prefix><pid>-<n>` stem for one lab's namespaces and directory.
pub(crate) fn next_stem() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The path `ip netns` bind-mounts a namespace at.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `ip` (in the root namespace unless the arguments say `-n NS`), optionally with
/// a batch on stdin, and fails with its stderr unless it succeeds.
pub(crate) fn ip(args: &[&str], batch: Option<String>) -> Result<ExecOutput> {
    let mut command = Command::new("ip");
    command.args(args);
    let mut display = display_command(&[&["ip"], args].concat());
    if let Some(batch) = &batch {
        display.push_str(&format!(" <<< {:?}", batch.trim_end()));
    }
    process::run(
        Spec {
            command,
            display,
            stdin: batch.map(String::into_bytes),
            output_limit: 1 << 20,
        },
        TOOL_TIMEOUT,
    )?
    .check()
}

/// Sets sysctls inside namespace `ns` (writes under /proc/sys/net are per namespace).
pub(crate) fn sysctl(ns: &str, settings: &[(&str, &str)]) -> Result<()> {
    let assignments: Vec<String> = settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut args = vec!["netns", "exec", ns, "sysctl", "-q", "-w"];
    args.extend(assignments.iter().map(String::as_str));
    ip(&args, None).map(drop)
}

/// The names of the namespaces that currently exist under [`NETNS_DIR`].
pub fn list_namespaces() -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(NETNS_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LabError::io(format!("listing {NETNS_DIR}"), e)),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| LabError::io(format!("listing {NETNS_DIR}"), e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

/// The pid encoded in a lab name (`bnlab-<pid>-...`), if it is one.
pub(crate) fn owner_pid(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// True if a process with this pid exists.
pub(crate) fn pid_alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    !matches!(
        kill(Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}

/// SIGKILLs every process whose network namespace is one of `names` (never this
/// process), e.g. a daemon a test started that left its process group.
fn kill_processes_in(names: &[String]) {
    let batch: String = names.iter().map(|n| format!("netns pids {n}\n")).collect();
    let mut command = Command::new("ip");
    command.args(["-force", "-batch", "-"]);
    let spec = Spec {
        command,
        display: format!("ip -force -batch - <<< {:?}", batch.trim_end()),
        stdin: Some(batch.into_bytes()),
        output_limit: 1 << 20,
    };
    // Missing namespaces make `ip` exit non-zero; the pids it did print still count.
    let Ok(out) = process::run(spec, TOOL_TIMEOUT) else {
        return;
    };
    let me = std::process::id();
    for pid in out
        .stdout_str()
        .split_whitespace()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if pid != me
            && let Ok(pid) = i32::try_from(pid)
        {
            let _ = kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

/// Kills what runs in `names` and deletes them with one `ip -force -batch`; returns
/// the failures (a namespace that still exists afterwards is one).
fn delete_namespaces(names: &[String]) -> Vec<LabError> {
    if names.is_empty() {
        return Vec::new();
    }
    let _guard = NETNS_LOCK.lock();
    kill_processes_in(names);
    let batch: String = names.iter().map(|n| format!("netns del {n}\n")).collect();
    let mut errors = Vec::new();
    if let Err(e) = ip(&["-force", "-batch", "-"], Some(batch)) {
        errors.push(e);
    }
    for name in names {
        if netns_path(name).exists() {
            errors.push(LabError::Invalid(format!(
                "namespace {name} still exists after `ip netns del`"
            )));
        }
    }
    errors
}

/// Deletes lab namespaces (killing what still runs in them) and temporary directories
/// whose owning process is gone. Errors are reported on stderr and otherwise ignored:
/// another process may be sweeping the same leftovers at the same moment.
pub fn sweep_stale() {
    let stale = |name: &str| owner_pid(name).is_some_and(|pid| !pid_alive(pid));
    match list_namespaces() {
        Ok(names) => {
            let stale_names: Vec<String> = names.into_iter().filter(|n| stale(n)).collect();
            for e in delete_namespaces(&stale_names) {
                eprintln!("bnlab: sweeping stale namespaces: {e}");
            }
        }
        Err(e) => eprintln!("bnlab: could not list stale namespaces: {e}"),
    }
    if let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if stale(&name) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// A set of namespaces owned by one lab; all are deleted on drop.
#[derive(Debug, Default)]
pub(crate) struct Namespaces {
    names: Vec<String>,
}

impl Namespaces {
    /// Creates the namespaces `names` (all or none).
    pub(crate) fn create(names: &[String]) -> Result<Self> {
        // Names are unique within this process, so an existing one was left by an
        // earlier process that had our pid: stale.
        let leftovers: Vec<String> = names
            .iter()
            .filter(|n| netns_path(n).exists())
            .cloned()
            .collect();
        for e in delete_namespaces(&leftovers) {
            eprintln!("bnlab: removing a leftover namespace: {e}");
        }
        let batch: String = names.iter().map(|n| format!("netns add {n}\n")).collect();
        let result = {
            let _guard = NETNS_LOCK.lock();
            ip(&["-batch", "-"], Some(batch))
        };
        // Whatever got created is owned (and so deleted on error) from here.
        let set = Namespaces {
            names: names
                .iter()
                .filter(|n| netns_path(n).exists())
                .cloned()
                .collect(),
        };
        result?;
        Ok(set)
    }

    /// Deletes every namespace of the set, killing what still runs in them; returns the
    /// failures.
    pub(crate) fn delete_all(&mut self) -> Vec<LabError> {
        let names = std::mem::take(&mut self.names);
        delete_namespaces(&names)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for e in self.delete_all() {
            eprintln!("bnlab: teardown: {e}");
        }
    }
}

/// Moves the calling thread into the network namespace `name`.
pub(crate) fn enter(name: &str) -> Result<()> {
    let path = netns_path(name);
    let file =
        File::open(&path).map_err(|e| LabError::io(format!("opening {}", path.display()), e))?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| LabError::Setns {
        namespace: name.to_owned(),
        source,
    })
}

/// Runs `f` on a new thread inside the network namespace `name` and returns its result.
/// Sockets `f` creates belong to that namespace even after they move to other threads;
/// threads `f` spawns start in it too. A panic in `f` is re-raised in the caller.
pub fn run_in<T, F>(name: &str, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> T + Send + 'static,
{
    let owned = name.to_owned();
    let handle = thread::Builder::new()
        .name(format!("bnlab-in-{name}"))
        .spawn(move || -> Result<T> {
            enter(&owned)?;
            Ok(f())
        })
        .map_err(|e| LabError::io("starting a namespace thread", e))?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_only_lab_names() {
        assert_eq!(owner_pid("bnlab-1234-0-agent"), Some(1234));
        assert_eq!(owner_pid("bnlab-1234-7"), Some(1234));
        assert_eq!(owner_pid("other-1234-0"), None);
        assert_eq!(owner_pid("bnlab-x-0"), None);
    }

    #[test]
    fn our_own_pid_is_alive_and_a_huge_one_is_not() {
        assert!(pid_alive(i32::try_from(std::process::id()).unwrap_or(1)));
        assert!(!pid_alive(i32::MAX - 1));
        assert!(!pid_alive(0));
    }
}
