//! Flags and environment variables, and the checks that need nothing but their values.
//!
//! Every setting is a flag with an environment variable of the same meaning (the
//! launcher sets the variables; a person at a shell may prefer the flags). Checks that
//! need the system (the interface's subnets, /etc/passwd, the CA's contents) are made in
//! [`crate::prepare`]; all of them happen before anything is changed, and their failures
//! exit with [`crate::EXIT_CONFIG`].

#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use clap::Parser;

use crate::net::{Ipv6Mode, NetError};
use crate::passwd::{LookupError, UserSpec};
use crate::trust::CaError;

/// Where the CA bundle files go unless `BOTTLENECK_TRUST_DIR` says otherwise.
pub const DEFAULT_TRUST_DIR: &str = "/etc/bottleneck";

const AFTER_HELP: &str = "\
Exit status: the agent's own status (128+N if signal N killed it); 2 if the configuration \
was refused before anything was changed; 1 if a setup step failed (the agent was not \
started); 127 / 126 if the agent's command was not found / not executable.

Processes started later with `docker exec`, `podman exec` or `container exec` get the \
container's creation capabilities (CAP_NET_ADMIN included), whatever PID 1 dropped: run \
them through `bottleneck-init --drop-only -- CMD` (what `bottleneck exec` does).";

/// `bottleneck-init [OPTIONS] [--] AGENT [ARGS...]`
#[derive(Debug, Clone, Parser)]
#[command(
    name = "bottleneck-init",
    version,
    about = "PID 1 of a bottleneck agent container: routes everything through the gateway, \
             names it as the resolver, trusts the bottle CA, drops every privilege, runs \
             the agent and reaps.",
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// The gateway's IPv4 address on the agent network: the default route and the
    /// resolver.
    #[arg(long, env = "BOTTLENECK_GATEWAY", value_name = "IPV4")]
    pub gateway: Option<String>,

    /// The gateway's IPv6 address on the agent network (needed with --ipv6 route).
    #[arg(long, env = "BOTTLENECK_GATEWAY6", value_name = "IPV6")]
    pub gateway6: Option<String>,

    /// The user the agent runs as: a name from /etc/passwd, UID or UID:GID.
    #[arg(
        long,
        env = "BOTTLENECK_USER",
        default_value = "node",
        value_name = "USER"
    )]
    pub user: String,

    /// The bottle CA certificate as PEM text.
    #[arg(
        long,
        env = "BOTTLENECK_CA",
        value_name = "PEM",
        hide_env_values = true
    )]
    pub ca: Option<String>,

    /// A file holding the bottle CA certificate (PEM).
    #[arg(long, env = "BOTTLENECK_CA_FILE", value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// The agent's network interface [default: the interface of the IPv4 default route,
    /// else the one on the gateway's subnet].
    #[arg(long, env = "BOTTLENECK_IFACE", value_name = "NAME")]
    pub iface: Option<String>,

    /// IPv6 on the agent's interface: routed through the gateway, or disabled.
    #[arg(long, env = "BOTTLENECK_IPV6", value_enum, default_value_t = Ipv6Mode::Disable)]
    pub ipv6: Ipv6Mode,

    /// Where the CA alone (ca.crt) and the combined bundle (ca-bundle.crt) are written.
    #[arg(long, env = "BOTTLENECK_TRUST_DIR", default_value = DEFAULT_TRUST_DIR, value_name = "DIR")]
    pub trust_dir: PathBuf,

    /// Make no network or trust changes: only drop privilege, switch user and run the
    /// command (for processes started later with `docker exec` and the like).
    #[arg(long)]
    pub drop_only: bool,

    /// The agent's command and its arguments.
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "AGENT"
    )]
    pub command: Vec<OsString>,
}

/// Where the CA comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CaSource {
    /// PEM text (`BOTTLENECK_CA`).
    Pem(String),
    /// A PEM file (`BOTTLENECK_CA_FILE`).
    File(PathBuf),
}

/// What the shim is asked to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Route, resolv.conf, CA, drop, run, reap.
    Full {
        /// The gateway's IPv4 address.
        gateway: Ipv4Addr,
        /// The gateway's IPv6 address.
        gateway6: Option<Ipv6Addr>,
        /// The interface, if named.
        iface: Option<String>,
        /// IPv6 handling.
        ipv6: Ipv6Mode,
        /// The CA, if given.
        ca: Option<CaSource>,
    },
    /// `--drop-only`: drop, run.
    DropOnly,
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// What to do.
    pub mode: Mode,
    /// Who the agent runs as.
    pub user: UserSpec,
    /// Where the CA files go.
    pub trust_dir: PathBuf,
    /// The agent's command (non-empty).
    pub command: Vec<OsString>,
}

/// A configuration that is refused; nothing has been changed.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No gateway.
    #[error("no gateway: set BOTTLENECK_GATEWAY (or --gateway) to the gateway's IPv4 address")]
    MissingGateway,
    /// The gateway value is not usable.
    #[error("invalid {var} {value:?}: {reason}")]
    BadAddress {
        /// The variable.
        var: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// Both CA sources given.
    #[error("give the CA either as BOTTLENECK_CA or as BOTTLENECK_CA_FILE, not both")]
    BothCa,
    /// The user spec, or the account lookup.
    #[error("agent user: {0}")]
    User(#[from] LookupError),
    /// The CA.
    #[error("bottle CA: {0}")]
    Ca(#[from] CaError),
    /// A file could not be read.
    #[error("reading {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The network cannot be configured as asked.
    #[error("network: {0}")]
    Network(#[from] NetError),
    /// The shim lacks the privilege to do its job.
    #[error(
        "not enough privilege: {missing} missing from the effective capability set (run as \
         root with these capabilities; the container needs CAP_NET_ADMIN at creation)"
    )]
    Privilege {
        /// The missing capabilities.
        missing: String,
    },
    /// The trust directory is not an absolute path.
    #[error("BOTTLENECK_TRUST_DIR must be an absolute path, not {0:?}")]
    TrustDir(PathBuf),
}

/// An empty value counts as unset (an engine's `-e VAR=` is not a setting).
fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn parse_gateway(value: &str) -> Result<Ipv4Addr, ConfigError> {
    let bad = |reason| ConfigError::BadAddress {
        var: "BOTTLENECK_GATEWAY",
        value: value.to_owned(),
        reason,
    };
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Ok(v4),
        Ok(IpAddr::V6(_)) => Err(bad(
            "expected the gateway's IPv4 address; give its IPv6 address as BOTTLENECK_GATEWAY6",
        )),
        Err(_) => Err(bad("not an IP address")),
    }
}

fn parse_gateway6(value: &str) -> Result<Ipv6Addr, ConfigError> {
    let bad = |reason| ConfigError::BadAddress {
        var: "BOTTLENECK_GATEWAY6",
        value: value.to_owned(),
        reason,
    };
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) if v6.to_ipv4_mapped().is_none() => Ok(v6),
        Ok(_) => Err(bad("expected an IPv6 address")),
        Err(_) => Err(bad("not an IP address (zone ids are not accepted)")),
    }
}

impl Config {
    /// Checks the flag and variable values on their own.
    pub fn from_cli(cli: Cli) -> Result<Config, ConfigError> {
        let user: UserSpec = cli.user.parse()?;
        if !cli.trust_dir.is_absolute() {
            return Err(ConfigError::TrustDir(cli.trust_dir));
        }
        let mode = if cli.drop_only {
            // The container's environment (BOTTLENECK_GATEWAY...) is inherited by
            // `docker exec`: ignored here, not an error.
            Mode::DropOnly
        } else {
            let gateway =
                parse_gateway(&non_empty(cli.gateway).ok_or(ConfigError::MissingGateway)?)?;
            let gateway6 = non_empty(cli.gateway6)
                .map(|g| parse_gateway6(&g))
                .transpose()?;
            let ca = match (
                non_empty(cli.ca),
                cli.ca_file.filter(|p| !p.as_os_str().is_empty()),
            ) {
                (Some(_), Some(_)) => return Err(ConfigError::BothCa),
                (Some(pem), None) => Some(CaSource::Pem(pem)),
                (None, Some(path)) => Some(CaSource::File(path)),
                (None, None) => None,
            };
            Mode::Full {
                gateway,
                gateway6,
                iface: non_empty(cli.iface),
                ipv6: cli.ipv6,
                ca,
            }
        };
        Ok(Config {
            mode,
            user,
            trust_dir: cli.trust_dir,
            command: cli.command,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        // Parsing reads the environment too; these tests only use flags, and no
        // BOTTLENECK_* variable is set where the tests run.
        Cli::try_parse_from(std::iter::once("bottleneck-init").chain(args.iter().copied()))
    }

    fn config(args: &[&str]) -> Result<Config, ConfigError> {
        Config::from_cli(cli(args).unwrap())
    }

    #[test]
    fn full_mode_defaults() {
        let c = config(&["--gateway", "198.18.0.1", "--", "claude", "--flag"]).unwrap();
        assert_eq!(c.user, UserSpec::Name("node".into()));
        assert_eq!(c.trust_dir, PathBuf::from(DEFAULT_TRUST_DIR));
        assert_eq!(
            c.command,
            vec![OsString::from("claude"), OsString::from("--flag")]
        );
        assert_eq!(
            c.mode,
            Mode::Full {
                gateway: Ipv4Addr::new(198, 18, 0, 1),
                gateway6: None,
                iface: None,
                ipv6: Ipv6Mode::Disable,
                ca: None,
            }
        );
    }

    #[test]
    fn the_command_may_follow_without_a_double_dash() {
        let c = config(&["--gateway", "198.18.0.1", "sh", "-c", "echo --gateway"]).unwrap();
        assert_eq!(c.command.len(), 3);
        assert_eq!(c.command[2], OsString::from("echo --gateway"));
    }

    #[test]
    fn a_command_is_required() {
        assert!(cli(&["--gateway", "198.18.0.1"]).is_err());
    }

    #[test]
    fn gateway_checks() {
        assert!(matches!(config(&["x"]), Err(ConfigError::MissingGateway)));
        assert!(matches!(
            config(&["--gateway", " ", "x"]),
            Err(ConfigError::MissingGateway)
        ));
        let err = config(&["--gateway", "2001:db8:a::1", "x"]).unwrap_err();
        assert!(err.to_string().contains("BOTTLENECK_GATEWAY6"), "{err}");
        let err = config(&["--gateway", "gateway.test", "x"]).unwrap_err();
        assert!(err.to_string().contains("not an IP address"), "{err}");
        let err =
            config(&["--gateway", "198.18.0.1", "--gateway6", "198.18.0.1", "x"]).unwrap_err();
        assert!(err.to_string().contains("expected an IPv6"), "{err}");
        let c = config(&[
            "--gateway",
            "198.18.0.1",
            "--gateway6",
            "2001:db8:a::1",
            "--ipv6",
            "route",
            "--iface",
            "eth0",
            "x",
        ])
        .unwrap();
        assert!(matches!(
            c.mode,
            Mode::Full {
                ipv6: Ipv6Mode::Route,
                gateway6: Some(_),
                iface: Some(_),
                ..
            }
        ));
        assert!(cli(&["--gateway", "198.18.0.1", "--ipv6", "maybe", "x"]).is_err());
    }

    #[test]
    fn ca_sources() {
        let err = config(&[
            "--gateway",
            "198.18.0.1",
            "--ca",
            "PEM",
            "--ca-file",
            "/f",
            "x",
        ])
        .unwrap_err();
        assert!(matches!(err, ConfigError::BothCa));
        let c = config(&["--gateway", "198.18.0.1", "--ca-file", "/ca.pem", "x"]).unwrap();
        assert!(matches!(
            c.mode,
            Mode::Full {
                ca: Some(CaSource::File(_)),
                ..
            }
        ));
    }

    #[test]
    fn drop_only_needs_no_gateway() {
        let c = config(&["--drop-only", "--user", "1000:1000", "--", "id"]).unwrap();
        assert_eq!(c.mode, Mode::DropOnly);
        assert_eq!(
            c.user,
            UserSpec::Id {
                uid: 1000,
                gid: Some(1000)
            }
        );
    }

    #[test]
    fn bad_user_and_trust_dir() {
        assert!(matches!(
            config(&["--drop-only", "--user", "a b", "x"]),
            Err(ConfigError::User(_))
        ));
        assert!(matches!(
            config(&["--drop-only", "--trust-dir", "relative", "x"]),
            Err(ConfigError::TrustDir(_))
        ));
    }
}
