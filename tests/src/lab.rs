//! The [`Lab`]: three namespaces wired as agent - gateway - wan, with the wan servers
//! running in-process, and everything removed on drop.
//!
//! Building a lab sweeps leftovers of dead test processes, creates the namespaces and the
//! two veth pairs (directly inside the namespaces, never in the root namespace), assigns
//! the addresses of [`crate::addr`], sets forwarding according to the [`GatewayMode`],
//! and binds the wan servers from a thread that entered the wan namespace. The servers
//! run on a tokio runtime the lab owns; dropping the lab shuts it down, deletes the
//! namespaces (their veths go with them) and removes the lab's temporary directory.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::fs;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::ServerConfig;
use tokio::runtime::Runtime;
use tokio_rustls::TlsAcceptor;

use crate::addr::*;
use crate::ca::{SniResolver, TestCa};
use crate::dns::{self, DnsReply, DnsServer, RecordType, Transport};
use crate::echo::{self, EchoServers};
use crate::error::{LabError, Result};
use crate::exec::Exec;
use crate::http::{self, HttpOrigin};
use crate::netns::{self, Namespaces};
use crate::process::ExecOutput;

/// How the gateway namespace treats traffic between the agent and the wan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GatewayMode {
    /// A plain router: IPv4 and IPv6 forwarding on (inside the gateway namespace only).
    Router,
    /// No forwarding: nothing crosses unless a process in the gateway (e.g.
    /// `bottleneck-gateway`) relays it.
    Bare,
}

/// One of the lab's three network namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// The sandbox: one interface, default routes via the gateway.
    Agent,
    /// The dual-homed gateway.
    Gateway,
    /// The simulated internet: DNS, HTTPS/HTTP origins, echo servers.
    Wan,
}

impl Host {
    /// All three hosts.
    pub const ALL: [Host; 3] = [Host::Agent, Host::Gateway, Host::Wan];

    /// The role suffix of the namespace name (`agent`, `gw`, `wan`).
    pub fn role(self) -> &'static str {
        match self {
            Host::Agent => "agent",
            Host::Gateway => "gw",
            Host::Wan => "wan",
        }
    }

    fn index(self) -> usize {
        match self {
            Host::Agent => 0,
            Host::Gateway => 1,
            Host::Wan => 2,
        }
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.role())
    }
}

/// The default resolv.conf of every lab host: the lab's DNS server, failing fast.
pub fn default_resolv_conf() -> String {
    format!(
        "# bottleneck lab\nnameserver {DNS_V4}\nnameserver {DNS_V6}\noptions timeout:2 attempts:2\n"
    )
}

/// Options for building a [`Lab`].
#[derive(Clone, Debug)]
#[must_use = "call .build()"]
pub struct LabBuilder {
    mode: GatewayMode,
    resolv: [Option<String>; 3],
}

impl LabBuilder {
    /// Chooses the gateway mode (default [`GatewayMode::Router`]).
    pub fn mode(mut self, mode: GatewayMode) -> Self {
        self.mode = mode;
        self
    }

    /// Sets the resolv.conf that commands on `host` see (default:
    /// [`default_resolv_conf`]). Can also be changed later with [`Lab::set_resolv_conf`].
    pub fn resolv_conf(mut self, host: Host, contents: impl Into<String>) -> Self {
        self.resolv[host.index()] = Some(contents.into());
        self
    }

    /// Builds the lab: namespaces, links, addresses, routes, servers.
    pub fn build(self) -> Result<Lab> {
        Lab::build(self)
    }
}

/// A temporary directory removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn create(path: PathBuf) -> Result<Self> {
        if path.exists() {
            // Left by an earlier process that had our pid; it is not in use.
            fs::remove_dir_all(&path)
                .map_err(|e| LabError::io(format!("removing stale {}", path.display()), e))?;
        }
        fs::create_dir(&path)
            .map_err(|e| LabError::io(format!("creating {}", path.display()), e))?;
        let dir = TempDir(path);
        set_mode(&dir.0, 0o755)?;
        Ok(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("bnlab: teardown: removing {}: {e}", self.0.display());
        }
    }
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| LabError::io(format!("chmod {mode:o} {}", path.display()), e))
}

fn write_file(path: &Path, contents: &[u8]) -> Result<()> {
    fs::write(path, contents)
        .map_err(|e| LabError::io(format!("writing {}", path.display()), e))?;
    set_mode(path, 0o644)
}

/// The machine's nsswitch.conf with the `hosts:` line forced to `files dns`, so a lab
/// command's name lookups can only reach the lab's resolv.conf (never, say, a
/// systemd-resolved stub that would ask the machine's own resolver).
fn lab_nsswitch(original: &str) -> String {
    let mut out: String = original
        .lines()
        .filter(|l| !l.trim_start().starts_with("hosts:"))
        .map(|l| format!("{l}\n"))
        .collect();
    out.push_str("hosts: files dns\n");
    out
}

/// A network lab: agent, gateway and wan namespaces plus the wan servers.
///
/// ```no_run
/// use bottleneck_lab::{GatewayMode, Host, Lab};
///
/// if !bottleneck_lab::require_root("my_test") {
///     return;
/// }
/// let lab = Lab::new(GatewayMode::Router).expect("lab");
/// let ca = lab.ca_pem_path().display().to_string();
/// let out = lab
///     .exec(Host::Agent, &["curl", "-sS", "--cacert", &ca, "https://allowed.test/echo"])
///     .expect("curl ran");
/// assert!(out.success(), "{out:?}");
/// assert_eq!(lab.https().requests(), 1);
/// ```
pub struct Lab {
    id: String,
    mode: GatewayMode,
    // Field order is teardown order after `Drop::drop` has stopped the runtime.
    runtime: Option<Runtime>,
    namespaces: Namespaces,
    names: [String; 3],
    dns: DnsServer,
    https: HttpOrigin,
    http: HttpOrigin,
    echo: EchoServers,
    ca: Arc<TestCa>,
    ca_pem: PathBuf,
    resolv: [PathBuf; 3],
    mounts: Vec<(PathBuf, PathBuf)>,
    home: PathBuf,
    dir: TempDir,
}

impl fmt::Debug for Lab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lab")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .field("namespaces", &self.names)
            .field("dir", &self.dir.0)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Options for a lab, starting from [`GatewayMode::Router`] and the default
    /// resolv.conf.
    pub fn builder() -> LabBuilder {
        LabBuilder {
            mode: GatewayMode::Router,
            resolv: [None, None, None],
        }
    }

    /// Builds a lab with the given gateway mode and default options.
    pub fn new(mode: GatewayMode) -> Result<Lab> {
        Lab::builder().mode(mode).build()
    }

    fn build(options: LabBuilder) -> Result<Lab> {
        netns::sweep_stale();
        let id = netns::next_stem();
        let names = Host::ALL.map(|h| format!("{id}-{}", h.role()));

        // Files first: cheap to undo (TempDir's drop) if a later step fails.
        let dir = TempDir::create(std::env::temp_dir().join(&id))?;
        let ca = Arc::new(TestCa::new(&id)?);
        let ca_pem = dir.0.join("ca.pem");
        write_file(&ca_pem, ca.cert_pem().as_bytes())?;
        let home = dir.0.join("home");
        fs::create_dir(&home)
            .map_err(|e| LabError::io(format!("creating {}", home.display()), e))?;
        set_mode(&home, 0o1777)?;
        let resolv = Host::ALL.map(|h| dir.0.join(format!("resolv-{}.conf", h.role())));
        for host in Host::ALL {
            let contents = options.resolv[host.index()]
                .clone()
                .unwrap_or_else(default_resolv_conf);
            write_file(&resolv[host.index()], contents.as_bytes())?;
        }
        let hosts = dir.0.join("hosts");
        write_file(
            &hosts,
            b"127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n",
        )?;
        let mut mounts = vec![(hosts, PathBuf::from("/etc/hosts"))];
        if let Ok(original) = fs::read_to_string("/etc/nsswitch.conf") {
            let nss = dir.0.join("nsswitch.conf");
            write_file(&nss, lab_nsswitch(&original).as_bytes())?;
            mounts.push((nss, PathBuf::from("/etc/nsswitch.conf")));
        }

        let namespaces = Namespaces::create(&names)?;
        let [agent, gw, wan] = &names;
        configure_network(options.mode, agent, gw, wan)?;

        let mut lab = Lab {
            id,
            mode: options.mode,
            runtime: None,
            namespaces,
            names: names.clone(),
            dns: DnsServer::with_default_zone(),
            https: HttpOrigin::default(),
            http: HttpOrigin::default(),
            echo: EchoServers::default(),
            ca,
            ca_pem,
            resolv,
            mounts,
            home,
            dir,
        };
        lab.start_servers()?;
        Ok(lab)
    }

    /// Binds every wan socket from inside the wan namespace, then serves them on a
    /// runtime owned by the lab.
    fn start_servers(&mut self) -> Result<()> {
        let sockets = netns::run_in(self.namespace(Host::Wan), bind_wan_sockets)??;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(format!("{}-srv", self.id))
            .enable_all()
            .build()
            .map_err(|e| LabError::io("starting the lab's server runtime", e))?;
        let resolver = SniResolver::new(
            self.ca.clone(),
            &[
                "allowed.test",
                "*.allowed.test",
                "denied.test",
                "rebind.test",
                "cname.test",
                "private.test",
                "http.test",
                "198.51.100.10",
                "203.0.113.10",
                "2001:db8:100::10",
                "2001:db8:203::10",
            ],
        )?;
        let mut tls =
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_cert_resolver(Arc::new(resolver));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let _entered = runtime.enter();
        let tcp = |l: TcpListener, what: &str| -> Result<tokio::net::TcpListener> {
            tokio::net::TcpListener::from_std(l)
                .map_err(|e| LabError::io(format!("registering the {what} listener"), e))
        };
        let udp = |s: UdpSocket, what: &str| -> Result<tokio::net::UdpSocket> {
            tokio::net::UdpSocket::from_std(s)
                .map_err(|e| LabError::io(format!("registering the {what} socket"), e))
        };
        for s in sockets.dns_udp {
            runtime.spawn(dns::serve_udp(self.dns.clone(), udp(s, "DNS")?));
        }
        for l in sockets.dns_tcp {
            runtime.spawn(dns::serve_tcp(self.dns.clone(), tcp(l, "DNS")?));
        }
        for l in sockets.https {
            runtime.spawn(http::serve(
                tcp(l, "HTTPS")?,
                Some(acceptor.clone()),
                self.https.clone(),
            ));
        }
        for l in sockets.http {
            runtime.spawn(http::serve(tcp(l, "HTTP")?, None, self.http.clone()));
        }
        for l in sockets.echo_tcp {
            runtime.spawn(echo::serve_tcp(self.echo.clone(), tcp(l, "TCP echo")?));
        }
        for s in sockets.echo_udp {
            runtime.spawn(echo::serve_udp(self.echo.clone(), udp(s, "UDP echo")?));
        }
        drop(_entered);
        self.runtime = Some(runtime);
        Ok(())
    }

    /// This lab's unique id (`bnlab-<pid>-<n>`), the stem of its namespace names.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The gateway mode the lab was built with.
    pub fn mode(&self) -> GatewayMode {
        self.mode
    }

    /// The name of `host`'s network namespace (for `ip netns exec` / `ip -n`).
    pub fn namespace(&self, host: Host) -> &str {
        &self.names[host.index()]
    }

    /// The names of all three namespaces.
    pub fn namespaces(&self) -> &[String; 3] {
        &self.names
    }

    /// The path of `host`'s namespace handle (`/run/netns/NAME`), for `setns(2)`.
    pub fn netns_path(&self, host: Host) -> PathBuf {
        netns::netns_path(self.namespace(host))
    }

    /// The lab's temporary directory (removed on drop); world-readable.
    pub fn dir(&self) -> &Path {
        &self.dir.0
    }

    /// The `HOME` of commands run in the lab (mode 1777, inside [`Lab::dir`]).
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The test CA that signs the HTTPS origins' certificates.
    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA certificate as a PEM file (world-readable), e.g. for `curl --cacert`.
    pub fn ca_pem_path(&self) -> &Path {
        &self.ca_pem
    }

    /// The lab's DNS server: its zone and query counters.
    pub fn dns(&self) -> &DnsServer {
        &self.dns
    }

    /// The HTTPS origins (port 443 on [`HTTPS_ORIGINS`]): counters and request log.
    pub fn https(&self) -> &HttpOrigin {
        &self.https
    }

    /// The plain-HTTP origins (port 80 on [`HTTP_ORIGINS`]): counters and request log.
    pub fn http(&self) -> &HttpOrigin {
        &self.http
    }

    /// The TCP/UDP echo servers' counters.
    pub fn echo(&self) -> &EchoServers {
        &self.echo
    }

    /// The file bind-mounted over `/etc/resolv.conf` for commands on `host`.
    pub fn resolv_conf_path(&self, host: Host) -> &Path {
        &self.resolv[host.index()]
    }

    /// Replaces the resolv.conf that later commands on `host` see (e.g. to point the
    /// agent at the gateway once a gateway runs there).
    pub fn set_resolv_conf(&self, host: Host, contents: &str) -> Result<()> {
        write_file(self.resolv_conf_path(host), contents.as_bytes())
    }

    /// A command to run on `host`, to be configured (user, env, timeout...) and then
    /// `.run()` or `.spawn()`.
    pub fn command<S: AsRef<OsStr>>(&self, host: Host, argv: &[S]) -> Exec {
        let mut mounts = vec![(
            self.resolv_conf_path(host).to_owned(),
            PathBuf::from("/etc/resolv.conf"),
        )];
        mounts.extend(self.mounts.iter().cloned());
        Exec::new(
            self.namespace(host).to_owned(),
            mounts,
            self.home.clone(),
            argv.iter()
                .map(|a| a.as_ref().to_owned())
                .collect::<Vec<OsString>>(),
        )
    }

    /// Runs `argv` on `host` as root with the default deadline and returns its output
    /// (a non-zero exit is not an error; check [`ExecOutput::success`]).
    pub fn exec<S: AsRef<OsStr>>(&self, host: Host, argv: &[S]) -> Result<ExecOutput> {
        self.command(host, argv).run()
    }

    /// Runs `f` on a fresh thread inside `host`'s network namespace and returns its
    /// result; sockets created there stay in that namespace.
    pub fn run_in<T, F>(&self, host: Host, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        netns::run_in(self.namespace(host), f)
    }

    /// Sends one DNS query from `host` to `server` (UDP, 3 s deadline).
    pub fn dns_query(
        &self,
        host: Host,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
    ) -> Result<DnsReply> {
        self.dns_query_with(host, server, name, rtype, Transport::Udp)
    }

    /// Sends one DNS query from `host` to `server` over `transport` (3 s deadline).
    pub fn dns_query_with(
        &self,
        host: Host,
        server: SocketAddr,
        name: &str,
        rtype: RecordType,
        transport: Transport,
    ) -> Result<DnsReply> {
        let name = name.to_owned();
        self.run_in(host, move || {
            dns::query(server, &name, rtype, transport, Duration::from_secs(3))
        })?
    }

    /// Waits until a TCP connection from `host` to `addr` succeeds (e.g. a gateway that
    /// was just spawned is listening), polling every 20 ms up to `timeout`.
    pub fn wait_for_tcp(&self, host: Host, addr: SocketAddr, timeout: Duration) -> Result<()> {
        self.run_in(host, move || {
            let deadline = Instant::now() + timeout;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                let attempt = left
                    .min(Duration::from_millis(500))
                    .max(Duration::from_millis(1));
                if TcpStream::connect_timeout(&addr, attempt).is_ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    return Err(LabError::Timeout {
                        what: format!("a TCP listener at {addr}"),
                        after: timeout,
                    });
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })?
    }
}

impl Drop for Lab {
    /// Stops the servers, deletes the namespaces (and with them the veths), removes the
    /// temporary directory. Runs during a panic unwind too; never panics itself.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            if tokio::runtime::Handle::try_current().is_ok() {
                // Blocking inside another runtime is not allowed; tasks are dropped
                // right after, on the runtime's own threads.
                runtime.shutdown_background();
            } else {
                runtime.shutdown_timeout(Duration::from_secs(2));
            }
        }
        for e in self.namespaces.delete_all() {
            eprintln!("bnlab: teardown of {}: {e}", self.id);
        }
        // `dir` (TempDir) is removed when the fields drop.
    }
}

/// Sockets bound inside the wan namespace.
#[derive(Debug, Default)]
struct WanSockets {
    dns_udp: Vec<UdpSocket>,
    dns_tcp: Vec<TcpListener>,
    https: Vec<TcpListener>,
    http: Vec<TcpListener>,
    echo_tcp: Vec<TcpListener>,
    echo_udp: Vec<UdpSocket>,
}

fn bind_wan_sockets() -> Result<WanSockets> {
    fn tcp(ip: IpAddr, port: u16) -> Result<TcpListener> {
        let addr = SocketAddr::new(ip, port);
        let l = TcpListener::bind(addr)
            .map_err(|e| LabError::io(format!("binding {addr}/tcp in the wan namespace"), e))?;
        l.set_nonblocking(true)
            .map_err(|e| LabError::io(format!("setting {addr}/tcp non-blocking"), e))?;
        Ok(l)
    }
    fn udp(ip: IpAddr, port: u16) -> Result<UdpSocket> {
        let addr = SocketAddr::new(ip, port);
        let s = UdpSocket::bind(addr)
            .map_err(|e| LabError::io(format!("binding {addr}/udp in the wan namespace"), e))?;
        s.set_nonblocking(true)
            .map_err(|e| LabError::io(format!("setting {addr}/udp non-blocking"), e))?;
        Ok(s)
    }
    let dns_ips = [IpAddr::V4(DNS_V4), IpAddr::V6(DNS_V6)];
    let echo_ips = [IpAddr::V4(ECHO_V4), IpAddr::V6(ECHO_V6)];
    let mut s = WanSockets::default();
    for ip in dns_ips {
        s.dns_udp.push(udp(ip, DNS_PORT)?);
        s.dns_tcp.push(tcp(ip, DNS_PORT)?);
    }
    for ip in HTTPS_ORIGINS {
        s.https.push(tcp(ip, HTTPS_PORT)?);
    }
    for ip in HTTP_ORIGINS {
        s.http.push(tcp(ip, HTTP_PORT)?);
    }
    for ip in echo_ips {
        s.echo_tcp.push(tcp(ip, ECHO_PORT)?);
        s.echo_udp.push(udp(ip, ECHO_PORT)?);
    }
    Ok(s)
}

fn cidr4(addr: std::net::Ipv4Addr, len: u8) -> String {
    format!("{addr}/{len}")
}

fn cidr6(addr: std::net::Ipv6Addr, len: u8) -> String {
    format!("{addr}/{len}")
}

/// Creates the veth pairs inside the namespaces and configures addresses, routes and
/// forwarding. Nothing here touches the root namespace.
fn configure_network(mode: GatewayMode, agent: &str, gw: &str, wan: &str) -> Result<()> {
    // Before any link exists, so the links inherit it: no duplicate address detection
    // (addresses usable at once, including link-local ones).
    let no_dad = [
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ];
    let forwarding = match mode {
        GatewayMode::Router => "1",
        GatewayMode::Bare => "0",
    };
    for (ns, fwd) in [(agent, "0"), (gw, forwarding), (wan, "0")] {
        let mut settings = no_dad.to_vec();
        // New namespaces may inherit ip_forward=1 from the machine: always set it.
        settings.push(("net.ipv4.ip_forward", fwd));
        settings.push(("net.ipv6.conf.all.forwarding", fwd));
        netns::sysctl(ns, &settings)?;
    }

    let p = |(a, l): (std::net::Ipv4Addr, u8)| cidr4(a, l);
    let p6 = |(a, l): (std::net::Ipv6Addr, u8)| cidr6(a, l);
    let gw_batch = [
        format!("link add eth1 type veth peer name eth0 netns {agent}"),
        format!("link add eth0 type veth peer name eth0 netns {wan}"),
        "link set lo up".to_owned(),
        "link set eth0 up".to_owned(),
        "link set eth1 up".to_owned(),
        format!(
            "addr add {} dev eth1",
            cidr4(GATEWAY_AGENT_V4, AGENT_NET_V4.1)
        ),
        format!(
            "addr add {} dev eth1 nodad",
            cidr6(GATEWAY_AGENT_V6, AGENT_NET_V6.1)
        ),
        format!("addr add {} dev eth0", cidr4(GATEWAY_WAN_V4, WAN_NET_V4.1)),
        format!(
            "addr add {} dev eth0 nodad",
            cidr6(GATEWAY_WAN_V6, WAN_NET_V6.1)
        ),
        format!("route add {} via {WAN_V4}", p(OTHER_NET_V4)),
        format!("route add {} via {WAN_V6}", p6(OTHER_NET_V6)),
    ];
    netns::ip(&["-n", gw, "-batch", "-"], Some(gw_batch.join("\n") + "\n"))?;

    let agent_batch = [
        "link set lo up".to_owned(),
        "link set eth0 up".to_owned(),
        format!("addr add {} dev eth0", cidr4(AGENT_V4, AGENT_NET_V4.1)),
        format!(
            "addr add {} dev eth0 nodad",
            cidr6(AGENT_V6, AGENT_NET_V6.1)
        ),
        format!("route add default via {GATEWAY_AGENT_V4}"),
        format!("route add default via {GATEWAY_AGENT_V6}"),
    ];
    netns::ip(
        &["-n", agent, "-batch", "-"],
        Some(agent_batch.join("\n") + "\n"),
    )?;

    let mut wan_batch = vec![
        "link set lo up".to_owned(),
        "link set eth0 up".to_owned(),
        format!("addr add {} dev eth0", cidr4(WAN_V4, WAN_NET_V4.1)),
        format!("addr add {} dev eth0 nodad", cidr6(WAN_V6, WAN_NET_V6.1)),
    ];
    for ip in [DNS_V4, ORIGIN_V4, HTTP_ORIGIN_V4, ECHO_V4] {
        wan_batch.push(format!("addr add {} dev eth0", cidr4(ip, WAN_NET_V4.1)));
    }
    wan_batch.push(format!(
        "addr add {} dev eth0",
        cidr4(OTHER_ORIGIN_V4, OTHER_NET_V4.1)
    ));
    for ip in [DNS_V6, ORIGIN_V6, HTTP_ORIGIN_V6, ECHO_V6] {
        wan_batch.push(format!(
            "addr add {} dev eth0 nodad",
            cidr6(ip, WAN_NET_V6.1)
        ));
    }
    wan_batch.push(format!(
        "addr add {} dev eth0 nodad",
        cidr6(OTHER_ORIGIN_V6, 64)
    ));
    wan_batch.push(format!(
        "route add {} via {GATEWAY_WAN_V4}",
        p(AGENT_RANGE_V4)
    ));
    wan_batch.push(format!(
        "route add {} via {GATEWAY_WAN_V6}",
        p6(AGENT_NET_V6)
    ));
    netns::ip(
        &["-n", wan, "-batch", "-"],
        Some(wan_batch.join("\n") + "\n"),
    )?;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn nsswitch_hosts_line_is_replaced() {
        let out = lab_nsswitch("passwd: files\nhosts: files resolve [!UNAVAIL=return] dns\n");
        assert_eq!(out, "passwd: files\nhosts: files dns\n");
    }

    #[test]
    fn default_resolv_conf_names_only_the_lab_server() {
        let conf = default_resolv_conf();
        assert!(conf.contains("nameserver 198.51.100.53"));
        assert!(!conf.contains("192.0.2."));
    }
}
