//! The transparent listeners: accept -> identify (original destination, ClientHello) ->
//! decide (the policy on the SNI) -> serve (intercept and hand requests to [`Proxy`], or
//! splice a passthrough route). Each stage has a timeout; connections are bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottleneck_policy::host::{HostError, normalize_name};
use bottleneck_policy::{Kind, Request as PolicyRequest, TlsMode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::LazyConfigAcceptor;

use crate::admission::Admission;
use crate::audit::Record;
use crate::firewall::sockopt::original_dst;
use crate::proxy::{ConnInfo, Proxy, Refusal};
use crate::request_head::MAX_HEAD_BYTES;
use crate::splice::splice;
use crate::tls::client_hello::peek_client_hello;
use crate::tls::mint::LeafCache;
use crate::upstream::Upstream;

/// How long a client may take to send its ClientHello.
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the agent-side TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send a request head.
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The most header fields in one request head.
const MAX_HEADERS: usize = 128;
/// A passthrough splice with no traffic either way for this long is closed.
const PASSTHROUGH_IDLE: Duration = Duration::from_secs(15 * 60);

/// Everything a listener needs.
pub struct Listeners {
    /// The HTTP handler.
    pub proxy: Arc<Proxy>,
    /// Upstream resolution and dialing (for passthrough splices).
    pub upstream: Arc<Upstream>,
    /// Minted leaf certificates.
    pub leaves: Arc<LeafCache>,
    /// The connection bounds shared by every listener.
    pub admission: Arc<Admission>,
}

impl Listeners {
    /// Accept intercepted TLS connections forever.
    pub async fn serve_tls(self: Arc<Self>, listener: TcpListener) {
        self.serve(listener, true).await;
    }

    /// Accept plain HTTP connections forever.
    pub async fn serve_http(self: Arc<Self>, listener: TcpListener) {
        self.serve(listener, false).await;
    }

    async fn serve(self: Arc<Self>, listener: TcpListener, tls: bool) {
        let kind = if tls { Kind::Tls } else { Kind::Http };
        loop {
            let Some((stream, client, permit)) =
                self.admission.accept(&listener, kind.as_str()).await
            else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                if tls {
                    this.tls_connection(stream, client).await;
                } else {
                    this.http_connection(stream, client).await;
                }
                drop(permit);
            });
        }
    }

    async fn tls_connection(&self, stream: TcpStream, client: SocketAddr) {
        let started = Instant::now();
        let mut record = Record {
            kind: Kind::Tls.as_str(),
            client: Some(client),
            ..Record::default()
        };
        let original = match original_dst(&stream) {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!(error = %e, %client, "no original destination; closing");
                return;
            }
        };
        record.original_dst = Some(original);
        let hello = match peek_client_hello(&stream, HELLO_TIMEOUT).await {
            Ok(hello) => hello,
            Err(e) => {
                self.deny_connection(record, "bad_client_hello", started, &e.to_string());
                return;
            }
        };
        record.sni = hello.sni.clone();
        if hello.has_ech {
            self.deny_connection(
                record,
                "ech_refused",
                started,
                "encrypted ClientHello hides the server name",
            );
            return;
        }
        let Some(sni) = hello.sni.clone() else {
            self.deny_connection(
                record,
                "no_sni",
                started,
                "the ClientHello names no server (SNI)",
            );
            return;
        };
        let name = match normalize_name(&sni) {
            Ok(name) => name,
            Err(HostError::IpLiteral(_)) => {
                self.deny_connection(record, "ip_literal", started, "the SNI is an IP address");
                return;
            }
            Err(_) => {
                self.deny_connection(
                    record,
                    "invalid_host",
                    started,
                    "the SNI is not a valid name",
                );
                return;
            }
        };
        let snapshot = self.proxy.policy().current();
        let decision = snapshot
            .policy
            .decide(&PolicyRequest::tls(&name, original.port()));
        record.host = Some(name.clone());
        record.route = decision
            .route
            .map(|r| format!("{} (line {})", r.host(), r.line()));
        let passthrough = decision
            .route
            .is_some_and(|r| r.tls() == TlsMode::Passthrough);
        if decision.is_allowed() && passthrough {
            record.reason = decision.code.as_str();
            self.splice(stream, &name, original.port(), record, started)
                .await;
            return;
        }
        let tls_denial = (!decision.is_allowed()).then(|| Refusal::from_decision(&name, &decision));
        if tls_denial.is_some() {
            // The handshake still completes so the agent can read a 403 saying why.
            record.decision = "deny";
            record.reason = decision.code.as_str();
        } else {
            record.decision = "allow";
            record.reason = decision.code.as_str();
        }
        record.duration_ms = elapsed_ms(started);
        self.proxy.audit().write(record);
        let conn = ConnInfo {
            client,
            original_dst: Some(original),
            sni: Some(name),
            tls_denial,
        };
        self.intercept(stream, conn).await;
    }

    /// Complete the agent's TLS handshake with a leaf minted for the SNI and serve the
    /// requests inside (refused with `conn.tls_denial` if the SNI was denied).
    pub(crate) async fn intercept<S>(&self, stream: S, conn: ConnInfo)
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let Some(name) = conn.sni.clone() else {
            return;
        };
        let config = match self.leaves.server_config(&name) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, host = %name, "cannot mint a certificate");
                return;
            }
        };
        let acceptor = LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
        let handshake = async {
            let start = acceptor.await?;
            start.into_stream(config).await
        };
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::info!(error = %e, host = %name, "agent TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::info!(host = %name, "agent TLS handshake timed out");
                return;
            }
        };
        self.serve_requests(TokioIo::new(tls), Arc::new(conn), true)
            .await;
    }

    async fn http_connection(&self, stream: TcpStream, client: SocketAddr) {
        let original = match original_dst(&stream) {
            Ok(addr) => addr,
            Err(e) => {
                tracing::warn!(error = %e, %client, "no original destination; closing");
                return;
            }
        };
        let conn = Arc::new(ConnInfo {
            client,
            original_dst: Some(original),
            sni: None,
            tls_denial: None,
        });
        self.serve_requests(TokioIo::new(stream), conn, false).await;
    }

    pub(crate) async fn serve_requests<I>(
        &self,
        io: TokioIo<I>,
        conn: Arc<ConnInfo>,
        allow_h2: bool,
    ) where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        // One snapshot per connection: a reload never mixes policies within it.
        let snapshot = self.proxy.policy().current();
        let proxy = self.proxy.clone();
        let service =
            service_fn(move |req| proxy.clone().handle(conn.clone(), snapshot.clone(), req));
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_headers(MAX_HEADERS);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .max_concurrent_streams(128);
        // Plain HTTP is HTTP/1 only: no cleartext h2 (prior knowledge or h2c upgrade).
        let builder = if allow_h2 {
            builder
        } else {
            builder.http1_only()
        };
        if let Err(e) = builder.serve_connection_with_upgrades(io, service).await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }

    /// Connect to a vetted address of `name`, then splice (one audit line at the end).
    pub(crate) async fn splice<S>(
        &self,
        stream: S,
        name: &str,
        port: u16,
        mut record: Record,
        started: Instant,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        match self.upstream.connect_tcp(name, port).await {
            Ok((upstream, addr)) => {
                self.splice_to(stream, &[], upstream, addr, record, started)
                    .await;
            }
            Err(e) => {
                tracing::info!(error = %e, host = %name, "splice upstream failed");
                record.decision = "deny";
                record.reason = "upstream_failed";
                record.duration_ms = elapsed_ms(started);
                self.proxy.audit().write(record);
            }
        }
    }

    /// Send `prefix` (bytes already read from the agent) to the connected `upstream`,
    /// then splice both ways; one audit line at the end.
    pub(crate) async fn splice_to<S>(
        &self,
        mut stream: S,
        prefix: &[u8],
        mut upstream: TcpStream,
        addr: SocketAddr,
        mut record: Record,
        started: Instant,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        record.decision = "allow";
        record.upstream = Some(addr);
        match tokio::io::AsyncWriteExt::write_all(&mut upstream, prefix).await {
            Ok(()) => {
                let (moved, error) = splice(&mut stream, &mut upstream, PASSTHROUGH_IDLE).await;
                if let Some(e) = error {
                    tracing::debug!(error = %e, "splice ended with an error");
                }
                record.bytes_up = moved.up + prefix.len() as u64;
                record.bytes_down = moved.down;
            }
            Err(e) => tracing::debug!(error = %e, "splice upstream closed at once"),
        }
        record.duration_ms = elapsed_ms(started);
        self.proxy.audit().write(record);
    }

    pub(crate) fn deny_connection(
        &self,
        mut record: Record,
        reason: &'static str,
        started: Instant,
        why: &str,
    ) {
        tracing::info!(reason, why, "TLS connection refused");
        record.decision = "deny";
        record.reason = reason;
        record.duration_ms = elapsed_ms(started);
        self.proxy.audit().write(record);
    }
}

pub(crate) fn elapsed_ms(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
}
