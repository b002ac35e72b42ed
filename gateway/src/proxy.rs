//! The HTTP layer: one handler for every request the gateway terminates (inside intercepted
//! TLS, or plain HTTP on port 80). It checks the authority against the SNI, asks the policy,
//! strips and injects credentials, forwards with streaming bodies, and audits.
//!
//! Every refusal is built by [`rescue`], the one place that turns a cause into what the
//! agent sees.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bottleneck_policy::{Decision, HTTP_PORT, HTTPS_PORT, Kind};
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::uri::Scheme;
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::upgrade::OnUpgrade;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioIo;

use crate::audit::{Audit, Record, elide_query};
use crate::request_head::{self, BODY_TOO_LARGE, body_too_large};
use crate::splice::{Moved, splice};
use crate::state::{PolicyHandle, Snapshot};
use crate::upstream::{Connector, Upstream, UpstreamAddr, UpstreamStream};

/// A WebSocket tunnel with no traffic either way for this long is closed.
const UPGRADED_IDLE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// The body type of every response the gateway sends.
pub type Body = BoxBody<Bytes, BoxError>;

/// The error type of [`Body`]: hyper's, or the gateway's own (an upstream gone idle).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What the listener learnt about a connection before its first request.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The agent's address.
    pub client: SocketAddr,
    /// The destination the agent dialled, before redirection (`None` through the explicit
    /// proxy, where the agent names a host instead).
    pub original_dst: Option<SocketAddr>,
    /// The SNI of an intercepted TLS connection; `None` for plain HTTP.
    pub sni: Option<String>,
    /// Set when the TLS decision denied the SNI: every request gets this refusal.
    pub tls_denial: Option<Refusal>,
}

impl ConnInfo {
    /// `Https` inside intercepted TLS, `Http` for plain text.
    pub fn kind(&self) -> Kind {
        if self.sni.is_some() {
            Kind::Https
        } else {
            Kind::Http
        }
    }
}

/// Why the gateway refuses a request, as the agent will see it.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// HTTP status: 403 policy, 421 authority mismatch, 400 bad request, 502 upstream.
    pub status: StatusCode,
    /// Stable code for the `x-bottleneck-deny` header and the audit log.
    pub code: &'static str,
    /// The host concerned.
    pub host: String,
    /// The sentence for the user (includes the policy line that would allow it).
    pub message: String,
}

impl Refusal {
    /// A policy denial.
    pub fn from_decision(host: &str, decision: &Decision<'_>) -> Refusal {
        Refusal {
            status: StatusCode::FORBIDDEN,
            code: decision.code.as_str(),
            host: decision.host.clone().unwrap_or_else(|| host.to_owned()),
            message: decision.message.clone(),
        }
    }
}

/// Turn a refusal into the response the agent sees: plain text naming the host, the reason
/// and the fix, plus `x-bottleneck-deny: <code>`.
pub fn rescue(refusal: &Refusal) -> Response<Body> {
    let text = format!(
        "bottleneck: {} {}\nhost: {}\nreason: {}\n{}\n",
        refusal.status.as_u16(),
        refusal.status.canonical_reason().unwrap_or(""),
        refusal.host,
        refusal.code,
        refusal.message
    );
    let mut response = Response::new(full(text));
    *response.status_mut() = refusal.status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(
        HeaderName::from_static("x-bottleneck-deny"),
        http::HeaderValue::from_static(refusal.code),
    );
    response
}

fn full(text: String) -> Body {
    http_body_util::Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed()
}

/// Headers that describe one hop and must never be forwarded (RFC 9110 section 7.6.1),
/// plus the proxy credentials of the agent's side.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Remove hop-by-hop headers, including every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// The bounds of each request the handler forwards.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Longest wait for an upstream response head, and between two body frames.
    pub upstream_idle: Duration,
    /// Largest request body forwarded, in bytes.
    pub max_request_body: u64,
}

/// The HTTP handler shared by every connection.
pub struct Proxy {
    policy: PolicyHandle,
    upstream: Arc<Upstream>,
    /// Longest wait for an upstream response head, and between two body frames.
    idle: Duration,
    /// Largest request body forwarded, in bytes.
    max_body: u64,
    client: Client<Connector, CountedBody>,
    audit: Audit,
}

impl Proxy {
    /// Build the handler around a pooled upstream client, within `bounds`.
    pub fn new(policy: PolicyHandle, connector: Connector, audit: Audit, bounds: Bounds) -> Proxy {
        let upstream = connector.upstream().clone();
        let client = Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(16)
            .set_host(true)
            .build(connector);
        Proxy {
            policy,
            upstream,
            idle: bounds.upstream_idle,
            max_body: bounds.max_request_body,
            client,
            audit,
        }
    }

    /// The policy handle (listeners take snapshots from it).
    pub fn policy(&self) -> &PolicyHandle {
        &self.policy
    }

    /// The audit stream.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// Handle one request of a connection. Never fails: every error becomes a response.
    pub async fn handle(
        self: Arc<Self>,
        conn: Arc<ConnInfo>,
        snapshot: Arc<Snapshot>,
        req: Request<Incoming>,
    ) -> Result<Response<Body>, Infallible> {
        let started = Instant::now();
        let kind = conn.kind();
        let method = req.method().as_str().to_owned();
        let target = req
            .uri()
            .path_and_query()
            .map(|pq| pq.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let mut record = Record {
            kind: kind.as_str(),
            client: Some(conn.client),
            original_dst: conn.original_dst,
            sni: conn.sni.clone(),
            method: Some(method.clone()),
            path: Some(elide_query(&target)),
            ..Record::default()
        };
        let upload = Arc::new(Upload::default());
        let outcome = self
            .forward(&conn, &snapshot, req, &target, &mut record, &upload)
            .await;
        let response = match outcome {
            Ok(response) => {
                record.decision = "allow";
                record.reason = "allowed";
                response
            }
            Err(refusal) => {
                record.decision = "deny";
                record.reason = refusal.code;
                record.host.get_or_insert_with(|| refusal.host.clone());
                tracing::info!(host = %refusal.host, code = refusal.code, "request refused");
                rescue(&refusal)
            }
        };
        record.status = Some(response.status().as_u16());
        // The record is written when the response body ends, with its byte counts.
        let (parts, body) = response.into_parts();
        let body = AuditedBody {
            inner: body,
            upload,
            bytes_down: 0,
            started,
            idle: self.idle,
            idle_timer: Box::pin(tokio::time::sleep(self.idle)),
            finish: Some((self.audit.clone(), record)),
        };
        Ok(Response::from_parts(parts, body.boxed()))
    }

    async fn forward(
        &self,
        conn: &ConnInfo,
        snapshot: &Snapshot,
        req: Request<Incoming>,
        target: &str,
        record: &mut Record,
        upload: &Arc<Upload>,
    ) -> Result<Response<Body>, Refusal> {
        let kind = conn.kind();
        let (mut parts, body) = req.into_parts();
        let declared = hyper::body::Body::size_hint(&body).lower();
        let checked = match request_head::check(
            conn,
            snapshot,
            &parts,
            target,
            declared,
            self.max_body,
            record,
        ) {
            Ok(checked) => checked,
            Err(refusal) => {
                // A client waiting for 100 Continue sends nothing more: nothing to drain.
                let expects_continue = parts
                    .headers
                    .get(header::EXPECT)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
                if !expects_continue {
                    discard_in_background(body);
                }
                return Err(refusal);
            }
        };
        let name = checked.name;
        let agent_upgrade = request_head::is_websocket_upgrade(&parts)
            .then(|| parts.extensions.remove::<OnUpgrade>())
            .flatten();
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.remove(header::HOST);
        if let Some(value) = checked.authorization {
            // The agent's own credentials never reach a host whose credentials we inject.
            parts.headers.insert(header::AUTHORIZATION, value);
        }
        let scheme = if kind == Kind::Https {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        parts.uri = Uri::builder()
            .scheme(scheme)
            .authority(name.as_str())
            .path_and_query(target)
            .build()
            .map_err(|e| Refusal {
                status: StatusCode::BAD_REQUEST,
                code: "bad_target",
                host: name.clone(),
                message: format!("the request target cannot be forwarded: {e}"),
            })?;
        parts.version = Version::HTTP_11;
        if let Some(agent_upgrade) = agent_upgrade {
            return self
                .forward_upgrade(kind, name, parts, agent_upgrade, record, upload)
                .await;
        }
        let body = CountedBody {
            inner: Some(body),
            upload: upload.clone(),
            limit: self.max_body,
        };
        let upstream_req = Request::from_parts(parts, body);

        let response = tokio::time::timeout(self.idle, self.client.request(upstream_req))
            .await
            .map_err(|_| Refusal {
                status: StatusCode::GATEWAY_TIMEOUT,
                code: "upstream_timeout",
                host: name.clone(),
                message: format!(
                    "the upstream sent no response within {} s",
                    self.idle.as_secs()
                ),
            })?
            .map_err(|e| {
                if upload.too_large.load(Ordering::Relaxed) {
                    return body_too_large(&name, None, self.max_body);
                }
                Refusal {
                    status: StatusCode::BAD_GATEWAY,
                    code: "upstream_failed",
                    host: name.clone(),
                    message: format!("the upstream failed: {}", error_chain(&e)),
                }
            })?;
        record.upstream = response.extensions().get::<UpstreamAddr>().map(|a| a.0);
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }

    /// A WebSocket upgrade the policy allowed: its own HTTP/1.1 connection to a vetted
    /// address (never pooled), and once both sides switch protocols, a spliced tunnel.
    async fn forward_upgrade(
        &self,
        kind: Kind,
        name: String,
        mut parts: http::request::Parts,
        agent_upgrade: hyper::upgrade::OnUpgrade,
        record: &mut Record,
        upload: &Upload,
    ) -> Result<Response<Body>, Refusal> {
        let unreachable = |cause: String| Refusal {
            status: StatusCode::BAD_GATEWAY,
            code: "upstream_failed",
            host: name.clone(),
            message: format!("the upstream could not be reached: {cause}"),
        };
        let upstream = self.upstream.clone();
        let stream = if kind == Kind::Https {
            let (tls, addr) = upstream
                .connect_tls_h1(&name, HTTPS_PORT)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            UpstreamStream::Tls(Box::new(tls), addr)
        } else {
            let (tcp, addr) = upstream
                .connect_tcp(&name, HTTP_PORT)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            UpstreamStream::Plain(tcp, addr)
        };
        record.upstream = Some(stream.addr());
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.with_upgrades().await {
                tracing::debug!(error = %e, "upgrade connection ended with an error");
            }
        });
        // HTTP/1.1 upstream: origin-form target and a Host header.
        parts.uri = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .unwrap_or("/")
            .parse()
            .map_err(|_| unreachable("bad target".into()))?;
        let host = http::HeaderValue::from_str(&name).map_err(|e| unreachable(e.to_string()))?;
        parts.headers.insert(header::HOST, host);
        parts.headers.insert(
            header::CONNECTION,
            http::HeaderValue::from_static("upgrade"),
        );
        parts
            .headers
            .insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
        let mut response = sender
            .send_request(Request::from_parts(parts, Empty::new()))
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        let switched = response.status() == StatusCode::SWITCHING_PROTOCOLS;
        if switched {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            // The request's audit line waits for the tunnel's byte counts (as a
            // passthrough splice's does); a tunnel that never opens reports none.
            let (carried, counts) = tokio::sync::oneshot::channel();
            upload.await_tunnel(counts);
            tokio::spawn(async move {
                let (agent, upstream) = tokio::join!(agent_upgrade, upstream_upgrade);
                let (Ok(agent), Ok(upstream)) = (agent, upstream) else {
                    tracing::debug!("a side of the WebSocket upgrade did not switch");
                    return;
                };
                let (mut agent, mut upstream) = (TokioIo::new(agent), TokioIo::new(upstream));
                let (moved, error) = splice(&mut agent, &mut upstream, UPGRADED_IDLE).await;
                if let Some(e) = error {
                    tracing::debug!(error = %e, "WebSocket tunnel ended with an error");
                }
                let _ = carried.send(moved);
            });
        }
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        if switched {
            parts.headers.insert(
                header::CONNECTION,
                http::HeaderValue::from_static("upgrade"),
            );
            parts
                .headers
                .insert(header::UPGRADE, http::HeaderValue::from_static("websocket"));
        }
        Ok(Response::from_parts(
            parts,
            body.map_err(BoxError::from).boxed(),
        ))
    }
}

/// An error and every cause below it, `: `-separated (hyper's own message alone, such as
/// "connection error", hides the cause that matters, such as a reset).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What went upstream of one request body, or through its WebSocket tunnel.
#[derive(Debug, Default)]
pub struct Upload {
    /// Bytes forwarded.
    bytes: AtomicU64,
    /// The body grew past the bound and was cut off.
    too_large: AtomicBool,
    /// A WebSocket tunnel's byte counts, sent when it closes.
    tunnel: std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<Moved>>>,
}

impl Upload {
    fn await_tunnel(&self, counts: tokio::sync::oneshot::Receiver<Moved>) {
        if let Ok(mut tunnel) = self.tunnel.lock() {
            *tunnel = Some(counts);
        }
    }

    fn take_tunnel(&self) -> Option<tokio::sync::oneshot::Receiver<Moved>> {
        self.tunnel.lock().ok().and_then(|mut tunnel| tunnel.take())
    }
}

/// The body grew past the bound (the error that cuts the upstream request off).
#[derive(Debug, thiserror::Error)]
#[error("the request body grew past {limit} bytes")]
pub struct BodyTooLarge {
    limit: u64,
}

/// The agent's request body on its way upstream, counting the bytes sent and failing once
/// they would pass `limit` (so the upstream sees an incomplete request, never a cut one
/// that looks whole).
pub struct CountedBody {
    /// `None` once cut off at the bound (the rest is being discarded).
    inner: Option<Incoming>,
    upload: Arc<Upload>,
    limit: u64,
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(inner) = self.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let sent = self.upload.bytes.load(Ordering::Relaxed);
            let len = data.len() as u64;
            if sent.saturating_add(len) > self.limit {
                self.upload.too_large.store(true, Ordering::Relaxed);
                if let Some(rest) = self.inner.take() {
                    discard_in_background(rest);
                }
                let limit = self.limit;
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
            }
            self.upload.bytes.store(sent + len, Ordering::Relaxed);
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(SizeHint::default, Incoming::size_hint)
    }
}

/// Most of a refused request's body read and thrown away, and for how long.
const DISCARD_BYTES: u64 = 8 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(5);

/// Reads and throws away what is left of a refused request's body (bounded), so the
/// refusal reaches the agent: closing a connection with unread data makes the kernel
/// reset it, and an h1 client still sending then reports a send failure instead of the
/// 403/413 it was sent; over h2 the client finishes its stream instead of being reset.
fn discard_in_background(mut body: Incoming) {
    tokio::spawn(async move {
        let mut read = 0u64;
        let _ = tokio::time::timeout(DISCARD_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                read += frame.data_ref().map_or(0, |d| d.len() as u64);
                if read > DISCARD_BYTES {
                    break;
                }
            }
        })
        .await;
    });
}

/// The response on its way to the agent: counts the bytes and writes the audit record
/// when the body ends, or when the agent goes away first (drop).
struct AuditedBody {
    inner: Body,
    upload: Arc<Upload>,
    bytes_down: u64,
    started: Instant,
    /// The body fails if no frame arrives for this long (a stalled upstream must not hold
    /// the agent's connection forever); reset at every frame.
    idle: Duration,
    idle_timer: Pin<Box<tokio::time::Sleep>>,
    finish: Option<(Audit, Record)>,
}

impl AuditedBody {
    fn finish(&mut self) {
        let Some((audit, mut record)) = self.finish.take() else {
            return;
        };
        record.bytes_up = self.upload.bytes.load(Ordering::Relaxed);
        // The upstream answered before the body was cut off: still not a whole request.
        if self.upload.too_large.load(Ordering::Relaxed) {
            record.decision = "deny";
            record.reason = BODY_TOO_LARGE;
        }
        record.bytes_down = self.bytes_down;
        let started = self.started;
        let elapsed = move |record: &mut Record| {
            record.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        };
        if let Some(tunnel) = self.upload.take_tunnel()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                if let Ok(moved) = tunnel.await {
                    record.bytes_up = moved.up;
                    record.bytes_down = moved.down;
                }
                elapsed(&mut record);
                audit.write(record);
            });
            return;
        }
        elapsed(&mut record);
        audit.write(record);
    }
}

impl hyper::body::Body for AuditedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes_down += data.len() as u64;
                }
                let deadline = tokio::time::Instant::now() + self.idle;
                self.idle_timer.as_mut().reset(deadline);
            }
            Poll::Ready(Some(Err(_))) => {
                // The agent sees a cut-off body; the audit line must not say "allowed" only.
                if let Some((_, record)) = &mut self.finish {
                    record.reason = "upstream_body_failed";
                }
                self.finish();
            }
            Poll::Ready(None) => self.finish(),
            Poll::Pending => {
                if self.idle_timer.as_mut().poll(cx).is_ready() {
                    if let Some((_, record)) = &mut self.finish {
                        record.reason = "upstream_idle_timeout";
                    }
                    self.finish();
                    let idle = self.idle.as_secs();
                    return Poll::Ready(Some(Err(format!(
                        "the upstream sent nothing for {idle} s"
                    )
                    .into())));
                }
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for AuditedBody {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_by_connection_are_removed() {
        let mut headers = HeaderMap::new();
        headers.insert("connection", "keep-alive, x-secret-hop".parse().unwrap());
        headers.insert("x-secret-hop", "1".parse().unwrap());
        headers.insert("upgrade", "h2c".parse().unwrap());
        headers.insert("proxy-authorization", "Basic abc".parse().unwrap());
        headers.insert("te", "trailers".parse().unwrap());
        headers.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1, "{headers:?}");
        assert!(headers.contains_key("x-keep"));
    }

    #[test]
    fn refusals_name_the_host_reason_and_code_in_body_and_header() {
        let response = rescue(&Refusal {
            status: StatusCode::FORBIDDEN,
            code: "no_route",
            host: "evil.example".into(),
            message: "add - host: evil.example".into(),
        });
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert_eq!(response.headers()["x-bottleneck-deny"], "no_route");
    }
}
