//! Removing a bottle: the same code for a run that ends (agent exit, a signal, a failure
//! half-way) and for `bottleneck rm` after a crash. Every step checks what exists, so it
//! can run on a bottle in any state, any number of times.

use std::path::Path;
use std::time::Duration;

use crate::bottle::{Names, Record, STATE_ROOT};

use super::plan::Cmd;
use super::sys;

/// How long processes in the bottle's namespaces get between SIGTERM and SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(5);

/// Reads a bottle's state record, if there is one.
pub fn read_record(names: &Names) -> Option<Record> {
    let text = std::fs::read_to_string(names.record_path()).ok()?;
    serde_json::from_str(&text).ok()
}

/// Writes a bottle's state record.
pub fn write_record(names: &Names, record: &Record) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(record).map_err(std::io::Error::other)?;
    let tmp = names.state_dir.join("bottle.json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, names.record_path())
}

/// Every bottle record under [`STATE_ROOT`].
pub fn all_records() -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(STATE_ROOT) else {
        return Vec::new();
    };
    let mut out: Vec<Record> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            crate::bottle::check_name(&name).ok()?;
            read_record(&Names::new(&name))
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

async fn exists(cmd: &Cmd) -> bool {
    sys::run(cmd).await.is_ok()
}

/// Removes everything of bottle `names`; `uplink` is the recorded uplink (`host`,
/// `netns:NAME`), if known. Returns the problems met (the rest is still removed).
pub async fn teardown(names: &Names, record: Option<&Record>) -> Vec<String> {
    let mut problems = Vec::new();
    let survivors = sys::stop_all_in(&[&names.agent_ns, &names.gateway_ns], STOP_GRACE).await;
    if !survivors.is_empty() {
        problems.push(format!("processes would not die: {survivors:?}"));
    }
    for ns in [&names.agent_ns, &names.gateway_ns] {
        if sys::namespace_exists(ns)
            && let Err(e) = sys::run(&Cmd::new(&["ip", "netns", "del", ns])).await
        {
            problems.push(e.to_string());
        }
    }
    // The uplink veth dies with the gateway namespace, but namespace destruction is
    // asynchronous: delete the outside end explicitly.
    let iface = &names.uplink_iface;
    let uplink = record.map(|r| r.uplink.as_str()).unwrap_or("host");
    let outside: Vec<String> = match uplink.strip_prefix("netns:") {
        Some(ns) if sys::namespace_exists(ns) => vec!["ip".into(), "-n".into(), ns.into()],
        Some(_) => Vec::new(),
        None => vec!["ip".into()],
    };
    if !outside.is_empty() {
        let with = |rest: &[&str]| {
            let mut argv = outside.clone();
            argv.extend(rest.iter().map(|s| (*s).to_owned()));
            Cmd::new(&argv)
        };
        if exists(&with(&["link", "show", iface])).await
            && let Err(e) = sys::run(&with(&["link", "del", iface])).await
            && exists(&with(&["link", "show", iface])).await
        {
            problems.push(e.to_string());
        }
    }
    let table = &names.nft_table;
    if exists(&Cmd::new(&["nft", "list", "table", "ip", table])).await
        && let Err(e) = sys::run(&Cmd::new(&["nft", "delete", "table", "ip", table])).await
    {
        problems.push(e.to_string());
    }
    if record.is_some_and(|r| r.enabled_forwarding) {
        problems.extend(restore_forwarding(&names.bottle).await);
    }
    if let Err(e) = std::fs::remove_dir_all(&names.state_dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        problems.push(format!("removing {}: {e}", names.state_dir.display()));
    }
    // The state root itself goes when the last bottle has gone.
    let _ = std::fs::remove_dir(Path::new(STATE_ROOT));
    problems
}

/// Turns the host's IPv4 forwarding back off, unless another live bottle with a host
/// uplink still needs it: that bottle then inherits the duty.
async fn restore_forwarding(me: &str) -> Vec<String> {
    let heir = all_records()
        .into_iter()
        .find(|r| r.name != me && r.uplink == "host" && sys::pid_alive(r.launcher_pid));
    if let Some(mut heir) = heir {
        heir.enabled_forwarding = true;
        return match write_record(&Names::new(&heir.name), &heir) {
            Ok(()) => Vec::new(),
            Err(e) => vec![format!(
                "handing the forwarding restore to bottle {}: {e}",
                heir.name
            )],
        };
    }
    match sys::run(&Cmd::new(&["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"])).await {
        Ok(_) => Vec::new(),
        Err(e) => vec![e.to_string()],
    }
}

/// One bottle as `bottleneck ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// The name.
    pub name: String,
    /// `running` (its launcher is alive) or `stale`.
    pub state: &'static str,
    /// The record, if the state directory has one.
    pub record: Option<Record>,
    /// The bottle's namespaces that exist.
    pub namespaces: Vec<String>,
}

/// Every bottle: those with a state directory and those with only namespaces left.
pub fn list() -> Vec<Listed> {
    let mut names: Vec<String> = all_records().into_iter().map(|r| r.name).collect();
    if let Ok(entries) = std::fs::read_dir(STATE_ROOT) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if crate::bottle::check_name(&name).is_ok() {
                names.push(name);
            }
        }
    }
    let namespaces = sys::namespaces();
    names.extend(
        namespaces
            .iter()
            .filter_map(|ns| Names::bottle_of_namespace(ns).map(str::to_owned)),
    );
    names.sort();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let n = Names::new(&name);
            let record = read_record(&n);
            let running = record.as_ref().is_some_and(|r| {
                r.launcher_pid != std::process::id() && sys::pid_alive(r.launcher_pid)
            });
            Listed {
                namespaces: namespaces
                    .iter()
                    .filter(|ns| **ns == n.agent_ns || **ns == n.gateway_ns)
                    .cloned()
                    .collect(),
                state: if running { "running" } else { "stale" },
                record,
                name,
            }
        })
        .collect()
}
