//! The bottleneck policy: which names resolve, which hosts, ports, methods and paths are
//! reachable, which credentials are injected, and which address ranges may be dialled.
//!
//! The crate does no I/O beyond reading a policy file and has no OS-specific code (the
//! launcher uses it on macOS). Every path of the gateway asks [`Policy::decide`]; there is
//! no second copy of a rule anywhere.
//!
//! ```
//! use bottleneck_policy::{Kind, Policy, ReasonCode, Request};
//!
//! let yaml = r#"
//! version: 1
//! routes:
//!   - host: api.anthropic.com
//!     auth: {scheme: Bearer, token_ref: ANTHROPIC_TOKEN}
//!     matches:
//!       - paths: [{type: prefix, value: /v1/}]
//!         methods: [POST]
//! "#;
//! let policy = Policy::from_yaml(yaml, "policy.yaml")?;
//!
//! let post = Request::http(Kind::Https, "api.anthropic.com", 443, "POST", "/v1/messages", &[]);
//! let decision = policy.decide(&post);
//! assert!(decision.is_allowed());
//! assert_eq!(decision.auth.map(|a| a.token_ref.as_str()), Some("ANTHROPIC_TOKEN"));
//!
//! let get = Request::http(Kind::Https, "api.anthropic.com", 443, "GET", "/admin", &[]);
//! assert_eq!(policy.decide(&get).code, ReasonCode::NoMatch);
//! # Ok::<(), bottleneck_policy::LoadError>(())
//! ```
#![forbid(unsafe_code)]

pub mod addr;
mod decide;
mod error;
pub mod host;
mod load;
mod model;
mod yaml;

use std::path::Path;

pub use decide::{Decision, HTTP_PORT, HTTPS_PORT, Kind, ReasonCode, Request, Verdict};
pub use error::{Diagnostic, LoadError};
pub use load::MAX_POLICY_BYTES;
pub use model::{
    Auth, AuthScheme, Format, GitRule, HeaderRule, Match, PathRule, Policy, Route, TlsMode,
};

impl Policy {
    /// Load and validate a policy file. Every problem is reported with its file, line,
    /// column and key path; nothing is half-loaded.
    pub fn load(path: impl AsRef<Path>) -> Result<Policy, LoadError> {
        load::load_file(path.as_ref())
    }

    /// Load and validate a policy from text; `file` names it in error messages.
    pub fn from_yaml(text: &str, file: &str) -> Result<Policy, LoadError> {
        load::load_str(text, file)
    }

    /// Whether the gateway may dial `ip` for this policy (global unicast, or inside one of
    /// the policy's `allow_ranges`). The gateway also refuses its own addresses.
    pub fn permits_address(&self, ip: std::net::IpAddr) -> bool {
        addr::permitted(ip, &self.allow_ranges)
    }

    /// A human-readable listing of the normalised policy (what `bottleneck policy check`
    /// prints).
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let _ = writeln!(out, "{} route(s)", self.routes.len());
        for route in &self.routes {
            let _ = write!(out, "  line {:>4}  {}", route.line, route.host);
            if route.tls == TlsMode::Passthrough {
                out.push_str("  [tls passthrough]");
            }
            if let Some(auth) = &route.auth {
                let _ = write!(
                    out,
                    "  [auth {} from ${}]",
                    auth.scheme.as_str(),
                    auth.token_ref
                );
            }
            if route.git.fetch {
                out.push_str("  [git fetch]");
            }
            if !route.tcp.is_empty() {
                let ports: Vec<String> = route.tcp.iter().map(u16::to_string).collect();
                let _ = write!(out, "  [tcp {}]", ports.join(","));
            }
            out.push('\n');
            if route.matches.is_empty() && route.tls == TlsMode::Intercept {
                out.push_str("              any method, any path\n");
            }
            for m in &route.matches {
                let _ = writeln!(out, "              when {}", decide::describe_match(m));
            }
        }
        if !self.dns_upstream.is_empty() {
            let ups: Vec<String> = self.dns_upstream.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "dns upstream: {}", ups.join(", "));
        }
        if !self.allow_ranges.is_empty() {
            let ranges: Vec<String> = self.allow_ranges.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "allow_ranges: {}", ranges.join(", "));
        }
        out
    }
}
