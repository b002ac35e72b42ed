//! `bottleneck-init`, the agent container's PID 1 (DESIGN.md sections 5 and 5a).
//!
//! It starts as root with CAP_NET_ADMIN and uses that privilege once:
//!
//! 1. [`prepare`] validates everything and changes nothing: the capabilities it needs are
//!    there, the agent's user exists ([`passwd`], read from the files, no NSS), the CA
//!    parses as a CA certificate ([`trust`]), the gateway is on a directly connected
//!    subnet of the interface ([`net`], read over netlink). Any problem: exit
//!    [`EXIT_CONFIG`] with a message, nothing changed.
//! 2. [`Ready::setup`] routes everything through the gateway and narrows the connected
//!    route ([`net`]), drops broadcast and multicast on the way out ([`egress_filter`]),
//!    names the gateway in resolv.conf ([`resolv`]), installs the CA
//!    ([`trust`]), closes the netlink runtime, then drops every privilege and proves it
//!    ([`privilege`]). A failure here exits [`EXIT_SETUP`]; the agent never runs.
//! 3. [`Started::run`] forks; the child execs the agent ([`agent`] builds its command
//!    and environment), PID 1 forwards signals and reaps ([`reaper`]) and returns the
//!    agent's exit code.
//!
//! `--drop-only` does steps 1 and 2 without any network or trust change, for processes
//! started later by `docker exec` and the like, which get the container's creation
//! capabilities back.
//!
//! Every module but [`reaper`] forbids `unsafe`; that one explains why its two `unsafe`
//! calls (`fork`, resetting SIGCHLD to its default) are sound.

pub mod agent;
pub mod config;
pub mod egress_filter;
pub mod files;
pub mod net;
pub mod passwd;
pub mod privilege;
pub mod reaper;
pub mod resolv;
pub mod trust;

use std::path::{Path, PathBuf};

use crate::agent::AgentError;
use crate::config::{CaSource, Config, ConfigError, Mode};
use crate::net::{NetError, Netlink, Plan};
use crate::passwd::Account;
use crate::privilege::PrivilegeError;
use crate::resolv::ResolvError;
use crate::trust::{CaCert, TrustError};

pub use crate::config::Cli;

/// Exit code: refused before anything was changed (configuration, validation,
/// privilege to start with). Also clap's code for a usage error.
pub const EXIT_CONFIG: i32 = 2;
/// Exit code: a setup step failed after changes began; the agent was not started.
pub const EXIT_SETUP: i32 = 1;

/// Where the agent's account is read.
pub const PASSWD: &str = "/etc/passwd";
/// Where the agent's groups are read.
pub const GROUP: &str = "/etc/group";

/// Why the shim did not run the agent.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Refused before anything was changed.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Configuring the network failed.
    #[error("network setup failed: {0}")]
    Net(#[source] NetError),
    /// Installing the broadcast/multicast egress filter failed.
    #[error("network setup failed: {0}")]
    Filter(#[from] egress_filter::FilterError),
    /// Writing resolv.conf failed.
    #[error(transparent)]
    Resolv(#[from] ResolvError),
    /// Installing the CA failed.
    #[error("installing the CA failed: {0}")]
    Trust(#[from] TrustError),
    /// Dropping privilege failed or left something.
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    /// The agent could not be started or waited for.
    #[error(transparent)]
    Agent(#[from] AgentError),
}

impl Error {
    /// The shim's exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Config(_) => EXIT_CONFIG,
            Error::Agent(e) => e.exit_code(),
            _ => EXIT_SETUP,
        }
    }

    /// What the error means for the system and the agent, for the message.
    pub fn consequence(&self) -> &'static str {
        match self {
            Error::Config(_) => "nothing was changed; the agent was not started",
            _ => "the agent was not started",
        }
    }
}

/// Prints a warning on stderr.
pub fn warn(message: &str) {
    eprintln!("bottleneck-init: warning: {message}");
}

/// Everything validated; nothing changed yet.
#[derive(Debug)]
pub struct Ready {
    config: Config,
    account: Account,
    cas: Option<Vec<CaCert>>,
    network: Option<(Netlink, Plan)>,
}

/// Privilege dropped; the agent's command is ready to run.
#[derive(Debug)]
pub struct Started {
    prepared: agent::Prepared,
    reap: bool,
}

fn read_optional(path: &Path) -> Result<String, ConfigError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(ConfigError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Step 1: validates the configuration against the system, changing nothing.
pub fn prepare(config: Config) -> Result<Ready, Error> {
    let network_mode = matches!(config.mode, Mode::Full { .. });
    let missing = privilege::missing_caps(network_mode);
    if !missing.is_empty() {
        return Err(ConfigError::Privilege {
            missing: missing.join(", "),
        }
        .into());
    }
    let passwd = read_optional(Path::new(PASSWD))?;
    let group = read_optional(Path::new(GROUP))?;
    let account = passwd::resolve(&passwd, &group, &config.user).map_err(ConfigError::from)?;

    let (cas, network) = match &config.mode {
        Mode::DropOnly => (None, None),
        Mode::Full {
            gateway,
            gateway6,
            iface,
            ipv6,
            ca,
        } => {
            let cas = match ca {
                None => None,
                Some(source) => {
                    let pem = match source {
                        CaSource::Pem(text) => text.clone().into_bytes(),
                        CaSource::File(path) => {
                            std::fs::read(path).map_err(|source| ConfigError::Read {
                                path: path.clone(),
                                source,
                            })?
                        }
                    };
                    Some(trust::parse_ca(&pem, trust::unix_now()).map_err(ConfigError::from)?)
                }
            };
            let netlink = Netlink::open().map_err(ConfigError::from)?;
            let interface = netlink
                .interface(iface.as_deref(), *gateway)
                .map_err(ConfigError::from)?;
            let plan =
                net::plan(interface, *gateway, *ipv6, *gateway6).map_err(ConfigError::from)?;
            (cas, Some((netlink, plan)))
        }
    };
    Ok(Ready {
        config,
        account,
        cas,
        network,
    })
}

impl Ready {
    /// The account the agent will run as.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// Step 2: network, resolv.conf, CA, then the privilege drop (verified).
    pub fn setup(self) -> Result<Started, Error> {
        let Ready {
            config,
            account,
            cas,
            network,
        } = self;
        let pid1 = std::process::id() == 1;
        let drop_only = network.is_none();
        if !pid1 && !drop_only {
            warn(
                "not running as PID 1: becoming a child subreaper so orphans are still reaped \
                 here",
            );
            if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
                warn(&format!("PR_SET_CHILD_SUBREAPER failed: {e}"));
            }
        }

        let mut extra_env: Vec<(String, PathBuf)> = Vec::new();
        if let Some((netlink, plan)) = network {
            let applied = netlink.apply(&plan).map_err(Error::Net);
            // Capabilities are per thread: the runtime is gone before they are dropped.
            netlink.close();
            for w in applied?.warnings {
                warn(&w);
            }
            egress_filter::install(&plan.iface.v4)?;
            resolv::install(Path::new(resolv::RESOLV_CONF), plan.gateway)?;
            if let Some(cas) = &cas {
                let installed = trust::install(cas, &trust::SYSTEM_BUNDLES, &config.trust_dir)?;
                extra_env = trust::env_vars(&installed.bundle);
            } else {
                warn(
                    "no CA given (BOTTLENECK_CA / BOTTLENECK_CA_FILE): TLS intercepted by the \
                     gateway will not be trusted",
                );
            }
        } else {
            // `--drop-only`: point at the bundle PID 1 wrote, if it did.
            let bundle = config.trust_dir.join(trust::BUNDLE_FILE_NAME);
            if bundle.is_file() {
                extra_env = trust::env_vars(&bundle);
            }
        }

        privilege::drop_to(&account)?;

        let env = agent::environment(std::env::vars_os(), &account, &extra_env);
        let prepared = agent::prepare(&config.command, env)?;
        Ok(Started {
            prepared,
            // `--drop-only` outside PID 1 just becomes the command.
            reap: !drop_only || pid1,
        })
    }
}

impl Started {
    /// Step 3: runs the agent and returns the shim's exit code.
    pub fn run(self) -> Result<i32, Error> {
        if !self.reap {
            return Err(reaper::exec(&self.prepared).into());
        }
        let end = reaper::spawn_and_reap(&self.prepared)?;
        Ok(agent::exit_code(end))
    }
}

/// All three steps: returns the agent's exit code, or why it was not started.
pub fn run(cli: Cli) -> Result<i32, Error> {
    let config = Config::from_cli(cli)?;
    prepare(config)?.setup()?.run()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_by_stage() {
        let config: Error = ConfigError::MissingGateway.into();
        assert_eq!(config.exit_code(), EXIT_CONFIG);
        assert!(config.consequence().contains("nothing was changed"));
        let setup = Error::Net(NetError::Verify("x".into()));
        assert_eq!(setup.exit_code(), EXIT_SETUP);
        assert_eq!(
            Error::from(PrivilegeError::Threads(2)).exit_code(),
            EXIT_SETUP
        );
        assert_eq!(
            Error::from(AgentError::NotFound("x".into())).exit_code(),
            127
        );
        assert_eq!(
            Error::from(AgentError::System {
                what: "fork",
                reason: "x".into()
            })
            .exit_code(),
            EXIT_SETUP
        );
    }
}
