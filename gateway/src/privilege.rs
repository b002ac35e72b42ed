//! Once the firewall is installed, the gateway keeps only what it still needs:
//! CAP_NET_ADMIN (remove the nftables table on exit, SO_MARK) and CAP_NET_BIND_SERVICE.
//! Everything else goes from every capability set, the bounding set included, so a bug in
//! the request path cannot be turned into more than that.
//!
//! Capabilities are per thread: this must run while the process has one thread, before
//! the async runtime starts.

use std::collections::HashSet;

use caps::{CapSet, Capability};

/// Why the capabilities could not be reduced.
#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    /// Other threads exist; dropping on one thread would leave the others privileged.
    #[error("capabilities must be dropped before any other thread starts ({0} threads running)")]
    Threads(usize),
    /// The kernel refused a change.
    #[error("cannot change the {set} capability set: {reason}")]
    Caps {
        /// Which set.
        set: &'static str,
        /// The error.
        reason: String,
    },
}

/// The capabilities the running gateway keeps.
pub const KEEP: [Capability; 2] = [Capability::CAP_NET_ADMIN, Capability::CAP_NET_BIND_SERVICE];

/// Drop every capability but [`KEEP`] from the bounding, permitted, effective, inheritable
/// and ambient sets. Capabilities of [`KEEP`] the process never had stay absent.
pub fn keep_only_network_capabilities() -> Result<(), PrivilegeError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(PrivilegeError::Threads(threads));
    }
    let err = |set: &'static str| {
        move |e: caps::errors::CapsError| PrivilegeError::Caps {
            set,
            reason: e.to_string(),
        }
    };
    let permitted = caps::read(None, CapSet::Permitted).map_err(err("permitted"))?;
    let keep: HashSet<Capability> = KEEP.into_iter().filter(|c| permitted.contains(c)).collect();
    caps::clear(None, CapSet::Ambient).map_err(err("ambient"))?;
    caps::clear(None, CapSet::Inheritable).map_err(err("inheritable"))?;
    let bounding = caps::read(None, CapSet::Bounding).map_err(err("bounding"))?;
    // CAP_SETPCAP is what allows dropping from the bounding set, so it goes last.
    let mut to_drop: Vec<Capability> = bounding
        .into_iter()
        .filter(|c| !KEEP.contains(c) && *c != Capability::CAP_SETPCAP)
        .collect();
    to_drop.push(Capability::CAP_SETPCAP);
    for cap in to_drop {
        if caps::has_cap(None, CapSet::Bounding, cap).unwrap_or(false) {
            caps::drop(None, CapSet::Bounding, cap).map_err(err("bounding"))?;
        }
    }
    caps::set(None, CapSet::Effective, &keep).map_err(err("effective"))?;
    caps::set(None, CapSet::Permitted, &keep).map_err(err("permitted"))?;
    Ok(())
}

fn thread_count() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

/// Raise the soft open-files limit to the hard one: every agent connection costs two
/// descriptors (and a splice or upstream pool more), so the common soft default of 1024
/// would cap the gateway near 500 connections. Returns the limit now in force.
pub fn raise_open_files_limit() -> Result<u64, nix::Error> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard.max(soft))
}
