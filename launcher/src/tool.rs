//! Running a container CLI (`container`, `podman`, `docker`) for a backend: output read on
//! threads with a bound, a deadline on every call, and the bottle's secrets never in the
//! tool's environment (only the gateway's own `run`/`create` gets them, explicitly).

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// How long one CLI call may take.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// The most bytes kept of a call's stdout and of its stderr.
const OUTPUT_LIMIT: usize = 4 << 20;

/// Variables removed from the environment of every CLI call (the secrets). Set once,
/// when a run starts.
static SCRUB: OnceLock<Vec<String>> = OnceLock::new();

/// Remove these variables from every later CLI call's environment.
pub fn scrub(vars: Vec<String>) {
    let _ = SCRUB.set(vars);
}

/// `cmd` without the scrubbed variables.
pub fn scrubbed(cmd: &mut Command) -> &mut Command {
    for var in SCRUB.get().map(Vec::as_slice).unwrap_or_default() {
        cmd.env_remove(var);
    }
    cmd
}

/// What one CLI call printed.
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Exit status (-1 if killed by a signal).
    pub code: i32,
    /// Standard output (bounded).
    pub stdout: String,
    /// Standard error (bounded).
    pub stderr: String,
}

/// Why a call gave no [`Output`].
#[derive(Debug)]
pub enum CallError {
    /// The program is not installed.
    NotFound,
    /// It could not be started, waited for, or did not finish in time.
    Failed(String),
}

fn read_bounded(mut from: impl Read) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(out.len());
                out.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs `program ARGS` with `env` added to its scrubbed environment, within
/// [`CALL_TIMEOUT`].
pub fn call(program: &str, args: &[String], env: &[(String, String)]) -> Result<Output, CallError> {
    let mut child = scrubbed(&mut Command::new(program))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                CallError::NotFound
            } else {
                CallError::Failed(e.to_string())
            }
        })?;
    let out = child
        .stdout
        .take()
        .map(|o| std::thread::spawn(|| read_bounded(o)));
    let err = child
        .stderr
        .take()
        .map(|e| std::thread::spawn(|| read_bounded(e)));
    let deadline = Instant::now() + CALL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(CallError::Failed(format!(
                    "did not finish within {CALL_TIMEOUT:?}"
                )));
            }
            Err(e) => return Err(CallError::Failed(e.to_string())),
        }
    };
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    Ok(Output {
        code: status.code().unwrap_or(-1),
        stdout: join(out),
        stderr: join(err),
    })
}
