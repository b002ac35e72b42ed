//! The validated, normalised policy: what the loader produces and the decision reads.
//!
//! Every value here has already passed validation, so the invariants written on the fields
//! hold for any `Policy` a caller can obtain.

use std::fmt;
use std::net::SocketAddr;

use ipnet::IpNet;
use regex::Regex;

use crate::host::{HostIndex, HostPattern};

/// A loaded policy. Obtain one with [`crate::Policy::from_yaml`] or [`crate::Policy::load`].
#[derive(Debug, Clone)]
pub struct Policy {
    /// The routes, in file order. Invariant: no two routes have the same host pattern.
    pub(crate) routes: Vec<Route>,
    /// Finds the route for a name; built from `routes` and never changed after.
    pub(crate) index: HostIndex,
    /// Upstream resolvers named by the policy; empty = the gateway's own resolv.conf.
    pub(crate) dns_upstream: Vec<SocketAddr>,
    /// Ranges the operator allows upstream although they are not global unicast.
    /// Invariant: no range has host bits set.
    pub(crate) allow_ranges: Vec<IpNet>,
    /// Which file shape the policy was written in.
    pub(crate) format: Format,
}

/// The two accepted file shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `version: 1` with `routes`, `dns`, `allow_ranges`.
    V1,
    /// A bot-bottle `routes.yaml`: only a top-level `routes:` list.
    BotBottleRoutes,
}

impl Policy {
    /// The routes in file order.
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    /// The upstream resolvers the policy names (empty: use the gateway's resolv.conf).
    pub fn dns_upstream(&self) -> &[SocketAddr] {
        &self.dns_upstream
    }

    /// Ranges explicitly allowed upstream (see [`crate::addr::permitted`]).
    pub fn allow_ranges(&self) -> &[IpNet] {
        &self.allow_ranges
    }

    /// The shape the file was written in.
    pub fn format(&self) -> Format {
        self.format
    }
}

/// One route: what may be reached on one host (or one wildcard family of hosts).
#[derive(Debug, Clone)]
pub struct Route {
    /// The normalised host pattern.
    pub(crate) host: HostPattern,
    /// Credentials to inject; invariant: `None` when `tls` is passthrough.
    pub(crate) auth: Option<Auth>,
    /// Alternatives; empty = any method and path. Invariant: empty when `tls` is passthrough.
    pub(crate) matches: Vec<Match>,
    /// Git smart-HTTP permissions; invariant: default when `tls` is passthrough.
    pub(crate) git: GitRule,
    /// Whether TLS to this host is intercepted.
    pub(crate) tls: TlsMode,
    /// Raw TCP ports relayed for this host. Invariant: sorted, unique, none is 0, 80 or 443.
    pub(crate) tcp: Vec<u16>,
    /// The line of the route's `host` key, for messages.
    pub(crate) line: usize,
}

impl Route {
    /// The normalised host pattern.
    pub fn host(&self) -> &HostPattern {
        &self.host
    }
    /// The credentials injected on this route, if any.
    pub fn auth(&self) -> Option<&Auth> {
        self.auth.as_ref()
    }
    /// The `matches` alternatives (empty = anything).
    pub fn matches(&self) -> &[Match] {
        &self.matches
    }
    /// Git permissions.
    pub fn git(&self) -> GitRule {
        self.git
    }
    /// Interception mode.
    pub fn tls(&self) -> TlsMode {
        self.tls
    }
    /// Raw TCP ports.
    pub fn tcp(&self) -> &[u16] {
        &self.tcp
    }
    /// The line in the policy file where this route's `host` is.
    pub fn line(&self) -> usize {
        self.line
    }
}

/// Credentials injected by the gateway: `Authorization: <scheme> <secret>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The authorization scheme.
    pub scheme: AuthScheme,
    /// Name of the gateway environment variable holding the secret.
    /// Invariant: matches `[A-Za-z_][A-Za-z0-9_]*`.
    pub token_ref: String,
}

/// The word placed before the secret in the `Authorization` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthScheme {
    /// `Authorization: Bearer <secret>`.
    Bearer,
    /// `Authorization: token <secret>` (GitHub style).
    Token,
}

impl AuthScheme {
    /// The scheme as written in the header.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthScheme::Bearer => "Bearer",
            AuthScheme::Token => "token",
        }
    }
}

/// One alternative of a route's `matches`: every condition present must hold.
#[derive(Debug, Clone, Default)]
pub struct Match {
    /// Any of these paths (empty = any path).
    pub(crate) paths: Vec<PathRule>,
    /// Any of these methods, uppercase (empty = any method).
    pub(crate) methods: Vec<String>,
    /// All of these headers (empty = no header condition).
    pub(crate) headers: Vec<HeaderRule>,
}

impl Match {
    /// The path alternatives.
    pub fn paths(&self) -> &[PathRule] {
        &self.paths
    }
    /// The allowed methods, uppercase.
    pub fn methods(&self) -> &[String] {
        &self.methods
    }
    /// The required headers.
    pub fn headers(&self) -> &[HeaderRule] {
        &self.headers
    }
}

/// A condition on the request path (the part before `?`).
#[derive(Debug, Clone)]
pub enum PathRule {
    /// The path equals this string.
    Exact(String),
    /// The path starts with this string.
    Prefix(String),
    /// The whole path matches this regular expression (it is anchored at both ends).
    Regex(Regex),
}

impl PathRule {
    /// Whether `path` (without query) satisfies the rule.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathRule::Exact(p) => path == p,
            PathRule::Prefix(p) => path.starts_with(p.as_str()),
            PathRule::Regex(r) => r.is_match(path),
        }
    }
}

impl fmt::Display for PathRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PathRule::Exact(p) => write!(f, "exact {p}"),
            PathRule::Prefix(p) => write!(f, "prefix {p}"),
            PathRule::Regex(r) => write!(f, "regex {}", anchored_source(r)),
        }
    }
}

/// The user's pattern without the anchors the loader added.
pub(crate) fn anchored_source(r: &Regex) -> &str {
    r.as_str()
        .strip_prefix("^(?:")
        .and_then(|s| s.strip_suffix(")$"))
        .unwrap_or(r.as_str())
}

/// A required request header: present, and every value of it equal to `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderRule {
    /// Lowercase header name.
    pub name: String,
    /// Exact value required.
    pub value: String,
}

/// Git smart-HTTP permissions of a route. Push (receive-pack) is never allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GitRule {
    /// Whether `git fetch`/`clone` (upload-pack) is allowed.
    pub fetch: bool,
}

/// Whether TLS to a host is intercepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// Terminate TLS with a minted certificate and apply HTTP policy (the default).
    #[default]
    Intercept,
    /// Check the SNI, then splice bytes; the gateway sees no HTTP.
    Passthrough,
}
