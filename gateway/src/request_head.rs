//! The checks the gateway makes on every request head it terminates (transparent HTTP,
//! intercepted TLS over h1 and h2, the explicit proxy) before anything goes upstream: the
//! head's size, the authority against the SNI and the port, the policy decision, the
//! declared body length, and the credentials to inject.
//!
//! Pure (no I/O), so it is tested and fuzzed alone (`fuzz/fuzz_targets/request_head.rs`).

use bottleneck_policy::host::normalize_name;
use bottleneck_policy::{HTTP_PORT, HTTPS_PORT, Kind, Request as PolicyRequest};
use http::header::{self, HeaderName, HeaderValue};
use http::request::Parts;
use http::uri::Authority;
use http::{StatusCode, Version};

use crate::audit::Record;
use crate::proxy::{ConnInfo, Refusal};
use crate::state::Snapshot;

/// The largest request head accepted (request line and header fields), on every path.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// The audit reason (and `x-bottleneck-deny` code) of a request body over the bound.
pub const BODY_TOO_LARGE: &str = "body_too_large";

/// Where an allowed request goes and what changes on its way.
#[derive(Debug)]
pub struct Checked {
    /// The normalised name to dial (and to send as the authority).
    pub name: String,
    /// `Some`: the route injects credentials; the agent's own `Authorization` is replaced
    /// by this (sensitive) value.
    pub authorization: Option<HeaderValue>,
}

/// Check one request head. `target` is its path and query, `declared_body` the length its
/// body declares (0 when unknown), `max_body` the bound. Sets `record.host` and
/// `record.route` as far as the checks got.
pub fn check(
    conn: &ConnInfo,
    snapshot: &Snapshot,
    head: &Parts,
    target: &str,
    declared_body: u64,
    max_body: u64,
    record: &mut Record,
) -> Result<Checked, Refusal> {
    let kind = conn.kind();
    // hyper's h1 read buffer limit is soft (one large read can carry a whole oversized
    // head past it), so the bound is enforced here, the same for every path.
    let size = head_size(head);
    if size > MAX_HEAD_BYTES {
        return Err(Refusal {
            status: StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            code: "head_too_large",
            host: conn.sni.clone().unwrap_or_default(),
            message: format!(
                "the request head is {size} bytes; the gateway accepts at most {MAX_HEAD_BYTES}"
            ),
        });
    }
    let authority = request_authority(head).map_err(|message| Refusal {
        status: StatusCode::BAD_REQUEST,
        code: "bad_authority",
        host: conn.sni.clone().unwrap_or_default(),
        message,
    })?;
    let expected_port = if kind == Kind::Https {
        HTTPS_PORT
    } else {
        HTTP_PORT
    };
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    record.host = Some(host.clone());
    if let Some(sni) = &conn.sni {
        let same_name = match (normalize_name(&host), normalize_name(sni)) {
            (Ok(a), Ok(b)) => a == b,
            _ => false,
        };
        let same_port = authority.port_u16().is_none_or(|p| p == expected_port);
        if !same_name || !same_port {
            return Err(Refusal {
                status: StatusCode::MISDIRECTED_REQUEST,
                code: "authority_mismatch",
                host,
                message: format!(
                    "this TLS connection is for `{sni}`, but the request is for `{authority}`; open a separate connection for each host"
                ),
            });
        }
    } else if authority.port_u16().is_some_and(|p| p != expected_port) {
        return Err(Refusal {
            status: StatusCode::MISDIRECTED_REQUEST,
            code: "authority_mismatch",
            host,
            message: format!(
                "the request names port {:?} but arrived on port {expected_port}",
                authority.port_u16()
            ),
        });
    }
    if let Some(denial) = &conn.tls_denial {
        return Err(denial.clone());
    }

    let header_pairs: Vec<(&str, &[u8])> = head
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .collect();
    let decision = snapshot.policy.decide(&PolicyRequest::http(
        kind,
        &host,
        expected_port,
        head.method.as_str(),
        target,
        &header_pairs,
    ));
    record.route = decision
        .route
        .map(|r| format!("{} (line {})", r.host(), r.line()));
    if !decision.is_allowed() {
        return Err(Refusal::from_decision(&host, &decision));
    }
    let name = decision.host.clone().unwrap_or(host);
    record.host = Some(name.clone());
    // A declared length (h1 Content-Length, or h2's) is refused before a byte is sent.
    if declared_body > max_body {
        return Err(body_too_large(&name, Some(declared_body), max_body));
    }
    let authorization = match decision.route.and_then(|route| route.auth()) {
        None => None,
        Some(auth) => Some(snapshot.authorization(auth).ok_or_else(|| Refusal {
            status: StatusCode::FORBIDDEN,
            code: "auth_unavailable",
            host: name.clone(),
            message: "the route injects credentials but the secret is not available".into(),
        })?),
    };
    Ok(Checked {
        name,
        authorization,
    })
}

/// 413 for a request body over `limit`, declared (`Some(length)`) or streamed.
pub fn body_too_large(host: &str, declared: Option<u64>, limit: u64) -> Refusal {
    let message = match declared {
        Some(length) => {
            format!("the request body is {length} bytes; the gateway forwards at most {limit}")
        }
        None => format!(
            "the request body grew past {limit} bytes, the most the gateway forwards; the upstream got an incomplete request"
        ),
    };
    Refusal {
        status: StatusCode::PAYLOAD_TOO_LARGE,
        code: BODY_TOO_LARGE,
        host: host.to_owned(),
        message,
    }
}

/// A WebSocket opening handshake (RFC 6455 section 4.1): HTTP/1.1 GET with
/// `Connection: upgrade` and `Upgrade: websocket`. Other upgrades (h2c, TLS) are not
/// forwarded: the headers are stripped as hop-by-hop.
pub fn is_websocket_upgrade(head: &Parts) -> bool {
    let has_token = |name: HeaderName, token: &str| {
        head.headers.get_all(name).iter().any(|value| {
            value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    head.method == http::Method::GET
        && head.version == Version::HTTP_11
        && has_token(header::CONNECTION, "upgrade")
        && has_token(header::UPGRADE, "websocket")
}

/// The size of a request head as it would be sent in HTTP/1.1: the request line and each
/// `name: value` line.
fn head_size(head: &Parts) -> usize {
    let line = head.method.as_str().len() + head.uri.to_string().len() + 12;
    head.headers.iter().fold(line, |sum, (name, value)| {
        sum + name.as_str().len() + value.len() + 4
    })
}

/// The authority a request names: the URI's (absolute-form, or h2 `:authority`) and the
/// Host header must agree when both are present.
fn request_authority(head: &Parts) -> Result<Authority, String> {
    let from_uri = head.uri.authority().cloned();
    let mut hosts = head.headers.get_all(header::HOST).iter();
    let from_header = match (hosts.next(), hosts.next()) {
        (None, _) => None,
        (Some(value), None) => Some(
            value
                .to_str()
                .ok()
                .and_then(|v| v.parse::<Authority>().ok())
                .ok_or_else(|| "the Host header is not a valid authority".to_owned())?,
        ),
        (Some(_), Some(_)) => return Err("the request has more than one Host header".into()),
    };
    match (from_uri, from_header) {
        (Some(uri), Some(header)) if !uri.as_str().eq_ignore_ascii_case(header.as_str()) => Err(
            format!("the request target names `{uri}` but the Host header names `{header}`"),
        ),
        (Some(authority), _) | (None, Some(authority)) => Ok(authority),
        (None, None) => Err("the request names no host (no Host header)".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bottleneck_policy::Policy;
    use http::Request;

    const POLICY: &str = "version: 1\nroutes:\n  - host: a.example\n  - host: api.example\n    auth: {scheme: Bearer, token_ref: API_TOKEN}\n";

    fn snapshot() -> Snapshot {
        let policy = Policy::from_yaml(POLICY, "p.yaml").unwrap();
        Snapshot::new(policy, |_| Some("s3cret".into())).unwrap()
    }

    fn tls(sni: &str) -> ConnInfo {
        ConnInfo {
            client: "198.18.0.2:40000".parse().unwrap(),
            original_dst: None,
            sni: Some(sni.into()),
            tls_denial: None,
        }
    }

    fn head(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method("POST").uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn run(conn: &ConnInfo, head: &Parts, declared: u64) -> Result<Checked, Refusal> {
        check(
            conn,
            &snapshot(),
            head,
            "/x",
            declared,
            1000,
            &mut Record::default(),
        )
    }

    #[test]
    fn host_header_and_absolute_uri_must_agree() {
        let parts = head("https://a.example/x", &[("host", "b.example")]);
        assert!(request_authority(&parts).is_err());
        let parts = head("/x", &[("host", "A.example:443")]);
        assert_eq!(request_authority(&parts).unwrap().host(), "A.example");
        let parts = head("/x", &[("host", "a.example"), ("host", "b.example")]);
        assert!(request_authority(&parts).is_err());
        assert!(request_authority(&head("/x", &[])).is_err());
    }

    #[test]
    fn a_request_for_another_name_than_the_sni_is_misdirected() {
        let refusal = run(
            &tls("a.example"),
            &head("/x", &[("host", "api.example")]),
            0,
        )
        .unwrap_err();
        assert_eq!(refusal.status, StatusCode::MISDIRECTED_REQUEST);
        assert_eq!(refusal.code, "authority_mismatch");
    }

    #[test]
    fn a_declared_body_over_the_bound_is_refused_with_413_after_the_policy_allows() {
        let conn = tls("a.example");
        let parts = head("/x", &[("host", "a.example")]);
        assert!(run(&conn, &parts, 1000).is_ok());
        let refusal = run(&conn, &parts, 1001).unwrap_err();
        assert_eq!(refusal.status, StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(refusal.code, BODY_TOO_LARGE);
        // A denied host is refused for that reason, whatever its body.
        let denied = run(
            &tls("b.example"),
            &head("/x", &[("host", "b.example")]),
            5000,
        )
        .unwrap_err();
        assert_eq!(denied.status, StatusCode::FORBIDDEN);
    }

    #[test]
    fn a_route_with_auth_yields_the_injected_credentials() {
        let checked = run(
            &tls("api.example"),
            &head("/x", &[("host", "api.example")]),
            0,
        )
        .unwrap();
        let value = checked.authorization.unwrap();
        assert_eq!(value.to_str().unwrap(), "Bearer s3cret");
        assert!(value.is_sensitive());
        let plain = run(&tls("a.example"), &head("/x", &[("host", "a.example")]), 0).unwrap();
        assert!(plain.authorization.is_none());
    }

    #[test]
    fn a_head_over_the_bound_is_refused_with_431() {
        let big = "v".repeat(MAX_HEAD_BYTES);
        let parts = head("/x", &[("host", "a.example"), ("x-big", &big)]);
        let refusal = run(&tls("a.example"), &parts, 0).unwrap_err();
        assert_eq!(refusal.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }
}
