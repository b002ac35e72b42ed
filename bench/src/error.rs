//! The harness's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can stop a benchmark step.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// The network lab failed (namespaces, commands, servers).
    #[error("lab: {0}")]
    Lab(#[from] bottleneck_lab::LabError),
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// TLS configuration or handshake failed.
    #[error("tls: {0}")]
    Tls(String),
    /// An HTTP exchange failed or answered unexpectedly.
    #[error("http: {0}")]
    Http(String),
    /// A contender could not be set up or started.
    #[error("{contender}: {reason}")]
    Setup {
        /// The contender's name.
        contender: String,
        /// Why.
        reason: String,
    },
    /// A binary the harness needs is missing.
    #[error("{what} not found (looked in {looked:?}); {hint}")]
    MissingBinary {
        /// The binary.
        what: String,
        /// Where the harness looked.
        looked: Vec<PathBuf>,
        /// How to get it.
        hint: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {after:?}: {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The deadline.
        after: Duration,
    },
    /// The results could not be serialised or parsed.
    #[error("json: {0}")]
    Json(#[from] serde_json::Error),
    /// Drawing the plot failed.
    #[error("plot: {0}")]
    Plot(String),
}

impl BenchError {
    /// An I/O error with context.
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        BenchError::Io {
            what: what.into(),
            source,
        }
    }

    /// A set-up error of `contender`.
    pub fn setup(contender: impl Into<String>, reason: impl Into<String>) -> Self {
        BenchError::Setup {
            contender: contender.into(),
            reason: reason.into(),
        }
    }
}

/// The harness's result type.
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
