//! The load generator: a small HTTPS/1.1 client (hyper over tokio-rustls) that runs inside
//! the agent namespace, and the measurements it takes.
//!
//! Every connection sets `TCP_NODELAY`; every connect, handshake and request has a deadline;
//! latency samples are kept per task up to [`MAX_SAMPLES_PER_TASK`] (later requests still
//! count towards the rate). Warm-up requests are sent but not measured.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::{BenchError, Result};
use crate::stats::percentile;

/// Latency samples kept per task (bounded memory); requests beyond still count.
pub const MAX_SAMPLES_PER_TASK: usize = 4_000_000;
/// Deadline of a TCP connect plus TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline of one request, response head and body included (bulk downloads get more).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the agent sends its requests: an origin address and the name it asks for.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Target {
    /// The origin's address (port 443); transparent contenders intercept it.
    pub addr: SocketAddr,
    /// The SNI and Host name.
    pub host: String,
}

/// A TLS client configuration trusting only `ca_pem`, offering HTTP/1.1; with
/// `resumption` false every handshake is a full one (as a fresh process would do).
pub fn client_config(ca_pem: &Path, resumption: bool) -> Result<Arc<ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca_pem)
        .map_err(|e| BenchError::Tls(format!("reading {}: {e}", ca_pem.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| BenchError::Tls(format!("{}: {e}", ca_pem.display())))?;
        roots
            .add(cert)
            .map_err(|e| BenchError::Tls(format!("{}: {e}", ca_pem.display())))?;
    }
    if roots.is_empty() {
        return Err(BenchError::Tls(format!(
            "{} holds no certificate",
            ca_pem.display()
        )));
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| BenchError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    if !resumption {
        config.resumption = Resumption::disabled();
    }
    Ok(Arc::new(config))
}

/// An open HTTP/1.1 connection.
pub type Conn = SendRequest<Empty<Bytes>>;

/// Connects to `target` (TCP, TLS, HTTP/1.1 handshake), within [`CONNECT_TIMEOUT`].
pub async fn connect(target: &Target, tls: &TlsConnector) -> Result<Conn> {
    let work = async {
        let tcp = TcpStream::connect(target.addr)
            .await
            .map_err(|e| BenchError::io(format!("connecting to {}", target.addr), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| BenchError::io("setting TCP_NODELAY", e))?;
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| BenchError::Tls(format!("{}: {e}", target.host)))?;
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| BenchError::Tls(format!("handshake with {}: {e}", target.host)))?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok::<_, BenchError>(send)
    };
    tokio::time::timeout(CONNECT_TIMEOUT, work)
        .await
        .map_err(|_| BenchError::Timeout {
            what: format!("connecting to {} ({})", target.addr, target.host),
            after: CONNECT_TIMEOUT,
        })?
}

/// Sends `GET path` on `conn` and reads the whole body; returns the body length.
pub async fn get(conn: &mut Conn, host: &str, path: &str, deadline: Duration) -> Result<u64> {
    let work = async {
        conn.ready()
            .await
            .map_err(|e| BenchError::Http(format!("connection not ready: {e}")))?;
        let request = hyper::Request::get(path)
            .header(hyper::header::HOST, host)
            .body(Empty::<Bytes>::new())
            .map_err(|e| BenchError::Http(e.to_string()))?;
        let response = conn
            .send_request(request)
            .await
            .map_err(|e| BenchError::Http(e.to_string()))?;
        if response.status() != hyper::StatusCode::OK {
            return Err(BenchError::Http(format!(
                "GET {host}{path}: status {}",
                response.status()
            )));
        }
        let mut body = response.into_body();
        let mut n = 0u64;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BenchError::Http(e.to_string()))?;
            if let Some(data) = frame.data_ref() {
                n += data.len() as u64;
            }
        }
        Ok(n)
    };
    tokio::time::timeout(deadline, work)
        .await
        .map_err(|_| BenchError::Timeout {
            what: format!("GET {host}{path}"),
            after: deadline,
        })?
}

/// How long a timed scenario runs.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Timing {
    /// Sent but not measured.
    pub warmup: Duration,
    /// Measured.
    pub measure: Duration,
}

/// Requests over open connections: rate and latency.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RateResult {
    /// Concurrent connections (or connection loops).
    pub concurrency: usize,
    /// Requests (or connections) completed in the measured window.
    pub completed: u64,
    /// Failed requests or connections in the measured window.
    pub errors: u64,
    /// The measured window, seconds.
    pub seconds: f64,
    /// Completed per second.
    pub per_second: f64,
    /// Median latency, microseconds.
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// CPU time the contender used per completed request (or connection) in the measured
    /// window, microseconds (None for direct). Less sensitive to the machine's other load
    /// than the rate.
    #[serde(default)]
    pub contender_cpu_us_per_op: Option<f64>,
}

/// Runs `work` (a keep-alive or new-connection run with `timing`) and reads the contender's
/// CPU seconds with `cpu` when its measured window opens and closes, filling in
/// [`RateResult::contender_cpu_us_per_op`].
pub async fn with_cpu<F>(
    timing: Timing,
    cpu: impl Fn() -> Option<f64>,
    work: F,
) -> Result<RateResult>
where
    F: std::future::Future<Output = Result<RateResult>>,
{
    let clock = async {
        tokio::time::sleep(timing.warmup).await;
        let before = cpu();
        tokio::time::sleep(timing.measure).await;
        (before, cpu())
    };
    let (result, (before, after)) = tokio::join!(work, clock);
    let mut result = result?;
    if let (Some(a), Some(b)) = (before, after)
        && result.completed > 0
    {
        result.contender_cpu_us_per_op = Some((b - a).max(0.0) * 1e6 / result.completed as f64);
    }
    Ok(result)
}

struct TaskOutcome {
    samples: Vec<u64>,
    completed: u64,
    errors: u64,
    first_error: Option<String>,
}

impl TaskOutcome {
    fn new() -> Self {
        TaskOutcome {
            samples: Vec::new(),
            completed: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn error(&mut self, measuring: bool, e: BenchError) {
        if measuring {
            self.errors += 1;
        }
        self.first_error.get_or_insert_with(|| e.to_string());
    }

    fn sample(&mut self, measuring: bool, took: Duration) {
        if measuring {
            self.completed += 1;
            if self.samples.len() < MAX_SAMPLES_PER_TASK {
                self.samples.push(took.as_micros() as u64);
            }
        }
    }
}

fn combine(concurrency: usize, timing: Timing, outcomes: Vec<TaskOutcome>) -> RateResult {
    let mut samples = Vec::new();
    let (mut completed, mut errors, mut first_error) = (0, 0, None);
    for o in outcomes {
        completed += o.completed;
        errors += o.errors;
        samples.extend(o.samples);
        if first_error.is_none() {
            first_error = o.first_error;
        }
    }
    samples.sort_unstable();
    let seconds = timing.measure.as_secs_f64();
    RateResult {
        concurrency,
        completed,
        errors,
        seconds,
        per_second: completed as f64 / seconds,
        p50_us: percentile(&samples, 50.0),
        p99_us: percentile(&samples, 99.0),
        first_error,
        contender_cpu_us_per_op: None,
    }
}

/// Too many failures in a row: the contender is broken, stop hammering it.
const MAX_CONSECUTIVE_ERRORS: u32 = 50;

/// `concurrency` keep-alive connections, each sending `GET path` back to back.
pub async fn keep_alive(
    target: &Target,
    tls: Arc<ClientConfig>,
    path: &str,
    concurrency: usize,
    timing: Timing,
) -> Result<RateResult> {
    let start = Instant::now();
    let from = start + timing.warmup;
    let end = from + timing.measure;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        let connector = TlsConnector::from(tls.clone());
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = TaskOutcome::new();
            let mut conn: Option<Conn> = None;
            let mut consecutive = 0;
            while Instant::now() < end && consecutive < MAX_CONSECUTIVE_ERRORS {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => match connect(&target, &connector).await {
                        Ok(c) => conn.insert(c),
                        Err(e) => {
                            out.error(Instant::now() >= from, e);
                            consecutive += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    },
                };
                let t0 = Instant::now();
                match get(c, &target.host, &path, REQUEST_TIMEOUT).await {
                    Ok(_) => {
                        consecutive = 0;
                        let now = Instant::now();
                        if now <= end {
                            out.sample(t0 >= from, now - t0);
                        }
                    }
                    Err(e) => {
                        consecutive += 1;
                        out.error(t0 >= from, e);
                        conn = None;
                    }
                }
            }
            out
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(
            t.await
                .map_err(|e| BenchError::Http(format!("load task: {e}")))?,
        );
    }
    Ok(combine(concurrency, timing, outcomes))
}

/// `concurrency` loops, each opening a new TLS connection per `GET path` (full
/// handshakes: the client offers no session to resume).
pub async fn new_connections(
    target: &Target,
    tls: Arc<ClientConfig>,
    path: &str,
    concurrency: usize,
    timing: Timing,
) -> Result<RateResult> {
    let start = Instant::now();
    let from = start + timing.warmup;
    let end = from + timing.measure;
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let target = target.clone();
        let connector = TlsConnector::from(tls.clone());
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut out = TaskOutcome::new();
            let mut consecutive = 0;
            while Instant::now() < end && consecutive < MAX_CONSECUTIVE_ERRORS {
                let t0 = Instant::now();
                let result = async {
                    let mut c = connect(&target, &connector).await?;
                    get(&mut c, &target.host, &path, REQUEST_TIMEOUT).await
                }
                .await;
                match result {
                    Ok(_) => {
                        consecutive = 0;
                        let now = Instant::now();
                        if now <= end {
                            out.sample(t0 >= from, now - t0);
                        }
                    }
                    Err(e) => {
                        consecutive += 1;
                        out.error(t0 >= from, e);
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            out
        }));
    }
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(
            t.await
                .map_err(|e| BenchError::Http(format!("load task: {e}")))?,
        );
    }
    Ok(combine(concurrency, timing, outcomes))
}

/// One bulk download.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BulkResult {
    /// Body bytes received.
    pub bytes: u64,
    /// Wall-clock seconds of the measured download.
    pub seconds: f64,
    /// Megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    /// CPU seconds the contender used during the download (None for direct).
    pub contender_cpu_seconds: Option<f64>,
    /// Contender CPU seconds per GB (10^9 bytes) moved.
    pub cpu_seconds_per_gb: Option<f64>,
}

/// Downloads `/bytes/warmup` then `/bytes/size` on one keep-alive connection, timing
/// the second; `cpu` reads the contender's CPU seconds (called before and after).
pub async fn bulk(
    target: &Target,
    tls: Arc<ClientConfig>,
    warmup_bytes: u64,
    size: u64,
    cpu: impl Fn() -> Option<f64>,
) -> Result<BulkResult> {
    let connector = TlsConnector::from(tls);
    let mut conn = connect(target, &connector).await?;
    let deadline = Duration::from_secs(600);
    get(
        &mut conn,
        &target.host,
        &format!("/bytes/{warmup_bytes}"),
        deadline,
    )
    .await?;
    let cpu0 = cpu();
    let t0 = Instant::now();
    let n = get(&mut conn, &target.host, &format!("/bytes/{size}"), deadline).await?;
    let seconds = t0.elapsed().as_secs_f64();
    let cpu1 = cpu();
    if n != size {
        return Err(BenchError::Http(format!(
            "bulk download: {n} bytes instead of {size}"
        )));
    }
    let used = cpu0.zip(cpu1).map(|(a, b)| (b - a).max(0.0));
    Ok(BulkResult {
        bytes: n,
        seconds,
        mb_per_s: n as f64 / 1e6 / seconds,
        contender_cpu_seconds: used,
        cpu_seconds_per_gb: used.map(|c| c / (n as f64 / 1e9)),
    })
}

/// Memory with many idle keep-alive connections.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleResult {
    /// Connections opened (each served one request, then stayed open).
    pub connections: usize,
    /// Connections that failed to open or to answer.
    pub failed: usize,
    /// Contender RSS before the connections, bytes (None for direct).
    pub rss_before: Option<u64>,
    /// Contender RSS with every connection open and idle, bytes.
    pub rss_idle_connections: Option<u64>,
    /// The first error seen, if any.
    pub first_error: Option<String>,
}

/// Opens `count` connections spread over `targets` (each sends one `GET path`, then
/// idles), waits `settle`, reads the contender's RSS with `rss`, then closes them all.
pub async fn idle_connections(
    targets: &[Target],
    tls: Arc<ClientConfig>,
    path: &str,
    count: usize,
    settle: Duration,
    rss: impl Fn() -> Option<u64>,
) -> Result<IdleResult> {
    const OPENING_AT_ONCE: usize = 32;
    let rss_before = rss();
    let connector = TlsConnector::from(tls);
    let semaphore = Arc::new(tokio::sync::Semaphore::new(OPENING_AT_ONCE));
    let mut tasks = Vec::new();
    for i in 0..count {
        let target = targets[i % targets.len().max(1)].clone();
        let connector = connector.clone();
        let semaphore = semaphore.clone();
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let _permit = semaphore
                .acquire_owned()
                .await
                .map_err(|e| BenchError::Http(e.to_string()))?;
            let mut c = connect(&target, &connector).await?;
            get(&mut c, &target.host, &path, REQUEST_TIMEOUT).await?;
            Ok::<_, BenchError>(c)
        }));
    }
    let mut open = Vec::new();
    let mut failed = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(c)) => open.push(c),
            Ok(Err(e)) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e.to_string());
            }
        }
    }
    tokio::time::sleep(settle).await;
    let rss_idle_connections = rss();
    let connections = open.len();
    drop(open);
    Ok(IdleResult {
        connections,
        failed,
        rss_before,
        rss_idle_connections,
        first_error,
    })
}
