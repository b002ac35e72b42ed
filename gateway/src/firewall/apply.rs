//! Installing and removing the ruleset with the `nft` binary, switching forwarding on,
//! and reading the named counters.
//!
//! Every change is one `nft -f -` invocation with the script on standard input: nft
//! applies a script as a single transaction, so a failure leaves the previous state
//! untouched. Each invocation has a time limit ([`NFT_TIMEOUT`]); errors carry nft's
//! stderr.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::error::FirewallError;
use super::ruleset::{self, FirewallConfig, TABLE_FAMILY, TABLE_NAME};

/// The nftables command-line tool, looked up on `PATH`.
pub const NFT: &str = "nft";
/// How long one `nft` invocation may take before it is killed.
pub const NFT_TIMEOUT: Duration = Duration::from_secs(10);
/// The sysctl files [`enable_forwarding`] switches on (IPv4 and IPv6).
pub const FORWARDING_SYSCTLS: [&str; 2] = [
    "/proc/sys/net/ipv4/ip_forward",
    "/proc/sys/net/ipv6/conf/all/forwarding",
];

/// Installs (or replaces) the gateway's table for `cfg`, atomically.
///
/// Run it in the gateway's network namespace with CAP_NET_ADMIN. Invalid configurations
/// are refused before nft runs.
pub fn apply(cfg: &FirewallConfig) -> Result<(), FirewallError> {
    let script = ruleset::render(cfg)?;
    run_nft("applying the ruleset", &["-f", "-"], Some(&script)).map(drop)
}

/// Removes the gateway's table; succeeds if it is already gone.
pub fn remove() -> Result<(), FirewallError> {
    run_nft(
        "removing the ruleset",
        &["-f", "-"],
        Some(ruleset::remove_script()),
    )
    .map(drop)
}

/// Switches IPv4 and IPv6 forwarding on in the current network namespace.
///
/// Forwarding must be on even though the forward chain routes nothing: with IPv6
/// forwarding off, the kernel silently discards agent packets addressed elsewhere
/// before any filter sees them, so clients would hang until their timeout instead of
/// being rejected at once. With forwarding on, those packets reach the forward chain and
/// get a reset or an ICMP error.
///
/// A setting that is already 1 is left alone, so a read-only `/proc/sys` is fine when
/// the container was started with forwarding enabled; otherwise the error names the file
/// and says how to start the container.
pub fn enable_forwarding() -> Result<(), FirewallError> {
    for path in FORWARDING_SYSCTLS {
        enable_sysctl(Path::new(path))?;
    }
    Ok(())
}

/// Stop the gateway from sending ICMP redirects to the agent. A router tells a host on
/// the same link to use a better next hop directly; the agent's only next hop must stay
/// the gateway. The kernel sends them if either `all` or the interface allows it, so both
/// are switched off. Best effort (a read-only `/proc/sys` in a container): the paths that
/// could not be written are returned for a warning.
pub fn disable_redirects(agent_iface: &str) -> Vec<String> {
    let iface = format!("/proc/sys/net/ipv4/conf/{agent_iface}/send_redirects");
    ["/proc/sys/net/ipv4/conf/all/send_redirects", iface.as_str()]
        .into_iter()
        .filter(|path| {
            let done = fs::read_to_string(path).is_ok_and(|v| v.trim() == "0")
                || fs::write(path, b"0\n").is_ok();
            !done
        })
        .map(str::to_owned)
        .collect()
}

/// Turn forwarding off again when the gateway stops cleanly: once the table (and its
/// forward chain) is gone, forwarding left on would route the agent's packets out
/// unfiltered. Best effort on each file, so a read-only `/proc/sys` does not block exit;
/// the first error is returned.
pub fn disable_forwarding() -> Result<(), FirewallError> {
    let mut first = Ok(());
    for path in FORWARDING_SYSCTLS {
        if let Err(source) = fs::write(path, b"0\n")
            && first.is_ok()
        {
            first = Err(FirewallError::Sysctl {
                path: Path::new(path).to_owned(),
                source,
            });
        }
    }
    first
}

/// Sets the boolean sysctl at `path` to 1 unless it already is.
fn enable_sysctl(path: &Path) -> Result<(), FirewallError> {
    let current = fs::read_to_string(path).map_err(|source| FirewallError::Sysctl {
        path: path.to_owned(),
        source,
    })?;
    if current.trim() == "1" {
        return Ok(());
    }
    match fs::write(path, b"1\n") {
        Ok(()) => Ok(()),
        Err(source)
            if matches!(
                source.kind(),
                io::ErrorKind::ReadOnlyFilesystem | io::ErrorKind::PermissionDenied
            ) =>
        {
            Err(FirewallError::ForwardingDisabled {
                path: path.to_owned(),
                value: current.trim().to_owned(),
                source,
            })
        }
        Err(source) => Err(FirewallError::Sysctl {
            path: path.to_owned(),
            source,
        }),
    }
}

/// One nftables counter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    /// Packets counted.
    pub packets: u64,
    /// Bytes counted.
    pub bytes: u64,
}

/// The table's named counters (see the constants in [`super::ruleset`]). Redirect
/// counters sit in the nat chain, which sees only the first packet of each flow, so
/// they count connections (DNS: UDP flows); rejection counters count packets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Agent TCP 80 connections redirected to the HTTP listener.
    pub redirected_http: Counter,
    /// Agent TCP 443 connections redirected to the TLS listener.
    pub redirected_tls: Counter,
    /// Agent connections to `tcp` rule ports redirected to the relay.
    pub redirected_tcp: Counter,
    /// Agent DNS flows (UDP and TCP 53) redirected to the DNS server.
    pub redirected_dns: Counter,
    /// Agent TCP packets not routed, answered with a reset.
    pub forward_rejected_tcp: Counter,
    /// Other agent packets not routed, answered with ICMP admin-prohibited.
    pub forward_rejected_other: Counter,
    /// Agent TCP packets to non-listener gateway ports, answered with a reset.
    pub input_rejected_tcp: Counter,
    /// Other agent packets to the gateway refused with ICMP admin-prohibited.
    pub input_rejected_other: Counter,
}

impl Counters {
    /// Every counter with its nftables name, e.g. for exporting metrics.
    pub fn named(&self) -> [(&'static str, Counter); 8] {
        [
            (ruleset::REDIRECTED_HTTP, self.redirected_http),
            (ruleset::REDIRECTED_TLS, self.redirected_tls),
            (ruleset::REDIRECTED_TCP, self.redirected_tcp),
            (ruleset::REDIRECTED_DNS, self.redirected_dns),
            (ruleset::FORWARD_REJECTED_TCP, self.forward_rejected_tcp),
            (ruleset::FORWARD_REJECTED_OTHER, self.forward_rejected_other),
            (ruleset::INPUT_REJECTED_TCP, self.input_rejected_tcp),
            (ruleset::INPUT_REJECTED_OTHER, self.input_rejected_other),
        ]
    }
}

/// Reads the table's named counters (`nft -j list counters table inet bottleneck`).
pub fn counters() -> Result<Counters, FirewallError> {
    let stdout = run_nft(
        "reading the counters",
        &["-j", "list", "counters", "table", TABLE_FAMILY, TABLE_NAME],
        None,
    )?;
    parse_counters(&stdout)
}

/// The parts of nft's JSON output that matter here; other keys are ignored.
#[derive(Deserialize)]
struct JsonListing {
    nftables: Vec<JsonEntry>,
}

#[derive(Deserialize)]
struct JsonEntry {
    counter: Option<JsonCounter>,
}

#[derive(Deserialize)]
struct JsonCounter {
    family: String,
    table: String,
    name: String,
    packets: u64,
    bytes: u64,
}

fn parse_counters(json: &[u8]) -> Result<Counters, FirewallError> {
    let listing: JsonListing = serde_json::from_slice(json)
        .map_err(|e| FirewallError::Counters(format!("nft printed unexpected JSON: {e}")))?;
    let found: BTreeMap<String, Counter> = listing
        .nftables
        .into_iter()
        .filter_map(|entry| entry.counter)
        .filter(|c| c.family == TABLE_FAMILY && c.table == TABLE_NAME)
        .map(|c| {
            (
                c.name,
                Counter {
                    packets: c.packets,
                    bytes: c.bytes,
                },
            )
        })
        .collect();
    let get = |name: &str| {
        found.get(name).copied().ok_or_else(|| {
            FirewallError::Counters(format!(
                "counter {name:?} is missing from table {TABLE_FAMILY} {TABLE_NAME} \
                 (applied by another version?)"
            ))
        })
    };
    Ok(Counters {
        redirected_http: get(ruleset::REDIRECTED_HTTP)?,
        redirected_tls: get(ruleset::REDIRECTED_TLS)?,
        redirected_tcp: get(ruleset::REDIRECTED_TCP)?,
        redirected_dns: get(ruleset::REDIRECTED_DNS)?,
        forward_rejected_tcp: get(ruleset::FORWARD_REJECTED_TCP)?,
        forward_rejected_other: get(ruleset::FORWARD_REJECTED_OTHER)?,
        input_rejected_tcp: get(ruleset::INPUT_REJECTED_TCP)?,
        input_rejected_other: get(ruleset::INPUT_REJECTED_OTHER)?,
    })
}

/// Reads a pipe to the end on its own thread, so a chatty child never blocks on a full
/// pipe while we wait for it.
fn drain<R: Read + Send + 'static>(mut pipe: R) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        // A read error only truncates what is reported; the exit status decides.
        let _ = pipe.read_to_end(&mut buf);
        buf
    })
}

fn status_text(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => format!("{status}"),
    }
}

/// Runs `nft ARGS` with `stdin` (if any) as its input and returns its standard output;
/// fails with its stderr unless it exits 0 within [`NFT_TIMEOUT`].
fn run_nft(
    action: &'static str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<Vec<u8>, FirewallError> {
    let display = args.join(" ");
    let spawn_error = |source| FirewallError::NftSpawn { action, source };
    let mut child = Command::new(NFT)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(spawn_error)?;

    let writer = match (child.stdin.take(), stdin) {
        (Some(mut pipe), Some(text)) => {
            let text = text.to_owned();
            // Dropping the pipe at the end of the thread closes nft's stdin.
            Some(thread::spawn(move || pipe.write_all(text.as_bytes())))
        }
        _ => None,
    };
    let stdout = child.stdout.take().map(drain);
    let stderr = child.stderr.take().map(drain);

    let deadline = Instant::now() + NFT_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(2)),
            Ok(None) => {
                // Killing an nft that is stuck before committing leaves the old ruleset;
                // the kernel commits a transaction entirely or not at all.
                let _ = child.kill();
                let _ = child.wait();
                return Err(FirewallError::NftTimeout {
                    action,
                    args: display,
                    after: NFT_TIMEOUT,
                });
            }
            Err(source) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_error(source));
            }
        }
    };

    let collect =
        |h: Option<thread::JoinHandle<Vec<u8>>>| h.and_then(|h| h.join().ok()).unwrap_or_default();
    let stdout = collect(stdout);
    let stderr = collect(stderr);
    let written = match writer.map(thread::JoinHandle::join) {
        None | Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(e))) => Err(e),
        Some(Err(_)) => Err(io::Error::other("the thread writing nft's input panicked")),
    };
    if !status.success() {
        return Err(FirewallError::NftFailed {
            action,
            args: display,
            status: status_text(status),
            stderr: String::from_utf8_lossy(&stderr).trim().to_owned(),
        });
    }
    // nft succeeded on input we could not write in full: it may have applied a
    // truncated script, which must not count as success.
    written.map_err(spawn_error)?;
    Ok(stdout)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const LISTING: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "release_name": "Lester Gooch #5", "json_schema_version": 1}},
        {"counter": {"family": "inet", "name": "redirected_http", "table": "bottleneck", "handle": 1, "packets": 1, "bytes": 60}},
        {"counter": {"family": "inet", "name": "redirected_tls", "table": "bottleneck", "handle": 2, "packets": 2, "bytes": 120}},
        {"counter": {"family": "inet", "name": "redirected_tcp", "table": "bottleneck", "handle": 3, "packets": 0, "bytes": 0}},
        {"counter": {"family": "inet", "name": "redirected_dns", "table": "bottleneck", "handle": 4, "packets": 3, "bytes": 180}},
        {"counter": {"family": "inet", "name": "forward_rejected_tcp", "table": "bottleneck", "handle": 5, "packets": 4, "bytes": 240}},
        {"counter": {"family": "inet", "name": "forward_rejected_other", "table": "bottleneck", "handle": 6, "packets": 5, "bytes": 300}},
        {"counter": {"family": "inet", "name": "input_rejected_tcp", "table": "bottleneck", "handle": 7, "packets": 6, "bytes": 360}},
        {"counter": {"family": "inet", "name": "input_rejected_other", "table": "bottleneck", "handle": 8, "packets": 7, "bytes": 420}}]}"#;

    #[test]
    fn counters_are_parsed_from_nft_json() {
        let c = parse_counters(LISTING.as_bytes()).unwrap();
        assert_eq!(
            c.redirected_http,
            Counter {
                packets: 1,
                bytes: 60
            }
        );
        assert_eq!(c.redirected_dns.packets, 3);
        assert_eq!(c.forward_rejected_other.packets, 5);
        assert_eq!(c.input_rejected_other.bytes, 420);
        let names: Vec<&str> = c.named().iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ruleset::COUNTER_NAMES);
    }

    #[test]
    fn a_missing_counter_is_an_error_naming_it() {
        let listing = LISTING.replace("\"input_rejected_tcp\"", "\"something_else\"");
        let err = parse_counters(listing.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("input_rejected_tcp"), "{err}");
        let err = parse_counters(b"not json").unwrap_err();
        assert!(matches!(err, FirewallError::Counters(_)), "{err}");
    }

    fn scratch_file(tag: &str, contents: &str) -> std::path::PathBuf {
        let path = std::env::temp_dir().join(format!(
            "bottleneck-firewall-{tag}-{}-{:?}",
            std::process::id(),
            thread::current().id()
        ));
        fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn a_sysctl_already_on_is_left_alone_and_one_off_is_switched_on() {
        let on = scratch_file("on", "1\n");
        enable_sysctl(&on).unwrap();
        assert_eq!(fs::read_to_string(&on).unwrap(), "1\n");
        fs::remove_file(&on).unwrap();

        let off = scratch_file("off", "0\n");
        enable_sysctl(&off).unwrap();
        assert_eq!(fs::read_to_string(&off).unwrap(), "1\n");
        fs::remove_file(&off).unwrap();
    }

    #[test]
    fn sysctl_errors_name_the_file_and_the_remedy() {
        let missing = Path::new("/nonexistent/bottleneck/ip_forward");
        let err = enable_sysctl(missing).unwrap_err();
        assert!(matches!(err, FirewallError::Sysctl { .. }), "{err}");
        assert!(
            err.to_string()
                .contains("/nonexistent/bottleneck/ip_forward")
        );

        let err = FirewallError::ForwardingDisabled {
            path: FORWARDING_SYSCTLS[0].into(),
            value: "0".into(),
            source: io::Error::from(io::ErrorKind::ReadOnlyFilesystem),
        };
        let text = err.to_string();
        assert!(text.contains("/proc/sys/net/ipv4/ip_forward"), "{text}");
        assert!(text.contains("--sysctl net.ipv4.ip_forward=1"), "{text}");
    }
}
