//! The real `bottleneck-init` (the init shim) in a lab's agent namespace, without touching
//! the machine's files.
//!
//! The shim reads /etc/passwd and /etc/group and writes /etc/resolv.conf and every system
//! CA bundle. A [`ShimFiles`] holds per-lab copies of those files in a directory of the
//! lab (a `node` user, uid [`AGENT_UID`], in passwd and group; the lab's agent resolv.conf;
//! the machine's bundles) and runs commands in the agent namespace with the copies
//! bind-mounted over the machine's files. The bind mounts exist only in the private mount
//! namespace every [`Lab::command`] gets, so the machine's own files are never written.
//! [`ShimFiles::command`] runs the shim as PID 1 of a fresh PID namespace
//! (`unshare --pid --fork --mount-proc`) with its settings pointing at those files.
//!
//! A [`MachineFiles`] snapshot, taken before and compared after, proves that the machine's
//! own copies stayed byte-identical, that no file named `*bottleneck*` appeared next to
//! them, and that the shim's default trust directory (`/etc/bottleneck`) was not created.
//!
//! Agent scripts print their results in sections after lines `==NAME==` ([`sections`]).
//! [`undo_attempts_script`] and [`UNDO_ATTEMPTS`] are the ways an agent tries to take back
//! the network the shim set up (the same attempts for the shim's own tests and the
//! conformance matrix).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::addr::GATEWAY_AGENT_V4;
use crate::error::{LabError, Result};
use crate::exec::{Exec, WRAPPER};
use crate::lab::{Host, Lab};
use crate::snapshot::WATCHED_FILES;

/// The system CA bundles the shim appends the bottle CA to.
///
/// A copy of `bottleneck_init::trust::SYSTEM_BUNDLES` (init-shim/src/trust.rs is the source
/// of truth; this crate cannot depend on the shim's). A unit test in init-shim checks that
/// the two lists are equal.
pub const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cert.pem",
];

/// The agent's user after the shim: `node` in the fixture's passwd and group.
pub const AGENT_UID: u32 = 1000;

/// A PATH the agent's user can use (no directory under /root).
pub const AGENT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The shim's default trust directory, which no test may create on the machine.
const DEFAULT_TRUST_DIR: &str = "/etc/bottleneck";

/// The command prefix that makes the rest PID 1 of a new PID namespace with its own /proc.
pub const NEW_PID_NAMESPACE: [&str; 4] = ["unshare", "--pid", "--fork", "--mount-proc"];

/// The system CA bundles present on this machine: the existing [`SYSTEM_BUNDLES`], symlinks
/// resolved, each file once, in the list's order.
pub fn system_bundles() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    for candidate in SYSTEM_BUNDLES {
        if let Ok(real) = std::fs::canonicalize(candidate)
            && real.is_file()
            && !out.contains(&real)
        {
            out.push(real);
        }
    }
    out
}

/// `bottleneck-init` of this build: `target/<profile>/bottleneck-init`, next to the
/// running executable (a test or example in `target/<profile>/deps` or
/// `target/<profile>/examples`, or a binary in `target/<profile>`).
///
/// Err if it is not there (`cargo build -p bottleneck-init` builds it; `cargo test
/// --workspace` does too).
pub fn shim_binary() -> Result<PathBuf> {
    let exe =
        std::env::current_exe().map_err(|e| LabError::io("finding the running executable", e))?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") || dir.ends_with("examples") {
        dir.pop();
    }
    let shim = dir.join("bottleneck-init");
    if shim.is_file() {
        Ok(shim)
    } else {
        Err(LabError::io(
            format!("looking for {}", shim.display()),
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not built: run `cargo build -p bottleneck-init` with the same target dir and \
                 profile (`cargo test --workspace` builds it)",
            ),
        ))
    }
}

/// Per-lab copies of the files the shim reads and writes, bind-mounted over the machine's
/// in the commands built here.
#[derive(Clone, Debug)]
pub struct ShimFiles {
    /// The fixture's directory (0755, in the lab's directory).
    pub dir: PathBuf,
    /// (per-lab file, the machine's path it is bind-mounted over), in mount order.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// (per-lab copy, the machine's bundle it stands for), for every bundle of
    /// [`system_bundles`]; also in `binds`.
    pub bundles: Vec<(PathBuf, PathBuf)>,
    /// The agent's /etc/resolv.conf (a copy of the lab's, which the shim rewrites through
    /// its bind mount).
    pub resolv: PathBuf,
    /// The shim's trust directory (`BOTTLENECK_TRUST_DIR`; not created here).
    pub trust_dir: PathBuf,
    /// The CA the shim installs (`BOTTLENECK_CA_FILE`).
    pub ca_file: PathBuf,
}

impl ShimFiles {
    /// Writes the fixture into `<lab dir>/<name>` (which must not exist yet): passwd with
    /// `root`, `node` (uid and gid [`AGENT_UID`], home the lab's `HOME`) and `nobody`;
    /// group with `root`, `node` and `nogroup`; the lab's agent resolv.conf; a copy of each
    /// of [`system_bundles`]. The shim will install `ca_file`.
    pub fn new(lab: &Lab, name: &str, ca_file: &Path) -> Result<ShimFiles> {
        ShimFiles::with_groups(lab, name, ca_file, &[])
    }

    /// [`ShimFiles::new`] with more lines in /etc/group (between `node` and `nogroup`),
    /// e.g. `agents:x:1500:other,node` for a supplementary group.
    pub fn with_groups(
        lab: &Lab,
        name: &str,
        ca_file: &Path,
        extra_groups: &[&str],
    ) -> Result<ShimFiles> {
        let dir = lab.dir().join(name);
        std::fs::create_dir(&dir)
            .map_err(|e| LabError::io(format!("creating {}", dir.display()), e))?;
        set_mode(&dir, 0o755)?;
        let mut files = ShimFiles {
            binds: Vec::new(),
            bundles: Vec::new(),
            resolv: dir.join("resolv.conf"),
            trust_dir: dir.join("trust"),
            ca_file: ca_file.to_owned(),
            dir,
        };
        let home = lab.home().display().to_string();
        let passwd = files.write(
            "passwd",
            &format!(
                "root:x:0:0:root:/root:/bin/sh\n\
                 node:x:{AGENT_UID}:{AGENT_UID}:node:{home}:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
            ),
        )?;
        let mut group = format!("root:x:0:\nnode:x:{AGENT_UID}:\n");
        for line in extra_groups {
            group.push_str(line);
            group.push('\n');
        }
        group.push_str("nogroup:x:65534:\n");
        let group = files.write("group", &group)?;
        let lab_resolv = lab.resolv_conf_path(Host::Agent);
        let resolv_text = std::fs::read_to_string(lab_resolv)
            .map_err(|e| LabError::io(format!("reading {}", lab_resolv.display()), e))?;
        let resolv = files.write("resolv.conf", &resolv_text)?;
        files.bind(passwd, "/etc/passwd");
        files.bind(group, "/etc/group");
        files.bind(resolv, "/etc/resolv.conf");
        for (i, bundle) in system_bundles().into_iter().enumerate() {
            let copy = files.dir.join(format!("bundle-{i}.pem"));
            std::fs::copy(&bundle, &copy).map_err(|e| {
                LabError::io(
                    format!("copying {} to {}", bundle.display(), copy.display()),
                    e,
                )
            })?;
            set_mode(&copy, 0o644)?;
            files.bind(copy.clone(), bundle.clone());
            files.bundles.push((copy, bundle));
        }
        Ok(files)
    }

    /// Writes `text` to `<dir>/<file>` (mode 0644, readable by the agent) and returns its
    /// path.
    pub fn write(&self, file: &str, text: &str) -> Result<PathBuf> {
        let path = self.dir.join(file);
        std::fs::write(&path, text)
            .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
        set_mode(&path, 0o644)?;
        Ok(path)
    }

    /// Creates the directory `<dir>/<name>` with `mode` (e.g. 0o1777 for one the agent and
    /// the test hand files over in) and returns its path.
    pub fn subdir(&self, name: &str, mode: u32) -> Result<PathBuf> {
        let path = self.dir.join(name);
        std::fs::create_dir(&path)
            .map_err(|e| LabError::io(format!("creating {}", path.display()), e))?;
        set_mode(&path, mode)?;
        Ok(path)
    }

    /// Adds a bind mount of `src` over `dst` (after the ones already there).
    pub fn bind(&mut self, src: impl Into<PathBuf>, dst: impl Into<PathBuf>) {
        self.binds.push((src.into(), dst.into()));
    }

    /// The shim's settings pointing at these files: `BOTTLENECK_GATEWAY` (the gateway's
    /// agent-side IPv4 address), `BOTTLENECK_CA_FILE` and `BOTTLENECK_TRUST_DIR`.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("BOTTLENECK_GATEWAY", GATEWAY_AGENT_V4.to_string()),
            ("BOTTLENECK_CA_FILE", self.ca_file.display().to_string()),
            ("BOTTLENECK_TRUST_DIR", self.trust_dir.display().to_string()),
        ]
    }

    /// An argv that bind-mounts every `binds` pair, then execs `argv` (a shell fails with
    /// status 125, [`crate::exec::SETUP_FAILED`], if a mount fails). Run it as root in a
    /// lab namespace, where it has a private mount namespace.
    pub fn bind_and_run<S: AsRef<str>>(&self, argv: &[S]) -> Vec<String> {
        let mut full: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            WRAPPER.into(),
            "shim-fixture".into(),
        ];
        for (src, dst) in &self.binds {
            full.push(src.display().to_string());
            full.push(dst.display().to_string());
        }
        full.push("--".into());
        full.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        full
    }

    /// [`ShimFiles::bind_and_run`] with `argv` as PID 1 of a new PID namespace
    /// ([`NEW_PID_NAMESPACE`]).
    pub fn as_pid1<S: AsRef<str>>(&self, argv: &[S]) -> Vec<String> {
        let mut inner: Vec<String> = NEW_PID_NAMESPACE.map(String::from).to_vec();
        inner.extend(argv.iter().map(|a| a.as_ref().to_owned()));
        self.bind_and_run(&inner)
    }

    /// `shim -- agent...` as root in `lab`'s agent namespace: the shim as PID 1 of a new
    /// PID namespace with these files bind-mounted and [`ShimFiles::env`] set. Add more
    /// settings, `PATH` (e.g. [`AGENT_PATH`]) and a timeout on the returned command.
    pub fn command<S: AsRef<str>>(&self, lab: &Lab, shim: &Path, agent: &[S]) -> Exec {
        let mut inner: Vec<String> = vec![shim.display().to_string(), "--".into()];
        inner.extend(agent.iter().map(|a| a.as_ref().to_owned()));
        let mut exec = lab.command(Host::Agent, &self.as_pid1(&inner));
        for (key, value) in self.env() {
            exec = exec.env(key, value);
        }
        exec
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(format!("chmod {mode:o} {}", path.display()), e))
}

/// The machine's own copies of the files the shim reads and writes (and of the lab's
/// other watched files), byte for byte; the names containing `bottleneck` in their
/// directories (a leftover temporary file); whether `/etc/bottleneck` exists.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineFiles {
    /// Path -> contents (`None`: absent or unreadable).
    files: BTreeMap<PathBuf, Option<Vec<u8>>>,
    /// Directory -> the sorted names in it that contain `bottleneck`.
    leftovers: BTreeMap<PathBuf, Vec<String>>,
    /// Whether the shim's default trust directory exists.
    trust_dir: bool,
}

impl MachineFiles {
    /// Takes the snapshot: [`crate::snapshot::WATCHED_FILES`], every path of
    /// [`SYSTEM_BUNDLES`] and every bundle of [`system_bundles`]. A file that cannot be
    /// read is recorded as absent (a later snapshot that can read it differs).
    pub fn take() -> MachineFiles {
        let mut paths: Vec<PathBuf> = WATCHED_FILES.iter().map(PathBuf::from).collect();
        paths.extend(SYSTEM_BUNDLES.iter().map(PathBuf::from));
        paths.extend(system_bundles());
        let mut leftovers = BTreeMap::new();
        for dir in paths.iter().filter_map(|p| p.parent()) {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.contains("bottleneck"))
                        .collect()
                })
                .unwrap_or_default();
            names.sort();
            leftovers.insert(dir.to_owned(), names);
        }
        let files = paths
            .into_iter()
            .map(|p| {
                let contents = std::fs::read(&p).ok();
                (p, contents)
            })
            .collect();
        MachineFiles {
            files,
            leftovers,
            trust_dir: Path::new(DEFAULT_TRUST_DIR).exists(),
        }
    }

    /// What differs in `later`, one line each (empty if nothing).
    pub fn diff(&self, later: &MachineFiles) -> Vec<String> {
        let mut out = Vec::new();
        for (path, before) in &self.files {
            if later.files.get(path) != Some(before) {
                out.push(format!("the machine's {} changed", path.display()));
            }
        }
        for path in later.files.keys() {
            if !self.files.contains_key(path) {
                out.push(format!(
                    "{} became one of the machine's system bundles",
                    path.display()
                ));
            }
        }
        if later.leftovers != self.leftovers {
            out.push(format!(
                "files named *bottleneck* changed: {:?} -> {:?}",
                self.leftovers, later.leftovers
            ));
        }
        if later.trust_dir != self.trust_dir {
            let what = if later.trust_dir {
                "created"
            } else {
                "removed"
            };
            out.push(format!("{DEFAULT_TRUST_DIR} was {what}"));
        }
        out
    }

    /// Takes a new snapshot; [`LabError::MachineChanged`] if it differs from this one.
    pub fn check_unchanged(&self) -> Result<()> {
        let changes = self.diff(&MachineFiles::take());
        if changes.is_empty() {
            Ok(())
        } else {
            Err(LabError::MachineChanged { changes })
        }
    }
}

/// The sections of an agent script's output separated by lines `==NAME==`, by name
/// (`head`: the lines before the first marker). Each line of a section ends with `\n`; a
/// marker with nothing after it gives an empty section.
pub fn sections(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut current = String::from("head");
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("==").and_then(|l| l.strip_suffix("==")) {
            current = name.to_owned();
            map.entry(current.clone()).or_insert_with(String::new);
            continue;
        }
        let entry: &mut String = map.entry(current.clone()).or_default();
        entry.push_str(line);
        entry.push('\n');
    }
    map
}

/// The names [`undo_attempts_script`] prints its attempts' exit statuses under
/// (`NAME=STATUS` lines), in order.
pub const UNDO_ATTEMPTS: [&str; 8] = [
    "route_replace",
    "route_del",
    "link_down",
    "resolv_append",
    "etc_create",
    "resolv_move",
    "unshare_net",
    "userns_route",
];

/// A shell fragment in which the agent tries to take back its network after the shim: a
/// default route via `via`, deleting the route to the gateway, taking eth0 down, adding a
/// nameserver to /etc/resolv.conf, creating a file in /etc, moving resolv.conf away, a
/// new network namespace, and a route change from a new user namespace. After each it
/// prints `NAME=$?` (names: [`UNDO_ATTEMPTS`]); every one must fail. Ends with `; ` so
/// more commands can follow.
pub fn undo_attempts_script(via: Ipv4Addr) -> String {
    format!(
        "ip route replace default via {via}; echo route_replace=$?; \
         ip route del {GATEWAY_AGENT_V4} dev eth0; echo route_del=$?; \
         ip link set eth0 down; echo link_down=$?; \
         (echo nameserver 203.0.113.53 >> /etc/resolv.conf) 2>/dev/null; echo resolv_append=$?; \
         (echo nameserver 203.0.113.53 > /etc/resolv.tmp) 2>/dev/null; echo etc_create=$?; \
         mv /etc/resolv.conf /etc/resolv.old 2>/dev/null; echo resolv_move=$?; \
         unshare -n true; echo unshare_net=$?; \
         unshare -U -r ip route replace default via {via}; echo userns_route=$?; "
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn system_bundles_are_real_files_each_once() {
        let found = system_bundles();
        for bundle in &found {
            assert!(bundle.is_absolute() && bundle.is_file(), "{bundle:?}");
            assert_eq!(std::fs::canonicalize(bundle).unwrap(), *bundle);
        }
        let mut unique = found.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), found.len(), "{found:?}");
    }

    #[test]
    fn an_untouched_machine_has_no_diff() {
        let before = MachineFiles::take();
        assert_eq!(before.diff(&MachineFiles::take()), Vec::<String>::new());
        assert!(before.check_unchanged().is_ok());
    }

    #[test]
    fn diff_names_what_changed() {
        let before = MachineFiles::take();
        let mut later = before.clone();
        let passwd = PathBuf::from("/etc/passwd");
        later.files.insert(passwd, Some(b"changed".to_vec()));
        later.trust_dir = !before.trust_dir;
        later
            .leftovers
            .insert(PathBuf::from("/etc"), vec![".bottleneck-tmp".into()]);
        let diff = before.diff(&later);
        assert_eq!(diff.len(), 3, "{diff:?}");
        assert!(diff[0].contains("/etc/passwd changed"), "{diff:?}");
        assert!(diff[1].contains("*bottleneck*"), "{diff:?}");
        assert!(diff[2].starts_with(DEFAULT_TRUST_DIR), "{diff:?}");
    }

    #[test]
    fn sections_split_at_markers() {
        let s = sections("before\n==a==\none\ntwo\n==empty==\n==b==\nthree");
        assert_eq!(s["head"], "before\n");
        assert_eq!(s["a"], "one\ntwo\n");
        assert_eq!(s["empty"], "");
        assert_eq!(s["b"], "three\n");
        assert_eq!(s.len(), 4);
        assert!(!sections("").contains_key("head"));
    }

    #[test]
    fn undo_attempts_print_every_name_in_order() {
        let script = undo_attempts_script(Ipv4Addr::new(198, 18, 0, 3));
        let printed: Vec<&str> = script
            .split("echo ")
            .skip(1)
            .filter_map(|s| s.split_once("=$?"))
            .map(|(name, _)| name)
            .collect();
        assert_eq!(printed, UNDO_ATTEMPTS);
        assert!(script.contains("default via 198.18.0.3;"));
        assert!(script.contains("ip route del 198.18.0.1 dev eth0;"));
        assert!(script.ends_with("; "));
    }
}
