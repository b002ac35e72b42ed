//! The gateway's life cycle, in two halves around the host changes `main` makes:
//!
//! * [`Prepared::prepare`]: everything that can be checked is checked and every socket is
//!   bound before the host changes (policy, secrets, CA, audit log, listeners), so a bad
//!   configuration fails with nothing to undo, and redirected traffic always has a
//!   listener to land on once the firewall is in place.
//! * [`Prepared::serve`]: build the layers (DNS, upstream, relay, HTTP handler), spawn the
//!   listeners, say "ready", reload on SIGHUP, and drain on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bottleneck_dns::Pins;
use bottleneck_policy::Policy;
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

use crate::admission::Admission;
use crate::audit::Audit;
use crate::config::{Args, listen_addr, own_addresses};
use crate::dns::{self, PIN_CAPACITY};
use crate::firewall::FirewallConfig;
use crate::listen::Listeners;
use crate::proxy::{Bounds, Proxy};
use crate::relay::TcpRelay;
use crate::state::{PolicyHandle, Snapshot};
use crate::tls::ca::BottleCa;
use crate::tls::mint::LeafCache;
use crate::upstream::{Connector, Upstream, UpstreamConfig, resolvers};

/// Most leaf certificates kept minted.
const LEAF_CACHE: usize = 10_000;

/// Why the gateway cannot start or keep running. The binary maps each to an exit status.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is wrong (policy, secrets, CA, flags): exit 3, nothing changed.
    #[error("{0}")]
    Config(String),
    /// The host refused something (sockets, signals, runtime): exit 1.
    #[error("{0}")]
    Runtime(String),
}

fn config(e: impl std::fmt::Display) -> StartError {
    StartError::Config(e.to_string())
}

fn runtime(what: &str, e: impl std::fmt::Display) -> StartError {
    StartError::Runtime(format!("{what}: {e}"))
}

/// The bound sockets, still blocking-std until the runtime takes them.
struct Sockets {
    tls: std::net::TcpListener,
    http: std::net::TcpListener,
    relay: std::net::TcpListener,
    proxy: Option<std::net::TcpListener>,
    dns_udp: std::net::UdpSocket,
    dns_tcp: std::net::TcpListener,
}

/// A checked configuration with its sockets bound; nothing on the host changed yet.
pub struct Prepared {
    args: Args,
    policy_path: PathBuf,
    snapshot: Snapshot,
    resolvers: Vec<SocketAddr>,
    leaves: Arc<LeafCache>,
    audit: Audit,
    sockets: Sockets,
    firewall: FirewallConfig,
}

impl Prepared {
    /// Check the configuration and bind every listener.
    pub fn prepare(args: Args) -> Result<Prepared, StartError> {
        // clap enforces these when no subcommand is given.
        let (Some(policy_path), Some(agent_iface), Some(ca_dir)) = (
            args.policy.clone(),
            args.agent_iface.clone(),
            args.ca_dir.clone(),
        ) else {
            return Err(config("--policy, --agent-iface and --ca-dir are required"));
        };
        let policy = Policy::load(&policy_path).map_err(config)?;
        let tcp_ports: Vec<u16> = policy
            .routes()
            .iter()
            .flat_map(|r| r.tcp().iter().copied())
            .collect();
        let resolvers = resolvers(policy.dns_upstream()).map_err(config)?;
        let snapshot = Snapshot::new(policy, |name| std::env::var(name).ok()).map_err(config)?;
        let ca = Arc::new(BottleCa::load_or_create(&ca_dir).map_err(config)?);
        let audit = Audit::open(&args.audit_log)
            .map_err(|e| config(format!("audit log {}: {e}", args.audit_log.display())))?;
        let leaves = Arc::new(LeafCache::try_new(ca, LEAF_CACHE).map_err(config)?);
        let sockets = bind(&args)?;
        let firewall = FirewallConfig {
            agent_iface,
            http_port: args.http_port,
            tls_port: args.tls_port,
            dns_port: args.dns_port,
            tcp_relay_port: args.tcp_relay_port,
            tcp_ports,
            proxy_port: args.listen_proxy.map(|addr| addr.port()),
            upstream_mark: args.mark,
        };
        Ok(Prepared {
            args,
            policy_path,
            snapshot,
            resolvers,
            leaves,
            audit,
            sockets,
            firewall,
        })
    }

    /// The firewall this configuration needs (`main` installs it before serving).
    pub fn firewall(&self) -> &FirewallConfig {
        &self.firewall
    }

    /// The runtime's worker threads, if the configuration sets them.
    pub fn worker_threads(&self) -> Option<std::num::NonZeroUsize> {
        self.args.worker_threads
    }

    /// Build the layers, spawn the listeners, wait for a signal (SIGHUP reloads), drain.
    /// Must run inside a multi-threaded Tokio runtime.
    pub async fn serve(self) -> Result<(), StartError> {
        let Prepared {
            args,
            policy_path,
            snapshot,
            resolvers,
            leaves,
            audit,
            sockets,
            firewall: _,
        } = self;
        let listen = |e| runtime("cannot listen", e);
        let tls_listener = TcpListener::from_std(sockets.tls).map_err(listen)?;
        let http_listener = TcpListener::from_std(sockets.http).map_err(listen)?;
        let relay_listener = TcpListener::from_std(sockets.relay).map_err(listen)?;
        let proxy_listener = sockets
            .proxy
            .map(TcpListener::from_std)
            .transpose()
            .map_err(listen)?;
        let dns_udp = UdpSocket::from_std(sockets.dns_udp).map_err(listen)?;
        let dns_tcp = TcpListener::from_std(sockets.dns_tcp).map_err(listen)?;
        // Handlers first: a SIGHUP or SIGTERM that arrives once we say "ready" must not hit
        // the default action (which would kill the gateway without removing its firewall).
        let signals = |e| runtime("cannot install signal handlers", e);
        let mut hup = signal(SignalKind::hangup()).map_err(signals)?;
        let mut term = signal(SignalKind::terminate()).map_err(signals)?;
        let mut int = signal(SignalKind::interrupt()).map_err(signals)?;

        // Build: one policy handle, one resolver (the agent's DNS and the gateway's own
        // lookups share its cache), one connection bound across every listener.
        let handle = PolicyHandle::new(snapshot);
        let resolver = Arc::new(dns::resolver(resolvers, handle.clone()).map_err(config)?);
        let pins = Arc::new(Pins::new(PIN_CAPACITY));
        let admission = Admission::new(
            args.max_connections,
            args.max_connections_per_client,
            audit.clone(),
        );
        let mut dns_server = dns::start(
            resolver.clone(),
            audit.clone(),
            pins.clone(),
            vec![dns_udp],
            vec![dns_tcp],
        );
        let upstream_config = UpstreamConfig {
            extra_cas: args.upstream_ca.clone(),
            mark: args.mark,
            own_addrs: own_addresses(),
        };
        let upstream =
            Arc::new(Upstream::new(upstream_config, resolver, handle.clone()).map_err(config)?);
        let relay = Arc::new(TcpRelay {
            policy: handle.clone(),
            pins,
            upstream: upstream.clone(),
            audit: audit.clone(),
            admission: admission.clone(),
        });
        let proxy = Arc::new(Proxy::new(
            handle.clone(),
            Connector::new(upstream.clone()),
            audit,
            Bounds {
                upstream_idle: Duration::from_secs(args.upstream_idle_seconds),
                max_request_body: args.max_request_body_bytes,
            },
        ));
        let listeners = Arc::new(Listeners {
            proxy,
            upstream,
            leaves,
            admission,
        });

        // Spawn.
        let mut tasks = vec![
            tokio::spawn(listeners.clone().serve_tls(tls_listener)),
            tokio::spawn(listeners.clone().serve_http(http_listener)),
            tokio::spawn(relay.serve(relay_listener)),
        ];
        if let Some(listener) = proxy_listener {
            tasks.push(tokio::spawn(listeners.clone().serve_explicit(listener)));
        }
        tracing::info!(
            tls = args.tls_port,
            http = args.http_port,
            dns = args.dns_port,
            relay = args.tcp_relay_port,
            proxy = ?args.listen_proxy,
            "bottleneck-gateway ready"
        );

        // Wait for a signal; SIGHUP reloads.
        loop {
            tokio::select! {
                _ = hup.recv() => reload(&policy_path, &handle),
                _ = term.recv() => break,
                _ = int.recv() => break,
            }
        }

        // Drain: stop accepting, give open connections a bounded time.
        for task in &tasks {
            task.abort();
        }
        let _ = dns_server.shutdown_gracefully().await;
        listeners
            .admission
            .drain(Duration::from_secs(args.drain_seconds))
            .await;
        Ok(())
    }
}

/// Bind every listener (non-blocking, for the runtime to adopt later).
fn bind(args: &Args) -> Result<Sockets, StartError> {
    let tcp = |addr: SocketAddr| {
        std::net::TcpListener::bind(addr).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        })
    };
    let listen = |what: &str, addr: SocketAddr| {
        let what = format!("cannot listen for {what} on {addr}");
        move |e| runtime(&what, e)
    };
    let dns_addr = listen_addr(args.dns_port);
    let dns_udp = std::net::UdpSocket::bind(dns_addr)
        .and_then(|s| {
            s.set_nonblocking(true)?;
            Ok(s)
        })
        .map_err(listen("DNS (UDP)", dns_addr))?;
    Ok(Sockets {
        tls: tcp(listen_addr(args.tls_port)).map_err(listen("TLS", listen_addr(args.tls_port)))?,
        http: tcp(listen_addr(args.http_port))
            .map_err(listen("HTTP", listen_addr(args.http_port)))?,
        relay: tcp(listen_addr(args.tcp_relay_port))
            .map_err(listen("the TCP relay", listen_addr(args.tcp_relay_port)))?,
        proxy: match args.listen_proxy {
            Some(addr) => Some(tcp(addr).map_err(listen("the proxy", addr))?),
            None => None,
        },
        dns_udp,
        dns_tcp: tcp(dns_addr).map_err(listen("DNS (TCP)", dns_addr))?,
    })
}

/// Load the policy again; a broken one is refused and the one in force stays.
fn reload(path: &Path, handle: &PolicyHandle) {
    let loaded = Policy::load(path)
        .map_err(|e| e.to_string())
        .and_then(|policy| {
            Snapshot::new(policy, |name| std::env::var(name).ok()).map_err(|e| e.to_string())
        });
    match loaded {
        Ok(snapshot) => {
            handle.replace(snapshot);
            tracing::info!(policy = %path.display(), "policy reloaded");
        }
        Err(e) => {
            tracing::error!(policy = %path.display(), error = %e, "reload refused; the previous policy stays in force")
        }
    }
}
