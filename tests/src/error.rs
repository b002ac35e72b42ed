//! The lab's error type.
//!
//! Every failure names what was being attempted: the command line and its stderr for a
//! failed `ip` or `sysctl`, the namespace for a failed `setns`, the address for a failed
//! bind. Tests print these errors verbatim, so they must explain themselves.

use std::time::Duration;

/// Everything that can go wrong while building, using or tearing down a [`crate::Lab`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LabError {
    /// A helper command (usually `ip`) ran but exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    CommandFailed {
        /// The command line, shell-quoted for reading.
        command: String,
        /// How it ended (`exit status: 2`, `signal: 9`...).
        status: String,
        /// Its standard error, trimmed and bounded.
        stderr: String,
    },
    /// A command did not finish in time and was killed (with its whole process group).
    #[error(
        "`{command}` did not finish within {timeout:?} and was killed; stderr so far: {stderr}"
    )]
    CommandTimedOut {
        /// The command line.
        command: String,
        /// The limit that was exceeded.
        timeout: Duration,
        /// Standard output captured before the kill (bounded).
        stdout: String,
        /// Standard error captured before the kill (bounded).
        stderr: String,
    },
    /// A command could not be started at all (missing binary, bad working directory...).
    #[error("could not start `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A file-system or socket operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, e.g. `binding 198.51.100.53:53/udp in bnlab-1-0-wan`.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Entering a network namespace with `setns(2)` failed.
    #[error("could not enter network namespace {namespace}: {source}")]
    Setns {
        /// The namespace name.
        namespace: String,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// Generating a test certificate failed.
    #[error("test certificate for {subject}: {source}")]
    Certificate {
        /// The CA or the names the leaf was for.
        subject: String,
        /// rcgen's error.
        #[source]
        source: rcgen::Error,
    },
    /// Building a TLS configuration failed.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// A DNS message could not be built, sent, received or parsed.
    #[error("DNS {context}: {message}")]
    Dns {
        /// What was being done, e.g. `query allowed.test A via 198.51.100.53:53/udp`.
        context: String,
        /// What went wrong.
        message: String,
    },
    /// Something the lab waited for did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long the lab waited.
        after: Duration,
    },
    /// An argument was not acceptable (a malformed name, an address outside the lab's
    /// ranges...).
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The machine's own files differ from a [`crate::shim::MachineFiles`] snapshot.
    #[error("the machine's files changed: {}", changes.join("; "))]
    MachineChanged {
        /// What changed, one line each ([`crate::shim::MachineFiles::diff`]).
        changes: Vec<String>,
    },
    /// A background thread of the lab panicked.
    #[error("lab thread panicked: {0}")]
    ThreadPanicked(String),
}

impl LabError {
    /// Shorthand for [`LabError::Io`].
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }

    /// Shorthand for [`LabError::Dns`].
    pub(crate) fn dns(context: impl Into<String>, message: impl std::fmt::Display) -> Self {
        Self::Dns {
            context: context.into(),
            message: message.to_string(),
        }
    }
}

/// The lab's result type.
pub type Result<T, E = LabError> = std::result::Result<T, E>;
