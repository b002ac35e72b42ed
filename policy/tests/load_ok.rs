//! Valid policies load, in both accepted shapes, with every value normalised.

use std::net::SocketAddr;

use bottleneck_policy::host::HostPattern;
use bottleneck_policy::{
    AuthScheme, Format, GitRule, HeaderRule, Kind, Policy, Request, Route, TlsMode,
};

/// The example of DESIGN.md section 4, verbatim.
const DESIGN_EXAMPLE: &str = r#"version: 1
routes:
  - host: api.anthropic.com            # exact, case-insensitive, IDNA -> punycode
    auth: {scheme: Bearer, token_ref: ANTHROPIC_TOKEN}   # Bearer | token; value from gateway env
    matches:                           # optional; any entry may match, all conditions in one must
      - paths: [{type: prefix, value: /v1/}]            # exact | prefix | regex
        methods: [POST]
        headers: [{name: anthropic-version, value: "2023-06-01"}]
  - host: "*.pythonhosted.org"         # leading-label wildcard; does not match the apex
  - host: github.com
    git: {fetch: true}                 # git push (receive-pack) is always denied
  - host: pinned.example.com
    tls: passthrough                   # no interception: SNI checked, bytes spliced
  - host: ssh.github.com
    tcp: [22]                          # raw TCP relay to pinned addresses of this name
dns:
  upstream: [203.0.113.53]             # default: the gateway's own resolv.conf
allow_ranges: []                       # private ranges the policy explicitly allows
"#;

#[track_caller]
fn load(text: &str) -> Policy {
    match Policy::from_yaml(text, "policy.yaml") {
        Ok(policy) => policy,
        Err(e) => panic!("policy did not load:\n{e}"),
    }
}

fn exact(name: &str) -> HostPattern {
    HostPattern::Exact(name.to_owned())
}

fn hosts(policy: &Policy) -> Vec<String> {
    policy
        .routes()
        .iter()
        .map(|r| r.host().to_string())
        .collect()
}

#[track_caller]
fn only_route(policy: &Policy) -> &Route {
    match policy.routes() {
        [route] => route,
        routes => panic!("expected one route, found {}", routes.len()),
    }
}

#[test]
fn the_design_example_loads_with_every_route_kind() {
    let policy = load(DESIGN_EXAMPLE);
    assert_eq!(policy.format(), Format::V1);
    assert_eq!(
        hosts(&policy),
        [
            "api.anthropic.com",
            "*.pythonhosted.org",
            "github.com",
            "pinned.example.com",
            "ssh.github.com"
        ]
    );
    let [api, pythonhosted, github, pinned, ssh] = policy.routes() else {
        panic!("expected five routes");
    };

    assert_eq!(api.host(), &exact("api.anthropic.com"));
    assert_eq!(api.line(), 3);
    let auth = api.auth().expect("api route has auth");
    assert_eq!(auth.scheme, AuthScheme::Bearer);
    assert_eq!(auth.token_ref, "ANTHROPIC_TOKEN");
    assert_eq!(api.tls(), TlsMode::Intercept);
    assert_eq!(api.matches().len(), 1);
    let m = &api.matches()[0];
    assert_eq!(m.methods(), ["POST"]);
    assert_eq!(m.paths().len(), 1);
    assert_eq!(m.paths()[0].to_string(), "prefix /v1/");
    assert_eq!(
        m.headers(),
        [HeaderRule {
            name: "anthropic-version".into(),
            value: "2023-06-01".into()
        }]
    );

    assert_eq!(
        pythonhosted.host(),
        &HostPattern::Wildcard("pythonhosted.org".into())
    );
    assert!(pythonhosted.matches().is_empty() && pythonhosted.auth().is_none());

    assert_eq!(github.git(), GitRule { fetch: true });
    assert!(github.tcp().is_empty());

    assert_eq!(pinned.tls(), TlsMode::Passthrough);
    assert!(pinned.auth().is_none() && pinned.matches().is_empty());
    assert_eq!(pinned.git(), GitRule::default());

    assert_eq!(ssh.tcp(), [22]);
    assert_eq!(ssh.line(), 14);

    let upstream: SocketAddr = "203.0.113.53:53".parse().unwrap();
    assert_eq!(policy.dns_upstream(), [upstream]);
    assert!(policy.allow_ranges().is_empty());
}

#[test]
fn the_design_example_decides_as_its_comments_say() {
    let policy = load(DESIGN_EXAMPLE);
    let headers: &[(&str, &[u8])] = &[("anthropic-version", b"2023-06-01")];
    let post = Request::http(
        Kind::Https,
        "api.anthropic.com",
        443,
        "POST",
        "/v1/messages",
        headers,
    );
    assert!(policy.decide(&post).is_allowed());
    assert!(
        policy
            .decide(&Request::dns("files.pythonhosted.org"))
            .is_allowed()
    );
    assert!(
        !policy
            .decide(&Request::dns("pythonhosted.org"))
            .is_allowed()
    );
    assert!(
        policy
            .decide(&Request::tls("pinned.example.com", 443))
            .is_allowed()
    );
    assert!(
        policy
            .decide(&Request::tcp("ssh.github.com", 22))
            .is_allowed()
    );
}

#[test]
fn a_bot_bottle_routes_file_loads_unchanged() {
    let policy = load(
        r#"# bot-bottle egress routes
routes:
  - host: api.anthropic.com
    auth:
      scheme: Bearer
      token_ref: ANTHROPIC_API_KEY
  - host: registry.npmjs.org
    matches:
      - methods: [GET]
  - host: "*.githubusercontent.com"
  - host: github.com
    auth: {scheme: token, token_ref: GITHUB_TOKEN}
    git: {fetch: true}
"#,
    );
    assert_eq!(policy.format(), Format::BotBottleRoutes);
    assert_eq!(
        hosts(&policy),
        [
            "api.anthropic.com",
            "registry.npmjs.org",
            "*.githubusercontent.com",
            "github.com"
        ]
    );
    assert_eq!(
        policy.routes()[3].auth().map(|a| a.scheme),
        Some(AuthScheme::Token)
    );
    assert!(policy.dns_upstream().is_empty());
    assert!(policy.allow_ranges().is_empty());
}

#[test]
fn an_empty_route_list_loads_and_denies_everything() {
    for text in ["version: 1\nroutes: []\n", "routes: []\n"] {
        let policy = load(text);
        assert!(policy.routes().is_empty());
        assert!(!policy.decide(&Request::dns("example.com")).is_allowed());
    }
}

#[test]
fn hosts_are_lowercased_lose_one_trailing_dot_and_map_to_punycode() {
    let policy = load(
        r#"version: 1
routes:
  - host: API.Example.COM
  - host: trailing.example.
  - host: Bücher.example
  - host: "*.ÄPFEL.Example."
  - host: xn--mnchen-3ya.example
  - host: under_score.example
"#,
    );
    assert_eq!(
        policy
            .routes()
            .iter()
            .map(|r| r.host().clone())
            .collect::<Vec<_>>(),
        [
            exact("api.example.com"),
            exact("trailing.example"),
            exact("xn--bcher-kva.example"),
            HostPattern::Wildcard("xn--pfel-koa.example".into()),
            exact("xn--mnchen-3ya.example"),
            exact("under_score.example"),
        ]
    );
    // The unicode spelling in a request meets the punycode rule, and vice versa.
    for host in [
        "münchen.example",
        "MÜNCHEN.example.",
        "xn--mnchen-3ya.example",
    ] {
        assert!(policy.decide(&Request::dns(host)).is_allowed(), "{host}");
    }
    assert!(
        policy
            .decide(&Request::dns("xn--bcher-kva.example"))
            .is_allowed()
    );
}

#[test]
fn methods_are_uppercased_and_deduplicated_and_header_names_lowercased() {
    let policy = load(
        r#"version: 1
routes:
  - host: api.example.com
    matches:
      - methods: [get, Post, GET, patch]
        headers:
          - {name: X-API-Version, value: "Mixed-Case Value"}
          - {name: Accept, value: application/json}
"#,
    );
    let m = &only_route(&policy).matches()[0];
    assert_eq!(m.methods(), ["GET", "POST", "PATCH"]);
    assert_eq!(
        m.headers(),
        [
            HeaderRule {
                name: "x-api-version".into(),
                value: "Mixed-Case Value".into()
            },
            HeaderRule {
                name: "accept".into(),
                value: "application/json".into()
            },
        ]
    );
}

#[test]
fn a_plain_date_like_header_value_is_a_string() {
    let policy = load(
        "version: 1\nroutes:\n  - host: api.anthropic.com\n    matches:\n      - headers: [{name: anthropic-version, value: 2023-06-01}]\n",
    );
    let m = &only_route(&policy).matches()[0];
    assert_eq!(m.headers()[0].value, "2023-06-01");
}

#[test]
fn path_rules_keep_their_kind_and_value() {
    let policy = load(
        r#"version: 1
routes:
  - host: api.example.com
    matches:
      - paths:
          - {type: exact, value: /health}
          - {type: prefix, value: /v1/}
          - {type: regex, value: "/v[0-9]+/items/[a-z0-9-]+"}
"#,
    );
    let rendered: Vec<String> = only_route(&policy).matches()[0]
        .paths()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        rendered,
        [
            "exact /health",
            "prefix /v1/",
            "regex /v[0-9]+/items/[a-z0-9-]+"
        ]
    );
}

#[test]
fn anchors_and_aliases_are_expanded() {
    let policy = load(
        r#"version: 1
routes:
  - host: a.example
    auth: &auth {scheme: Bearer, token_ref: SHARED_TOKEN}
    matches: &read-only
      - methods: [GET, HEAD]
  - host: b.example
    auth: *auth
    matches: *read-only
  - host: c.example
    matches:
      - methods: [POST]
        paths: &paths [{type: prefix, value: /api/}]
      - methods: [GET]
        paths: *paths
"#,
    );
    let [a, b, c] = policy.routes() else {
        panic!("expected three routes")
    };
    assert_eq!(a.auth(), b.auth());
    assert_eq!(b.auth().map(|x| x.token_ref.as_str()), Some("SHARED_TOKEN"));
    assert_eq!(b.matches()[0].methods(), ["GET", "HEAD"]);
    assert_eq!(c.matches()[1].paths()[0].to_string(), "prefix /api/");
}

#[test]
fn tcp_ports_are_sorted() {
    let policy =
        load("version: 1\nroutes:\n  - host: db.example\n    tcp: [5432, 22, 0x1f90, 3306]\n");
    assert_eq!(only_route(&policy).tcp(), [22, 3306, 5432, 8080]);
}

#[test]
fn auth_schemes_are_read_case_insensitively() {
    let policy = load(
        "version: 1\nroutes:\n  - host: a.example\n    auth: {scheme: bearer, token_ref: A}\n  - host: b.example\n    auth: {scheme: Token, token_ref: _B_2}\n",
    );
    let schemes: Vec<_> = policy
        .routes()
        .iter()
        .map(|r| r.auth().map(|a| (a.scheme, a.scheme.as_str())))
        .collect();
    assert_eq!(
        schemes,
        [
            Some((AuthScheme::Bearer, "Bearer")),
            Some((AuthScheme::Token, "token"))
        ]
    );
}

#[test]
fn optional_keys_take_their_defaults() {
    let policy = load("version: 1\nroutes:\n  - host: a.example\n");
    let route = only_route(&policy);
    assert_eq!(route.tls(), TlsMode::Intercept);
    assert_eq!(route.git(), GitRule { fetch: false });
    assert!(route.auth().is_none() && route.matches().is_empty() && route.tcp().is_empty());
    assert!(policy.dns_upstream().is_empty() && policy.allow_ranges().is_empty());
    // Writing the defaults out loads the same.
    let explicit = load(
        "version: 1\nroutes:\n  - host: a.example\n    tls: intercept\n    git: {fetch: false}\n",
    );
    let route = only_route(&explicit);
    assert_eq!(route.tls(), TlsMode::Intercept);
    assert_eq!(route.git(), GitRule { fetch: false });
}

#[test]
fn dns_upstreams_and_allow_ranges_are_parsed() {
    let policy = load(
        r#"version: 1
routes: []
dns:
  upstream: [203.0.113.53, "203.0.113.54:5353", "2001:db8::53", "[2001:db8::54]:5353"]
allow_ranges: [10.20.0.0/16, "fd00:1::/64", 192.168.7.7]
"#,
    );
    let upstream: Vec<String> = policy
        .dns_upstream()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        upstream,
        [
            "203.0.113.53:53",
            "203.0.113.54:5353",
            "[2001:db8::53]:53",
            "[2001:db8::54]:5353"
        ]
    );
    let ranges: Vec<String> = policy
        .allow_ranges()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(ranges, ["10.20.0.0/16", "fd00:1::/64", "192.168.7.7/32"]);
}

#[test]
fn a_byte_order_mark_and_windows_line_endings_are_accepted() {
    let policy = load("\u{feff}version: 1\r\nroutes:\r\n  - host: a.example\r\n");
    assert_eq!(hosts(&policy), ["a.example"]);
}

#[test]
fn exact_and_wildcard_routes_for_the_same_suffix_coexist() {
    let policy = load(
        "version: 1\nroutes:\n  - host: example.com\n  - host: \"*.example.com\"\n  - host: \"*.api.example.com\"\n",
    );
    assert_eq!(
        hosts(&policy),
        ["example.com", "*.example.com", "*.api.example.com"]
    );
}

#[test]
fn describe_lists_the_normalised_routes() {
    let policy = load(DESIGN_EXAMPLE);
    let text = policy.describe();
    assert!(text.starts_with("5 route(s)\n"), "{text}");
    for needle in [
        "api.anthropic.com  [auth Bearer from $ANTHROPIC_TOKEN]",
        "when methods POST, paths prefix /v1/, header anthropic-version: 2023-06-01",
        "*.pythonhosted.org",
        "github.com  [git fetch]",
        "pinned.example.com  [tls passthrough]",
        "ssh.github.com  [tcp 22]",
        "dns upstream: 203.0.113.53:53",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}
