//! The one decision function every path uses: DNS, TLS, plain HTTP, intercepted HTTPS,
//! the explicit proxy and the TCP relay all describe what they see as a [`Request`] and
//! act on the [`Decision`]. No rule is evaluated anywhere else.

use std::fmt;

use crate::host::{HostError, normalize_name};
use crate::model::{Auth, Match, Policy, Route};

/// The ports on which ordinary (non-`tcp`) routes are reached.
pub const HTTP_PORT: u16 = 80;
/// See [`HTTP_PORT`].
pub const HTTPS_PORT: u16 = 443;

/// Which path is asking.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A DNS question for `host`.
    Dns,
    /// A TLS connection whose ClientHello names `host` (SNI), or a CONNECT to it.
    Tls,
    /// A plain-text HTTP request (port 80, or an explicit-proxy `http://` request).
    Http,
    /// An HTTP request inside an intercepted TLS connection.
    Https,
    /// A raw TCP connection to `host:port` through the relay.
    Tcp,
}

impl Kind {
    /// Stable lowercase name, as written in the audit log.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Dns => "dns",
            Kind::Tls => "tls",
            Kind::Http => "http",
            Kind::Https => "https",
            Kind::Tcp => "tcp",
        }
    }
}

/// What a path saw, for the policy to judge. Build one with the constructors.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// Which path is asking.
    pub kind: Kind,
    /// The host as the client named it (SNI, Host/`:authority` without port, DNS name).
    pub host: &'a str,
    /// The destination port.
    pub port: u16,
    /// The HTTP method (empty for non-HTTP kinds).
    pub method: &'a str,
    /// The origin-form request target: path and optional `?query` (empty for non-HTTP).
    pub target: &'a str,
    /// The request headers as (name, value) pairs; names in any case.
    pub headers: &'a [(&'a str, &'a [u8])],
}

impl<'a> Request<'a> {
    /// A DNS question.
    pub fn dns(host: &'a str) -> Self {
        Self::connection(Kind::Dns, host, 0)
    }

    /// A TLS ClientHello (or CONNECT) for `host:port`.
    pub fn tls(host: &'a str, port: u16) -> Self {
        Self::connection(Kind::Tls, host, port)
    }

    /// A raw TCP connection for `host:port`.
    pub fn tcp(host: &'a str, port: u16) -> Self {
        Self::connection(Kind::Tcp, host, port)
    }

    /// An HTTP request; `kind` is [`Kind::Http`] or [`Kind::Https`].
    pub fn http(
        kind: Kind,
        host: &'a str,
        port: u16,
        method: &'a str,
        target: &'a str,
        headers: &'a [(&'a str, &'a [u8])],
    ) -> Self {
        Request {
            kind,
            host,
            port,
            method,
            target,
            headers,
        }
    }

    fn connection(kind: Kind, host: &'a str, port: u16) -> Self {
        Request {
            kind,
            host,
            port,
            method: "",
            target: "",
            headers: &[],
        }
    }
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it through.
    Allow,
    /// Refuse it.
    Deny,
}

/// Why a decision went the way it did: a stable code for machines and a sentence for people.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonCode {
    /// A route allows it.
    Allowed,
    /// No route names this host.
    NoRoute,
    /// The host is an IP address; decisions are made by name.
    IpLiteral,
    /// The host is not a valid name (or is empty).
    InvalidHost,
    /// The route does not allow this port for this kind of connection.
    PortNotAllowed,
    /// TRACE is never allowed.
    TraceDenied,
    /// The request is malformed (bad method, target not in origin form).
    InvalidRequest,
    /// The path has `.`/`..` segments (possibly encoded) that would escape a path rule.
    PathNotCanonical,
    /// `git push` is never allowed.
    GitPushDenied,
    /// `git fetch` needs `git: {fetch: true}` on the route.
    GitFetchNotEnabled,
    /// None of the route's `matches` entries holds.
    NoMatch,
    /// The route injects credentials, which happens only over TLS.
    AuthRequiresTls,
}

impl ReasonCode {
    /// Stable snake_case code, for the audit log and the `x-bottleneck-deny` header.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonCode::Allowed => "allowed",
            ReasonCode::NoRoute => "no_route",
            ReasonCode::IpLiteral => "ip_literal",
            ReasonCode::InvalidHost => "invalid_host",
            ReasonCode::PortNotAllowed => "port_not_allowed",
            ReasonCode::TraceDenied => "trace_denied",
            ReasonCode::InvalidRequest => "invalid_request",
            ReasonCode::PathNotCanonical => "path_not_canonical",
            ReasonCode::GitPushDenied => "git_push_denied",
            ReasonCode::GitFetchNotEnabled => "git_fetch_not_enabled",
            ReasonCode::NoMatch => "no_match",
            ReasonCode::AuthRequiresTls => "auth_requires_tls",
        }
    }
}

impl fmt::Display for ReasonCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of [`Policy::decide`].
#[derive(Debug, Clone)]
pub struct Decision<'p> {
    /// Allow or deny.
    pub verdict: Verdict,
    /// The stable reason code.
    pub code: ReasonCode,
    /// A sentence for the user; for denials it says what policy line would allow it.
    pub message: String,
    /// The normalised host, when the request's host was a valid name.
    pub host: Option<String>,
    /// The route that governed the decision, if the host has one.
    pub route: Option<&'p Route>,
    /// Credentials to inject. Invariant: `Some` only when allowed and the kind is
    /// [`Kind::Https`]: never over plain text, never before the allow decision.
    pub auth: Option<&'p Auth>,
}

impl Decision<'_> {
    /// Whether the request may proceed.
    pub fn is_allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

impl Policy {
    /// Decide one request. Never panics, whatever the input.
    ///
    /// ```
    /// use bottleneck_policy::{Policy, Request, Kind, ReasonCode};
    /// let policy = Policy::from_yaml("version: 1\nroutes:\n  - host: pypi.org\n", "policy.yaml").unwrap();
    /// assert!(policy.decide(&Request::dns("PyPI.org.")).is_allowed());
    /// let denied = policy.decide(&Request::tls("evil.example", 443));
    /// assert_eq!(denied.code, ReasonCode::NoRoute);
    /// assert!(denied.message.contains("- host: evil.example"));
    /// ```
    pub fn decide<'p>(&'p self, req: &Request<'_>) -> Decision<'p> {
        let host = match normalize_name(req.host) {
            Ok(host) => host,
            Err(HostError::IpLiteral(ip)) => {
                return deny(
                    ReasonCode::IpLiteral,
                    format!(
                        "`{}` is an IP address ({ip}); bottleneck allows hosts by name only: connect by name, or use a client that sends SNI",
                        req.host
                    ),
                    None,
                    None,
                );
            }
            Err(e) => {
                return deny(
                    ReasonCode::InvalidHost,
                    format!("invalid host: {e}"),
                    None,
                    None,
                );
            }
        };
        let Some(route) = self.index.find(&host).and_then(|i| self.routes.get(i)) else {
            let message = format!(
                "`{host}` is not in the policy; to allow it, add to `routes`:\n  - host: {host}"
            );
            return deny(ReasonCode::NoRoute, message, Some(host), None);
        };
        match req.kind {
            Kind::Dns => allow(&host, route, None),
            Kind::Tcp => {
                if route.tcp.contains(&req.port) {
                    allow(&host, route, None)
                } else {
                    let message = format!(
                        "TCP port {} to `{host}` is not allowed; add it to the `tcp` list of the route `{}` at line {}",
                        req.port, route.host, route.line
                    );
                    deny(ReasonCode::PortNotAllowed, message, Some(host), Some(route))
                }
            }
            Kind::Tls => {
                if req.port == HTTPS_PORT {
                    allow(&host, route, None)
                } else {
                    deny(
                        ReasonCode::PortNotAllowed,
                        port_message(req, &host, route),
                        Some(host),
                        Some(route),
                    )
                }
            }
            Kind::Http | Kind::Https => self.decide_http(req, host, route),
        }
    }

    fn decide_http<'p>(
        &'p self,
        req: &Request<'_>,
        host: String,
        route: &'p Route,
    ) -> Decision<'p> {
        let expected_port = if req.kind == Kind::Http {
            HTTP_PORT
        } else {
            HTTPS_PORT
        };
        if req.port != expected_port {
            return deny(
                ReasonCode::PortNotAllowed,
                port_message(req, &host, route),
                Some(host),
                Some(route),
            );
        }
        // Some servers read methods case-insensitively, so `trace` is TRACE too.
        if req.method.eq_ignore_ascii_case("TRACE") {
            return deny(
                ReasonCode::TraceDenied,
                "TRACE is always denied: it would echo injected credentials back to the client"
                    .into(),
                Some(host),
                Some(route),
            );
        }
        if !crate::load::is_token(req.method) || !req.target.starts_with('/') {
            return deny(
                ReasonCode::InvalidRequest,
                format!(
                    "`{} {}` is not an origin-form HTTP request",
                    req.method, req.target
                ),
                Some(host),
                Some(route),
            );
        }
        let (path, query) = req.target.split_once('?').unwrap_or((req.target, ""));
        let Some(decoded) = decode_for_checks(path) else {
            return deny(
                ReasonCode::PathNotCanonical,
                format!(
                    "path `{path}` is percent-encoded more deeply than any client would; request the decoded path"
                ),
                Some(host),
                Some(route),
            );
        };
        // `..;x` is `..` to servlet containers, which drop `;` path parameters.
        let dot_segment = |seg: &str| matches!(seg.split(';').next(), Some("." | ".."));
        if decoded.split('/').any(dot_segment) {
            return deny(
                ReasonCode::PathNotCanonical,
                format!(
                    "path `{path}` contains `.` or `..` segments, which could escape path rules; request the normalised path"
                ),
                Some(host),
                Some(route),
            );
        }
        let git = git_service(&decoded, query);
        if git == Some(GitService::ReceivePack) {
            return deny(
                ReasonCode::GitPushDenied,
                format!(
                    "git push to `{host}` is denied: bottleneck never allows receive-pack; push from outside the bottle"
                ),
                Some(host),
                Some(route),
            );
        }
        let allowed_by_git = match git {
            Some(_) if !route.git.fetch => {
                return deny(
                    ReasonCode::GitFetchNotEnabled,
                    format!(
                        "git fetch from `{host}` is not enabled; add `git: {{fetch: true}}` to the route `{}` at line {}",
                        route.host, route.line
                    ),
                    Some(host),
                    Some(route),
                );
            }
            Some(_) => matches!(req.method, "GET" | "POST"),
            None => false,
        };
        let allowed_by_matches = route.matches.is_empty()
            || route
                .matches
                .iter()
                .any(|m| entry_holds(m, req.method, path, req.headers));
        if !allowed_by_git && !allowed_by_matches {
            let message = format!(
                "{} {path} on `{host}` matches none of the `matches` entries of the route `{}` at line {}; to allow it add an entry such as:\n  - {{methods: [{}], paths: [{{type: exact, value: {}}}]}}",
                req.method,
                route.host,
                route.line,
                req.method,
                yaml_quote(path)
            );
            return deny(ReasonCode::NoMatch, message, Some(host), Some(route));
        }
        if let Some(auth) = &route.auth {
            if req.kind == Kind::Http {
                return deny(
                    ReasonCode::AuthRequiresTls,
                    format!(
                        "the route `{}` at line {} injects credentials, which bottleneck does only over TLS; use https://{host}",
                        route.host, route.line
                    ),
                    Some(host),
                    Some(route),
                );
            }
            return allow(&host, route, Some(auth));
        }
        allow(&host, route, None)
    }
}

fn port_message(req: &Request<'_>, host: &str, route: &Route) -> String {
    let usual = match req.kind {
        Kind::Http => HTTP_PORT,
        _ => HTTPS_PORT,
    };
    format!(
        "{} to `{host}` on port {} is not allowed: routes admit {} on port {usual} only{}",
        req.kind.as_str().to_uppercase(),
        req.port,
        req.kind.as_str().to_uppercase(),
        if route.tcp.is_empty() && req.port != HTTP_PORT && req.port != HTTPS_PORT {
            format!(
                "; for raw TCP add `tcp: [{}]` to the route `{}` at line {}",
                req.port, route.host, route.line
            )
        } else {
            String::new()
        }
    )
}

/// `text` as a YAML double-quoted scalar, so a suggested policy line pastes correctly.
fn yaml_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn allow<'p>(host: &str, route: &'p Route, auth: Option<&'p Auth>) -> Decision<'p> {
    Decision {
        verdict: Verdict::Allow,
        code: ReasonCode::Allowed,
        message: format!(
            "allowed by the route `{}` at line {}",
            route.host, route.line
        ),
        host: Some(host.to_owned()),
        route: Some(route),
        auth,
    }
}

fn deny<'p>(
    code: ReasonCode,
    message: String,
    host: Option<String>,
    route: Option<&'p Route>,
) -> Decision<'p> {
    Decision {
        verdict: Verdict::Deny,
        code,
        message,
        host,
        route,
        auth: None,
    }
}

fn entry_holds(entry: &Match, method: &str, path: &str, headers: &[(&str, &[u8])]) -> bool {
    let method_ok = entry.methods.is_empty() || entry.methods.iter().any(|m| m == method);
    let path_ok = entry.paths.is_empty() || entry.paths.iter().any(|p| p.matches(path));
    // A required header must be present and every copy of it must carry the value, so a
    // second copy cannot smuggle a different value past the check.
    let headers_ok = entry.headers.iter().all(|rule| {
        let mut values = headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case(&rule.name))
            .map(|(_, value)| *value)
            .peekable();
        values.peek().is_some() && values.all(|v| v == rule.value.as_bytes())
    });
    method_ok && path_ok && headers_ok
}

/// The path as an upstream might see it, for the traversal and git checks only: percent
/// escapes decoded (repeatedly, against double encoding), backslashes as slashes,
/// lowercased. Matching itself uses the raw path. `None` when the path is encoded more
/// deeply than any client would: it is refused rather than guessed at.
fn decode_for_checks(path: &str) -> Option<String> {
    let mut current = path.to_owned();
    for _ in 0..MAX_DECODE_ROUNDS {
        let next = percent_decode(&current);
        if next == current {
            return Some(current.replace('\\', "/").to_ascii_lowercase());
        }
        current = next;
    }
    None
}

/// Paths still changing after this many rounds of percent-decoding are refused outright.
const MAX_DECODE_ROUNDS: usize = 4;

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).and_then(|b| (*b as char).to_digit(16)),
                bytes.get(i + 2).and_then(|b| (*b as char).to_digit(16)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GitService {
    UploadPack,
    ReceivePack,
}

/// Which git smart-HTTP service a request belongs to, from its decoded path and raw query.
fn git_service(decoded_path: &str, query: &str) -> Option<GitService> {
    // Servlet containers drop `;` path parameters and many routers ignore a trailing
    // slash, so `git-receive-pack;x` and `git-receive-pack/` reach the service too.
    let segments: Vec<&str> = decoded_path
        .split('/')
        .map(|seg| seg.split_once(';').map_or(seg, |(name, _)| name))
        .collect();
    let joined = segments.join("/");
    let decoded_path = joined.trim_end_matches('/');
    if decoded_path.ends_with("/git-receive-pack") {
        return Some(GitService::ReceivePack);
    }
    if decoded_path.ends_with("/git-upload-pack") {
        return Some(GitService::UploadPack);
    }
    if decoded_path.ends_with("/info/refs") {
        let services = query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .filter(|(k, _)| percent_decode(k).eq_ignore_ascii_case("service"))
            .map(|(_, v)| percent_decode(v).to_ascii_lowercase());
        let mut values = services;
        if values.any(|v| v == "git-receive-pack") {
            return Some(GitService::ReceivePack);
        }
        // The dumb protocol reads info/refs without a service: that is a fetch too.
        return Some(GitService::UploadPack);
    }
    None
}

/// Render a route's conditions for `bottleneck policy check`.
pub(crate) fn describe_match(m: &Match) -> String {
    let mut parts = Vec::new();
    if !m.methods.is_empty() {
        parts.push(format!("methods {}", m.methods.join("|")));
    }
    if !m.paths.is_empty() {
        let paths: Vec<String> = m.paths.iter().map(ToString::to_string).collect();
        parts.push(format!("paths {}", paths.join(" | ")));
    }
    for h in &m.headers {
        parts.push(format!("header {}: {}", h.name, h.value));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::from_yaml(yaml, "t.yaml").unwrap()
    }

    #[test]
    fn paths_encoded_more_deeply_than_the_decode_bound_are_refused() {
        let p = policy("version: 1\nroutes:\n  - host: a.example\n");
        let mut dots = "..".to_owned();
        for _ in 0..MAX_DECODE_ROUNDS + 1 {
            dots = dots.replace('%', "%25").replace('.', "%2e");
        }
        let target = format!("/v1/{dots}/admin");
        let d = p.decide(&Request::http(
            Kind::Https,
            "a.example",
            443,
            "GET",
            &target,
            &[],
        ));
        assert_eq!(d.code, ReasonCode::PathNotCanonical, "{target}");
        let ok = p.decide(&Request::http(
            Kind::Https,
            "a.example",
            443,
            "GET",
            "/v1/%41",
            &[],
        ));
        assert!(ok.is_allowed());
    }

    #[test]
    fn the_suggested_match_entry_quotes_odd_paths_so_it_pastes_into_yaml() {
        let base =
            "version: 1\nroutes:\n  - host: a.example\n    matches:\n      - methods: [HEAD]\n";
        let path = r#"/q"uote\back"#;
        let original = policy(base);
        let denied = original.decide(&Request::http(
            Kind::Https,
            "a.example",
            443,
            "GET",
            path,
            &[],
        ));
        assert_eq!(denied.code, ReasonCode::NoMatch);
        let suggestion = denied
            .message
            .lines()
            .last()
            .unwrap()
            .trim_start_matches("  ");
        let fixed = policy(&format!("{base}      {suggestion}\n"));
        let allowed = fixed.decide(&Request::http(
            Kind::Https,
            "a.example",
            443,
            "GET",
            path,
            &[],
        ));
        assert!(allowed.is_allowed(), "{suggestion}");
    }

    #[test]
    fn tls_on_port_80_is_not_told_to_add_a_tcp_port_the_loader_would_reject() {
        let p = policy("version: 1\nroutes:\n  - host: a.example\n");
        let d = p.decide(&Request::tls("a.example", 80));
        assert_eq!(d.code, ReasonCode::PortNotAllowed);
        assert!(!d.message.contains("tcp: [80]"), "{}", d.message);
        let d = p.decide(&Request::tls("a.example", 8443));
        assert!(d.message.contains("tcp: [8443]"), "{}", d.message);
    }
}
