//! The `bottleneck` command line, as a library: argument parsing and the commands.
//!
//! The binary (`src/main.rs`) only parses arguments, calls [`run`] and turns the outcome
//! into an exit status. This crate builds on Linux and macOS: it must not depend on
//! Linux-only crates.
#![forbid(unsafe_code)]

pub mod cli;
pub mod policy_check;

use std::io::Write;

/// Exit statuses of `bottleneck`. Configuration problems have their own code so scripts can
/// tell "your policy is wrong" from "something else failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// An unexpected failure (I/O on stdout, ...).
    Failure = 1,
    /// Command-line usage error (clap's convention).
    Usage = 2,
    /// The policy (or other configuration) is invalid or unreadable.
    Config = 3,
}

/// Run a parsed command, writing its normal output to `out` and problems to `err`.
pub fn run(command: cli::Command, out: &mut dyn Write, err: &mut dyn Write) -> ExitCode {
    match command {
        cli::Command::Policy(cli::PolicyCommand::Check(args)) => policy_check::run(&args, out, err),
    }
}
