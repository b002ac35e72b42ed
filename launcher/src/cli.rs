//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Run an agent in a new bottle: an agent namespace whose only way out is a gateway
    /// enforcing the policy. The exit status is the agent's.
    Run(Box<RunArgs>),
    /// List bottles (running, and stale ones left by a crash).
    Ls(LsArgs),
    /// Remove a bottle (stops it if its launcher still runs) or every bottle.
    Rm(RmArgs),
    /// Show a bottle's audit log as a table.
    Logs(LogsArgs),
    /// Run a command in a running bottle's agent (netns, podman, docker) through
    /// `bottleneck-init --drop-only`: as the agent's user, with no capabilities.
    Exec(ExecArgs),
    /// Work with bottle CAs.
    #[command(subcommand)]
    Ca(CaCommand),
    /// Build a self-contained world (a simulated internet in namespaces), run a scripted
    /// agent through the real shim and gateway, and show what the gateway allowed and
    /// denied. Root, Linux; no traffic leaves the machine.
    Demo(DemoArgs),
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

/// Where the bottle is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// Linux network namespaces and veth pairs (root, no container runtime).
    Netns,
    /// Podman containers (images/Containerfile.agent and Containerfile.gateway).
    Podman,
    /// Docker containers (the same images).
    Docker,
    /// Apple's `container` CLI on macOS.
    Apple,
}

/// How the agent's traffic reaches the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Egress {
    /// Routing forced by the init shim; no proxy variables.
    Transparent,
    /// The gateway's explicit proxy listener (`HTTP(S)_PROXY`).
    Proxy,
}

/// Arguments of `bottleneck run`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Where to build the bottle (default: apple on macOS with `container` installed, netns
    /// on Linux as root, else podman, else docker).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// How the agent's traffic reaches the gateway.
    #[arg(long, value_enum, default_value = "transparent")]
    pub egress: Egress,
    /// The policy file; validated before anything is created.
    #[arg(long)]
    pub policy: PathBuf,
    /// The bottle's name: 1-11 characters, lowercase letters, digits and `-`, starting
    /// with a letter (default: generated).
    #[arg(long)]
    pub name: Option<String>,
    /// The agent's user (a name or UID): never root. A name missing from /etc/passwd is
    /// added to the bottle's own copy of it, with a home in the bottle's state dir.
    #[arg(long, default_value = "node")]
    pub user: String,
    /// Pass an environment variable to the agent: `VAR` (its value here) or `VAR=VALUE`.
    /// A variable the policy names as a `token_ref` is refused.
    #[arg(short = 'e', long = "env", value_name = "VAR[=VALUE]")]
    pub env: Vec<String>,
    /// Bind-mount a host path into the agent's view: `SRC:DST` or `SRC:DST:ro`
    /// (DST must exist).
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:ro]")]
    pub volumes: Vec<String>,
    /// Print every step and command that would run, and change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Plug the gateway's uplink into this existing network namespace (a simulated
    /// internet, for tests and the demo) instead of NAT through the host.
    #[arg(long, value_name = "NETNS", hide = true)]
    pub uplink_netns: Option<String>,
    /// Attach the gateway's egress side to this existing podman/docker network instead of
    /// creating one (a simulated internet, for tests and the spikes); it is not removed.
    #[arg(long, value_name = "NETWORK", hide = true)]
    pub egress_network: Option<String>,
    /// Extra CA certificate (PEM) the gateway trusts for upstream TLS.
    #[arg(long, value_name = "PEM")]
    pub upstream_ca: Vec<PathBuf>,
    /// The agent's image (apple, podman, docker backends): its ENTRYPOINT is
    /// `bottleneck-init` (images/Containerfile.agent).
    #[arg(long, default_value = "bottleneck-agent:latest")]
    pub image: String,
    /// The gateway's image (apple, podman, docker backends).
    #[arg(long, default_value = "bottleneck-gateway:latest")]
    pub gateway_image: String,
    /// The resolver the gateway container uses for itself (default: the policy's first
    /// `dns.upstream`; podman/docker: else the engine's; apple backend: one of the two is
    /// required, as the Apple Container spike found the NAT network's own gateway does not
    /// resolve).
    #[arg(long, value_name = "IP")]
    pub gateway_dns: Option<String>,
    /// Seconds to wait for the gateway to be ready.
    #[arg(long, default_value_t = 20, value_name = "SECONDS")]
    pub gateway_timeout: u64,
    /// The agent and its arguments.
    #[arg(last = true, required = true, num_args = 1.., value_name = "AGENT")]
    pub agent: Vec<String>,
}

/// Arguments of `bottleneck ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// The backend whose bottles to list (default: netns on Linux, apple on macOS).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
}

/// Arguments of `bottleneck rm`.
#[derive(Debug, Args)]
#[group(skip)]
#[command(group(clap::ArgGroup::new("target").required(true).multiple(false).args(["name", "all"])))]
pub struct RmArgs {
    /// The bottle to remove.
    pub name: Option<String>,
    /// Remove every bottle.
    #[arg(long)]
    pub all: bool,
    /// The backend (default: netns on Linux, apple on macOS).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
}

/// Arguments of `bottleneck exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// The bottle.
    pub name: String,
    /// The backend (default: netns if a netns bottle of that name runs, else podman if
    /// installed, else docker).
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,
    /// The command and its arguments.
    #[arg(last = true, required = true, num_args = 1.., value_name = "CMD")]
    pub command: Vec<String>,
}

/// Arguments of `bottleneck logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The bottle.
    pub name: String,
    /// Keep printing new lines as they come (until the bottle goes away or Ctrl-C).
    #[arg(short, long)]
    pub follow: bool,
    /// Print the raw JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `bottleneck ca ...`.
#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Create a bottle CA (ca.pem, ca.key with mode 0600) in DIR and print its certificate.
    Init {
        /// Where to create it (refuses to overwrite).
        dir: PathBuf,
    },
}

/// Arguments of `bottleneck demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Keep going on a failed expectation and report it at the end (exit status 1).
    #[arg(long, hide = true)]
    pub keep_going: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("bottleneck").chain(args.iter().copied()))
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_takes_every_option_and_the_agent_after_the_double_dash() {
        let cli = parse(&[
            "run",
            "--backend",
            "netns",
            "--egress=transparent",
            "--policy",
            "p.yaml",
            "--name",
            "b1",
            "--user",
            "node",
            "-e",
            "FOO",
            "-e",
            "BAR=1",
            "-v",
            "/src:/dst:ro",
            "--dry-run",
            "--",
            "claude",
            "--print",
            "-e",
        ])
        .unwrap();
        let Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert_eq!(run.backend, Some(Backend::Netns));
        assert_eq!(run.egress, Egress::Transparent);
        assert_eq!(run.name.as_deref(), Some("b1"));
        assert_eq!(run.env, ["FOO", "BAR=1"]);
        assert_eq!(run.volumes, ["/src:/dst:ro"]);
        assert!(run.dry_run);
        // Everything after `--` belongs to the agent, options included.
        assert_eq!(run.agent, ["claude", "--print", "-e"]);
    }

    #[test]
    fn run_defaults() {
        let Command::Run(run) = parse(&["run", "--policy", "p", "--", "sh"])
            .unwrap()
            .command
        else {
            panic!("not run")
        };
        assert_eq!(run.backend, None);
        assert_eq!(run.egress, Egress::Transparent);
        assert_eq!(run.user, "node");
        assert_eq!(run.gateway_timeout, 20);
        assert!(!run.dry_run);
    }

    #[test]
    fn run_needs_a_policy_and_an_agent() {
        assert!(parse(&["run", "--", "sh"]).is_err());
        assert!(parse(&["run", "--policy", "p"]).is_err());
        assert!(parse(&["run", "--policy", "p", "--egress", "smoke", "--", "sh"]).is_err());
    }

    #[test]
    fn rm_takes_a_name_or_all_but_not_both() {
        assert!(parse(&["rm"]).is_err());
        assert!(parse(&["rm", "b1", "--all"]).is_err());
        assert!(parse(&["rm", "b1"]).is_ok());
        assert!(parse(&["rm", "--all"]).is_ok());
        assert!(parse(&["rm", "--backend", "apple", "b1"]).is_ok());
        assert!(parse(&["rm", "--backend", "apple"]).is_err());
    }

    #[test]
    fn exec_takes_a_name_and_a_command() {
        let Command::Exec(exec) = parse(&["exec", "b1", "--backend", "docker", "--", "id", "-u"])
            .unwrap()
            .command
        else {
            panic!("not exec")
        };
        assert_eq!(exec.name, "b1");
        assert_eq!(exec.backend, Some(Backend::Docker));
        assert_eq!(exec.command, ["id", "-u"]);
        assert!(parse(&["exec", "b1"]).is_err());
    }

    #[test]
    fn logs_and_ca_init() {
        let Command::Logs(logs) = parse(&["logs", "b1", "-f", "--json"]).unwrap().command else {
            panic!("not logs")
        };
        assert!(logs.follow && logs.json);
        assert!(matches!(
            parse(&["ca", "init", "/tmp/x"]).unwrap().command,
            Command::Ca(CaCommand::Init { .. })
        ));
    }
}
