//! The agent's command line and environment, and how its end becomes the shim's exit
//! code. Pure functions; the fork, exec and waiting are in [`crate::reaper`].

#![forbid(unsafe_code)]

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::passwd::Account;

/// `PATH` for an agent whose environment has none (Debian's default for users plus the
/// sbin directories, as container images usually have).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The prefix of the shim's own configuration variables, never passed to the agent.
pub const SETUP_PREFIX: &str = "BOTTLENECK_";

/// Exit code when the agent's program does not exist (as a shell would).
pub const EXIT_NOT_FOUND: i32 = 127;
/// Exit code when the agent's program exists but cannot be executed.
pub const EXIT_NOT_EXECUTABLE: i32 = 126;

/// The agent could not be started.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AgentError {
    /// Not found in PATH or at the path given.
    #[error("command not found: {0}")]
    NotFound(String),
    /// Found but not executable by the agent's user.
    #[error("command not executable: {path}: {reason}")]
    NotExecutable {
        /// The path found.
        path: String,
        /// Why.
        reason: String,
    },
    /// An argument or variable contains a NUL byte.
    #[error("{0} contains a NUL byte")]
    Nul(String),
    /// fork, exec or waiting failed.
    #[error("{what}: {reason}")]
    System {
        /// What was being done.
        what: &'static str,
        /// The error.
        reason: String,
    },
}

impl AgentError {
    /// The exit code for this error: 127 not found, 126 not executable, else 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            AgentError::NotFound(_) => EXIT_NOT_FOUND,
            AgentError::NotExecutable { .. } => EXIT_NOT_EXECUTABLE,
            _ => 1,
        }
    }
}

/// How the agent (the shim's direct child) ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChildEnd {
    /// Exited with this status.
    Exited(i32),
    /// Killed by this signal number.
    Signaled(i32),
}

/// The shim's exit code for the agent's end: its status, or 128+N for signal N.
pub fn exit_code(end: ChildEnd) -> i32 {
    match end {
        ChildEnd::Exited(code) => code & 0xff,
        ChildEnd::Signaled(sig) => 128 + sig,
    }
}

/// The agent's environment: `incoming` without the `BOTTLENECK_*` setup variables, with
/// `HOME`, `USER` and `LOGNAME` set for `account`, `PATH` defaulted if absent, and
/// `extra` (the CA variables) set; later entries override earlier ones, order kept.
pub fn environment<I>(
    incoming: I,
    account: &Account,
    extra: &[(String, PathBuf)],
) -> Vec<(OsString, OsString)>
where
    I: IntoIterator<Item = (OsString, OsString)>,
{
    let mut env: Vec<(OsString, OsString)> = incoming
        .into_iter()
        .filter(|(k, _)| !k.as_bytes().starts_with(SETUP_PREFIX.as_bytes()))
        .collect();
    let mut set = |key: &str, value: OsString| {
        if let Some(slot) = env.iter_mut().find(|(k, _)| k == key) {
            slot.1 = value;
        } else {
            env.push((key.into(), value));
        }
    };
    set("HOME", account.home.clone().into_os_string());
    set("USER", account.name.clone().into());
    set("LOGNAME", account.name.clone().into());
    for (key, path) in extra {
        set(key, path.clone().into_os_string());
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env
}

/// Finds `program` as `execvp` would: a name with a `/` is used as is; otherwise each
/// directory of `path` (empty entries meaning the current directory) is searched, and
/// the first regular file there that the calling user may execute wins. If none is
/// executable but one exists, the error says so (exit 126, not 127).
pub fn find_program(program: &OsStr, path: Option<&OsStr>) -> Result<PathBuf, AgentError> {
    let shown = program.to_string_lossy().into_owned();
    if program.is_empty() {
        return Err(AgentError::NotFound(shown));
    }
    if program.as_bytes().contains(&b'/') {
        let candidate = PathBuf::from(program);
        return match executable(&candidate) {
            Ok(()) => Ok(candidate),
            Err(None) => Err(AgentError::NotFound(shown)),
            Err(Some(reason)) => Err(AgentError::NotExecutable {
                path: shown,
                reason,
            }),
        };
    }
    let path = path.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut denied = None;
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(program);
        match executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(Some(reason)) => {
                denied.get_or_insert((candidate, reason));
            }
            Err(None) => {}
        }
    }
    match denied {
        Some((path, reason)) => Err(AgentError::NotExecutable {
            path: path.display().to_string(),
            reason,
        }),
        None => Err(AgentError::NotFound(shown)),
    }
}

/// `Ok` if `path` is a regular file the caller may execute; `Err(None)` if it does not
/// exist; `Err(Some(reason))` if it exists but cannot be executed.
fn executable(path: &Path) -> Result<(), Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(None),
        // A path component that is not a directory, or that this user may not search
        // (execvp goes on to the next PATH entry too).
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(nix::libc::ENOTDIR | nix::libc::EACCES | nix::libc::ELOOP)
            ) =>
        {
            return Err(None);
        }
        Err(e) => return Err(Some(e.to_string())),
    };
    if meta.is_dir() {
        return Err(Some("is a directory".into()));
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(Some("no execute permission".into()));
    }
    nix::unistd::access(path, nix::unistd::AccessFlags::X_OK)
        .map_err(|e| Some(format!("{} (for this user)", e.desc())))
}

/// A C string from OS bytes; `what` names it in the error.
pub fn c_string(bytes: &[u8], what: &str) -> Result<CString, AgentError> {
    CString::new(bytes).map_err(|_| AgentError::Nul(what.to_owned()))
}

/// Everything `execve` needs, prepared before `fork` so the child allocates nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The program's path.
    pub path: CString,
    /// argv (argv\[0\] as given by the user).
    pub argv: Vec<CString>,
    /// `KEY=VALUE` entries.
    pub env: Vec<CString>,
}

/// Resolves and converts the command and environment for `execve`.
pub fn prepare(
    command: &[OsString],
    env: Vec<(OsString, OsString)>,
) -> Result<Prepared, AgentError> {
    let Some(program) = command.first() else {
        return Err(AgentError::NotFound(String::new()));
    };
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_os_str());
    let path = find_program(program, path_var)?;
    let argv = command
        .iter()
        .map(|a| c_string(a.as_bytes(), "an argument of the command"))
        .collect::<Result<_, _>>()?;
    let env = env
        .into_iter()
        .map(|(k, v)| {
            let mut kv = k.into_vec();
            kv.push(b'=');
            kv.extend(v.into_vec());
            c_string(&kv, "an environment variable")
        })
        .collect::<Result<_, _>>()?;
    Ok(Prepared {
        path: c_string(path.as_os_str().as_bytes(), "the program path")?,
        argv,
        env,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn node() -> Account {
        Account {
            name: "node".into(),
            uid: 1000,
            gid: 1000,
            groups: vec![1000],
            home: PathBuf::from("/home/node"),
        }
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        list.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    #[test]
    fn setup_variables_removed_user_variables_set() {
        let incoming = pairs(&[
            ("PATH", "/usr/bin:/bin"),
            ("BOTTLENECK_GATEWAY", "198.18.0.1"),
            ("BOTTLENECK_CA", "-----BEGIN CERTIFICATE-----"),
            ("HOME", "/root"),
            ("TERM", "xterm"),
            ("SSL_CERT_FILE", "/old.pem"),
            (
                "bottleneck_lower",
                "kept: only the upper-case prefix is reserved",
            ),
        ]);
        let extra = vec![
            (
                "SSL_CERT_FILE".to_owned(),
                PathBuf::from("/etc/bottleneck/ca-bundle.crt"),
            ),
            (
                "NODE_EXTRA_CA_CERTS".to_owned(),
                PathBuf::from("/etc/bottleneck/ca-bundle.crt"),
            ),
        ];
        let env = environment(incoming, &node(), &extra);
        let get = |k: &str| {
            env.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.to_str().unwrap().to_owned())
        };
        assert!(
            env.iter()
                .all(|(k, _)| !k.to_str().unwrap().starts_with("BOTTLENECK_"))
        );
        assert_eq!(get("HOME").as_deref(), Some("/home/node"));
        assert_eq!(get("USER").as_deref(), Some("node"));
        assert_eq!(get("LOGNAME").as_deref(), Some("node"));
        assert_eq!(get("PATH").as_deref(), Some("/usr/bin:/bin"));
        assert_eq!(get("TERM").as_deref(), Some("xterm"));
        assert_eq!(
            get("SSL_CERT_FILE").as_deref(),
            Some("/etc/bottleneck/ca-bundle.crt")
        );
        assert_eq!(
            get("NODE_EXTRA_CA_CERTS").as_deref(),
            Some("/etc/bottleneck/ca-bundle.crt")
        );
        assert!(get("bottleneck_lower").is_some());
        // No duplicates.
        let mut keys: Vec<_> = env.iter().map(|(k, _)| k.clone()).collect();
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), env.len());
        // Incoming order is kept: PATH first.
        assert_eq!(env[0].0, "PATH");
    }

    #[test]
    fn path_defaulted_when_absent() {
        let env = environment(Vec::new(), &node(), &[]);
        assert!(env.iter().any(|(k, v)| k == "PATH" && v == DEFAULT_PATH));
    }

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code(ChildEnd::Exited(0)), 0);
        assert_eq!(exit_code(ChildEnd::Exited(7)), 7);
        assert_eq!(exit_code(ChildEnd::Exited(255)), 255);
        assert_eq!(exit_code(ChildEnd::Signaled(15)), 143);
        assert_eq!(exit_code(ChildEnd::Signaled(9)), 137);
        assert_eq!(AgentError::NotFound("x".into()).exit_code(), 127);
        assert_eq!(
            AgentError::NotExecutable {
                path: "x".into(),
                reason: "y".into()
            }
            .exit_code(),
            126
        );
    }

    #[test]
    fn program_lookup() {
        let sh = find_program(
            OsStr::new("sh"),
            Some(OsStr::new("/nonexistent:/bin:/usr/bin")),
        )
        .unwrap();
        assert!(sh.ends_with("sh"));
        assert_eq!(
            find_program(OsStr::new("/bin/sh"), None).unwrap(),
            PathBuf::from("/bin/sh")
        );
        assert!(matches!(
            find_program(OsStr::new("no-such-program-x"), Some(OsStr::new("/bin"))),
            Err(AgentError::NotFound(_))
        ));
        assert!(matches!(
            find_program(OsStr::new("/no/such"), None),
            Err(AgentError::NotFound(_))
        ));
        // A directory, and a file without x bits: 126.
        assert!(matches!(
            find_program(OsStr::new("/tmp"), None),
            Err(AgentError::NotExecutable { .. })
        ));
        assert!(matches!(
            find_program(OsStr::new("passwd"), Some(OsStr::new("/etc"))),
            Err(AgentError::NotExecutable { .. })
        ));
    }

    #[test]
    fn prepare_converts_and_rejects_nul() {
        let p = prepare(
            &[OsString::from("sh"), OsString::from("-c")],
            pairs(&[("PATH", "/bin:/usr/bin"), ("A", "b")]),
        )
        .unwrap();
        assert_eq!(p.argv[0].to_str().unwrap(), "sh");
        assert!(p.env.iter().any(|e| e.to_str().unwrap() == "A=b"));
        let err = prepare(
            &[OsString::from("sh"), OsString::from("a\0b")],
            pairs(&[("PATH", "/bin")]),
        )
        .unwrap_err();
        assert!(matches!(err, AgentError::Nul(_)));
    }
}
