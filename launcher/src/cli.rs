//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// bottleneck: a transparent egress gateway for AI-agent sandboxes.
#[derive(Debug, Parser)]
#[command(name = "bottleneck", version, about, long_about = None)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Work with policy files.
    #[command(subcommand)]
    Policy(PolicyCommand),
}

/// `bottleneck policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy file and print its normalised routes, or every error with
    /// file:line:column, key path and a hint. Exits 0 when valid, 3 when not.
    Check(CheckArgs),
}

/// Arguments of `bottleneck policy check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy file (YAML: `version: 1` policies or bot-bottle `routes.yaml`).
    pub file: PathBuf,
    /// Print nothing on success; only the exit status tells.
    #[arg(short, long)]
    pub quiet: bool,
}
