//! Command-line and environment configuration of `bottleneck-gateway`.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// bottleneck-gateway: the sidecar that forces an agent's traffic through policy.
///
/// It installs nftables redirects for the agent interface, intercepts TLS with certificates
/// minted from the bottle CA, applies the policy to every request, injects credentials and
/// writes one JSON audit line per decision.
#[derive(Debug, Parser)]
#[command(
    name = "bottleneck-gateway",
    version,
    about,
    subcommand_negates_reqs = true
)]
pub struct Args {
    /// A maintenance command instead of running the gateway.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The policy file (YAML). SIGHUP reloads it; an invalid new policy is refused and the
    /// old one kept.
    #[arg(long, env = "BOTTLENECK_POLICY", required = true)]
    pub policy: Option<PathBuf>,
    /// The interface facing the agent network; its TCP 80/443 are redirected and everything
    /// else from it is rejected.
    #[arg(long, env = "BOTTLENECK_AGENT_IFACE", required = true)]
    pub agent_iface: Option<String>,
    /// Directory of the bottle CA (ca.pem, ca.key with mode 0600); created if absent.
    #[arg(long, env = "BOTTLENECK_CA_DIR", required = true)]
    pub ca_dir: Option<PathBuf>,
    /// Extra CA certificate (PEM) trusted for upstream TLS, besides the system roots.
    /// Repeatable.
    #[arg(
        long = "upstream-ca",
        env = "BOTTLENECK_UPSTREAM_CA",
        value_delimiter = ','
    )]
    pub upstream_ca: Vec<PathBuf>,
    /// Where audit lines go: a file (appended) or `-` for stdout.
    #[arg(long, env = "BOTTLENECK_AUDIT_LOG", default_value = "-")]
    pub audit_log: PathBuf,
    /// Port of the transparent HTTP listener (agent port 80 is redirected here).
    #[arg(long, env = "BOTTLENECK_HTTP_PORT", default_value_t = 15080)]
    pub http_port: u16,
    /// Port of the transparent TLS listener (agent port 443 is redirected here).
    #[arg(long, env = "BOTTLENECK_TLS_PORT", default_value_t = 15443)]
    pub tls_port: u16,
    /// Port of the DNS server, UDP and TCP (agent port 53, any destination, is redirected here).
    #[arg(long, env = "BOTTLENECK_DNS_PORT", default_value_t = 15053)]
    pub dns_port: u16,
    /// Port reserved for the TCP relay (ports of `tcp` rules are redirected here).
    #[arg(long, env = "BOTTLENECK_TCP_RELAY_PORT", default_value_t = 15022)]
    pub tcp_relay_port: u16,
    /// Also serve an explicit HTTP proxy (CONNECT and absolute-form requests) on this
    /// address, for agents run with proxy variables; the same policy applies.
    #[arg(long, env = "BOTTLENECK_LISTEN_PROXY")]
    pub listen_proxy: Option<SocketAddr>,
    /// SO_MARK of the gateway's upstream sockets, so they are never redirected.
    #[arg(long, env = "BOTTLENECK_MARK", default_value_t = 0x6274)]
    pub mark: u32,
    /// Most agent connections served at once, over every listener; beyond it new
    /// connections wait to be accepted.
    #[arg(long, env = "BOTTLENECK_MAX_CONNECTIONS", default_value = "4096")]
    pub max_connections: NonZeroUsize,
    /// Most connections at once from one client address; beyond it a new connection is
    /// closed at once (and audited as `client_connection_limit`), so one client cannot
    /// starve the others.
    #[arg(
        long,
        env = "BOTTLENECK_MAX_CONNECTIONS_PER_CLIENT",
        default_value = "512"
    )]
    pub max_connections_per_client: NonZeroUsize,
    /// Largest request body forwarded, in bytes. A larger declared Content-Length gets 413
    /// before anything is sent upstream; a body that grows past it (chunked, HTTP/2) is cut
    /// off upstream and the agent gets 413. Both are audited as `body_too_large`.
    #[arg(
        long,
        env = "BOTTLENECK_MAX_REQUEST_BODY_BYTES",
        default_value_t = 256 * 1024 * 1024
    )]
    pub max_request_body_bytes: u64,
    /// Seconds an upstream may stay silent: before its response head, and between two
    /// pieces of its body (streams that send keep-alive events are never cut). The agent
    /// gets 504 or a cut-off body, and the audit line says why.
    #[arg(long, env = "BOTTLENECK_UPSTREAM_IDLE_SECONDS", default_value_t = 600)]
    pub upstream_idle_seconds: u64,
    /// Worker threads of the async runtime (default: one per CPU). On a 2-core machine
    /// shared with the agent, 1 cuts CPU per request by about a third (fewer cross-thread
    /// wake-ups; see BENCHMARKS.md) at the cost of parallel TLS handshakes.
    #[arg(long, env = "BOTTLENECK_WORKER_THREADS")]
    pub worker_threads: Option<std::num::NonZeroUsize>,
    /// Seconds to let open connections finish after SIGTERM.
    #[arg(long, env = "BOTTLENECK_DRAIN_SECONDS", default_value_t = 10)]
    pub drain_seconds: u64,
}

/// Maintenance commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the bottle CA in a directory (refuses to overwrite) and print its certificate.
    CaInit {
        /// Where to create ca.pem and ca.key.
        #[arg(long, env = "BOTTLENECK_CA_DIR")]
        ca_dir: PathBuf,
    },
    /// The bottle CA (`ca init --ca-dir DIR` is the same as `ca-init`).
    Ca {
        /// What to do with it.
        #[command(subcommand)]
        action: CaAction,
    },
}

/// `ca` subcommands.
#[derive(Debug, Subcommand)]
pub enum CaAction {
    /// Create the bottle CA in a directory (refuses to overwrite) and print its certificate.
    Init {
        /// Where to create ca.pem and ca.key.
        #[arg(long, env = "BOTTLENECK_CA_DIR")]
        ca_dir: PathBuf,
    },
}

impl Command {
    /// The directory of a CA-creating command.
    pub fn ca_init_dir(&self) -> &PathBuf {
        match self {
            Command::CaInit { ca_dir }
            | Command::Ca {
                action: CaAction::Init { ca_dir },
            } => ca_dir,
        }
    }
}

/// Every local address of this host: the gateway never dials itself.
pub fn own_addresses() -> Vec<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|ifa| ifa.address)
        .filter_map(|addr| {
            addr.as_sockaddr_in()
                .map(|a| std::net::IpAddr::V4(a.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|a| std::net::IpAddr::V6(a.ip())))
        })
        .collect()
}

/// The wildcard address a listener binds: `[::]` accepts IPv4 too (as mapped addresses).
pub fn listen_addr(port: u16) -> SocketAddr {
    SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_definition_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn running_needs_policy_interface_and_ca_dir_but_ca_init_does_not() {
        assert!(Args::try_parse_from(["bottleneck-gateway"]).is_err());
        for argv in [
            &["bottleneck-gateway", "ca-init", "--ca-dir", "/tmp/x"][..],
            &["bottleneck-gateway", "ca", "init", "--ca-dir", "/tmp/x"][..],
        ] {
            let args = Args::try_parse_from(argv).unwrap();
            assert_eq!(
                args.command.unwrap().ca_init_dir(),
                &PathBuf::from("/tmp/x")
            );
        }
        let args = Args::try_parse_from([
            "bottleneck-gateway",
            "--policy",
            "p.yaml",
            "--agent-iface",
            "eth1",
            "--ca-dir",
            "ca",
        ])
        .unwrap();
        assert_eq!(args.tls_port, 15443);
    }
}
