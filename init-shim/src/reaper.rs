//! Starting the agent and staying as its reaper, in the manner of tini.
//!
//! The parent blocks the forwarded signals and SIGCHLD, forks, and then waits for
//! signals synchronously with `sigwait` (no signal handlers at all): a forwarded signal
//! is passed to the agent with `kill`, SIGCHLD reaps every zombie with
//! `waitpid(-1, WNOHANG)` (orphans re-parented to PID 1 or to the subreaper included),
//! and once the agent itself has ended the shim exits with its status (128+N for signal
//! N). Blocked signals are queued even for a PID 1 that has no handlers, which is what
//! makes `kill -TERM 1` from inside the container reach the agent.
//!
//! The child puts itself in its own process group (and in the terminal's foreground, if
//! stdin is one, with SIGTTOU blocked meanwhile), restores the signal mask the shim was
//! started with, and `execve`s the prepared program.
//!
//! # Why the `unsafe` here is sound
//!
//! This is the only module of the crate allowed `unsafe`; it makes two kinds of `unsafe`
//! calls.
//!
//! * `fork()` is unsafe because in a multi-threaded process the child gets a copy of
//!   the memory but only the calling thread: locks held by other threads (the allocator's,
//!   stdio's) stay locked forever, so the child may only call async-signal-safe
//!   functions. [`spawn_and_reap`] first checks, from `/proc/thread-self/status`, that the
//!   process has exactly one thread (the netlink runtime is current-thread and has been
//!   dropped before privilege was dropped; nothing else in the shim starts threads), and
//!   refuses to fork otherwise. With one thread, no lock can be held by a thread that
//!   does not exist in the child, so the child may allocate and use std freely. All the
//!   same, everything `execve` needs (paths, argv, environment as C strings) is prepared
//!   before the fork, and the child only makes system calls before `execve`, or writes
//!   one message and exits if `execve` fails.
//! * `signal(SIG, SIG_DFL)` is unsafe because installing a handler function is (the
//!   handler must be async-signal-safe). `SIG_DFL` is not a function: it restores the
//!   kernel's default. In the parent for SIGCHLD: a disposition of
//!   `SIG_IGN` inherited from whoever started the shim would make the kernel reap
//!   children by itself, and the agent's exit status would be lost. Before `execve` (in
//!   the child, or in `--drop-only`'s direct exec) for SIGPIPE, which Rust's runtime sets to `SIG_IGN` at startup and which would otherwise
//!   stay ignored in the agent across `execve`.

#![allow(unsafe_code)]

use std::io::IsTerminal;

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, SigmaskHow, Signal, kill, signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, execve, fork, getpid, setpgid, tcsetpgrp};

use crate::agent::{AgentError, ChildEnd, EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND, Prepared};
use crate::privilege;

/// Signals PID 1 passes on to the agent.
pub const FORWARDED: [Signal; 7] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

fn system(what: &'static str) -> impl FnOnce(Errno) -> AgentError {
    move |e| AgentError::System {
        what,
        reason: e.desc().to_owned(),
    }
}

/// Replaces the current process with the agent (no fork, no reaper): for `--drop-only`
/// when the shim is not PID 1. Returns only on failure.
pub fn exec(prepared: &Prepared) -> AgentError {
    // As in the forked child: the agent gets the default SIGPIPE disposition.
    // SAFETY: SIG_DFL is not a handler function (see the module documentation).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let Err(e) = execve(&prepared.path, &prepared.argv, &prepared.env);
    exec_error(prepared, e)
}

fn exec_error(prepared: &Prepared, e: Errno) -> AgentError {
    let path = prepared.path.to_string_lossy().into_owned();
    match e {
        Errno::ENOENT => AgentError::NotFound(path),
        e => AgentError::NotExecutable {
            path,
            reason: e.desc().to_owned(),
        },
    }
}

/// Forks; the child execs the agent, this process forwards signals and reaps until the
/// agent ends, and returns how it ended.
pub fn spawn_and_reap(prepared: &Prepared) -> Result<ChildEnd, AgentError> {
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    // SAFETY: SIG_DFL is not a handler function (see the module documentation).
    unsafe { signal(Signal::SIGCHLD, SigHandler::SigDfl) }
        .map_err(system("resetting the SIGCHLD disposition"))?;
    let original = set
        .thread_swap_mask(SigmaskHow::SIG_BLOCK)
        .map_err(system("blocking signals"))?;

    privilege::ensure_single_threaded().map_err(|e| AgentError::System {
        what: "refusing to fork",
        reason: e.to_string(),
    })?;
    // SAFETY: the process has exactly one thread (checked just above), so the child
    // inherits no lock held by another thread (see the module documentation).
    match unsafe { fork() }.map_err(system("fork"))? {
        ForkResult::Child => child(prepared, &original),
        ForkResult::Parent { child } => reap(child, &set),
    }
}

/// In the child: own process group (and terminal foreground), original signal mask,
/// exec. Never returns.
fn child(prepared: &Prepared, original: &SigSet) -> ! {
    let me = getpid();
    let _ = setpgid(me, me);
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        // A background process group calling tcsetpgrp gets SIGTTOU unless blocked.
        let mut ttou = SigSet::empty();
        ttou.add(Signal::SIGTTOU);
        let _ = ttou.thread_block();
        let _ = tcsetpgrp(&stdin, me);
    }
    // Rust's runtime ignores SIGPIPE at startup and an ignored disposition survives
    // execve: give the agent the default, as any shell-started program has.
    // SAFETY: SIG_DFL is not a handler function (see the module documentation).
    let _ = unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) };
    let _ = original.thread_set_mask();
    let Err(e) = execve(&prepared.path, &prepared.argv, &prepared.env);
    let err = exec_error(prepared, e);
    eprintln!("bottleneck-init: {err}");
    std::process::exit(match e {
        Errno::ENOENT => EXIT_NOT_FOUND,
        _ => EXIT_NOT_EXECUTABLE,
    })
}

/// In the parent: forward signals, reap zombies, return when `child` has ended.
fn reap(child: Pid, set: &SigSet) -> Result<ChildEnd, AgentError> {
    loop {
        let sig = match set.wait() {
            Ok(sig) => sig,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(system("waiting for signals")(e)),
        };
        if sig != Signal::SIGCHLD {
            // ESRCH: the agent is already gone; its SIGCHLD is on the way.
            let _ = kill(child, sig);
            continue;
        }
        if let Some(end) = reap_zombies(child)? {
            return Ok(end);
        }
    }
}

/// Reaps every child that has ended; returns the agent's end if it was among them.
fn reap_zombies(agent: Pid) -> Result<Option<ChildEnd>, AgentError> {
    let mut end = None;
    loop {
        match waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Ok(end),
            Ok(WaitStatus::Exited(pid, code)) if pid == agent => {
                end = Some(ChildEnd::Exited(code));
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) if pid == agent => {
                end = Some(ChildEnd::Signaled(sig as i32));
            }
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(system("waitpid")(e)),
        }
    }
}
