//! Running commands inside a lab namespace.
//!
//! A command runs as
//!
//! ```text
//! ip netns exec NS unshare --mount --propagation private \
//!     sh -c '<bind-mount the lab files>; exec "$@"' ... [setpriv --reuid U ...] CMD ARGS
//! ```
//!
//! so it sees the lab's own `/etc/resolv.conf` (and `/etc/hosts`, and an
//! `/etc/nsswitch.conf` whose `hosts:` line is `files dns`) through bind mounts that exist
//! only in its private mount namespace: the machine's files are never written, and
//! nothing is created under `/etc/netns`. Its environment is cleared except `PATH`, a
//! lab-owned `HOME` and what the test sets, so proxy variables or a `~/.curlrc` of the
//! machine cannot leak in. It runs in its own process group with a deadline (default
//! [`DEFAULT_TIMEOUT`]); on timeout the whole group is killed.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::Result;
use crate::process::{self, DEFAULT_OUTPUT_LIMIT, ExecOutput, LabProcess, Spec, display_command};

/// The default deadline of a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Exit status of the wrapper when it could not set up the command's mounts.
pub const SETUP_FAILED: i32 = 125;

/// Binds each `SRC DST` pair (up to `--`), then runs the rest (also the shim fixture's,
/// [`crate::shim::ShimFiles::bind_and_run`]).
pub(crate) const WRAPPER: &str = r#"while [ "$1" != -- ]; do
  mount --bind "$1" "$2" || { echo "bnlab: cannot bind-mount $1 over $2" >&2; exit 125; }
  shift 2
done
shift
exec "$@""#;

/// A command to run in a lab namespace; build it with [`crate::Lab::command`].
#[derive(Debug, Clone)]
#[must_use = "a command does nothing until .run() or .spawn()"]
pub struct Exec {
    pub(crate) namespace: String,
    pub(crate) mounts: Vec<(PathBuf, PathBuf)>,
    pub(crate) home: PathBuf,
    pub(crate) argv: Vec<OsString>,
    pub(crate) user: Option<(u32, u32)>,
    pub(crate) env: Vec<(OsString, OsString)>,
    pub(crate) timeout: Duration,
    pub(crate) stdin: Option<Vec<u8>>,
    pub(crate) output_limit: usize,
    pub(crate) cwd: Option<PathBuf>,
}

impl Exec {
    pub(crate) fn new(
        namespace: String,
        mounts: Vec<(PathBuf, PathBuf)>,
        home: PathBuf,
        argv: Vec<OsString>,
    ) -> Self {
        Exec {
            namespace,
            mounts,
            home,
            argv,
            user: None,
            env: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            stdin: None,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            cwd: None,
        }
    }

    /// Runs the command as `uid`/`gid` with no supplementary groups (through `setpriv`),
    /// e.g. `.user(65534, 65534)` for `nobody`.
    pub fn user(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Sets an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Sets the deadline (the whole process group is killed when it passes).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Feeds `data` to the command's standard input (otherwise it reads `/dev/null`).
    pub fn stdin(mut self, data: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(data.into());
        self
    }

    /// Caps the bytes kept from each of stdout and stderr (default 8 MiB).
    pub fn output_limit(mut self, bytes: usize) -> Self {
        self.output_limit = bytes;
        self
    }

    /// Sets the working directory (default: the lab's `HOME` directory).
    pub fn current_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    fn spec(self) -> Spec {
        let mut full: Vec<OsString> = ["ip", "netns", "exec"].iter().map(OsString::from).collect();
        full.push(self.namespace.clone().into());
        for part in [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            WRAPPER,
            "bnlab-exec",
        ] {
            full.push(part.into());
        }
        for (src, dst) in &self.mounts {
            full.push(src.clone().into_os_string());
            full.push(dst.clone().into_os_string());
        }
        full.push("--".into());
        if let Some((uid, gid)) = self.user {
            for part in [
                "setpriv".to_owned(),
                "--reuid".to_owned(),
                uid.to_string(),
                "--regid".to_owned(),
                gid.to_string(),
                "--clear-groups".to_owned(),
                "--".to_owned(),
            ] {
                full.push(part.into());
            }
        }
        full.extend(self.argv.iter().cloned());

        let mut command = Command::new(&full[0]);
        command.args(&full[1..]).env_clear();
        command.env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| {
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
            }),
        );
        command.env("HOME", &self.home);
        command.current_dir(self.cwd.as_ref().unwrap_or(&self.home));
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let who = match self.user {
            Some((uid, gid)) => format!(" as {uid}:{gid}"),
            None => String::new(),
        };
        Spec {
            command,
            display: format!("[{}{who}] {}", self.namespace, display_command(&self.argv)),
            stdin: self.stdin,
            output_limit: self.output_limit,
        }
    }

    /// Runs the command to completion (or its deadline) and returns its output; a
    /// non-zero exit is not an error here (see [`ExecOutput::check`]).
    pub fn run(self) -> Result<ExecOutput> {
        let timeout = self.timeout;
        process::run(self.spec(), timeout)
    }

    /// Starts the command in the background (a server, a gateway under test). It is
    /// killed, with its process group, when the returned handle is dropped; whatever
    /// still runs in a lab namespace when the lab is dropped is killed then.
    pub fn spawn(self) -> Result<LabProcess> {
        process::spawn(self.spec())
    }
}
