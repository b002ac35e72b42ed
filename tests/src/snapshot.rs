//! Snapshots of the machine's own network state and files, to prove a test left them
//! alone.
//!
//! A [`RootSnapshot`] records, from the root network namespace: `ip -o link`,
//! `ip -o addr`, `ip route`, `ip -6 route`, `nft list ruleset` (if `nft` is installed),
//! and the bytes of the files tests must never change (`/etc/resolv.conf`, `/etc/hosts`,
//! `/etc/nsswitch.conf`, `/etc/passwd`, `/etc/group`, the CA bundle). Values that change
//! by themselves (address lifetimes, route expiry, nftables counters) are masked, so two
//! snapshots of an untouched machine compare equal.

use std::collections::BTreeMap;
use std::process::Command;

use crate::error::Result;
use crate::netns::TOOL_TIMEOUT;
use crate::process::{self, Spec, display_command};

/// Files a test must leave byte-identical.
pub const WATCHED_FILES: [&str; 6] = [
    "/etc/resolv.conf",
    "/etc/hosts",
    "/etc/nsswitch.conf",
    "/etc/passwd",
    "/etc/group",
    "/etc/ssl/certs/ca-certificates.crt",
];

/// The root namespace's network configuration and the watched files at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RootSnapshot {
    /// Command or file -> normalised contents (`None`: tool or file absent).
    pub entries: BTreeMap<String, Option<String>>,
}

/// Replaces the token after each of `keys` with `*` (for values that change on their own).
fn mask_after(line: &str, keys: &[&str]) -> String {
    let mut out = Vec::new();
    let mut mask_next = false;
    for token in line.split_whitespace() {
        if mask_next {
            out.push("*");
            mask_next = false;
            continue;
        }
        mask_next = keys.contains(&token);
        out.push(token);
    }
    out.join(" ")
}

fn normalise(text: &str) -> String {
    text.lines()
        .map(|l| {
            mask_after(
                l,
                &["valid_lft", "preferred_lft", "expires", "packets", "bytes"],
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn tool_output(argv: &[&str]) -> Result<Option<String>> {
    let mut command = Command::new(argv[0]);
    command.args(&argv[1..]);
    let spec = Spec {
        command,
        display: display_command(argv),
        stdin: None,
        output_limit: 16 << 20,
    };
    match process::run(spec, TOOL_TIMEOUT) {
        Ok(out) => Ok(Some(normalise(&out.check()?.stdout_str()))),
        Err(crate::LabError::Spawn { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

impl RootSnapshot {
    /// Takes a snapshot (run it from a thread in the root network namespace, i.e. any
    /// ordinary test thread).
    pub fn take() -> Result<RootSnapshot> {
        let mut entries = BTreeMap::new();
        for argv in [
            &["ip", "-o", "link"][..],
            &["ip", "-o", "addr"],
            &["ip", "route"],
            &["ip", "-6", "route"],
            &["nft", "list", "ruleset"],
        ] {
            entries.insert(argv.join(" "), tool_output(argv)?);
        }
        for file in WATCHED_FILES {
            let contents = std::fs::read(file)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned());
            entries.insert(file.to_owned(), contents);
        }
        Ok(RootSnapshot { entries })
    }

    /// Human-readable differences from `later` (empty if none).
    pub fn diff(&self, later: &RootSnapshot) -> Vec<String> {
        let mut out = Vec::new();
        for (key, before) in &self.entries {
            let after = later.entries.get(key).cloned().flatten();
            if before.as_ref() != after.as_ref() {
                let b = before.as_deref().unwrap_or("<absent>");
                let a = after.as_deref().unwrap_or("<absent>");
                let removed: Vec<_> = b.lines().filter(|l| !a.lines().any(|x| x == *l)).collect();
                let added: Vec<_> = a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect();
                out.push(format!(
                    "{key} changed:\n  - {}\n  + {}",
                    removed.join("\n  - "),
                    added.join("\n  + ")
                ));
            }
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn volatile_values_are_masked() {
        assert_eq!(
            normalise("inet 10.0.0.2/24 valid_lft 3599sec preferred_lft 3599sec"),
            "inet 10.0.0.2/24 valid_lft * preferred_lft *"
        );
        assert_eq!(
            normalise("  counter packets 12 bytes 3400 accept"),
            "counter packets * bytes * accept"
        );
    }
}
