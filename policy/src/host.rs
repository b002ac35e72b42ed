//! Host names: normalisation, route host patterns, and finding the route for a host.
//!
//! The same normalisation serves the policy file and every request (SNI, Host header, DNS
//! question, CONNECT target), so `Bücher.Example.` in a request and `xn--bcher-kva.example`
//! in the policy meet as the same string. Anything shaped like an IP address is never a
//! name (DESIGN.md section 5, item 6).

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use idna::AsciiDenyList;

use crate::addr::{looks_like_ip, parse_ip_literal};

/// The longest DNS name, in characters, without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// The longest DNS label.
const MAX_LABEL_LEN: usize = 63;

/// Why a string is not a usable host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Empty, or only a dot.
    #[error("the host is empty")]
    Empty,
    /// An IP address in some spelling.
    #[error("`{0}` is an IP address, not a name")]
    IpLiteral(IpAddr),
    /// Shaped like an IP address but not a valid one (e.g. `1.2.3.999`).
    #[error("`{0}` is shaped like an IP address but is not a valid one")]
    MalformedIp(String),
    /// `name:port`.
    #[error("`{0}` includes a port")]
    HasPort(String),
    /// `*` somewhere other than a whole leading label.
    #[error("`{0}` has a wildcard that is not a whole leading label")]
    MisplacedWildcard(String),
    /// `*` alone: every host.
    #[error("`*` alone would match every host")]
    BareWildcard,
    /// A label that is empty, too long, or has characters a host name cannot have.
    #[error("`{0}` is not a valid host name: {1}")]
    Invalid(String, &'static str),
}

/// Normalise a host name: IDNA (UTS 46) mapping to ASCII, which lowercases; one trailing
/// dot removed; labels checked. Rejects IP literals in any spelling and `name:port`.
///
/// ```
/// use bottleneck_policy::host::normalize_name;
/// assert_eq!(normalize_name("Bücher.Example.").unwrap(), "xn--bcher-kva.example");
/// assert!(normalize_name("127.1").is_err());
/// ```
pub fn normalize_name(raw: &str) -> Result<String, HostError> {
    if raw.is_empty() || raw == "." {
        return Err(HostError::Empty);
    }
    if let Some(ip) = parse_ip_literal(raw) {
        return Err(HostError::IpLiteral(ip));
    }
    if let Some((name, port)) = raw.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && !name.contains(':')
    {
        return Err(HostError::HasPort(raw.to_owned()));
    }
    // A URL contains `:`, which would otherwise make it look like a malformed IPv6 address.
    if raw.contains("://") {
        return Err(HostError::Invalid(
            raw.to_owned(),
            "it is a URL; write only the host name",
        ));
    }
    if looks_like_ip(raw) {
        return Err(HostError::MalformedIp(raw.to_owned()));
    }
    let trimmed = raw.strip_suffix('.').unwrap_or(raw);
    let ascii = idna::domain_to_ascii_cow(trimmed.as_bytes(), AsciiDenyList::URL)
        .map_err(|_| HostError::Invalid(raw.to_owned(), "IDNA mapping failed"))?;
    check_labels(raw, &ascii)?;
    // IDNA can map full-width digits and dots into an address-shaped name.
    if let Some(ip) = parse_ip_literal(&ascii) {
        return Err(HostError::IpLiteral(ip));
    }
    if looks_like_ip(&ascii) {
        return Err(HostError::MalformedIp(raw.to_owned()));
    }
    Ok(ascii.into_owned())
}

fn check_labels(raw: &str, ascii: &str) -> Result<(), HostError> {
    let invalid = |why| Err(HostError::Invalid(raw.to_owned(), why));
    if ascii.is_empty() {
        return Err(HostError::Empty);
    }
    if ascii.len() > MAX_NAME_LEN {
        return invalid("longer than 253 characters");
    }
    for label in ascii.split('.') {
        if label.is_empty() {
            return invalid("it has an empty label (two dots in a row, or a leading dot)");
        }
        if label.len() > MAX_LABEL_LEN {
            return invalid("a label is longer than 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return invalid("a label starts or ends with a hyphen");
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        {
            return invalid("only letters, digits, hyphens and underscores are allowed");
        }
    }
    Ok(())
}

/// A route's host: one exact name, or every name below a suffix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// Exactly this normalised name.
    Exact(String),
    /// `*.suffix`: any name ending in `.suffix` with at least one more label; never the
    /// suffix (apex) itself.
    Wildcard(String),
}

impl HostPattern {
    /// Parse and normalise a pattern as written in a policy.
    ///
    /// ```
    /// use bottleneck_policy::host::HostPattern;
    /// let p = HostPattern::parse("*.PythonHosted.org").unwrap();
    /// assert!(p.matches("files.pythonhosted.org"));
    /// assert!(!p.matches("pythonhosted.org"));
    /// ```
    pub fn parse(raw: &str) -> Result<HostPattern, HostError> {
        if raw == "*" || raw == "*." {
            return Err(HostError::BareWildcard);
        }
        match raw.strip_prefix("*.") {
            Some(rest) if !rest.contains('*') => Ok(HostPattern::Wildcard(normalize_name(rest)?)),
            _ if raw.contains('*') => Err(HostError::MisplacedWildcard(raw.to_owned())),
            _ => Ok(HostPattern::Exact(normalize_name(raw)?)),
        }
    }

    /// Whether an already normalised name matches.
    pub fn matches(&self, name: &str) -> bool {
        match self {
            HostPattern::Exact(exact) => name == exact,
            HostPattern::Wildcard(suffix) => is_strict_subdomain(name, suffix),
        }
    }
}

fn is_strict_subdomain(name: &str, suffix: &str) -> bool {
    name.len() > suffix.len() + 1
        && name.ends_with(suffix)
        && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Wildcard(suffix) => write!(f, "*.{suffix}"),
        }
    }
}

/// Finds the route for a normalised name: its exact rule, else the most specific wildcard.
#[derive(Debug, Clone, Default)]
pub(crate) struct HostIndex {
    exact: HashMap<String, usize>,
    /// Wildcard suffixes with their route index, longest suffix first.
    wildcards: Vec<(String, usize)>,
}

impl HostIndex {
    /// Build from patterns in route order. Patterns are unique (checked by the loader).
    pub(crate) fn new<'a>(patterns: impl IntoIterator<Item = &'a HostPattern>) -> Self {
        let mut index = HostIndex::default();
        for (i, pattern) in patterns.into_iter().enumerate() {
            match pattern {
                HostPattern::Exact(name) => {
                    index.exact.insert(name.clone(), i);
                }
                HostPattern::Wildcard(suffix) => index.wildcards.push((suffix.clone(), i)),
            }
        }
        index
            .wildcards
            .sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        index
    }

    /// The index of the route that governs `name`.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        if let Some(&i) = self.exact.get(name) {
            return Some(i);
        }
        self.wildcards
            .iter()
            .find(|(suffix, _)| is_strict_subdomain(name, suffix))
            .map(|&(_, i)| i)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercased_and_lose_one_trailing_dot() {
        assert_eq!(normalize_name("PyPI.ORG.").unwrap(), "pypi.org");
        assert!(normalize_name("pypi.org..").is_err());
    }

    #[test]
    fn unicode_names_map_to_punycode() {
        assert_eq!(
            normalize_name("bücher.example").unwrap(),
            normalize_name("xn--bcher-kva.example").unwrap()
        );
        assert_eq!(
            normalize_name("BÜCHER.example").unwrap(),
            "xn--bcher-kva.example"
        );
    }

    #[test]
    fn ip_literals_in_any_spelling_are_not_names() {
        for raw in [
            "127.0.0.1",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "[::ffff:127.0.0.1]",
            "::1",
            "fe80::1%eth0",
            "[fe80::1%25eth0]",
        ] {
            assert!(
                matches!(normalize_name(raw), Err(HostError::IpLiteral(_))),
                "{raw}: {:?}",
                normalize_name(raw)
            );
        }
    }

    #[test]
    fn address_shaped_names_that_are_not_addresses_are_invalid() {
        for raw in ["1.2.3.999", "example.123", "foo.0x1f"] {
            assert!(normalize_name(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn full_width_digits_cannot_smuggle_an_address_in_as_a_name() {
        // U+FF11 U+FF12 U+FF17 and U+FF0E map to "127." under UTS 46.
        assert!(matches!(
            normalize_name("\u{ff11}\u{ff12}\u{ff17}\u{ff0e}0\u{ff0e}0\u{ff0e}1"),
            Err(HostError::IpLiteral(_)) | Err(HostError::Invalid(..))
        ));
    }

    #[test]
    fn ports_and_bad_labels_are_rejected() {
        assert!(matches!(
            normalize_name("example.com:443"),
            Err(HostError::HasPort(_))
        ));
        assert!(normalize_name("-bad.example").is_err());
        assert!(normalize_name("a b.example").is_err());
        assert!(normalize_name(&format!("{}.example", "a".repeat(64))).is_err());
        assert!(matches!(normalize_name(""), Err(HostError::Empty)));
    }

    #[test]
    fn wildcards_must_be_a_whole_leading_label() {
        assert!(matches!(
            HostPattern::parse("*"),
            Err(HostError::BareWildcard)
        ));
        for raw in [
            "a.*.example",
            "*example.com",
            "**.example",
            "*.*.example",
            "ex*.com",
        ] {
            assert!(
                matches!(
                    HostPattern::parse(raw),
                    Err(HostError::MisplacedWildcard(_))
                ),
                "{raw}"
            );
        }
        assert_eq!(
            HostPattern::parse("*.Example.COM").unwrap(),
            HostPattern::Wildcard("example.com".into())
        );
    }

    #[test]
    fn wildcard_matches_subdomains_at_any_depth_but_never_the_apex() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches(".example.com"));
    }

    #[test]
    fn exact_rule_beats_wildcard_and_longer_wildcard_beats_shorter() {
        let patterns = [
            HostPattern::parse("*.example.com").unwrap(),
            HostPattern::parse("*.api.example.com").unwrap(),
            HostPattern::parse("v1.api.example.com").unwrap(),
        ];
        let index = HostIndex::new(&patterns);
        assert_eq!(index.find("v1.api.example.com"), Some(2));
        assert_eq!(index.find("v2.api.example.com"), Some(1));
        assert_eq!(index.find("www.example.com"), Some(0));
        assert_eq!(index.find("api.example.com"), Some(0));
        assert_eq!(index.find("example.com"), None);
    }
}
