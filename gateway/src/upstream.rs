//! The upstream side: resolve the name the policy checked, vet every address, dial exactly
//! a vetted one (never the agent's original destination on trust), and speak verified TLS.
//!
//! [`Connector`] plugs this into hyper's pooled client, so every upstream HTTP connection —
//! and the TLS passthrough splice — goes through the same resolution and vetting.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bottleneck_dns::Resolver;
use bottleneck_policy::addr::classify;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::state::PolicyHandle;

/// How long one TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the upstream TLS handshake may take.
const TLS_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a name lookup may take.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why no upstream connection was made. Each maps to 502 for the agent.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The name did not resolve.
    #[error("`{host}` did not resolve: {reason}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's message.
        reason: String,
    },
    /// Every address of the name is one the gateway may not dial.
    #[error(
        "`{host}` resolves only to addresses the gateway may not dial: {refused}; add the range to `allow_ranges` if this is intended"
    )]
    Refused {
        /// The name.
        host: String,
        /// Each refused address with its class.
        refused: String,
    },
    /// Connecting to every vetted address failed.
    #[error("cannot connect to `{host}` ({addr}): {source}")]
    Connect {
        /// The name.
        host: String,
        /// The last address tried.
        addr: SocketAddr,
        /// The socket error.
        #[source]
        source: io::Error,
    },
    /// The upstream TLS handshake failed (including certificate verification).
    #[error("TLS to `{host}` ({addr}) failed: {source}")]
    Tls {
        /// The name.
        host: String,
        /// The address.
        addr: SocketAddr,
        /// The TLS error.
        #[source]
        source: io::Error,
    },
    /// The request URI had no usable host (a bug in the caller).
    #[error("upstream URI has no host")]
    NoHost,
}

/// Settings for [`Upstream::new`].
#[derive(Debug, Clone, Default)]
pub struct UpstreamConfig {
    /// Extra CA certificates (PEM files) trusted for upstream TLS besides the system roots.
    pub extra_cas: Vec<PathBuf>,
    /// SO_MARK value for upstream sockets, so nftables never redirects them back to us.
    pub mark: u32,
    /// The gateway's own addresses: never dialled (no proxy loops).
    pub own_addrs: Vec<IpAddr>,
}

/// Problems building the upstream side at start-up.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamSetupError {
    /// An `--upstream-ca` file could not be read or holds no certificate.
    #[error("upstream CA file {}: {reason}", path.display())]
    Ca {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No resolver is configured and /etc/resolv.conf names none.
    #[error("no upstream resolver: the policy has no `dns.upstream` and {} names no nameserver", path.display())]
    NoResolver {
        /// The resolv.conf read.
        path: PathBuf,
    },
    /// The TLS client configuration could not be built.
    #[error("cannot build the upstream TLS configuration: {0}")]
    Tls(String),
}

/// Resolves, vets and dials upstreams. Shared by every connection.
pub struct Upstream {
    /// The DNS server's resolver: one cache for the agent's queries and the gateway's.
    resolver: Arc<Resolver>,
    tls: TlsConnector,
    /// The same, offering only HTTP/1.1: upgrades (WebSocket) exist only there.
    tls_h1: TlsConnector,
    mark: u32,
    own_addrs: Vec<IpAddr>,
    policy: PolicyHandle,
}

impl Upstream {
    /// Build the TLS client configuration; names are resolved with `resolver`.
    pub fn new(
        config: UpstreamConfig,
        resolver: Arc<Resolver>,
        policy: PolicyHandle,
    ) -> Result<Upstream, UpstreamSetupError> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for path in &config.extra_cas {
            let ca_err = |reason: String| UpstreamSetupError::Ca {
                path: path.clone(),
                reason,
            };
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| ca_err(e.to_string()))?
                .collect::<Result<_, _>>()
                .map_err(|e| ca_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(ca_err("no PEM certificate in the file".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            }
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamSetupError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut tls_h1 = tls.clone();
        tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Upstream {
            resolver,
            tls: TlsConnector::from(Arc::new(tls)),
            tls_h1: TlsConnector::from(Arc::new(tls_h1)),
            mark: config.mark,
            own_addrs: config.own_addrs,
            policy,
        })
    }

    /// Resolve `host` and keep only the addresses the policy lets the gateway dial.
    pub async fn vetted_addrs(&self, host: &str) -> Result<Vec<IpAddr>, UpstreamError> {
        let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, self.resolver.lookup_ip(host))
            .await
            .map_err(|_| UpstreamError::Resolve {
                host: host.to_owned(),
                reason: format!("no answer within {RESOLVE_TIMEOUT:?}"),
            })?
            .map_err(|e| UpstreamError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?;
        let mut vetted = Vec::new();
        let mut refused = Vec::new();
        for ip in lookup {
            match self.vet(ip) {
                Ok(()) => vetted.push(ip),
                Err(why) => refused.push(format!("{ip} ({why})")),
            }
        }
        if vetted.is_empty() {
            if refused.is_empty() {
                return Err(UpstreamError::Resolve {
                    host: host.to_owned(),
                    reason: "no addresses".into(),
                });
            }
            return Err(UpstreamError::Refused {
                host: host.to_owned(),
                refused: refused.join(", "),
            });
        }
        Ok(vetted)
    }

    /// Whether the gateway may dial `ip`: never itself, and only address classes the
    /// policy permits (global, or covered by `allow_ranges`). The error names the class.
    pub fn vet(&self, ip: IpAddr) -> Result<(), String> {
        if self.own_addrs.contains(&ip) || self.own_addrs.contains(&ip.to_canonical()) {
            return Err("the gateway itself".into());
        }
        if self.policy.current().policy.permits_address(ip) {
            Ok(())
        } else {
            Err(classify(ip).to_string())
        }
    }

    /// Connect to exactly `addr` for `host` (the TCP relay's pinned address), after
    /// vetting it like any resolved address.
    pub async fn connect_addr(
        &self,
        host: &str,
        addr: SocketAddr,
    ) -> Result<TcpStream, UpstreamError> {
        let ip = addr.ip().to_canonical();
        if let Err(why) = self.vet(ip) {
            return Err(UpstreamError::Refused {
                host: host.to_owned(),
                refused: format!("{ip} ({why})"),
            });
        }
        let addr = SocketAddr::new(ip, addr.port());
        self.dial(addr)
            .await
            .map_err(|source| UpstreamError::Connect {
                host: host.to_owned(),
                addr,
                source,
            })
    }

    /// Connect to a vetted address of `host` (trying each in turn).
    pub async fn connect_tcp(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), UpstreamError> {
        let addrs = self.vetted_addrs(host).await?;
        let mut last = None;
        for ip in addrs {
            let addr = SocketAddr::new(ip, port);
            match self.dial(addr).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => last = Some((addr, e)),
            }
        }
        let (addr, source) = last.unwrap_or_else(|| {
            (
                SocketAddr::new(IpAddr::from([0, 0, 0, 0]), port),
                io::Error::other("no address"),
            )
        });
        Err(UpstreamError::Connect {
            host: host.to_owned(),
            addr,
            source,
        })
    }

    /// Connect and complete verified TLS for `host`.
    pub async fn connect_tls(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TlsStream<TcpStream>, SocketAddr), UpstreamError> {
        self.connect_tls_with(&self.tls, host, port).await
    }

    /// [`Upstream::connect_tls`] offering only HTTP/1.1 in ALPN (for upgrades).
    pub async fn connect_tls_h1(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TlsStream<TcpStream>, SocketAddr), UpstreamError> {
        self.connect_tls_with(&self.tls_h1, host, port).await
    }

    async fn connect_tls_with(
        &self,
        connector: &TlsConnector,
        host: &str,
        port: u16,
    ) -> Result<(TlsStream<TcpStream>, SocketAddr), UpstreamError> {
        let (tcp, addr) = self.connect_tcp(host, port).await?;
        let tls_err = |source| UpstreamError::Tls {
            host: host.to_owned(),
            addr,
            source,
        };
        let name = ServerName::try_from(host.to_owned())
            .map_err(|e| tls_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
        let stream = tokio::time::timeout(TLS_TIMEOUT, connector.connect(name, tcp))
            .await
            .map_err(|_| {
                tls_err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "handshake timed out",
                ))
            })?
            .map_err(tls_err)?;
        Ok((stream, addr))
    }

    async fn dial(&self, addr: SocketAddr) -> io::Result<TcpStream> {
        let socket = match addr {
            SocketAddr::V4(_) => TcpSocket::new_v4()?,
            SocketAddr::V6(_) => TcpSocket::new_v6()?,
        };
        if self.mark != 0 {
            crate::firewall::sockopt::set_mark(&socket, self.mark)?;
        }
        socket.set_nodelay(true)?;
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
        Ok(stream)
    }
}

/// The resolvers the gateway asks: the policy's `dns.upstream` if it names any, else the
/// nameservers of the gateway's own /etc/resolv.conf. Used for the gateway's own lookups
/// and by the DNS server for the agent's.
pub fn resolvers(configured: &[SocketAddr]) -> Result<Vec<SocketAddr>, UpstreamSetupError> {
    if !configured.is_empty() {
        return Ok(configured.to_vec());
    }
    let path = Path::new("/etc/resolv.conf");
    let found = nameservers_from_resolv_conf(&std::fs::read_to_string(path).unwrap_or_default());
    if found.is_empty() {
        return Err(UpstreamSetupError::NoResolver {
            path: path.to_owned(),
        });
    }
    Ok(found)
}

/// The `nameserver` lines of a resolv.conf, port 53.
pub fn nameservers_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(addr)) => addr
                    .split('%')
                    .next()
                    .and_then(|a| a.parse::<IpAddr>().ok())
                    .map(|ip| SocketAddr::new(ip, 53)),
                _ => None,
            }
        })
        .collect()
}

/// A connection from [`Connector`]: plain TCP for `http://`, verified TLS for `https://`.
pub enum UpstreamStream {
    /// Plain TCP.
    Plain(TcpStream, SocketAddr),
    /// TLS over TCP.
    Tls(Box<TlsStream<TcpStream>>, SocketAddr),
}

impl UpstreamStream {
    /// The vetted address this connection goes to.
    pub fn addr(&self) -> SocketAddr {
        match self {
            UpstreamStream::Plain(_, addr) | UpstreamStream::Tls(_, addr) => *addr,
        }
    }
}

/// The vetted address a response came from, found in the response's extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpstreamAddr(pub SocketAddr);

impl Connection for UpstreamStream {
    fn connected(&self) -> Connected {
        match self {
            UpstreamStream::Plain(_, addr) => Connected::new().extra(UpstreamAddr(*addr)),
            UpstreamStream::Tls(tls, addr) => {
                let connected = Connected::new().extra(UpstreamAddr(*addr));
                let (_, session) = tls.get_ref();
                if session.alpn_protocol() == Some(b"h2") {
                    connected.negotiated_h2()
                } else {
                    connected
                }
            }
        }
    }
}

impl AsyncRead for UpstreamStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s, _) => Pin::new(s).poll_read(cx, buf),
            UpstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamStream::Plain(s, _) => Pin::new(s).poll_write(cx, buf),
            UpstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s, _) => Pin::new(s).poll_flush(cx),
            UpstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamStream::Plain(s, _) => Pin::new(s).poll_shutdown(cx),
            UpstreamStream::Tls(s, _) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// hyper's connector: `https://host` and `http://host` URIs become vetted connections.
/// The URI's host is always a name the policy has just allowed.
#[derive(Clone)]
pub struct Connector {
    upstream: Arc<Upstream>,
}

impl Connector {
    /// Wrap the shared upstream.
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Connector { upstream }
    }

    /// The shared upstream.
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl tower_service::Service<http::Uri> for Connector {
    type Response = TokioIo<UpstreamStream>;
    type Error = UpstreamError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let upstream = self.upstream.clone();
        Box::pin(async move {
            let host = uri.host().ok_or(UpstreamError::NoHost)?.to_owned();
            let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
            let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
            let stream = if tls {
                let (stream, addr) = upstream.connect_tls(&host, port).await?;
                UpstreamStream::Tls(Box::new(stream), addr)
            } else {
                let (stream, addr) = upstream.connect_tcp(&host, port).await?;
                UpstreamStream::Plain(stream, addr)
            };
            Ok(TokioIo::new(stream))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_nameservers_are_read_with_port_53() {
        let text = "# comment\nsearch lab\nnameserver 198.51.100.53\nnameserver 2001:db8:100::53\nnameserver fe80::1%eth0\noptions ndots:1\n";
        let found = nameservers_from_resolv_conf(text);
        assert_eq!(
            found,
            vec![
                "198.51.100.53:53".parse().unwrap(),
                "[2001:db8:100::53]:53".parse().unwrap(),
                "[fe80::1]:53".parse().unwrap(),
            ]
        );
    }
}
