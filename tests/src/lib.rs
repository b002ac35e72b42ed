//! The bottleneck network lab: real topologies for end-to-end tests.
//!
//! A [`Lab`] is three network namespaces joined by veth pairs, agent - gateway - wan,
//! with no link to the machine's own network:
//!
//! ```text
//!  agent    eth0 198.18.0.2/24 2001:db8:a::2/64, default via the gateway
//!    | veth
//!  gateway  eth1 198.18.0.1/24 2001:db8:a::1/64
//!           eth0 198.51.100.1/24 2001:db8:100::1/64   (Router: forwarding on; Bare: off)
//!    | veth
//!  wan      eth0 198.51.100.2/24 2001:db8:100::2/64 + DNS .53, HTTPS .10 and 203.0.113.10,
//!           HTTP .80, echo .7 (and their 2001:db8:100::/64, 2001:db8:203::/64 twins)
//! ```
//!
//! The wan servers (authoritative DNS for `*.test`, HTTPS origins signed by a per-lab test
//! CA, plain HTTP, TCP and UDP echo) run in this process, so tests read their counters
//! directly. Commands run inside a namespace with [`Lab::exec`] / [`Lab::command`] and see
//! the lab's resolv.conf through a private bind mount. Dropping the lab (also during a
//! panic) removes everything; a SIGKILLed run's leftovers are swept by the next lab.
//!
//! The [`shim`] module runs the real init shim (`bottleneck-init`) in the agent namespace
//! with per-lab copies of the files it writes bind-mounted over the machine's, and proves
//! the machine's own copies unchanged ([`MachineFiles`]).
//!
//! Every lab test starts with [`require_root`]: outside CI a test without root is skipped
//! with a message; with `CI` set it fails instead.
//!
//! Rules: only 198.18.0.0/15, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32 and loopback;
//! never 192.0.2.0/24 (the machine's uplink), never a real public address, never the
//! machine's own resolver. See `tests/README.md`.

pub mod addr;
pub mod ca;
pub mod dns;
pub mod echo;
pub mod error;
pub mod exec;
pub mod http;
pub mod lab;
pub mod netns;
pub mod process;
pub mod shim;
pub mod snapshot;

pub use crate::ca::{Leaf, TestCa};
pub use crate::dns::{DnsReply, DnsServer, RecordType, ResponseCode, Transport};
pub use crate::echo::EchoServers;
pub use crate::error::{LabError, Result};
pub use crate::exec::Exec;
pub use crate::http::{HttpOrigin, RequestRecord};
pub use crate::lab::{GatewayMode, Host, Lab, LabBuilder};
pub use crate::process::{ExecOutput, LabProcess};
pub use crate::shim::{MachineFiles, ShimFiles};
pub use crate::snapshot::RootSnapshot;

/// Why lab tests cannot run here, if they cannot: not root, or no `ip` binary.
pub fn lab_unavailable_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("network lab tests need root (they create network namespaces)".into());
    }
    for tool in ["ip", "unshare", "mount"] {
        let found = std::process::Command::new(tool)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (package iproute2/util-linux)"
            ));
        }
    }
    None
}

/// Call first in every lab test: `if !bottleneck_lab::require_root("name") { return; }`.
///
/// Returns true if the lab can run. Otherwise prints why the test is skipped and returns
/// false, except when the environment variable `CI` is set and non-empty: then it panics,
/// because in CI these tests must run, never skip.
pub fn require_root(test_name: &str) -> bool {
    let Some(reason) = lab_unavailable_reason() else {
        return true;
    };
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test_name}: cannot run in CI: {reason}");
    }
    eprintln!("skipping {test_name}: {reason} (set CI=1 to make this an error)");
    false
}
