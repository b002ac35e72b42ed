//! A bounded load generator: N keep-alive HTTP/1.1 connections (TLS trusting the bottle
//! CA, or plain), each sending requests one after another, reconnecting after an error.
//! Run it inside the agent namespace with `lab.run_in(Host::Agent, ...)`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncRead, AsyncWrite};

/// Where the load goes.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address the agent connects to (redirected by the gateway's firewall).
    pub addr: SocketAddr,
    /// Host header and SNI.
    pub host: String,
    /// TLS (trusting `ca_pem`) or plain HTTP.
    pub tls: bool,
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
    /// Path prefix; each request gets `{prefix}/{worker}/{n}`.
    pub path_prefix: String,
    /// Stops continuous load.
    pub stop: Arc<AtomicBool>,
    /// Per-request deadline.
    pub request_timeout: Duration,
    /// Pause after a failed connection attempt.
    pub retry_pause: Duration,
}

/// What the load saw.
#[derive(Debug, Default)]
pub struct Report {
    /// Responses by status.
    pub statuses: BTreeMap<u16, u64>,
    /// Connection or request errors (no response).
    pub errors: u64,
    /// The first few error messages.
    pub first_errors: Vec<String>,
    /// Paths of requests answered 200 with a complete body, and when.
    pub completed: Vec<(String, Instant)>,
    /// Failed attempts and when (errors and non-200 statuses).
    pub failed_at: Vec<Instant>,
    /// Wall-clock time.
    pub elapsed: Duration,
}

impl Report {
    /// Responses with status 200.
    pub fn ok(&self) -> u64 {
        self.statuses.get(&200).copied().unwrap_or(0)
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Runs `plan` against `target` on a fresh two-thread runtime (call it inside the agent
/// namespace: the runtime's threads are spawned from there and inherit it).
pub fn run(plan: Plan, target: Target) -> Report {
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
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let report = Arc::new(Mutex::new(Report::default()));
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

async fn connect(
    target: &Target,
    connector: &tokio_rustls::TlsConnector,
) -> Result<hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>, String> {
    let tcp = tokio::net::TcpStream::connect(target.addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    tcp.set_nodelay(true).ok();
    let io: Box<dyn Io> = if target.tls {
        let name = rustls::pki_types::ServerName::try_from(target.host.clone())
            .map_err(|e| e.to_string())?;
        Box::new(
            connector
                .connect(name, tcp)
                .await
                .map_err(|e| format!("tls: {e}"))?,
        )
    } else {
        Box::new(tcp)
    };
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

async fn worker_loop(
    worker: usize,
    plan: Plan,
    target: Target,
    connector: tokio_rustls::TlsConnector,
    report: Arc<Mutex<Report>>,
) {
    let mut sender = None;
    let mut n = 0usize;
    loop {
        if let Some(limit) = plan.requests_per_connection {
            if n >= limit {
                break;
            }
        } else if plan.stop.load(Ordering::Relaxed) {
            break;
        }
        n += 1;
        let path = format!("{}/{worker}/{n}", plan.path_prefix);
        let outcome = tokio::time::timeout(
            plan.request_timeout,
            one(&mut sender, &path, &target, &connector),
        )
        .await
        .unwrap_or_else(|_| Err("timeout".into()));
        let failed = !matches!(outcome, Ok(200));
        {
            let mut r = report.lock().expect("report");
            match outcome {
                Ok(status) => {
                    *r.statuses.entry(status).or_default() += 1;
                    if status == 200 {
                        r.completed.push((path, Instant::now()));
                    }
                }
                Err(e) => {
                    r.errors += 1;
                    if r.first_errors.len() < 10 {
                        r.first_errors.push(format!("{path}: {e}"));
                    }
                }
            }
            if failed {
                r.failed_at.push(Instant::now());
            }
        }
        if failed {
            sender = None;
            tokio::time::sleep(plan.retry_pause).await;
        }
    }
}

async fn one(
    sender: &mut Option<hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>>,
    path: &str,
    target: &Target,
    connector: &tokio_rustls::TlsConnector,
) -> Result<u16, String> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(target, connector).await?);
    }
    let s = sender.as_mut().expect("sender");
    s.ready().await.map_err(|e| format!("ready: {e}"))?;
    let request = http::Request::get(path)
        .header(http::header::HOST, &target.host)
        .body(Empty::<bytes::Bytes>::new())
        .map_err(|e| e.to_string())?;
    let response = s
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    let status = response.status().as_u16();
    response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?;
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
