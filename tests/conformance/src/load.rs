//! A bounded load generator: N keep-alive connections, each sending requests one after
//! another (HTTP/1.1) or several at once on concurrent streams (h2, negotiated by ALPN),
//! reconnecting after an error. A connection goes to the origin's address (IPv4 or IPv6;
//! the gateway's firewall redirects it) or through the gateway's explicit proxy: a
//! `CONNECT host:port` tunnel with TLS inside, or plain HTTP requests in absolute form.
//! Every 200 must carry the origin's complete echo of that very request (its JSON record
//! naming the path that was sent), so a truncated body or a response crossed between
//! streams counts as an error.
//!
//! Run it inside the agent namespace with `lab.run_in(Host::Agent, ...)`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// How the agent reaches the origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Straight to `Target::addr`, the origin's address (transparent interception).
    Transparent,
    /// `Target::addr` is the explicit proxy: `CONNECT host:443` (or `:80`), then TLS (or
    /// plain HTTP) inside the tunnel.
    Connect,
    /// `Target::addr` is the explicit proxy: plain HTTP requests in absolute form
    /// (`GET http://host/path`).
    AbsoluteForm,
}

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address the agent connects to: the origin's (redirected by the gateway's
    /// firewall) or the explicit proxy's.
    pub addr: SocketAddr,
    /// Host header / `:authority`, SNI, CONNECT target.
    pub host: String,
    /// TLS (trusting `ca_pem`) or plain HTTP.
    pub tls: bool,
    /// h2 (ALPN `h2` only; needs `tls`) or HTTP/1.1 (ALPN `http/1.1` over TLS).
    pub h2: bool,
    /// Transparent, or through the explicit proxy.
    pub route: Route,
    /// The bottle CA (PEM).
    pub ca_pem: Vec<u8>,
}

/// How much load.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Concurrent connections.
    pub connections: usize,
    /// Requests per connection (attempts, errors included); `None`: until `stop`.
    pub requests_per_connection: Option<usize>,
    /// Requests in flight at once on one connection: concurrent h2 streams (1 for
    /// HTTP/1.1, which has no pipelining here).
    pub streams: usize,
    /// Path prefix; each request gets `{prefix}/{worker}/{n}`.
    pub path_prefix: String,
    /// Stops continuous load.
    pub stop: Arc<AtomicBool>,
    /// Per-request deadline (connecting included).
    pub request_timeout: Duration,
    /// Pause after a failed attempt.
    pub retry_pause: Duration,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection or request errors (no response, or a 200 without the complete echo).
    pub errors: u64,
    /// The first few error messages.
    pub first_errors: Vec<String>,
    /// Paths of requests answered 200 with a complete body, and when.
    pub completed: Vec<(String, Instant)>,
    /// Failed attempts and when (errors and non-200 statuses).
    pub failed_at: Vec<Instant>,
    /// Connections established (TCP, tunnel, TLS and HTTP handshakes done).
    pub connections: u64,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl Report {
    /// Responses with status 200 and a complete echo.
    pub fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }

    /// Every attempt: responses plus errors.
    pub fn attempts(&self) -> u64 {
        self.statuses.values().sum::<u64>() + self.errors
    }

    fn record(&mut self, path: String, outcome: Result<u16, String>) {
        let failed = !matches!(outcome, Ok(200));
        match outcome {
            Ok(status) => {
                *self.statuses.entry(status).or_default() += 1;
                if status == 200 {
                    self.completed.push((path, Instant::now()));
                }
            }
            Err(e) => {
                self.errors += 1;
                if self.first_errors.len() < 10 {
                    self.first_errors.push(format!("{path}: {e}"));
                }
            }
        }
        if failed {
            self.failed_at.push(Instant::now());
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Body = Empty<bytes::Bytes>;

/// One established connection.
enum Sender {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Sender {
    fn is_closed(&self) -> bool {
        match self {
            Sender::H1(s) => s.is_closed(),
            Sender::H2(s) => s.is_closed(),
        }
    }
}

/// Runs `plan` against `target` on a fresh two-thread runtime (call it inside the agent
/// namespace: the runtime's threads are spawned from there and inherit it).
pub fn run(plan: Plan, target: Target) -> Report {
    assert!(plan.streams >= 1, "at least one stream per connection");
    assert!(
        target.h2 || plan.streams == 1,
        "concurrent streams need h2 (HTTP/1.1 sends one request at a time)"
    );
    assert!(
        target.tls || !target.h2,
        "h2 is negotiated by ALPN: it needs TLS"
    );
    assert!(
        target.route != Route::AbsoluteForm || !target.tls,
        "absolute-form requests to the proxy are plain HTTP"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run_async(plan, target))
}

async fn run_async(plan: Plan, target: Target) -> Report {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(&target.ca_pem).expect("CA pem"))
        .expect("CA");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![if target.h2 {
        b"h2".to_vec()
    } else {
        b"http/1.1".to_vec()
    }];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let report = Arc::new(Mutex::new(Report::default()));
    let target = Arc::new(target);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..plan.connections {
        let (plan, target, connector, report) = (
            plan.clone(),
            target.clone(),
            connector.clone(),
            report.clone(),
        );
        tasks.push(tokio::spawn(async move {
            worker_loop(worker, plan, target, connector, report).await;
        }));
    }
    for task in tasks {
        task.await.expect("worker");
    }
    let mut report = std::mem::take(&mut *report.lock().expect("report"));
    report.elapsed = started.elapsed();
    report
}

/// Reads a response head (up to the blank line, at most 8 KiB) byte by byte, so nothing
/// after it (the tunnel's first bytes) is consumed.
async fn read_head<R: AsyncRead + Unpin>(io: &mut R) -> Result<String, String> {
    let mut head = Vec::with_capacity(128);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= 8192 {
            return Err("CONNECT response head over 8 KiB".into());
        }
        let byte = io
            .read_u8()
            .await
            .map_err(|e| format!("CONNECT response: {e}"))?;
        head.push(byte);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

/// `CONNECT host:port` on `io`; Ok once the proxy answered 2xx.
async fn open_tunnel<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut S,
    host: &str,
    port: u16,
) -> Result<(), String> {
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    io.write_all(request.as_bytes())
        .await
        .map_err(|e| format!("CONNECT: {e}"))?;
    let head = read_head(io).await?;
    let status_line = head.lines().next().unwrap_or_default();
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    match status {
        Some(200..=299) if status_line.starts_with("HTTP/1.") => Ok(()),
        _ => Err(format!("CONNECT answered {status_line:?}")),
    }
}

async fn connect(
    target: &Target,
    connector: &tokio_rustls::TlsConnector,
) -> Result<Sender, String> {
    let mut tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    if target.route == Route::Connect {
        let port = if target.tls { 443 } else { 80 };
        open_tunnel(&mut tcp, &target.host, port).await?;
    }
    let io: Box<dyn Io> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| e.to_string())?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| format!("tls: {e}"))?;
        let want: &[u8] = if target.h2 { b"h2" } else { b"http/1.1" };
        let got = tls.get_ref().1.alpn_protocol();
        if got != Some(want) {
            return Err(format!(
                "ALPN: asked for {:?}, the gateway chose {:?}",
                String::from_utf8_lossy(want),
                got.map(String::from_utf8_lossy)
            ));
        }
        Box::new(tls)
    } else {
        Box::new(tcp)
    };
    if target.h2 {
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
                .await
                .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Sender::H2(sender))
    } else {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(Sender::H1(sender))
    }
}

async fn worker_loop(
    worker: usize,
    plan: Plan,
    target: Arc<Target>,
    connector: tokio_rustls::TlsConnector,
    report: Arc<Mutex<Report>>,
) {
    let mut sender: Option<Sender> = None;
    let mut n = 0usize;
    loop {
        let batch = match plan.requests_per_connection {
            Some(limit) => plan.streams.min(limit.saturating_sub(n)),
            None if plan.stop.load(Ordering::Relaxed) => 0,
            None => plan.streams,
        };
        if batch == 0 {
            break;
        }
        let paths: Vec<String> = (0..batch)
            .map(|_| {
                n += 1;
                format!("{}/{worker}/{n}", plan.path_prefix)
            })
            .collect();
        let outcomes = round(&mut sender, &paths, &plan, &target, &connector).await;
        let failed = outcomes.results.iter().any(|o| !matches!(o, Ok(200)));
        {
            let mut r = report.lock().expect("report");
            if outcomes.connected {
                r.connections += 1;
            }
            for (path, outcome) in paths.into_iter().zip(outcomes.results) {
                r.record(path, outcome);
            }
        }
        if failed {
            sender = None;
            tokio::time::sleep(plan.retry_pause).await;
        }
    }
}

struct Round {
    /// A new connection was established for this round.
    connected: bool,
    results: Vec<Result<u16, String>>,
}

impl Round {
    /// Every request of the round failed with `why` (no connection).
    fn failed(n: usize, why: &str) -> Round {
        Round {
            connected: false,
            results: vec![Err(why.to_owned()); n],
        }
    }
}

/// One request per path, all at once (h2 streams) or the single one (HTTP/1.1), on the
/// current connection or a new one.
async fn round(
    sender: &mut Option<Sender>,
    paths: &[String],
    plan: &Plan,
    target: &Arc<Target>,
    connector: &tokio_rustls::TlsConnector,
) -> Round {
    let mut connected = false;
    if sender.as_ref().is_none_or(Sender::is_closed) {
        match tokio::time::timeout(plan.request_timeout, connect(target, connector)).await {
            Ok(Ok(s)) => {
                *sender = Some(s);
                connected = true;
            }
            Ok(Err(e)) => return Round::failed(paths.len(), &e),
            Err(_) => return Round::failed(paths.len(), "connect: timeout"),
        }
    }
    let Some(current) = sender.as_mut() else {
        return Round::failed(paths.len(), "no connection");
    };
    let results = match current {
        Sender::H1(s) => {
            let mut results = Vec::new();
            for path in paths {
                let outcome =
                    tokio::time::timeout(plan.request_timeout, one_h1(s, path, target)).await;
                results.push(outcome.unwrap_or_else(|_| Err("timeout".into())));
            }
            results
        }
        Sender::H2(s) => {
            let mut set = tokio::task::JoinSet::new();
            for (i, path) in paths.iter().enumerate() {
                let (s, path, target, deadline) = (
                    s.clone(),
                    path.clone(),
                    target.clone(),
                    plan.request_timeout,
                );
                set.spawn(async move {
                    let outcome = tokio::time::timeout(deadline, one_h2(s, &path, &target)).await;
                    (i, outcome.unwrap_or_else(|_| Err("timeout".into())))
                });
            }
            let mut results: Vec<Result<u16, String>> =
                vec![Err("stream task lost".into()); paths.len()];
            while let Some(joined) = set.join_next().await {
                if let Ok((i, outcome)) = joined {
                    results[i] = outcome;
                }
            }
            results
        }
    };
    Round { connected, results }
}

fn request(path: &str, target: &Target) -> Result<http::Request<Body>, String> {
    let builder = match (target.route, target.h2) {
        // h2 carries the authority in `:authority` (hyper takes it from the URI).
        (_, true) => http::Request::get(format!("https://{}{path}", target.host)),
        (Route::AbsoluteForm, false) => http::Request::get(format!("http://{}{path}", target.host))
            .header(http::header::HOST, &target.host),
        (_, false) => http::Request::get(path).header(http::header::HOST, &target.host),
    };
    builder.body(Body::new()).map_err(|e| e.to_string())
}

async fn one_h1(
    sender: &mut hyper::client::conn::http1::SendRequest<Body>,
    path: &str,
    target: &Target,
) -> Result<u16, String> {
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let response = sender
        .send_request(request(path, target)?)
        .await
        .map_err(|e| format!("request: {e}"))?;
    finish(response, path, http::Version::HTTP_11).await
}

async fn one_h2(
    mut sender: hyper::client::conn::http2::SendRequest<Body>,
    path: &str,
    target: &Target,
) -> Result<u16, String> {
    sender.ready().await.map_err(|e| format!("ready: {e}"))?;
    let response = sender
        .send_request(request(path, target)?)
        .await
        .map_err(|e| format!("request: {e}"))?;
    finish(response, path, http::Version::HTTP_2).await
}

/// Reads the whole body; a 200 must be the origin's echo of `path` (complete JSON).
async fn finish(
    response: http::Response<hyper::body::Incoming>,
    path: &str,
    version: http::Version,
) -> Result<u16, String> {
    let status = response.status().as_u16();
    if response.version() != version {
        return Err(format!("answered over {:?}", response.version()));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status == 200 {
        let echoed = serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|record| record.get("path")?.as_str().map(str::to_owned));
        if echoed.as_deref() != Some(path) {
            return Err(format!(
                "200 without the complete echo of {path}: {} bytes, echoed path {echoed:?}",
                body.len()
            ));
        }
    }
    Ok(status)
}

/// Starts `plan` against `target` on a thread inside `lab`'s `host` namespace without
/// borrowing the lab (the test may restart or signal the gateway meanwhile); join the
/// handle for the report.
pub fn spawn_in(
    lab: &bottleneck_lab::Lab,
    host: bottleneck_lab::Host,
    plan: Plan,
    target: Target,
) -> std::thread::JoinHandle<Report> {
    let namespace = lab.namespace(host).to_owned();
    std::thread::spawn(move || {
        bottleneck_lab::netns::run_in(&namespace, move || run(plan, target))
            .expect("entering the namespace")
    })
}
