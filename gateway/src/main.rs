//! `bottleneck-gateway`: config -> build -> spawn -> wait for a signal -> drain.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bottleneck_dns::Pins;
use bottleneck_gateway::audit::Audit;
use bottleneck_gateway::config::{Args, Command, listen_addr, own_addresses};
use bottleneck_gateway::dns::{self, PIN_CAPACITY};
use bottleneck_gateway::firewall::{self, FirewallConfig};
use bottleneck_gateway::listen::Listeners;
use bottleneck_gateway::privilege::keep_only_network_capabilities;
use bottleneck_gateway::proxy::Proxy;
use bottleneck_gateway::relay::TcpRelay;
use bottleneck_gateway::state::{PolicyHandle, Snapshot};
use bottleneck_gateway::tls::ca::BottleCa;
use bottleneck_gateway::tls::mint::LeafCache;
use bottleneck_gateway::upstream::{Connector, Upstream, UpstreamConfig, resolvers};
use bottleneck_policy::Policy;
use clap::Parser;
use tokio::net::{TcpListener, UdpSocket};
use tokio::signal::unix::{SignalKind, signal};

/// Exit status for configuration problems (policy, secrets, CA, flags).
const EXIT_CONFIG: u8 = 3;
/// Exit status for runtime failures (firewall, sockets).
const EXIT_RUNTIME: u8 = 1;

fn fail(code: u8, what: impl std::fmt::Display) -> ExitCode {
    eprintln!("bottleneck-gateway: {what}");
    ExitCode::from(code)
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BOTTLENECK_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    if let Some(Command::CaInit { ca_dir }) = &args.command {
        return match BottleCa::create(ca_dir) {
            Ok(ca) => {
                print!("{}", ca.cert_pem());
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_CONFIG, e),
        };
    }
    // clap enforces these when no subcommand is given.
    let (Some(policy_path), Some(agent_iface), Some(ca_dir)) = (
        args.policy.clone(),
        args.agent_iface.clone(),
        args.ca_dir.clone(),
    ) else {
        return fail(
            EXIT_CONFIG,
            "--policy, --agent-iface and --ca-dir are required",
        );
    };

    // Config: everything is validated before anything on the host changes.
    let policy = match Policy::load(&policy_path) {
        Ok(policy) => policy,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let tcp_ports: Vec<u16> = policy
        .routes()
        .iter()
        .flat_map(|r| r.tcp().iter().copied())
        .collect();
    let resolvers = match resolvers(policy.dns_upstream()) {
        Ok(resolvers) => resolvers,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let snapshot = match Snapshot::new(policy, |name| std::env::var(name).ok()) {
        Ok(snapshot) => snapshot,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let ca = match BottleCa::load_or_create(&ca_dir) {
        Ok(ca) => Arc::new(ca),
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    let audit = match Audit::open(&args.audit_log) {
        Ok(audit) => audit,
        Err(e) => {
            return fail(
                EXIT_CONFIG,
                format!("audit log {}: {e}", args.audit_log.display()),
            );
        }
    };
    let leaves = match LeafCache::try_new(ca, 10_000) {
        Ok(leaves) => Arc::new(leaves),
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    // Build: listeners first, so redirected traffic always has somewhere to land.
    let bind = |port| {
        std::net::TcpListener::bind(listen_addr(port)).and_then(|l| {
            l.set_nonblocking(true)?;
            Ok(l)
        })
    };
    let (tls_listener, http_listener, relay_listener) = match (
        bind(args.tls_port),
        bind(args.http_port),
        bind(args.tcp_relay_port),
    ) {
        (Ok(tls), Ok(http), Ok(relay)) => (tls, http, relay),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return fail(EXIT_RUNTIME, format!("cannot listen: {e}"));
        }
    };
    let proxy_listener = match args
        .listen_proxy
        .map(std::net::TcpListener::bind)
        .transpose()
    {
        Ok(listener) => listener,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot listen for the proxy: {e}")),
    };
    if let Some(listener) = &proxy_listener
        && let Err(e) = listener.set_nonblocking(true)
    {
        return fail(EXIT_RUNTIME, format!("cannot listen for the proxy: {e}"));
    }
    let dns_sockets = match bind(args.dns_port).and_then(|tcp| {
        let udp = std::net::UdpSocket::bind(listen_addr(args.dns_port))?;
        udp.set_nonblocking(true)?;
        Ok((udp, tcp))
    }) {
        Ok(sockets) => sockets,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot listen for DNS: {e}")),
    };
    let firewall_config = FirewallConfig {
        agent_iface,
        http_port: args.http_port,
        tls_port: args.tls_port,
        dns_port: args.dns_port,
        tcp_relay_port: args.tcp_relay_port,
        tcp_ports,
        proxy_port: args.listen_proxy.map(|addr| addr.port()),
        upstream_mark: args.mark,
    };
    if let Err(e) = firewall::enable_forwarding().and_then(|()| firewall::apply(&firewall_config)) {
        return fail(EXIT_RUNTIME, e);
    }
    for path in firewall::disable_redirects(&firewall_config.agent_iface) {
        tracing::warn!(path, "cannot turn off ICMP redirects towards the agent");
    }
    // Still one thread: capabilities are per thread, so this is the moment to shed them.
    if let Err(e) = keep_only_network_capabilities() {
        let _ = firewall::remove().and_then(|()| firewall::disable_forwarding());
        return fail(EXIT_RUNTIME, e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = firewall::remove().and_then(|()| firewall::disable_forwarding());
            return fail(EXIT_RUNTIME, format!("cannot start the runtime: {e}"));
        }
    };
    let ready = Ready {
        args,
        policy_path,
        snapshot,
        resolvers,
        leaves,
        audit,
        tls_listener,
        http_listener,
        relay_listener,
        proxy_listener,
        dns_sockets,
    };
    let code = runtime.block_on(ready.serve());
    // Fail closed: the table goes, and so does forwarding, or the agent would be routed out
    // unfiltered.
    let removed = firewall::remove().and_then(|()| firewall::disable_forwarding());
    match (code, removed) {
        (Ok(()), Ok(())) => {
            tracing::info!("bottleneck-gateway stopped");
            ExitCode::SUCCESS
        }
        (Err(code), _) => code,
        (Ok(()), Err(e)) => fail(EXIT_RUNTIME, e),
    }
}

/// Everything set up before the runtime starts.
struct Ready {
    args: Args,
    policy_path: std::path::PathBuf,
    snapshot: Snapshot,
    resolvers: Vec<std::net::SocketAddr>,
    leaves: Arc<LeafCache>,
    audit: Audit,
    tls_listener: std::net::TcpListener,
    http_listener: std::net::TcpListener,
    relay_listener: std::net::TcpListener,
    proxy_listener: Option<std::net::TcpListener>,
    dns_sockets: (std::net::UdpSocket, std::net::TcpListener),
}

impl Ready {
    /// Spawn the listeners, wait for a signal (SIGHUP reloads), drain.
    async fn serve(self) -> Result<(), ExitCode> {
        let Ready {
            args,
            policy_path,
            snapshot,
            resolvers,
            leaves,
            audit,
            tls_listener,
            http_listener,
            relay_listener,
            proxy_listener,
            dns_sockets: (dns_udp, dns_tcp),
        } = self;
        let listeners = (|| {
            Ok::<_, std::io::Error>((
                TcpListener::from_std(tls_listener)?,
                TcpListener::from_std(http_listener)?,
                TcpListener::from_std(relay_listener)?,
                proxy_listener.map(TcpListener::from_std).transpose()?,
                UdpSocket::from_std(dns_udp)?,
                TcpListener::from_std(dns_tcp)?,
            ))
        })();
        let (tls_listener, http_listener, relay_listener, proxy_listener, dns_udp, dns_tcp) =
            match listeners {
                Ok(listeners) => listeners,
                Err(e) => return Err(fail(EXIT_RUNTIME, format!("cannot listen: {e}"))),
            };
        // Handlers first: a SIGHUP or SIGTERM that arrives once we say "ready" must not hit
        // the default action (which would kill the gateway without removing its firewall).
        let (Ok(mut hup), Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::hangup()),
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return Err(fail(EXIT_RUNTIME, "cannot install signal handlers"));
        };
        let handle = PolicyHandle::new(snapshot);
        let resolver = match dns::resolver(resolvers, handle.clone()) {
            Ok(resolver) => Arc::new(resolver),
            Err(e) => return Err(fail(EXIT_CONFIG, e)),
        };
        let pins = Arc::new(Pins::new(PIN_CAPACITY));
        let connections = Arc::new(tokio::sync::Semaphore::new(args.max_connections));
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
        let upstream = match Upstream::new(upstream_config, resolver, handle.clone()) {
            Ok(upstream) => Arc::new(upstream),
            Err(e) => return Err(fail(EXIT_CONFIG, e)),
        };
        let relay = Arc::new(TcpRelay {
            policy: handle.clone(),
            pins,
            upstream: upstream.clone(),
            audit: audit.clone(),
            connections: connections.clone(),
        });
        let proxy = Arc::new(Proxy::new(
            handle.clone(),
            Connector::new(upstream.clone()),
            audit,
        ));
        let listeners = Arc::new(Listeners {
            proxy,
            upstream,
            leaves,
            connections,
        });

        // Spawn.
        let tls_task = tokio::spawn(listeners.clone().serve_tls(tls_listener));
        let http_task = tokio::spawn(listeners.clone().serve_http(http_listener));
        let relay_task = tokio::spawn(relay.serve(relay_listener));
        let proxy_task = proxy_listener.map(|l| tokio::spawn(listeners.clone().serve_explicit(l)));
        tracing::info!(
            tls = args.tls_port,
            http = args.http_port,
            dns = args.dns_port,
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
        tls_task.abort();
        http_task.abort();
        relay_task.abort();
        if let Some(task) = proxy_task {
            task.abort();
        }
        let _ = dns_server.shutdown_gracefully().await;
        let drain = Duration::from_secs(args.drain_seconds);
        let all = u32::try_from(args.max_connections).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(drain, listeners.connections.acquire_many(all)).await;
        Ok(())
    }
}

fn reload(path: &std::path::Path, handle: &PolicyHandle) {
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
