//! The explicit proxy (`--listen-proxy`), for agents run with `--egress=proxy`: an HTTP/1.1
//! proxy that feeds the same pipeline and the same decision function as the transparent
//! listeners.
//!
//! * `CONNECT host:443`: decided as TLS to `host`; once allowed, the tunnel's ClientHello
//!   must name `host` (no domain fronting through the tunnel), then it is intercepted
//!   exactly like a transparent TLS connection (or spliced for a passthrough route).
//! * `CONNECT host:port` for another port: decided as raw TCP (the route's `tcp` list),
//!   then spliced to a vetted address of `host`.
//! * `GET http://host/path` (absolute form): handled by [`Proxy::handle`] as plain HTTP.
//! * Anything else (origin-form requests, `https://` without CONNECT, IP-literal hosts) is
//!   refused with a response saying why.
//!
//! The agent network stays internal: an agent that ignores its proxy variables gets no
//! egress at all, not open egress.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bottleneck_policy::host::{HostError, normalize_name};
use bottleneck_policy::{HTTPS_PORT, Request as PolicyRequest, TlsMode};
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::admission::Admitted;
use crate::audit::Record;
use crate::listen::{HEADER_TIMEOUT, HELLO_TIMEOUT, Listeners, elapsed_ms};
use crate::proxy::{Body, ConnInfo, Proxy, Refusal, rescue};
use crate::request_head::MAX_HEAD_BYTES;
use crate::rewind::Rewind;
use crate::tls::client_hello::read_client_hello;

/// The audit `kind` of CONNECT decisions.
const KIND: &str = "proxy";

/// How a granted tunnel continues once the client has the 200.
enum Tunnel {
    /// Read the ClientHello, check its SNI, intercept.
    Intercept,
    /// Read the ClientHello, check its SNI, splice (a passthrough route).
    SpliceTls,
    /// Splice raw TCP (a `tcp` rule port).
    SpliceTcp,
}

impl Listeners {
    /// Accept explicit-proxy connections forever.
    pub async fn serve_explicit(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Some((stream, client, permit)) = self.admission.accept(&listener, KIND).await
            else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(this.explicit_connection(stream, client, Arc::new(permit)));
        }
    }

    async fn explicit_connection(
        self: Arc<Self>,
        stream: TcpStream,
        client: SocketAddr,
        permit: Arc<Admitted>,
    ) {
        let this = self.clone();
        let service = service_fn(move |req| {
            let this = this.clone();
            let permit = permit.clone();
            async move { Ok::<_, Infallible>(this.proxy_request(client, req, permit).await) }
        });
        let served = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .max_buf_size(MAX_HEAD_BYTES)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
            .await;
        if let Err(e) = served {
            tracing::debug!(error = %e, "proxy connection ended with an error");
        }
    }

    async fn proxy_request(
        self: Arc<Self>,
        client: SocketAddr,
        req: Request<Incoming>,
        permit: Arc<Admitted>,
    ) -> Response<Body> {
        if req.method() == Method::CONNECT {
            return self.connect(client, req, permit).await;
        }
        let refusal = |code, message: &str| {
            rescue(&Refusal {
                status: StatusCode::BAD_REQUEST,
                code,
                host: req.uri().host().unwrap_or_default().to_owned(),
                message: message.to_owned(),
            })
        };
        match req.uri().scheme_str() {
            Some("http") => {}
            Some(_) => {
                return refusal(
                    "use_connect",
                    "only http:// URLs are proxied directly; use CONNECT for https",
                );
            }
            None => {
                return refusal(
                    "not_a_proxy_request",
                    "this is a proxy: send absolute-form requests (http://host/path) or CONNECT",
                );
            }
        }
        let conn = Arc::new(ConnInfo {
            client,
            original_dst: None,
            sni: None,
            tls_denial: None,
        });
        let snapshot = self.proxy.policy().current();
        match Proxy::handle(self.proxy.clone(), conn, snapshot, req).await {
            Ok(response) => response,
            Err(never) => match never {},
        }
    }

    /// Decide a CONNECT and, if allowed, dial (for a splice) and answer 200 only once
    /// the upstream is connected, then continue on the upgraded stream.
    async fn connect(
        self: Arc<Self>,
        client: SocketAddr,
        req: Request<Incoming>,
        permit: Arc<Admitted>,
    ) -> Response<Body> {
        let started = Instant::now();
        let mut record = Record {
            kind: KIND,
            client: Some(client),
            method: Some("CONNECT".into()),
            ..Record::default()
        };
        let target = req.uri().authority().cloned();
        let Some((host, port)) = target
            .as_ref()
            .and_then(|a| Some((a.host(), a.port_u16()?)))
        else {
            return self.refuse_connect(
                record,
                started,
                Refusal {
                    status: StatusCode::BAD_REQUEST,
                    code: "bad_authority",
                    host: String::new(),
                    message: "CONNECT needs host:port".into(),
                },
            );
        };
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        record.host = Some(host.clone());
        let name = match normalize_name(&host) {
            Ok(name) => name,
            Err(e) => {
                let (code, message) = match e {
                    HostError::IpLiteral(_) => (
                        "ip_literal",
                        "CONNECT to an IP address is refused: decisions are made by name",
                    ),
                    _ => (
                        "invalid_host",
                        "the CONNECT target is not a valid host name",
                    ),
                };
                return self.refuse_connect(
                    record,
                    started,
                    Refusal {
                        status: StatusCode::FORBIDDEN,
                        code,
                        host,
                        message: message.into(),
                    },
                );
            }
        };
        let snapshot = self.proxy.policy().current();
        let decision = if port == HTTPS_PORT {
            snapshot.policy.decide(&PolicyRequest::tls(&name, port))
        } else {
            snapshot.policy.decide(&PolicyRequest::tcp(&name, port))
        };
        record.host = Some(name.clone());
        record.route = decision
            .route
            .map(|r| format!("{} (line {})", r.host(), r.line()));
        if !decision.is_allowed() {
            let refusal = Refusal::from_decision(&name, &decision);
            return self.refuse_connect(record, started, refusal);
        }
        record.decision = "allow";
        record.reason = decision.code.as_str();
        let tunnel = match decision.route.map(|r| r.tls()) {
            _ if port != HTTPS_PORT => Tunnel::SpliceTcp,
            Some(TlsMode::Passthrough) => Tunnel::SpliceTls,
            _ => Tunnel::Intercept,
        };
        // A splice dials first: a refused or unreachable upstream is a 502 saying why,
        // not a 200 followed by a reset.
        let upstream = match tunnel {
            Tunnel::Intercept => None,
            Tunnel::SpliceTls | Tunnel::SpliceTcp => {
                match self.upstream.connect_tcp(&name, port).await {
                    Ok(connected) => Some(connected),
                    Err(e) => {
                        let refusal = Refusal {
                            status: StatusCode::BAD_GATEWAY,
                            code: "upstream_failed",
                            host: name.clone(),
                            message: format!("the upstream could not be reached: {e}"),
                        };
                        return self.refuse_connect(record, started, refusal);
                    }
                }
            }
        };
        let upgrade = hyper::upgrade::on(req);
        tokio::spawn(async move {
            let _permit = permit;
            let mut upgraded = match upgrade.await {
                Ok(upgraded) => TokioIo::new(upgraded),
                Err(e) => {
                    tracing::debug!(error = %e, "CONNECT upgrade failed");
                    return;
                }
            };
            let mut upstream = upstream;
            if matches!(tunnel, Tunnel::SpliceTcp)
                && let Some((upstream, addr)) = upstream.take()
            {
                self.splice_to(upgraded, &[], upstream, addr, record, started)
                    .await;
                return;
            }
            let (hello, prefix) = match read_client_hello(&mut upgraded, HELLO_TIMEOUT).await {
                Ok(read) => read,
                Err(e) => {
                    self.deny_connection(record, "bad_client_hello", started, &e.to_string());
                    return;
                }
            };
            let sni_matches = hello
                .sni
                .as_deref()
                .and_then(|sni| normalize_name(sni).ok())
                .is_some_and(|sni| sni == name);
            if hello.has_ech || !sni_matches {
                record.sni = hello.sni;
                let why = "the TLS server name inside the tunnel differs from the CONNECT host";
                self.deny_connection(record, "sni_mismatch", started, why);
                return;
            }
            record.sni = Some(name.clone());
            if let Some((upstream, addr)) = upstream {
                self.splice_to(upgraded, &prefix, upstream, addr, record, started)
                    .await;
                return;
            }
            record.duration_ms = elapsed_ms(started);
            self.proxy.audit().write(record);
            let conn = ConnInfo {
                client,
                original_dst: None,
                sni: Some(name),
                tls_denial: None,
            };
            self.intercept(Rewind::new(prefix, upgraded), conn).await;
        });
        Response::new(
            Empty::<Bytes>::new()
                .map_err(|never| match never {})
                .boxed(),
        )
    }

    fn refuse_connect(
        &self,
        mut record: Record,
        started: Instant,
        refusal: Refusal,
    ) -> Response<Body> {
        record.decision = "deny";
        record.reason = refusal.code;
        record.status = Some(refusal.status.as_u16());
        record.duration_ms = elapsed_ms(started);
        self.proxy.audit().write(record);
        tracing::info!(host = %refusal.host, code = refusal.code, "CONNECT refused");
        rescue(&refusal)
    }
}
