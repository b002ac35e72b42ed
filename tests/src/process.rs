//! Running child processes with a deadline and bounded output capture.
//!
//! Every command the lab starts (`ip`, `sysctl`, and the test's own commands inside a
//! namespace) goes through here. Each child gets its own process group so that a timeout
//! or a drop kills everything it started, not only the first process; its output is read
//! by two threads into buffers with a fixed cap (the rest is counted and discarded, so a
//! chatty child can never block on a full pipe nor make the test's memory grow).

use std::fmt;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::error::{LabError, Result};

/// Default cap on the captured bytes of each of stdout and stderr.
pub const DEFAULT_OUTPUT_LIMIT: usize = 8 << 20;
/// How long to wait for the pipe readers once the child is gone (a grandchild that left
/// the process group may keep a pipe open; the lab does not wait on it forever).
const READER_GRACE: Duration = Duration::from_secs(2);

/// The result of a command that ran to completion.
#[derive(Clone)]
pub struct ExecOutput {
    /// The command line (for messages).
    pub command: String,
    /// How the process ended.
    pub status: ExitStatus,
    /// Captured standard output (at most the configured limit).
    pub stdout: Vec<u8>,
    /// Captured standard error (at most the configured limit).
    pub stderr: Vec<u8>,
    /// Bytes of stdout and stderr beyond the limit, discarded.
    pub discarded: u64,
    /// Wall-clock time from spawn to exit.
    pub elapsed: Duration,
}

impl ExecOutput {
    /// True if the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// The exit code, or `None` if a signal ended the process.
    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }

    /// Standard output as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error as (lossy) UTF-8.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// Parses standard output as JSON.
    pub fn stdout_json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.stdout).map_err(|e| {
            LabError::Invalid(format!(
                "stdout of `{}` is not JSON ({e}): {}",
                self.command,
                bounded_text(&self.stdout, 2000)
            ))
        })
    }

    /// Returns `self` if the command succeeded, else [`LabError::CommandFailed`] with its
    /// stderr.
    pub fn check(self) -> Result<Self> {
        if self.success() {
            Ok(self)
        } else {
            Err(LabError::CommandFailed {
                command: self.command.clone(),
                status: describe_status(self.status),
                stderr: bounded_text(&self.stderr, 4000),
            })
        }
    }
}

impl fmt::Debug for ExecOutput {
    /// Prints text rather than byte arrays, so assertion messages are readable.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecOutput")
            .field("command", &self.command)
            .field("status", &describe_status(self.status))
            .field("stdout", &bounded_text(&self.stdout, 4000))
            .field("stderr", &bounded_text(&self.stderr, 4000))
            .field("discarded", &self.discarded)
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

/// `exit status: 3` / `killed by signal 9`.
pub(crate) fn describe_status(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// Lossy UTF-8, trimmed, cut to `max` bytes (on a char boundary) with a marker.
pub(crate) fn bounded_text(bytes: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = text.trim();
    if text.len() <= max {
        return text.to_owned();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}... [{} more bytes]", &text[..cut], text.len() - cut)
}

/// Quotes a command line for display (not for a shell to run).
pub(crate) fn display_command<S: AsRef<std::ffi::OsStr>>(argv: &[S]) -> String {
    argv.iter()
        .map(|a| {
            let a = a.as_ref().to_string_lossy();
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=@%+,".contains(c))
            {
                a.into_owned()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A byte sink that keeps at most `limit` bytes and counts the rest.
#[derive(Debug, Default)]
struct Capture {
    buf: Vec<u8>,
    discarded: u64,
    limit: usize,
}

impl Capture {
    fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.buf.len());
        let take = room.min(data.len());
        self.buf.extend_from_slice(&data[..take]);
        self.discarded += (data.len() - take) as u64;
    }
}

type SharedCapture = Arc<Mutex<Capture>>;

fn lock(c: &SharedCapture) -> std::sync::MutexGuard<'_, Capture> {
    c.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Starts a thread draining `reader` into a bounded capture; signals `done` at EOF.
fn drain<R: Read + Send + 'static>(
    mut reader: R,
    capture: SharedCapture,
    done: mpsc::Sender<()>,
) -> Result<()> {
    thread::Builder::new()
        .name("bnlab-pipe".into())
        .spawn(move || {
            let mut chunk = [0u8; 16 * 1024];
            loop {
                match reader.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => lock(&capture).push(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => break,
                }
            }
            let _ = done.send(());
        })
        .map(drop)
        .map_err(|e| LabError::io("starting an output reader thread", e))
}

/// How to run one child process.
#[derive(Debug)]
pub(crate) struct Spec {
    pub command: Command,
    /// The command line for messages.
    pub display: String,
    pub stdin: Option<Vec<u8>>,
    pub output_limit: usize,
}

/// A child being captured.
struct Running {
    child: Child,
    pgid: Pid,
    stdout: SharedCapture,
    stderr: SharedCapture,
    done_rx: mpsc::Receiver<()>,
    display: String,
    started: Instant,
    /// Set once the group has been killed and the child reaped, so that a later drop
    /// never signals a process group id that may have been reused.
    reaped: bool,
}

fn start(mut spec: Spec) -> Result<Running> {
    spec.command
        .stdin(if spec.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let started = Instant::now();
    let child = spec.command.spawn().map_err(|source| LabError::Spawn {
        command: spec.display.clone(),
        source,
    })?;
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));
    let stdout = Arc::new(Mutex::new(Capture {
        limit: spec.output_limit,
        ..Capture::default()
    }));
    let stderr = Arc::new(Mutex::new(Capture {
        limit: spec.output_limit,
        ..Capture::default()
    }));
    let (done_tx, done_rx) = mpsc::channel();
    let mut running = Running {
        pgid,
        stdout: stdout.clone(),
        stderr: stderr.clone(),
        done_rx,
        display: spec.display.clone(),
        started,
        child,
        reaped: false,
    };
    let wire = |running: &mut Running| -> Result<()> {
        if let Some(out) = running.child.stdout.take() {
            drain(out, stdout, done_tx.clone())?;
        }
        if let Some(err) = running.child.stderr.take() {
            drain(err, stderr, done_tx)?;
        }
        if let (Some(mut sink), Some(data)) = (running.child.stdin.take(), spec.stdin) {
            let display = spec.display.clone();
            thread::Builder::new()
                .name("bnlab-stdin".into())
                .spawn(move || {
                    // A child that exits without reading its input is not an error here;
                    // its exit status tells the story.
                    if let Err(e) = sink.write_all(&data)
                        && e.kind() != std::io::ErrorKind::BrokenPipe
                    {
                        eprintln!("bnlab: writing stdin of `{display}`: {e}");
                    }
                })
                .map_err(|e| LabError::io("starting a stdin writer thread", e))?;
        }
        Ok(())
    };
    if let Err(e) = wire(&mut running) {
        running.kill_and_reap();
        return Err(e);
    }
    Ok(running)
}

impl Running {
    /// SIGKILLs the whole process group and reaps the direct child.
    fn kill_and_reap(&mut self) {
        if self.reaped {
            return;
        }
        let _ = killpg(self.pgid, Signal::SIGKILL);
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.reaped = true;
    }

    /// Waits for both pipe readers (bounded by [`READER_GRACE`]) and takes the output.
    fn collect(&mut self) -> (Vec<u8>, Vec<u8>, u64) {
        let deadline = Instant::now() + READER_GRACE;
        for _ in 0..2 {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done_rx.recv_timeout(left).is_err() {
                break;
            }
        }
        let mut out = lock(&self.stdout);
        let mut err = lock(&self.stderr);
        let discarded = out.discarded + err.discarded;
        (
            std::mem::take(&mut out.buf),
            std::mem::take(&mut err.buf),
            discarded,
        )
    }
}

/// Runs a command to completion or until `timeout`, then kills its process group.
///
/// Processes the command left behind in its process group are killed once it exits:
/// `run` is for commands, not daemons (see [`spawn`] for those).
pub(crate) fn run(spec: Spec, timeout: Duration) -> Result<ExecOutput> {
    let mut running = start(spec)?;
    let deadline = running.started + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match running.child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                running.kill_and_reap();
                return Err(LabError::io(
                    format!("waiting for `{}`", running.display),
                    e,
                ));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            running.kill_and_reap();
            let (stdout, stderr, _) = running.collect();
            return Err(LabError::CommandTimedOut {
                command: running.display.clone(),
                timeout,
                stdout: bounded_text(&stdout, 4000),
                stderr: bounded_text(&stderr, 4000),
            });
        }
        thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(5));
    };
    let elapsed = running.started.elapsed();
    // Leftovers in the group (background jobs) would hold the pipes open.
    let _ = killpg(running.pgid, Signal::SIGKILL);
    running.reaped = true;
    let (stdout, stderr, discarded) = running.collect();
    Ok(ExecOutput {
        command: running.display.clone(),
        status,
        stdout,
        stderr,
        discarded,
        elapsed,
    })
}

/// Starts a long-running command whose output is captured in the background.
pub(crate) fn spawn(spec: Spec) -> Result<LabProcess> {
    let running = start(spec)?;
    Ok(LabProcess {
        running,
        status: None,
    })
}

/// A long-running process started inside a lab namespace (for example a gateway under
/// test). Its process group is SIGKILLed when this value is dropped.
pub struct LabProcess {
    running: Running,
    status: Option<ExitStatus>,
}

impl fmt::Debug for LabProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LabProcess")
            .field("command", &self.running.display)
            .field("pid", &self.running.child.id())
            .field("status", &self.status)
            .finish()
    }
}

impl LabProcess {
    /// The process id of the direct child (also its process group id).
    pub fn id(&self) -> u32 {
        self.running.child.id()
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.running.display
    }

    /// The exit status if the process has ended, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self
                .running
                .child
                .try_wait()
                .map_err(|e| LabError::io(format!("polling `{}`", self.running.display), e))?;
        }
        Ok(self.status)
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// A copy of the standard output captured so far.
    pub fn stdout(&self) -> Vec<u8> {
        lock(&self.running.stdout).buf.clone()
    }

    /// A copy of the standard error captured so far.
    pub fn stderr(&self) -> Vec<u8> {
        lock(&self.running.stderr).buf.clone()
    }

    /// Waits until the captured stdout or stderr contains `needle` (e.g. a "listening"
    /// line). Fails early if the process exits first, with its output in the error.
    pub fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let needle = needle.as_bytes();
        let contains = |c: &SharedCapture| lock(c).buf.windows(needle.len()).any(|w| w == needle);
        loop {
            if needle.is_empty() || contains(&self.running.stdout) || contains(&self.running.stderr)
            {
                return Ok(());
            }
            if let Some(status) = self.try_wait()? {
                return Err(LabError::CommandFailed {
                    command: self.running.display.clone(),
                    status: format!(
                        "{} before printing {:?}",
                        describe_status(status),
                        String::from_utf8_lossy(needle)
                    ),
                    stderr: bounded_text(&self.stderr(), 4000),
                });
            }
            if Instant::now() >= deadline {
                return Err(LabError::Timeout {
                    what: format!(
                        "`{}` to print {:?}; stderr so far: {}",
                        self.running.display,
                        String::from_utf8_lossy(needle),
                        bounded_text(&self.stderr(), 2000)
                    ),
                    after: timeout,
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `signal` to the whole process group.
    pub fn signal(&self, signal: Signal) -> Result<()> {
        match killpg(self.running.pgid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(LabError::io(
                format!("signalling `{}`", self.running.display),
                e.into(),
            )),
        }
    }

    /// Kills the process group and returns the output captured so far.
    pub fn kill(mut self) -> ExecOutput {
        self.running.kill_and_reap();
        let status = self
            .status
            .or_else(|| self.running.child.try_wait().ok().flatten())
            .unwrap_or_else(|| ExitStatus::from_raw(9));
        let (stdout, stderr, discarded) = self.running.collect();
        ExecOutput {
            command: self.running.display.clone(),
            status,
            stdout,
            stderr,
            discarded,
            elapsed: self.running.started.elapsed(),
        }
    }
}

impl Drop for LabProcess {
    fn drop(&mut self) {
        self.running.kill_and_reap();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn spec(argv: &[&str]) -> Spec {
        let mut command = Command::new(argv[0]);
        command.args(&argv[1..]);
        Spec {
            command,
            display: display_command(argv),
            stdin: None,
            output_limit: 1000,
        }
    }

    #[test]
    fn output_beyond_the_limit_is_counted_not_kept() {
        let out = run(
            spec(&["sh", "-c", "head -c 5000 /dev/zero; echo err >&2"]),
            Duration::from_secs(10),
        );
        let out = out.expect("ran");
        assert!(out.success());
        assert_eq!(out.stdout.len(), 1000);
        assert_eq!(out.discarded, 4000);
        assert_eq!(out.stderr_str(), "err\n");
    }

    #[test]
    fn a_command_past_its_deadline_is_killed_with_its_children() {
        let started = Instant::now();
        let res = run(
            spec(&["sh", "-c", "sleep 30 & sleep 30"]),
            Duration::from_millis(200),
        );
        assert!(
            matches!(res, Err(LabError::CommandTimedOut { .. })),
            "{res:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn background_leftovers_do_not_hold_run_hostage() {
        let started = Instant::now();
        let res = run(
            spec(&["sh", "-c", "sleep 30 & echo done"]),
            Duration::from_secs(10),
        );
        assert!(
            matches!(&res, Ok(out) if out.stdout_str() == "done\n"),
            "{res:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn display_quotes_what_needs_quoting() {
        assert_eq!(
            display_command(&["ip", "-n", "x", "addr", "a b", "it's"]),
            r"ip -n x addr 'a b' 'it'\''s'"
        );
    }
}
