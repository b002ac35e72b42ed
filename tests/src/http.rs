//! The wan's HTTP and HTTPS origins.
//!
//! One service answers on every origin address: HTTPS on port 443 (certificates chosen
//! by SNI from the lab CA, ALPN `h2` and `http/1.1`) and plain HTTP on port 80. Every
//! request is answered with a JSON description of exactly what the origin received (a
//! [`RequestRecord`]) and is appended to a bounded log, so tests can assert what reached
//! the upstream: which headers were injected or stripped, which SNI and ALPN were used,
//! from which address.
//!
//! Endpoints:
//! * `/bytes/N`: `N` bytes of `x` (at most [`MAX_BYTES`]), streamed without buffering;
//! * `/status/N`: status `N` (200..=599) with the echo body;
//! * `/redirect?to=URL`: `302 Found` to the percent-decoded `URL`;
//! * `/stall/head`: no response at all (until the connection's lifetime ends);
//! * `/stall/body`: headers and a first chunk, then nothing;
//! * `/ws` with `Upgrade: websocket` (HTTP/1.1): `101 Switching Protocols` with the RFC 6455
//!   `Sec-WebSocket-Accept`, then every byte received is sent back (a byte echo, not a
//!   frame parser: enough to show that an upgraded connection flows both ways);
//! * anything else: `200 OK` with the echo body.
//!
//! Limits: a request body is read in full but only its first [`ECHO_BODY_LIMIT`] bytes
//! are echoed (and [`LOG_BODY_LIMIT`] logged); headers take at most 10 s to arrive; a
//! connection lives at most [`CONNECTION_LIFETIME`]; at most [`MAX_CONNECTIONS`] per
//! listener are served at once.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue, LOCATION};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::{Deserialize, Serialize};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;

/// Request-body bytes echoed back in the response.
pub const ECHO_BODY_LIMIT: usize = 1 << 20;
/// Request-body bytes kept in each log entry.
pub const LOG_BODY_LIMIT: usize = 16 << 10;
/// Requests kept in the log.
pub const LOG_LIMIT: usize = 1000;
/// The largest `/bytes/N`.
pub const MAX_BYTES: u64 = 1 << 30;
/// Concurrent connections served per listener.
pub const MAX_CONNECTIONS: usize = 512;
/// A connection is closed after this long, whatever it is doing.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// What an origin received: the echo body of every response and the entries of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// `https` or `http`.
    pub scheme: String,
    /// The request method.
    pub method: String,
    /// Path and query, as received.
    pub path: String,
    /// `HTTP/1.0`, `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// The authority: the URI's (absolute-form or HTTP/2 `:authority`), else `Host`.
    pub authority: Option<String>,
    /// Headers as `[name, value]` pairs in received order (grouped by name where hyper
    /// groups them); names are lowercase, values lossy UTF-8.
    pub headers: Vec<(String, String)>,
    /// The request body (lossy UTF-8), cut to [`ECHO_BODY_LIMIT`] in responses and
    /// [`LOG_BODY_LIMIT`] in the log.
    pub body: String,
    /// The full body length in bytes.
    pub body_len: u64,
    /// The TLS server name the client sent (HTTPS only).
    pub sni: Option<String>,
    /// The negotiated ALPN protocol (HTTPS only).
    pub alpn: Option<String>,
    /// The origin address the client connected to.
    pub local_addr: String,
    /// The client address as seen by the origin.
    pub peer_addr: String,
}

impl RequestRecord {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The client address as a socket address.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer_addr.parse().ok()
    }

    /// The origin address the client connected to, as a socket address.
    pub fn local(&self) -> Option<SocketAddr> {
        self.local_addr.parse().ok()
    }

    /// All values of header `name` (case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

#[derive(Debug, Default)]
struct State {
    requests: AtomicU64,
    connections: AtomicU64,
    log: Mutex<VecDeque<RequestRecord>>,
}

/// Handle on a group of origin listeners (all HTTPS ones, or all plain-HTTP ones): their
/// counters and request log. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct HttpOrigin {
    state: Arc<State>,
}

impl HttpOrigin {
    fn log_lock(&self) -> MutexGuard<'_, VecDeque<RequestRecord>> {
        self.state
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Requests received so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far (for HTTPS: TLS handshakes completed).
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// The most recent requests (at most [`LOG_LIMIT`]), oldest first.
    pub fn log(&self) -> Vec<RequestRecord> {
        self.log_lock().iter().cloned().collect()
    }

    /// The most recent request.
    pub fn last(&self) -> Option<RequestRecord> {
        self.log_lock().back().cloned()
    }

    /// Clears the counters and the log.
    pub fn reset(&self) {
        self.log_lock().clear();
        self.state.requests.store(0, Ordering::Relaxed);
        self.state.connections.store(0, Ordering::Relaxed);
    }

    fn record(&self, mut record: RequestRecord) {
        truncate_utf8(&mut record.body, LOG_BODY_LIMIT);
        let mut log = self.log_lock();
        if log.len() >= LOG_LIMIT {
            log.pop_front();
        }
        log.push_back(record);
        self.state.requests.fetch_add(1, Ordering::Relaxed);
    }
}

fn truncate_utf8(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
}

/// Per-connection facts the handler echoes.
#[derive(Debug)]
struct ConnInfo {
    scheme: &'static str,
    sni: Option<String>,
    alpn: Option<String>,
    local: SocketAddr,
    peer: SocketAddr,
}

type ResponseBody = BoxBody<Bytes, Infallible>;

/// Accepts connections on `listener` until the runtime shuts down; TLS if `tls` is set.
pub(crate) async fn serve(listener: TcpListener, tls: Option<TlsAcceptor>, origin: HttpOrigin) {
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                // EMFILE and friends: back off instead of spinning.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let tls = tls.clone();
        let origin = origin.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _ = tokio::time::timeout(
                CONNECTION_LIFETIME,
                serve_connection(stream, peer, tls, origin),
            )
            .await;
        });
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsAcceptor>,
    origin: HttpOrigin,
) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .max_buf_size(256 << 10);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(256 << 10);
    match tls {
        Some(acceptor) => {
            let Ok(Ok(stream)) =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            let (_, session) = stream.get_ref();
            let info = Arc::new(ConnInfo {
                scheme: "https",
                sni: session.server_name().map(str::to_owned),
                alpn: session
                    .alpn_protocol()
                    .map(|p| String::from_utf8_lossy(p).into_owned()),
                local,
                peer,
            });
            origin.state.connections.fetch_add(1, Ordering::Relaxed);
            let service = service_fn(move |req| handle(req, info.clone(), origin.clone()));
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        }
        None => {
            let info = Arc::new(ConnInfo {
                scheme: "http",
                sni: None,
                alpn: None,
                local,
                peer,
            });
            origin.state.connections.fetch_add(1, Ordering::Relaxed);
            let service = service_fn(move |req| handle(req, info.clone(), origin.clone()));
            let _ = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await;
        }
    }
}

async fn handle(
    mut req: Request<Incoming>,
    info: Arc<ConnInfo>,
    origin: HttpOrigin,
) -> Result<Response<ResponseBody>, Infallible> {
    let websocket_key = (req.uri().path() == "/ws")
        .then(|| websocket_key(req.headers()))
        .flatten();
    let upgrade = websocket_key
        .is_some()
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, body) = req.into_parts();
    let (body, body_len) = match read_body(body).await {
        Ok(read) => read,
        Err(reason) => return Ok(plain(StatusCode::BAD_REQUEST, reason)),
    };
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(HOST)
                .map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned())
        });
    let record = RequestRecord {
        scheme: info.scheme.to_owned(),
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned()),
        version: format!("{:?}", parts.version),
        authority,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: String::from_utf8_lossy(&body).into_owned(),
        body_len,
        sni: info.sni.clone(),
        alpn: info.alpn.clone(),
        local_addr: info.local.to_string(),
        peer_addr: info.peer.to_string(),
    };
    origin.record(record.clone());
    if parts.uri.path() == "/stall/head" {
        tokio::time::sleep(CONNECTION_LIFETIME).await;
    }
    if let (Some(key), Some(upgrade)) = (websocket_key, upgrade) {
        tokio::spawn(async move {
            if let Ok(upgraded) = upgrade.await {
                let mut io = TokioIo::new(upgraded);
                let (mut reader, mut writer) = tokio::io::split(&mut io);
                let _ = tokio::time::timeout(
                    CONNECTION_LIFETIME,
                    tokio::io::copy(&mut reader, &mut writer),
                )
                .await;
            }
        });
        let mut response = Response::new(Full::new(Bytes::new()).boxed());
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(
            hyper::header::UPGRADE,
            HeaderValue::from_static("websocket"),
        );
        headers.insert(
            hyper::header::CONNECTION,
            HeaderValue::from_static("upgrade"),
        );
        if let Ok(accept) = HeaderValue::from_str(&websocket_accept(&key)) {
            headers.insert("sec-websocket-accept", accept);
        }
        return Ok(response);
    }
    Ok(respond(&parts.uri, &record))
}

/// The `Sec-WebSocket-Key` of a valid HTTP/1.1 WebSocket upgrade request.
fn websocket_key(headers: &hyper::HeaderMap) -> Option<String> {
    let has_token = |name: hyper::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if !has_token(hyper::header::UPGRADE, "websocket")
        || !has_token(hyper::header::CONNECTION, "upgrade")
    {
        return None;
    }
    headers
        .get("sec-websocket-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// RFC 6455 section 4.2.2: base64(SHA-1(key + GUID)).
pub fn websocket_accept(key: &str) -> String {
    const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let digest = ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        format!("{key}{GUID}").as_bytes(),
    );
    base64(digest.as_ref())
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// One chunk, then a body that never ends and never sends again (`/stall/body`).
struct Stall {
    first: Option<Bytes>,
}

impl Body for Stall {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.first.take() {
            Some(chunk) => Poll::Ready(Some(Ok(Frame::data(chunk)))),
            // Never woken: the peer's timeout (or the connection lifetime) ends it.
            None => Poll::Pending,
        }
    }
}

/// Reads the whole body, keeping the first [`ECHO_BODY_LIMIT`] bytes.
async fn read_body(mut body: Incoming) -> Result<(Vec<u8>, u64), String> {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("reading the request body: {e}"))?;
            if let Ok(data) = frame.into_data() {
                total += data.len() as u64;
                let room = ECHO_BODY_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&data[..room.min(data.len())]);
            }
        }
        Ok::<(), String>(())
    };
    match tokio::time::timeout(BODY_TIMEOUT, read).await {
        Ok(Ok(())) => Ok((kept, total)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err("timed out reading the request body".to_owned()),
    }
}

fn plain(status: StatusCode, text: String) -> Response<ResponseBody> {
    let mut response = Response::new(Full::new(Bytes::from(text + "\n")).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain"),
    );
    response
}

fn echo(status: StatusCode, record: &RequestRecord) -> Response<ResponseBody> {
    let json = serde_json::to_vec_pretty(record).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Full::new(Bytes::from(json)).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn respond(uri: &hyper::Uri, record: &RequestRecord) -> Response<ResponseBody> {
    let path = uri.path();
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) if n <= MAX_BYTES => Response::new(Repeat { remaining: n }.boxed()),
            _ => plain(
                StatusCode::BAD_REQUEST,
                format!("/bytes/N wants 0 <= N <= {MAX_BYTES}"),
            ),
        };
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
        {
            Some(status) if status.as_u16() >= 200 => echo(status, record),
            _ => plain(
                StatusCode::BAD_REQUEST,
                "/status/N wants 200 <= N <= 599".into(),
            ),
        };
    }
    if path == "/stall/body" {
        return Response::new(
            Stall {
                first: Some(Bytes::from_static(b"first chunk, then silence\n")),
            }
            .boxed(),
        );
    }
    if path == "/sse" {
        let mut response = Response::new(
            Events {
                sent: 0,
                count: SSE_EVENTS,
                pause: Box::pin(tokio::time::sleep(Duration::ZERO)),
            }
            .boxed(),
        );
        response.headers_mut().insert(
            CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/event-stream"),
        );
        return response;
    }
    if path == "/redirect" {
        let target = uri
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|kv| kv.strip_prefix("to="))
            .map(percent_decode);
        let location = target.and_then(|t| hyper::header::HeaderValue::from_str(&t).ok());
        return match location {
            Some(location) => {
                let mut response = echo(StatusCode::FOUND, record);
                response.headers_mut().insert(LOCATION, location);
                response
            }
            None => plain(
                StatusCode::BAD_REQUEST,
                "/redirect wants ?to=URL (percent-encoded)".into(),
            ),
        };
    }
    echo(StatusCode::OK, record)
}

/// How many events `/sse` sends.
pub const SSE_EVENTS: u32 = 4;
/// The pause before each `/sse` event after the first, so a test can see that the first
/// event arrives long before the response ends.
pub const SSE_INTERVAL: Duration = Duration::from_millis(700);

/// A server-sent-events body: `data: event N` frames, one every [`SSE_INTERVAL`].
struct Events {
    sent: u32,
    count: u32,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl Body for Events {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.sent >= self.count {
            return Poll::Ready(None);
        }
        if self.pause.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let n = self.sent;
        self.sent += 1;
        let next = tokio::time::Instant::now() + SSE_INTERVAL;
        self.pause.as_mut().reset(next);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
            "data: event {n}\n\n"
        ))))))
    }
}

/// Decodes `%XX` escapes (and `+` as space); invalid escapes are kept literally.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

static CHUNK: [u8; 64 * 1024] = [b'x'; 64 * 1024];

/// A body of `remaining` bytes of `x`, produced in 64 KiB frames without allocation.
struct Repeat {
    remaining: u64,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = usize::try_from(self.remaining)
            .unwrap_or(CHUNK.len())
            .min(CHUNK.len());
        self.remaining -= n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&CHUNK[..n])))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn websocket_accept_matches_the_rfc_6455_example() {
        assert_eq!(
            websocket_accept("dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("https%3A%2F%2Fother.allowed.test%2Fecho"),
            "https://other.allowed.test/echo"
        );
        assert_eq!(percent_decode("a+b%2"), "a b%2");
        assert_eq!(percent_decode("%zz%"), "%zz%");
    }

    #[test]
    fn truncation_respects_char_boundaries() {
        let mut s = "ééé".to_owned();
        truncate_utf8(&mut s, 3);
        assert_eq!(s, "é");
    }
}
