//! Giving up privilege for good: groups, gid, every capability set, no_new_privs, uid;
//! then proving it from `/proc/thread-self/status`.
//!
//! Order matters (DESIGN.md 5a, CRATES.md):
//! 1. `setgroups` and `setresgid` while CAP_SETGID is held;
//! 2. clear the bounding set while CAP_SETPCAP is still held (after `setresuid` it is gone);
//! 3. clear the inheritable and ambient sets;
//! 4. set no_new_privs, so no later `execve` (setuid-root binaries, file capabilities) can
//!    add privilege;
//! 5. `setresuid`: going from uid 0 to a non-zero uid clears the permitted and effective
//!    sets (unless securebits say otherwise, so they are cleared explicitly as well);
//! 6. read `/proc/thread-self/status`: CapInh, CapPrm, CapEff, CapBnd and CapAmb must be 0,
//!    NoNewPrivs 1, every uid and gid the agent's, the groups exactly the agent's.
//!    Anything else is an error and the agent is not started.
//!
//! Capabilities are per thread: this must run while the process has exactly one thread
//! (the netlink runtime already dropped), which [`ensure_single_threaded`] checks.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

use caps::{CapSet, Capability};
use nix::unistd::{Gid, Uid, setgroups, setresgid, setresuid};

use crate::passwd::Account;

/// Where the calling thread's credentials are read.
const STATUS_PATHS: [&str; 2] = ["/proc/thread-self/status", "/proc/self/status"];

/// Failure to drop privilege, or privilege left after dropping it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PrivilegeError {
    /// A system call of the drop sequence failed.
    #[error("dropping privilege: {step} failed: {reason}")]
    Step {
        /// Which step.
        step: &'static str,
        /// The error.
        reason: String,
    },
    /// The process status could not be read or parsed.
    #[error("cannot verify the privilege drop: {0}")]
    Status(String),
    /// Something is left after the drop.
    #[error(
        "privilege remains after dropping it: {field} is {found}, expected {expected}; \
         refusing to start the agent"
    )]
    NotDropped {
        /// The status field.
        field: &'static str,
        /// Its value.
        found: String,
        /// What it must be.
        expected: String,
    },
    /// More than one thread (capabilities would be dropped on this one only).
    #[error("the process has {0} threads; privilege must be dropped while it has one")]
    Threads(u32),
}

fn step<E: std::fmt::Display>(step: &'static str) -> impl FnOnce(E) -> PrivilegeError {
    move |e| PrivilegeError::Step {
        step,
        reason: e.to_string(),
    }
}

/// The capabilities the shim needs in its effective set: CAP_SETUID, CAP_SETGID and
/// CAP_SETPCAP always, CAP_NET_ADMIN too when it configures the network.
pub fn required_caps(network: bool) -> Vec<Capability> {
    let mut caps = Vec::new();
    if network {
        caps.push(Capability::CAP_NET_ADMIN);
    }
    caps.extend([
        Capability::CAP_SETUID,
        Capability::CAP_SETGID,
        Capability::CAP_SETPCAP,
    ]);
    caps
}

/// The required capabilities missing from the effective set, by name (empty: all there).
pub fn missing_caps(network: bool) -> Vec<String> {
    required_caps(network)
        .into_iter()
        .filter(|c| !caps::has_cap(None, CapSet::Effective, *c).unwrap_or(false))
        .map(|c| c.to_string())
        .collect()
}

/// The credential fields of `/proc/<pid>/status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStatus {
    /// Real, effective, saved and filesystem uid.
    pub uid: [u32; 4],
    /// Real, effective, saved and filesystem gid.
    pub gid: [u32; 4],
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// CapInh.
    pub cap_inh: u64,
    /// CapPrm.
    pub cap_prm: u64,
    /// CapEff.
    pub cap_eff: u64,
    /// CapBnd.
    pub cap_bnd: u64,
    /// CapAmb.
    pub cap_amb: u64,
    /// NoNewPrivs.
    pub no_new_privs: u32,
    /// Threads.
    pub threads: u32,
}

/// Parses the text of `/proc/<pid>/status`; every field of [`ProcStatus`] must be there.
pub fn parse_status(text: &str) -> Result<ProcStatus, String> {
    let field = |name: &str| -> Result<&str, String> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .ok_or_else(|| format!("no {name} line in the process status"))
    };
    let ids = |name: &str| -> Result<[u32; 4], String> {
        let v: Vec<u32> = field(name)?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{name}: {e}"))?;
        v.try_into()
            .map_err(|v: Vec<u32>| format!("{name}: expected 4 ids, found {}", v.len()))
    };
    let hex = |name: &str| -> Result<u64, String> {
        u64::from_str_radix(field(name)?, 16).map_err(|e| format!("{name}: {e}"))
    };
    let num = |name: &str| -> Result<u32, String> {
        field(name)?.parse().map_err(|e| format!("{name}: {e}"))
    };
    Ok(ProcStatus {
        uid: ids("Uid")?,
        gid: ids("Gid")?,
        groups: field("Groups")?
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .map_err(|e| format!("Groups: {e}"))?,
        cap_inh: hex("CapInh")?,
        cap_prm: hex("CapPrm")?,
        cap_eff: hex("CapEff")?,
        cap_bnd: hex("CapBnd")?,
        cap_amb: hex("CapAmb")?,
        no_new_privs: num("NoNewPrivs")?,
        threads: num("Threads")?,
    })
}

/// Reads the calling thread's status.
pub fn read_status() -> Result<ProcStatus, PrivilegeError> {
    let mut last = String::from("no status file");
    for path in STATUS_PATHS {
        match std::fs::read_to_string(path) {
            Ok(text) => return parse_status(&text).map_err(PrivilegeError::Status),
            Err(e) => last = format!("reading {path}: {e} (is /proc mounted?)"),
        }
    }
    Err(PrivilegeError::Status(last))
}

/// Fails unless the process has exactly one thread.
pub fn ensure_single_threaded() -> Result<(), PrivilegeError> {
    match read_status()?.threads {
        1 => Ok(()),
        n => Err(PrivilegeError::Threads(n)),
    }
}

/// Checks that `status` shows no privilege left and the credentials of `account`.
pub fn check_dropped(status: &ProcStatus, account: &Account) -> Result<(), PrivilegeError> {
    let bad = |field, found: String, expected: &str| PrivilegeError::NotDropped {
        field,
        found,
        expected: expected.to_owned(),
    };
    for (field, value) in [
        ("CapInh", status.cap_inh),
        ("CapPrm", status.cap_prm),
        ("CapEff", status.cap_eff),
        ("CapBnd", status.cap_bnd),
        ("CapAmb", status.cap_amb),
    ] {
        if value != 0 {
            return Err(bad(field, format!("{value:016x}"), "0"));
        }
    }
    if status.no_new_privs != 1 {
        return Err(bad("NoNewPrivs", status.no_new_privs.to_string(), "1"));
    }
    if status.uid.iter().any(|u| *u != account.uid) {
        return Err(bad(
            "Uid",
            format!("{:?}", status.uid),
            &format!("{} (real, effective, saved, fs)", account.uid),
        ));
    }
    if status.gid.iter().any(|g| *g != account.gid) {
        return Err(bad(
            "Gid",
            format!("{:?}", status.gid),
            &format!("{} (real, effective, saved, fs)", account.gid),
        ));
    }
    let found: BTreeSet<u32> = status.groups.iter().copied().collect();
    let expected: BTreeSet<u32> = account.groups.iter().copied().collect();
    if found != expected {
        return Err(bad(
            "Groups",
            format!("{found:?}"),
            &format!("{expected:?}"),
        ));
    }
    if status.threads != 1 {
        return Err(PrivilegeError::Threads(status.threads));
    }
    Ok(())
}

/// Drops every privilege and becomes `account`, then verifies it (see the module doc).
/// Must be called with one thread.
pub fn drop_to(account: &Account) -> Result<(), PrivilegeError> {
    ensure_single_threaded()?;
    let gid = Gid::from_raw(account.gid);
    let uid = Uid::from_raw(account.uid);
    let groups: Vec<Gid> = account.groups.iter().map(|g| Gid::from_raw(*g)).collect();
    setgroups(&groups).map_err(step("setgroups"))?;
    setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    caps::clear(None, CapSet::Bounding).map_err(step("clearing the bounding set"))?;
    caps::clear(None, CapSet::Inheritable).map_err(step("clearing the inheritable set"))?;
    caps::clear(None, CapSet::Ambient).map_err(step("clearing the ambient set"))?;
    nix::sys::prctl::set_no_new_privs().map_err(step("setting no_new_privs"))?;
    setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    // No-ops after a uid 0 -> non-zero switch, unless securebits kept capabilities.
    caps::clear(None, CapSet::Permitted).map_err(step("clearing the permitted set"))?;
    caps::clear(None, CapSet::Effective).map_err(step("clearing the effective set"))?;
    check_dropped(&read_status()?, account)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const DROPPED: &str = "Name:\tsh\nUmask:\t0022\nState:\tR (running)\nTgid:\t7\n\
        Uid:\t1000\t1000\t1000\t1000\nGid:\t1000\t1000\t1000\t1000\nFDSize:\t64\n\
        Groups:\t1000 1500 \nThreads:\t1\nCapInh:\t0000000000000000\n\
        CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n\
        CapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t0\n";

    fn node() -> Account {
        Account {
            name: "node".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1500, 1000],
            home: PathBuf::from("/home/node"),
        }
    }

    #[test]
    fn a_dropped_status_passes() {
        let s = parse_status(DROPPED).unwrap();
        assert_eq!(s.uid, [1000; 4]);
        assert_eq!(s.groups, vec![1000, 1500]);
        check_dropped(&s, &node()).unwrap();
    }

    #[test]
    fn any_remaining_privilege_fails() {
        for (from, to, field) in [
            (
                "CapBnd:\t0000000000000000",
                "CapBnd:\t000001ffffffffff",
                "CapBnd",
            ),
            (
                "CapEff:\t0000000000000000",
                "CapEff:\t0000000000001000",
                "CapEff",
            ),
            (
                "CapPrm:\t0000000000000000",
                "CapPrm:\t0000000000001000",
                "CapPrm",
            ),
            (
                "CapInh:\t0000000000000000",
                "CapInh:\t0000000000001000",
                "CapInh",
            ),
            (
                "CapAmb:\t0000000000000000",
                "CapAmb:\t0000000000001000",
                "CapAmb",
            ),
            ("NoNewPrivs:\t1", "NoNewPrivs:\t0", "NoNewPrivs"),
            (
                "Uid:\t1000\t1000\t1000\t1000",
                "Uid:\t1000\t1000\t0\t1000",
                "Uid",
            ),
            (
                "Gid:\t1000\t1000\t1000\t1000",
                "Gid:\t1000\t0\t1000\t1000",
                "Gid",
            ),
            ("Groups:\t1000 1500 ", "Groups:\t0 1000 1500", "Groups"),
        ] {
            let s = parse_status(&DROPPED.replace(from, to)).unwrap();
            match check_dropped(&s, &node()) {
                Err(PrivilegeError::NotDropped { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let s = parse_status(&DROPPED.replace("Threads:\t1", "Threads:\t2")).unwrap();
        assert_eq!(check_dropped(&s, &node()), Err(PrivilegeError::Threads(2)));
    }

    #[test]
    fn missing_fields_are_errors() {
        assert!(parse_status(&DROPPED.replace("CapAmb", "Other")).is_err());
        assert!(parse_status(&DROPPED.replace("Uid:\t1000\t", "Uid:\t")).is_err());
        assert!(parse_status("").is_err());
    }

    #[test]
    fn required_caps_depend_on_the_mode() {
        assert!(required_caps(true).contains(&Capability::CAP_NET_ADMIN));
        assert!(!required_caps(false).contains(&Capability::CAP_NET_ADMIN));
        assert!(required_caps(false).contains(&Capability::CAP_SETPCAP));
    }
}
