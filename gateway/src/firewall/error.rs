//! The firewall's error type: every variant names what failed (the interface, the port,
//! the `nft` invocation and its stderr, the sysctl file), so a gateway that refuses to
//! start says why.

use std::path::PathBuf;
use std::time::Duration;

/// Why the firewall could not be rendered, applied, removed or read.
#[derive(Debug, thiserror::Error)]
pub enum FirewallError {
    /// The agent interface name would not be a valid Linux interface name, or could
    /// change the meaning of the nft script (quotes, spaces, wildcards...).
    #[error("invalid agent interface name {name:?}: {reason}")]
    InvalidInterface {
        /// The rejected name.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// A port or the upstream mark is unusable (a zero port, two listeners on one port,
    /// a `tcp` rule port that another redirect already captures, a zero mark).
    #[error("invalid firewall configuration: {0}")]
    InvalidConfig(String),

    /// The `nft` binary could not be started.
    #[error("running `nft` ({action}): {source} (is the nftables package installed?)")]
    NftSpawn {
        /// What the invocation was for (e.g. "applying the ruleset").
        action: &'static str,
        /// The error from spawning or talking to the process.
        #[source]
        source: std::io::Error,
    },

    /// `nft` ran and failed; nothing was changed (each script is one transaction).
    #[error("`nft {args}` failed while {action} ({status}): {stderr}")]
    NftFailed {
        /// What the invocation was for.
        action: &'static str,
        /// The arguments passed to `nft`.
        args: String,
        /// The exit status, as text.
        status: String,
        /// nft's standard error, trimmed.
        stderr: String,
    },

    /// `nft` did not finish in time and was killed.
    #[error("`nft {args}` did not finish within {after:?} while {action}; killed")]
    NftTimeout {
        /// What the invocation was for.
        action: &'static str,
        /// The arguments passed to `nft`.
        args: String,
        /// The time limit.
        after: Duration,
    },

    /// The output of `nft -j list counters` could not be understood.
    #[error("reading the firewall counters: {0}")]
    Counters(String),

    /// Reading or writing a sysctl file failed for a reason other than a read-only
    /// `/proc/sys`.
    #[error("sysctl {}: {source}", path.display())]
    Sysctl {
        /// The file under `/proc/sys`.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// Forwarding is off and cannot be switched on from inside (read-only `/proc/sys`,
    /// or no permission).
    #[error(
        "forwarding is disabled ({} is {value:?}) and cannot be enabled: {source}; start the \
         gateway container with forwarding enabled, e.g. `--sysctl net.ipv4.ip_forward=1 \
         --sysctl net.ipv6.conf.all.forwarding=1`",
        path.display()
    )]
    ForwardingDisabled {
        /// The sysctl file that reads 0.
        path: PathBuf,
        /// Its current contents.
        value: String,
        /// Why writing it failed.
        #[source]
        source: std::io::Error,
    },
}
