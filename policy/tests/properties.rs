//! Property tests of the matcher, the normaliser, the decision function, address
//! permission and the loader.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::OnceLock;

use bottleneck_policy::addr::permitted;
use bottleneck_policy::host::{HostPattern, normalize_name};
use bottleneck_policy::{Kind, LoadError, Policy, ReasonCode, Request, Verdict};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use proptest::prelude::*;

/// A policy with every feature the decision reads: wildcards at two depths, an exact
/// rule under a wildcard, matches with all three path kinds, headers, auth of both
/// schemes, git fetch, passthrough and tcp.
const RICH_POLICY: &str = r#"version: 1
routes:
  - host: api.anthropic.com
    auth: {scheme: Bearer, token_ref: ANTHROPIC_TOKEN}
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [POST]
        headers: [{name: anthropic-version, value: "2023-06-01"}]
      - paths: [{type: exact, value: /health}, {type: regex, value: "/v[0-9]+/(items|users)/[^/]+"}]
  - host: "*.example.com"
    auth: {scheme: token, token_ref: EXAMPLE_TOKEN}
  - host: "*.a.example.com"
    matches: [{methods: [GET, HEAD]}]
  - host: b.a.example.com
    tcp: [22, 5432]
  - host: github.com
    git: {fetch: true}
    auth: {scheme: token, token_ref: GITHUB_TOKEN}
    matches: [{methods: [GET], paths: [{type: regex, value: "/[^/]+/[^/]+/archive/.*"}]}]
  - host: pinned.example.net
    tls: passthrough
  - host: bücher.example
    tcp: [2222]
"#;

const KINDS: [Kind; 5] = [Kind::Dns, Kind::Tls, Kind::Http, Kind::Https, Kind::Tcp];

#[track_caller]
fn load(text: &str) -> Policy {
    match Policy::from_yaml(text, "policy.yaml") {
        Ok(policy) => policy,
        Err(e) => panic!("policy did not load:\n{e}"),
    }
}

fn rich_policy() -> &'static Policy {
    static POLICY: OnceLock<Policy> = OnceLock::new();
    POLICY.get_or_init(|| load(RICH_POLICY))
}

/// A DNS label that is a name, not a number (and, with at most one hyphen, never an
/// `xn--` label that would have to be valid punycode).
fn label() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,8}(-[a-z0-9]{1,4})?"
}

/// A registrable-looking suffix of one to four labels.
fn suffix() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..=4).prop_map(|labels| labels.join("."))
}

/// Strings shaped like hosts, with the characters that make normalisation interesting.
fn hostish() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,40}",
        "[a-zA-Z0-9.\\-_*:%\\[\\]]{0,40}",
        "[a-zäöüßéÄÖÜＡ-Ｚａ-ｚ０-９．。.\\-]{0,30}",
        "(0x[0-9a-fA-F]{1,8}|0[0-7]{1,4}|[0-9]{1,10})(\\.(0x[0-9a-f]{1,4}|[0-9]{1,4})){0,4}\\.?",
        "\\[?[0-9a-f:]{2,30}(%[a-z0-9]{1,5})?\\]?",
        (suffix(), "[A-Za-z]{1,3}").prop_map(|(s, l)| format!("{l}.{s}.")),
        Just("xn--".to_owned()),
        Just("xn--bcher-kva.example".to_owned()),
    ]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(KINDS.to_vec())
}

fn method() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "GET", "POST", "PUT", "HEAD", "DELETE", "TRACE", "trace", "get", "", "CONNECT",
        ])
        .prop_map(str::to_owned),
        "\\PC{0,10}",
    ]
}

fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "\\PC{0,60}",
        "/[a-zA-Z0-9./%?=&;\\\\_-]{0,60}",
        prop::sample::select(vec![
            "/v1/messages",
            "/health",
            "/v2/items/x",
            "/o/r.git/git-receive-pack",
            "/o/r.git/info/refs?service=git-upload-pack",
            "/o/r.git/info/refs?service=git-receive-pack",
            "/o/r/archive/main.tar.gz",
            "/v1/%2e%2e/admin",
            "/",
        ])
        .prop_map(str::to_owned),
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, Vec<u8>)>> {
    let name = prop_oneof![
        Just("anthropic-version".to_owned()),
        Just("Anthropic-Version".to_owned()),
        "\\PC{0,12}",
    ];
    let value = prop_oneof![
        Just(b"2023-06-01".to_vec()),
        prop::collection::vec(any::<u8>(), 0..16),
    ];
    prop::collection::vec((name, value), 0..4)
}

fn port() -> impl Strategy<Value = u16> {
    prop_oneof![
        prop::sample::select(vec![0u16, 22, 53, 80, 443, 853, 2222, 5432, 8443, 65535]),
        any::<u16>(),
    ]
}

/// Why a decision breaks an invariant, if it does.
fn broken_invariant(kind: Kind, d: &bottleneck_policy::Decision<'_>) -> Option<&'static str> {
    if (d.code == ReasonCode::Allowed) != (d.verdict == Verdict::Allow) {
        return Some("the code and the verdict disagree");
    }
    if d.verdict == Verdict::Deny && d.auth.is_some() {
        return Some("a denial carries auth");
    }
    if d.auth.is_some() && kind != Kind::Https {
        return Some("auth outside HTTPS");
    }
    if d.verdict == Verdict::Allow && (d.route.is_none() || d.host.is_none()) {
        return Some("an allow without its route and host");
    }
    if d.message.is_empty() {
        return Some("an empty message");
    }
    None
}

/// Replace, insert or delete one character of `text`.
fn mutate(text: &str, at: usize, op: u8, c: char) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = at % (chars.len() + 1);
    match op % 3 {
        0 if at < chars.len() => chars[at] = c,
        1 if at < chars.len() => {
            chars.remove(at);
        }
        _ => chars.insert(at, c),
    }
    chars.into_iter().collect()
}

/// An interesting IPv4 address: special ranges and their edges, or anything.
fn v4() -> impl Strategy<Value = Ipv4Addr> {
    let special = prop::sample::select(vec![
        [0u8, 0, 0, 0],
        [10, 0, 0, 1],
        [100, 64, 0, 1],
        [100, 100, 100, 200],
        [127, 0, 0, 1],
        [169, 254, 169, 254],
        [172, 16, 0, 1],
        [192, 0, 2, 1],
        [192, 168, 0, 1],
        [198, 51, 100, 7],
        [203, 0, 113, 9],
        [224, 0, 0, 1],
        [255, 255, 255, 255],
        [8, 8, 8, 8],
    ]);
    prop_oneof![
        any::<u32>().prop_map(Ipv4Addr::from_bits),
        (special, any::<u8>()).prop_map(|(mut o, last)| {
            o[3] ^= last & 0x0f;
            Ipv4Addr::from(o)
        }),
    ]
}

/// Allow ranges around `v4` (as IPv4 and as its IPv4-mapped IPv6 form) and elsewhere.
fn ranges_near(v4: Ipv4Addr) -> impl Strategy<Value = Vec<IpNet>> {
    let mapped = v4.to_ipv6_mapped();
    let range = prop_oneof![
        (0u8..=32).prop_map(move |len| IpNet::V4(trunc_v4(v4, len))),
        (0u8..=128).prop_map(move |len| IpNet::V6(trunc_v6(mapped, len))),
        (any::<u32>(), 0u8..=32)
            .prop_map(|(a, len)| IpNet::V4(trunc_v4(Ipv4Addr::from_bits(a), len))),
        (any::<u128>(), 0u8..=128)
            .prop_map(|(a, len)| IpNet::V6(trunc_v6(Ipv6Addr::from_bits(a), len))),
    ];
    prop::collection::vec(range, 0..4)
}

fn trunc_v4(addr: Ipv4Addr, len: u8) -> Ipv4Net {
    Ipv4Net::new(addr, len.min(32)).map_or_else(|_| Ipv4Net::default(), |n| n.trunc())
}

fn trunc_v6(addr: Ipv6Addr, len: u8) -> Ipv6Net {
    Ipv6Net::new(addr, len.min(128)).map_or_else(|_| Ipv6Net::default(), |n| n.trunc())
}

/// Fragments that make up policies, for the loader to chew on.
fn yaml_soup() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "version: 1\n",
        "version: ",
        "routes:\n",
        "routes: []\n",
        "  - host: ",
        "a.example",
        "\"*.x.org\"",
        "127.1",
        "\n",
        "    tcp: [",
        "    auth: {scheme: Bearer, token_ref: T}\n",
        "    tls: passthrough\n",
        "    git: {fetch: true}\n",
        "    matches:\n",
        "      - paths: [{type: regex, value: \"(\"}]\n",
        "      - methods: [TRACE]\n",
        "]",
        "[",
        "{",
        "}",
        ",",
        "0",
        "22",
        "65536",
        "&a ",
        "*a",
        "*",
        "- ",
        "  ",
        "\t",
        ": ",
        "'",
        "\"",
        "#",
        "---\n",
        "...\n",
        "!!str ",
        "%YAML 1.2\n",
        "? ",
        "|\n",
        ">-\n",
        "\u{feff}",
        "ü",
        "\r\n",
        "dns: {upstream: [x]}\n",
        "allow_ranges: [10.0.0.1/8]\n",
        "~",
        "null",
    ]);
    prop::collection::vec(token, 0..40).prop_map(|tokens| tokens.concat())
}

#[track_caller]
fn check_load_result(result: &Result<Policy, LoadError>) -> Result<(), TestCaseError> {
    match result {
        Ok(policy) => {
            for route in policy.routes() {
                prop_assert!(route.line() >= 1);
            }
            // A policy that loads can be asked anything.
            let _ = policy.decide(&Request::dns("a.example"));
        }
        Err(err @ LoadError::Invalid { .. }) => {
            prop_assert!(!err.diagnostics().is_empty(), "no diagnostics: {err:?}");
            for d in err.diagnostics() {
                prop_assert!(d.line >= 1 && d.column >= 1, "bad position: {d:?}");
            }
            let sorted = err
                .diagnostics()
                .windows(2)
                .all(|w| (w[0].line, w[0].column) <= (w[1].line, w[1].column));
            prop_assert!(sorted, "diagnostics out of order: {err}");
            prop_assert!(err.to_string().starts_with("f:"), "{err}");
        }
        Err(other) => prop_assert!(false, "from_yaml cannot fail with {other:?}"),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn a_wildcard_never_matches_its_apex(suffix in suffix(), sub in label()) {
        let pattern = HostPattern::parse(&format!("*.{suffix}"));
        prop_assert!(pattern.is_ok(), "{:?}", pattern);
        let Ok(pattern) = pattern else { unreachable!() };
        let child = format!("{sub}.{suffix}");
        let grandchild = format!("{sub}.{child}");
        let glued = format!("{sub}{suffix}");
        prop_assert!(!pattern.matches(&suffix));
        prop_assert!(pattern.matches(&child));
        prop_assert!(pattern.matches(&grandchild));
        // Nor a name that merely ends with the same characters.
        prop_assert!(!pattern.matches(&glued));
    }

    #[test]
    fn a_wildcard_route_never_admits_its_apex_for_any_kind(
        suffix in suffix(),
        sub in label(),
        kind in kind(),
        upper in any::<bool>(),
        dot in any::<bool>(),
    ) {
        let policy = load(&format!("version: 1\nroutes:\n  - host: \"*.{suffix}\"\n    tcp: [22]\n"));
        let mut apex = if upper { suffix.to_uppercase() } else { suffix.clone() };
        if dot {
            apex.push('.');
        }
        let sub = format!("{sub}.{suffix}");
        let req = |host| match kind {
            Kind::Dns => Request::dns(host),
            Kind::Tls => Request::tls(host, 443),
            Kind::Http => Request::http(Kind::Http, host, 80, "GET", "/", &[]),
            Kind::Https => Request::http(Kind::Https, host, 443, "GET", "/", &[]),
            Kind::Tcp => Request::tcp(host, 22),
        };
        prop_assert_eq!(policy.decide(&req(&apex)).code, ReasonCode::NoRoute);
        prop_assert_eq!(policy.decide(&req(&sub)).code, ReasonCode::Allowed);
    }

    #[test]
    fn normalisation_is_idempotent(raw in hostish()) {
        if let Ok(once) = normalize_name(&raw) {
            prop_assert_eq!(normalize_name(&once), Ok(once.clone()));
            // A normalised name is plain lowercase ASCII without a trailing dot.
            prop_assert!(once.is_ascii() && !once.ends_with('.'));
            prop_assert_eq!(once.to_ascii_lowercase(), once);
        }
        if let Ok(pattern) = HostPattern::parse(&raw) {
            prop_assert_eq!(HostPattern::parse(&pattern.to_string()), Ok(pattern));
        }
    }

    #[test]
    fn a_name_and_its_normal_form_get_the_same_decision(raw in hostish(), kind in kind()) {
        let policy = rich_policy();
        if let Ok(normal) = normalize_name(&raw) {
            let port = if kind == Kind::Http { 80 } else { 443 };
            let a = policy.decide(&Request::http(kind, &raw, port, "GET", "/", &[]));
            let b = policy.decide(&Request::http(kind, &normal, port, "GET", "/", &[]));
            prop_assert_eq!((a.verdict, a.code, a.host), (b.verdict, b.code, b.host));
        }
    }

    #[test]
    fn decide_never_panics_and_keeps_its_invariants(
        kind in kind(),
        host in hostish(),
        port in port(),
        method in method(),
        target in target(),
        headers in headers(),
    ) {
        let headers: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let req = Request { kind, host: &host, port, method: &method, target: &target, headers: &headers };
        let d = rich_policy().decide(&req);
        prop_assert_eq!(broken_invariant(kind, &d), None, "{:?} -> {:?}", req, d);
    }

    #[test]
    fn a_denied_decision_never_carries_auth(
        kind in kind(),
        host in prop::sample::select(vec![
            "api.anthropic.com", "x.example.com", "github.com", "API.ANTHROPIC.COM.", "b.a.example.com",
        ]),
        port in port(),
        method in method(),
        target in target(),
        headers in headers(),
    ) {
        let headers: Vec<(&str, &[u8])> =
            headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())).collect();
        let req = Request { kind, host, port, method: &method, target: &target, headers: &headers };
        let d = rich_policy().decide(&req);
        if !d.is_allowed() || kind != Kind::Https {
            prop_assert!(d.auth.is_none(), "{:?} -> {:?}", req, d);
        }
    }

    #[test]
    fn a_mapped_address_is_permitted_exactly_when_its_ipv4_address_is(
        (v4, ranges) in v4().prop_flat_map(|v4| (Just(v4), ranges_near(v4))),
    ) {
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        prop_assert_eq!(permitted(mapped, &ranges), permitted(IpAddr::V4(v4), &ranges));
    }

    #[test]
    fn a_loaded_policy_permits_a_mapped_address_exactly_when_its_ipv4_address(
        (v4, ranges) in v4().prop_flat_map(|v4| (Just(v4), ranges_near(v4))),
    ) {
        let listed: Vec<String> = ranges.iter().map(|n| format!("\"{n}\"")).collect();
        let policy = load(&format!(
            "version: 1\nroutes: []\nallow_ranges: [{}]\n",
            listed.join(", ")
        ));
        let mapped = IpAddr::V6(v4.to_ipv6_mapped());
        prop_assert_eq!(policy.permits_address(mapped), policy.permits_address(IpAddr::V4(v4)));
        prop_assert_eq!(policy.permits_address(IpAddr::V4(v4)), permitted(IpAddr::V4(v4), &ranges));
    }

    #[test]
    fn arbitrary_text_never_panics_the_loader(text in "(?s)\\PC{0,200}|(?s).{0,200}") {
        check_load_result(&Policy::from_yaml(&text, "f"))?;
    }

    #[test]
    fn policy_shaped_soup_never_panics_the_loader(text in yaml_soup()) {
        check_load_result(&Policy::from_yaml(&text, "f"))?;
    }

    #[test]
    fn a_valid_policy_with_one_character_changed_never_panics_the_loader(
        at in any::<usize>(),
        op in any::<u8>(),
        c in prop_oneof![any::<char>(), prop::sample::select(vec![' ', '\n', ':', '-', '"', '[', '{', '*', '&', '#', '\t'])],
    ) {
        check_load_result(&Policy::from_yaml(&mutate(RICH_POLICY, at, op, c), "f"))?;
    }
}
