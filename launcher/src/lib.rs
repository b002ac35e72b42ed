//! The `bottleneck` command line, as a library: argument parsing and the commands.
//!
//! The binary (`src/main.rs`) only parses arguments, calls [`run`] and turns the outcome
//! into an exit status. This crate builds on Linux and macOS: the netns backend and the
//! demo (network namespaces, nix, tokio, the lab's simulated internet) are compiled on
//! Linux only.
#![forbid(unsafe_code)]

pub mod apple;
pub mod bottle;
pub mod cli;
pub mod commands;
pub mod engine;
pub mod logs;
pub mod policy_check;
pub mod tool;

#[cfg(target_os = "linux")]
pub mod demo;
#[cfg(target_os = "linux")]
pub mod netns;

use std::io::Write;

/// Exit statuses of `bottleneck` itself. `bottleneck run` otherwise exits with the
/// agent's status. Configuration problems have their own code so scripts can tell "your
/// policy is wrong" from "something else failed".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ExitCode {
    /// Success.
    Ok = 0,
    /// An unexpected failure (I/O on stdout, a set-up step of `run`, ...).
    Failure = 1,
    /// Command-line usage error (clap's convention).
    Usage = 2,
    /// The policy (or other configuration) is invalid or unreadable.
    Config = 3,
}

/// Run a parsed command, writing its normal output to `out` and problems to `err`;
/// returns the process exit status.
pub fn run(command: cli::Command, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match command {
        cli::Command::Policy(cli::PolicyCommand::Check(args)) => {
            policy_check::run(&args, out, err) as u8
        }
        cli::Command::Run(args) => commands::run(&args, out, err),
        cli::Command::Ls(args) => commands::ls(&args, out, err),
        cli::Command::Rm(args) => commands::rm(&args, err),
        cli::Command::Logs(args) => commands::logs(&args, out, err),
        cli::Command::Exec(args) => commands::exec(&args, err),
        cli::Command::Ca(cli::CaCommand::Init { dir }) => commands::ca_init(&dir, out, err),
        cli::Command::Demo(args) => commands::demo(&args, out, err),
    }
}
