//! The per-bottle files bind-mounted over the machine's in the agent's (and the
//! gateway's) private mount namespace, so the shim's rewrites of /etc/resolv.conf and the
//! CA bundles hit copies and the machine's own files stay byte-identical.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::plan::{Bind, GATEWAY_V4, StatePaths};

/// The system CA bundles the shim appends to (as `bottleneck_init::trust`).
pub const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cert.pem",
];

/// Host paths hidden from the agent: sockets through which a process on the same
/// filesystem reaches the network without a packet of its own (the host's resolvers over
/// varlink, D-Bus or nscd: DNS exfiltration; container engines: a container with host
/// networking). Path sockets ignore network namespaces, so they are masked in the
/// agent's mount namespace. Only those that exist are masked.
pub const MASKED: [&str; 8] = [
    "/run/systemd/resolve",
    "/run/dbus",
    "/run/nscd",
    "/run/user",
    "/run/docker.sock",
    "/run/docker",
    "/run/containerd",
    "/run/podman",
];

/// The lowest UID/GID given to a user added to the bottle's passwd copy.
const FIRST_ADDED_ID: u32 = 1000;

/// The system CA bundles present here, symlinks resolved, each once.
pub fn system_bundles() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for candidate in SYSTEM_BUNDLES {
        if let Ok(real) = fs::canonicalize(candidate)
            && real.is_file()
            && !out.contains(&real)
        {
            out.push(real);
        }
    }
    out
}

/// The machine's nsswitch.conf with `hosts: files dns`: the agent's names are resolved
/// only through its resolv.conf (the gateway), never by a host daemon such as
/// systemd-resolved reached over a socket in the shared filesystem.
pub fn agent_nsswitch(original: &str) -> String {
    let mut out: String = original
        .lines()
        .filter(|l| !l.trim_start().starts_with("hosts:"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("hosts: files dns\n");
    out
}

/// A user added to the bottle's passwd copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedUser {
    /// The name.
    pub name: String,
    /// UID = GID.
    pub id: u32,
}

/// If `user` is a name missing from `passwd`, the passwd and group lines to add (a free
/// id >= 1000 used as both UID and GID, not used by any user or group).
pub fn user_to_add(user: &str, passwd: &str, group: &str) -> Option<AddedUser> {
    if user.chars().all(|c| c.is_ascii_digit() || c == ':') {
        return None; // numeric: the shim takes it as it is
    }
    let field = |line: &str, n: usize| line.split(':').nth(n).map(str::to_owned);
    if passwd.lines().any(|l| field(l, 0).as_deref() == Some(user)) {
        return None;
    }
    let used: Vec<u32> = passwd
        .lines()
        .filter_map(|l| field(l, 2)?.parse().ok())
        .chain(group.lines().filter_map(|l| field(l, 2)?.parse().ok()))
        .collect();
    let id = (FIRST_ADDED_ID..60_000).find(|id| !used.contains(id))?;
    Some(AddedUser {
        name: user.to_owned(),
        id,
    })
}

fn write(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    fs::write(path, contents)?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn with_newline(text: &str) -> String {
    if text.is_empty() || text.ends_with('\n') {
        text.to_owned()
    } else {
        format!("{text}\n")
    }
}

/// Writes the agent's per-bottle files under `paths.agent_dir` and returns the bind
/// mounts that put them in place, plus the user added to passwd, if any.
pub fn write_agent_files(
    paths: &StatePaths,
    user: &str,
) -> io::Result<(Vec<Bind>, Option<AddedUser>)> {
    let dir = &paths.agent_dir;
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    let mut binds = Vec::new();
    let mut bind = |src: PathBuf, dst: &str| binds.push(Bind::rw(src, dst));

    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    let group = fs::read_to_string("/etc/group").unwrap_or_default();
    let added = user_to_add(user, &passwd, &group);
    if let Some(added) = &added {
        let home = paths.dir.join("home");
        fs::create_dir_all(&home)?;
        fs::set_permissions(&home, fs::Permissions::from_mode(0o750))?;
        nix::unistd::chown(
            &home,
            Some(nix::unistd::Uid::from_raw(added.id)),
            Some(nix::unistd::Gid::from_raw(added.id)),
        )
        .map_err(io::Error::from)?;
        let passwd_copy = format!(
            "{}{name}:x:{id}:{id}:{name} (bottleneck):{home}:/bin/sh\n",
            with_newline(&passwd),
            name = added.name,
            id = added.id,
            home = home.display()
        );
        let group_copy = format!(
            "{}{name}:x:{id}:\n",
            with_newline(&group),
            name = added.name,
            id = added.id
        );
        write(&dir.join("passwd"), passwd_copy.as_bytes(), 0o644)?;
        write(&dir.join("group"), group_copy.as_bytes(), 0o644)?;
        bind(dir.join("passwd"), "/etc/passwd");
        bind(dir.join("group"), "/etc/group");
    }

    // The shim rewrites it to name the gateway; a copy so the rewrite stays here.
    write(
        &dir.join("resolv.conf"),
        format!("nameserver {GATEWAY_V4}\n").as_bytes(),
        0o644,
    )?;
    bind(dir.join("resolv.conf"), "/etc/resolv.conf");
    write(
        &dir.join("hosts"),
        b"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        0o644,
    )?;
    bind(dir.join("hosts"), "/etc/hosts");
    if let Ok(original) = fs::read_to_string("/etc/nsswitch.conf") {
        write(
            &dir.join("nsswitch.conf"),
            agent_nsswitch(&original).as_bytes(),
            0o644,
        )?;
        bind(dir.join("nsswitch.conf"), "/etc/nsswitch.conf");
    }
    for (i, bundle) in system_bundles().into_iter().enumerate() {
        let copy = dir.join(format!("ca-bundle-{i}.pem"));
        fs::copy(&bundle, &copy)?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o644))?;
        binds.push(Bind::rw(copy, bundle));
    }
    binds.extend(masks());
    Ok((binds, added))
}

/// The masks for the [`MASKED`] paths that exist here (symlinks resolved, each once).
pub fn masks() -> Vec<Bind> {
    let mut seen: Vec<PathBuf> = Vec::new();
    for path in MASKED {
        if let Ok(real) = fs::canonicalize(path)
            && !seen.contains(&real)
        {
            seen.push(real);
        }
    }
    seen.into_iter().map(Bind::mask).collect()
}

/// The gateway's resolv.conf for a host uplink: the host's nameservers, except loopback
/// stubs (unreachable from the gateway's namespace), which are replaced by the upstream
/// servers systemd-resolved lists. `None` if no usable nameserver is found.
pub fn host_gateway_resolv(host: &str, resolved_upstream: Option<&str>) -> Option<String> {
    let servers = |text: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.trim().strip_prefix("nameserver"))
            .map(|s| s.trim().to_owned())
            .filter(|s| {
                s.parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| !ip.is_loopback())
            })
            .collect()
    };
    let mut list = servers(host);
    if list.is_empty() {
        list = resolved_upstream.map(servers).unwrap_or_default();
    }
    if list.is_empty() {
        return None;
    }
    Some(
        list.iter()
            .map(|s| format!("nameserver {s}\n"))
            .collect::<String>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_user_gets_a_free_id() {
        let passwd = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/a:/bin/sh\n";
        let group = "root:x:0:\nalice:x:1000:\nstaff:x:1001:\n";
        assert_eq!(
            user_to_add("node", passwd, group),
            Some(AddedUser {
                name: "node".into(),
                id: 1002
            })
        );
        assert_eq!(user_to_add("alice", passwd, group), None);
        assert_eq!(user_to_add("1000", passwd, group), None);
        assert_eq!(user_to_add("1000:1000", passwd, group), None);
    }

    #[test]
    fn nsswitch_hosts_is_files_then_dns() {
        assert_eq!(
            agent_nsswitch(
                "passwd: files\nhosts: files resolve [!UNAVAIL=return] dns myhostname\n"
            ),
            "passwd: files\nhosts: files dns\n"
        );
    }

    #[test]
    fn the_gateway_resolver_skips_loopback_stubs() {
        assert_eq!(
            host_gateway_resolv(
                "nameserver 127.0.0.53\noptions edns0\n",
                Some("nameserver 10.0.0.2\n")
            ),
            Some("nameserver 10.0.0.2\n".into())
        );
        assert_eq!(
            host_gateway_resolv("nameserver 10.1.1.1\nnameserver ::1\n", None),
            Some("nameserver 10.1.1.1\n".into())
        );
        assert_eq!(host_gateway_resolv("nameserver 127.0.0.53\n", None), None);
    }
}
