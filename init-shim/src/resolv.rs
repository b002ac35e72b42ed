//! `/etc/resolv.conf` naming the gateway as the only resolver.
//!
//! Every `nameserver` line of the old file is dropped (the container engine's resolver,
//! often the machine's own, must never be asked); `search`, `domain` and `options` lines
//! are kept, so short names and timeouts behave as the image expects. The gateway
//! redirects port 53 whatever the address, so this is the first line of defence, not the
//! only one.

#![forbid(unsafe_code)]

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use crate::files::{self, WriteMethod};

/// Where the shim writes.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Failure to write resolv.conf.
#[derive(Debug, thiserror::Error)]
#[error("writing {}: {source}", path.display())]
pub struct ResolvError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: io::Error,
}

/// The new resolv.conf: a header, `nameserver <gateway>`, and the old file's `search`,
/// `domain` and `options` lines.
pub fn render(old: Option<&str>, gateway: Ipv4Addr) -> String {
    let mut out = format!(
        "# Written by bottleneck-init: the gateway is the only resolver.\nnameserver {gateway}\n"
    );
    for line in old.unwrap_or_default().lines() {
        let keyword = line.split_whitespace().next().unwrap_or_default();
        if matches!(keyword, "search" | "domain" | "options") {
            out.push_str(line.trim_end());
            out.push('\n');
        }
    }
    out
}

/// Writes `path` (normally [`RESOLV_CONF`]) naming `gateway`: root-owned, mode 0644,
/// atomically, or through the file if it is a bind mount.
pub fn install(path: &Path, gateway: Ipv4Addr) -> Result<WriteMethod, ResolvError> {
    let old = std::fs::read_to_string(path).ok();
    let contents = render(old.as_deref(), gateway);
    files::replace(path, contents.as_bytes(), 0o644).map_err(|source| ResolvError {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn nameservers_replaced_search_and_options_kept() {
        let old = "# from the engine\nnameserver 203.0.113.53\nnameserver 2001:db8::53\n\
                   search corp.example\noptions ndots:2 timeout:1\ndomain example\n";
        let new = render(Some(old), Ipv4Addr::new(198, 18, 0, 1));
        assert_eq!(
            new,
            "# Written by bottleneck-init: the gateway is the only resolver.\n\
             nameserver 198.18.0.1\n\
             search corp.example\n\
             options ndots:2 timeout:1\n\
             domain example\n"
        );
        assert_eq!(new.matches("nameserver").count(), 1);
    }

    #[test]
    fn no_old_file() {
        let new = render(None, Ipv4Addr::new(10, 9, 8, 7));
        assert!(new.ends_with("nameserver 10.9.8.7\n"), "{new}");
    }
}
