//! Table-driven tests of `Policy::decide`: one table per rule of the policy language.

use bottleneck_policy::{AuthScheme, Decision, Kind, Policy, ReasonCode, Request, Verdict};

/// The policy most tables run against; the line numbers matter for the messages.
const POLICY: &str = r#"version: 1
routes:
  - host: api.anthropic.com
    auth: {scheme: Bearer, token_ref: ANTHROPIC_TOKEN}
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [POST]
        headers: [{name: Anthropic-Version, value: "2023-06-01"}]
      - paths: [{type: exact, value: /health}]
        methods: [GET]
  - host: "*.example.com"
  - host: "*.api.example.com"
  - host: exact.api.example.com
    matches: [{methods: [GET]}]
  - host: github.com
    git: {fetch: true}
    matches: [{methods: [GET], paths: [{type: prefix, value: /api/}]}]
  - host: gitlab.com
  - host: pinned.example.net
    tls: passthrough
  - host: ssh.example.org
    tcp: [2222, 22]
  - host: regex.example
    matches:
      - paths: [{type: regex, value: "/v[0-9]+/items|/status"}]
  - host: bücher.example
  - host: open.example
    auth: {scheme: token, token_ref: OPEN_TOKEN}
"#;

const ALL_KINDS: [Kind; 5] = [Kind::Dns, Kind::Tls, Kind::Http, Kind::Https, Kind::Tcp];

#[track_caller]
fn load(text: &str) -> Policy {
    match Policy::from_yaml(text, "policy.yaml") {
        Ok(policy) => policy,
        Err(e) => panic!("policy did not load:\n{e}"),
    }
}

#[track_caller]
fn policy() -> Policy {
    load(POLICY)
}

/// Request headers as `Request` takes them.
type Headers<'a> = &'a [(&'a str, &'a [u8])];

const NO_HEADERS: Headers<'static> = &[];
const ANTHROPIC_HEADERS: Headers<'static> = &[("anthropic-version", b"2023-06-01")];

fn https<'a>(host: &'a str, method: &'a str, target: &'a str) -> Request<'a> {
    Request::http(Kind::Https, host, 443, method, target, NO_HEADERS)
}

fn http<'a>(host: &'a str, method: &'a str, target: &'a str) -> Request<'a> {
    Request::http(Kind::Http, host, 80, method, target, NO_HEADERS)
}

/// A request of `kind` for `host` on the usual port, as the gateway would build it.
fn request(kind: Kind, host: &str) -> Request<'_> {
    match kind {
        Kind::Dns => Request::dns(host),
        Kind::Tls => Request::tls(host, 443),
        Kind::Http => http(host, "GET", "/"),
        Kind::Https => https(host, "GET", "/"),
        Kind::Tcp => Request::tcp(host, 22),
    }
}

fn describe(req: &Request<'_>) -> String {
    format!(
        "{} {:?}:{} {} {} {:?}",
        req.kind.as_str(),
        req.host,
        req.port,
        req.method,
        req.target,
        req.headers
    )
}

/// What is wrong with a decision, beyond its code: the invariants every decision keeps.
fn invariant_failure(req: &Request<'_>, d: &Decision<'_>) -> Option<String> {
    if (d.code == ReasonCode::Allowed) != (d.verdict == Verdict::Allow) {
        return Some(format!(
            "{}: code {} with {:?}",
            describe(req),
            d.code,
            d.verdict
        ));
    }
    if d.auth.is_some() && !(d.is_allowed() && req.kind == Kind::Https) {
        return Some(format!("{}: carries auth: {d:?}", describe(req)));
    }
    if d.is_allowed() && d.route.is_none() {
        return Some(format!("{}: allowed without a route", describe(req)));
    }
    None
}

/// Decide every request and compare codes; report every mismatch at once.
#[track_caller]
fn check(policy: &Policy, cases: &[(Request<'_>, ReasonCode)]) {
    let mut failures = Vec::new();
    for (req, want) in cases {
        let d = policy.decide(req);
        if d.code != *want {
            failures.push(format!(
                "{}: wanted {want}, got {} ({})",
                describe(req),
                d.code,
                d.message
            ));
        }
        failures.extend(invariant_failure(req, &d));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// The host pattern of the route that governed a decision.
fn route_of(policy: &Policy, req: &Request<'_>) -> Option<String> {
    policy.decide(req).route.map(|r| r.host().to_string())
}

#[test]
fn reason_codes_and_kinds_have_stable_strings() {
    let codes = [
        (ReasonCode::Allowed, "allowed"),
        (ReasonCode::NoRoute, "no_route"),
        (ReasonCode::IpLiteral, "ip_literal"),
        (ReasonCode::InvalidHost, "invalid_host"),
        (ReasonCode::PortNotAllowed, "port_not_allowed"),
        (ReasonCode::TraceDenied, "trace_denied"),
        (ReasonCode::InvalidRequest, "invalid_request"),
        (ReasonCode::PathNotCanonical, "path_not_canonical"),
        (ReasonCode::GitPushDenied, "git_push_denied"),
        (ReasonCode::GitFetchNotEnabled, "git_fetch_not_enabled"),
        (ReasonCode::NoMatch, "no_match"),
        (ReasonCode::AuthRequiresTls, "auth_requires_tls"),
    ];
    for (code, text) in codes {
        assert_eq!(code.as_str(), text);
        assert_eq!(code.to_string(), text);
    }
    let kinds = [
        (Kind::Dns, "dns"),
        (Kind::Tls, "tls"),
        (Kind::Http, "http"),
        (Kind::Https, "https"),
        (Kind::Tcp, "tcp"),
    ];
    for (kind, text) in kinds {
        assert_eq!(kind.as_str(), text);
    }
}

#[test]
fn dns_is_allowed_for_every_host_that_has_a_route() {
    let p = policy();
    let cases: Vec<_> = [
        "api.anthropic.com",
        "API.Anthropic.COM.",
        "a.example.com",
        "deep.a.b.example.com",
        "api.example.com",
        "v2.api.example.com",
        "exact.api.example.com",
        "github.com",
        "pinned.example.net",
        "ssh.example.org",
        "bücher.example",
        "BÜCHER.example.",
        "xn--bcher-kva.example",
        "_dmarc.example.com",
    ]
    .into_iter()
    .map(|host| (Request::dns(host), ReasonCode::Allowed))
    .collect();
    check(&p, &cases);
}

#[test]
fn dns_is_allowed_for_a_route_that_only_lists_tcp_ports() {
    let p = load("version: 1\nroutes:\n  - host: ssh.example.org\n    tcp: [22]\n");
    check(
        &p,
        &[(Request::dns("ssh.example.org"), ReasonCode::Allowed)],
    );
}

#[test]
fn dns_is_denied_with_no_route_for_hosts_without_a_route() {
    let p = policy();
    let cases: Vec<_> = [
        "example.com",
        "evil.example",
        "anthropic.com",
        "www.api.anthropic.com",
        "api.anthropic.com.evil.example",
        "evilgithub.com",
        "github.com.evil.example",
        "sub.github.com",
        "notexample.com",
        "example.com.evil.example",
        "buecher.example",
        "localhost",
        "metadata.google.internal",
    ]
    .into_iter()
    .map(|host| (Request::dns(host), ReasonCode::NoRoute))
    .collect();
    check(&p, &cases);
}

#[test]
fn an_exact_rule_beats_a_wildcard_that_also_matches() {
    let p = policy();
    let cases = [
        ("exact.api.example.com", Some("exact.api.example.com")),
        ("EXACT.api.example.com.", Some("exact.api.example.com")),
        ("other.api.example.com", Some("*.api.example.com")),
        ("sub.exact.api.example.com", Some("*.api.example.com")),
        ("api.example.com", Some("*.example.com")),
    ];
    for (host, want) in cases {
        assert_eq!(route_of(&p, &Request::dns(host)).as_deref(), want, "{host}");
    }
    // The exact route governs alone: its `matches` apply, not the wildcard's "anything".
    check(
        &p,
        &[
            (
                https("exact.api.example.com", "GET", "/"),
                ReasonCode::Allowed,
            ),
            (
                https("exact.api.example.com", "POST", "/"),
                ReasonCode::NoMatch,
            ),
            (
                https("other.api.example.com", "POST", "/"),
                ReasonCode::Allowed,
            ),
        ],
    );
}

#[test]
fn the_most_specific_wildcard_wins_whatever_the_route_order() {
    let forward = load(
        "version: 1\nroutes:\n  - host: \"*.example.com\"\n  - host: \"*.b.example.com\"\n  - host: \"*.a.b.example.com\"\n",
    );
    let backward = load(
        "version: 1\nroutes:\n  - host: \"*.a.b.example.com\"\n  - host: \"*.b.example.com\"\n  - host: \"*.example.com\"\n",
    );
    let cases = [
        ("x.a.b.example.com", "*.a.b.example.com"),
        ("y.x.a.b.example.com", "*.a.b.example.com"),
        ("a.b.example.com", "*.b.example.com"),
        ("x.b.example.com", "*.b.example.com"),
        ("b.example.com", "*.example.com"),
        ("x.example.com", "*.example.com"),
        // A longer suffix that is not a label boundary does not count.
        ("xa.b.example.com", "*.b.example.com"),
    ];
    for policy in [&forward, &backward] {
        for (host, want) in cases {
            assert_eq!(
                route_of(policy, &Request::dns(host)).as_deref(),
                Some(want),
                "{host}"
            );
        }
    }
}

#[test]
fn a_wildcard_never_matches_its_apex_for_any_kind() {
    let p = load("version: 1\nroutes:\n  - host: \"*.example.com\"\n    tcp: [22]\n");
    let mut cases = Vec::new();
    for kind in ALL_KINDS {
        for host in ["example.com", "EXAMPLE.com.", "com"] {
            cases.push((request(kind, host), ReasonCode::NoRoute));
        }
        cases.push((request(kind, "www.example.com"), ReasonCode::Allowed));
        // A leading dot is not a label.
        cases.push((request(kind, ".example.com"), ReasonCode::InvalidHost));
    }
    check(&p, &cases);
}

#[test]
fn ip_literal_hosts_in_any_spelling_are_denied_as_ip_literal_for_every_kind() {
    let p = policy();
    let hosts = [
        "127.0.0.1",
        "127.1",
        "127.0.1",
        "2130706433",
        "0x7f.1",
        "0x7f000001",
        "0177.0.0.1",
        "0X7F.0.0.1",
        "127.0.0.1.",
        "169.254.169.254",
        "11.22.33.44",
        "[::1]",
        "::1",
        "[::ffff:127.0.0.1]",
        "::ffff:7f00:1",
        "64:ff9b::7f00:1",
        "fe80::1%eth0",
        "[fe80::1%25eth0]",
        "[fd00:ec2::254]",
        // Full-width digits and dots map to an address under IDNA.
        "\u{ff11}\u{ff12}\u{ff17}\u{ff0e}\u{ff10}\u{ff0e}\u{ff10}\u{ff0e}\u{ff11}",
    ];
    let mut cases = Vec::new();
    for kind in ALL_KINDS {
        for host in hosts {
            cases.push((request(kind, host), ReasonCode::IpLiteral));
        }
    }
    check(&p, &cases);
    let d = p.decide(&Request::tls("0x7f.1", 443));
    assert!(d.message.contains("`0x7f.1`"), "{}", d.message);
    assert!(d.message.contains("127.0.0.1"), "{}", d.message);
    assert!(d.message.contains("by name"), "{}", d.message);
    assert!(d.host.is_none() && d.route.is_none());
}

#[test]
fn invalid_hosts_are_denied_as_invalid_host_for_every_kind() {
    let p = policy();
    let long_label = format!("{}.example.com", "a".repeat(64));
    let long_name = format!("{}example.com", "abcdefghi.".repeat(25));
    let hosts = [
        "",
        ".",
        "a..example.com",
        ".example.com",
        "example.com..",
        "-a.example.com",
        "a-.example.com",
        "a b.example.com",
        "a$b.example.com",
        "a/b.example.com",
        "a.example.com/x",
        "a.example.com:443",
        "*.example.com",
        "https://a.example.com",
        "user@a.example.com",
        "1.2.3.999",
        "256.0.0.1",
        "a.example.123",
        "foo.0x1f",
        "[a.example.com]",
        "a.example.com\0",
        "a.example.com\r\n",
        long_label.as_str(),
        long_name.as_str(),
    ];
    let mut cases = Vec::new();
    for kind in ALL_KINDS {
        for host in hosts {
            cases.push((request(kind, host), ReasonCode::InvalidHost));
        }
    }
    check(&p, &cases);
}

#[test]
fn matches_entries_are_alternatives() {
    let p = policy();
    let post = |target| {
        Request::http(
            Kind::Https,
            "api.anthropic.com",
            443,
            "POST",
            target,
            ANTHROPIC_HEADERS,
        )
    };
    check(
        &p,
        &[
            // The first entry.
            (post("/v1/messages"), ReasonCode::Allowed),
            // The second entry.
            (
                https("api.anthropic.com", "GET", "/health"),
                ReasonCode::Allowed,
            ),
            // Conditions taken from different entries do not combine.
            (post("/health"), ReasonCode::NoMatch),
            (
                Request::http(
                    Kind::Https,
                    "api.anthropic.com",
                    443,
                    "GET",
                    "/v1/messages",
                    ANTHROPIC_HEADERS,
                ),
                ReasonCode::NoMatch,
            ),
        ],
    );
}

#[test]
fn every_condition_in_one_entry_must_hold() {
    let p = policy();
    let req = |method, target, headers| {
        Request::http(
            Kind::Https,
            "api.anthropic.com",
            443,
            method,
            target,
            headers,
        )
    };
    let wrong_version: Headers<'_> = &[("anthropic-version", b"2023-01-01")];
    check(
        &p,
        &[
            (
                req("POST", "/v1/messages", ANTHROPIC_HEADERS),
                ReasonCode::Allowed,
            ),
            // Path and method hold, header missing.
            (req("POST", "/v1/messages", NO_HEADERS), ReasonCode::NoMatch),
            // Path and method hold, header value wrong.
            (
                req("POST", "/v1/messages", wrong_version),
                ReasonCode::NoMatch,
            ),
            // Path and header hold, method wrong.
            (
                req("PUT", "/v1/messages", ANTHROPIC_HEADERS),
                ReasonCode::NoMatch,
            ),
            // Method and header hold, path wrong.
            (
                req("POST", "/v2/messages", ANTHROPIC_HEADERS),
                ReasonCode::NoMatch,
            ),
        ],
    );
}

#[test]
fn a_route_without_matches_allows_any_method_and_path() {
    let p = policy();
    let mut cases = Vec::new();
    for host in ["gitlab.com", "a.example.com", "bücher.example"] {
        for (method, target) in [
            ("GET", "/"),
            ("POST", "/anything"),
            ("DELETE", "/deep/path/x?y=1&z"),
            ("PATCH", "/x"),
            ("OPTIONS", "/"),
            ("HEAD", "/"),
            ("PROPFIND", "/dav/"),
            ("CONNECT", "/"),
        ] {
            cases.push((https(host, method, target), ReasonCode::Allowed));
            cases.push((http(host, method, target), ReasonCode::Allowed));
        }
    }
    check(&p, &cases);
}

#[test]
fn exact_paths_match_only_the_whole_path_and_ignore_the_query() {
    let p = policy();
    let get = |target| https("api.anthropic.com", "GET", target);
    check(
        &p,
        &[
            (get("/health"), ReasonCode::Allowed),
            (get("/health?verbose=1"), ReasonCode::Allowed),
            (get("/health?"), ReasonCode::Allowed),
            (get("/health/"), ReasonCode::NoMatch),
            (get("/healthz"), ReasonCode::NoMatch),
            (get("/Health"), ReasonCode::NoMatch),
            (get("/x/health"), ReasonCode::NoMatch),
            // The path cannot be smuggled in through the query.
            (get("/admin?/health"), ReasonCode::NoMatch),
        ],
    );
}

#[test]
fn prefix_paths_match_the_start_of_the_path_and_ignore_the_query() {
    let p = policy();
    let post = |target| {
        Request::http(
            Kind::Https,
            "api.anthropic.com",
            443,
            "POST",
            target,
            ANTHROPIC_HEADERS,
        )
    };
    check(
        &p,
        &[
            (post("/v1/"), ReasonCode::Allowed),
            (post("/v1/messages/count_tokens"), ReasonCode::Allowed),
            (post("/v1/messages?beta=true"), ReasonCode::Allowed),
            (post("/v1"), ReasonCode::NoMatch),
            (post("/v10/messages"), ReasonCode::NoMatch),
            (post("/V1/messages"), ReasonCode::NoMatch),
            (post("/x/v1/messages"), ReasonCode::NoMatch),
            (post("/admin?next=/v1/"), ReasonCode::NoMatch),
        ],
    );
}

#[test]
fn regex_paths_are_anchored_on_the_whole_path_and_ignore_the_query() {
    let p = policy();
    let get = |target| https("regex.example", "GET", target);
    check(
        &p,
        &[
            (get("/v1/items"), ReasonCode::Allowed),
            (get("/v22/items"), ReasonCode::Allowed),
            (get("/status"), ReasonCode::Allowed),
            (get("/v1/items?page=2"), ReasonCode::Allowed),
            (get("/status?x=/v1/items/extra"), ReasonCode::Allowed),
            // Anchored at the end, also for the first alternative.
            (get("/v1/items/extra"), ReasonCode::NoMatch),
            (get("/v1/itemsx"), ReasonCode::NoMatch),
            // Anchored at the start, also for the second alternative.
            (get("/x/status"), ReasonCode::NoMatch),
            (get("/statusx"), ReasonCode::NoMatch),
            (get("/x/v1/items"), ReasonCode::NoMatch),
            (get("/vx/items"), ReasonCode::NoMatch),
            (get("/"), ReasonCode::NoMatch),
        ],
    );
}

#[test]
fn header_names_match_in_any_case_and_values_exactly() {
    let p = policy();
    let post = |headers| {
        Request::http(
            Kind::Https,
            "api.anthropic.com",
            443,
            "POST",
            "/v1/messages",
            headers,
        )
    };
    let table: &[(Headers<'_>, ReasonCode)] = &[
        (&[("anthropic-version", b"2023-06-01")], ReasonCode::Allowed),
        (&[("ANTHROPIC-VERSION", b"2023-06-01")], ReasonCode::Allowed),
        (&[("Anthropic-Version", b"2023-06-01")], ReasonCode::Allowed),
        (
            &[("x-other", b"1"), ("anthropic-version", b"2023-06-01")],
            ReasonCode::Allowed,
        ),
        // The same value twice is still that value.
        (
            &[
                ("anthropic-version", b"2023-06-01"),
                ("Anthropic-Version", b"2023-06-01"),
            ],
            ReasonCode::Allowed,
        ),
        // A second copy with another value fails, in either order.
        (
            &[
                ("anthropic-version", b"2023-06-01"),
                ("anthropic-version", b"2099-01-01"),
            ],
            ReasonCode::NoMatch,
        ),
        (
            &[
                ("anthropic-version", b"2099-01-01"),
                ("ANTHROPIC-VERSION", b"2023-06-01"),
            ],
            ReasonCode::NoMatch,
        ),
        (
            &[("anthropic-version", b"2023-06-01 ")],
            ReasonCode::NoMatch,
        ),
        (
            &[("anthropic-version", b" 2023-06-01")],
            ReasonCode::NoMatch,
        ),
        (&[("anthropic-version", b"2023-06-02")], ReasonCode::NoMatch),
        (&[("anthropic-version", b"")], ReasonCode::NoMatch),
        (&[("anthropic_version", b"2023-06-01")], ReasonCode::NoMatch),
        (
            &[("anthropic-versions", b"2023-06-01")],
            ReasonCode::NoMatch,
        ),
        (&[], ReasonCode::NoMatch),
    ];
    let cases: Vec<_> = table
        .iter()
        .map(|&(headers, code)| (post(headers), code))
        .collect();
    check(&p, &cases);
}

#[test]
fn header_values_are_compared_case_sensitively() {
    let p = load(
        "version: 1\nroutes:\n  - host: a.example\n    matches:\n      - headers: [{name: x-mode, value: ReadOnly}]\n",
    );
    let exact: Headers<'_> = &[("x-mode", b"ReadOnly")];
    let lower: Headers<'_> = &[("x-mode", b"readonly")];
    let req = |headers| Request::http(Kind::Https, "a.example", 443, "GET", "/", headers);
    check(
        &p,
        &[
            (req(exact), ReasonCode::Allowed),
            (req(lower), ReasonCode::NoMatch),
        ],
    );
}

#[test]
fn only_listed_methods_match_and_methods_are_compared_exactly() {
    let p = policy();
    let get = |method| https("exact.api.example.com", method, "/");
    check(
        &p,
        &[
            (get("GET"), ReasonCode::Allowed),
            (get("HEAD"), ReasonCode::NoMatch),
            (get("POST"), ReasonCode::NoMatch),
            (get("DELETE"), ReasonCode::NoMatch),
            // Policy methods are uppercased at load; a request's method is taken as sent.
            (get("get"), ReasonCode::NoMatch),
        ],
    );
}

#[test]
fn requests_that_are_not_origin_form_http_are_invalid() {
    let p = policy();
    check(
        &p,
        &[
            (https("gitlab.com", "", "/"), ReasonCode::InvalidRequest),
            (
                https("gitlab.com", "GET /", "/"),
                ReasonCode::InvalidRequest,
            ),
            (
                https("gitlab.com", "GE\tT", "/"),
                ReasonCode::InvalidRequest,
            ),
            (https("gitlab.com", "GET", ""), ReasonCode::InvalidRequest),
            (
                https("gitlab.com", "OPTIONS", "*"),
                ReasonCode::InvalidRequest,
            ),
            (
                https("gitlab.com", "GET", "https://gitlab.com/"),
                ReasonCode::InvalidRequest,
            ),
            (http("gitlab.com", "GET", "x/y"), ReasonCode::InvalidRequest),
        ],
    );
}

/// Targets that reach git's receive-pack service (push), in spellings a server accepts.
const PUSH_TARGETS: &[&str] = &[
    "/o/r.git/git-receive-pack",
    "/o/r/git-receive-pack",
    "/o/r.git/git-receive-pack?x=1",
    "/o/r.git/info/refs?service=git-receive-pack",
    "/o/r.git/info/refs?foo=1&service=git-receive-pack",
    "/o/r.git/info/refs?service=git-upload-pack&service=git-receive-pack",
    "/o/r.git/GIT-RECEIVE-PACK",
    "/o/r.git/Git-Receive-Pack",
    "/o/r.git/info/refs?service=GIT-RECEIVE-PACK",
    "/o/r.git/info/refs?SERVICE=git-receive-pack",
    "/o/r.git/git%2dreceive%2dpack",
    "/o/r.git/git%2Dreceive-pack",
    "/o/r.git%2fgit-receive-pack",
    "/o/r.git/git%252dreceive-pack",
    "/o/r.git/info/refs?service=git%2dreceive%2dpack",
    "/o/r.git/info%2frefs?service=git-receive-pack",
    "/o/r.git/INFO/REFS?service=git-receive-pack",
    "/o/r.git\\git-receive-pack",
    "/o/r.git%5cgit-receive-pack",
    // Servlet containers drop `;` path parameters; many routers ignore a trailing slash.
    "/o/r.git/git-receive-pack;jsessionid=1",
    "/o/r.git/git-receive-pack%3bx",
    "/o/r.git/info/refs;x?service=git-receive-pack",
    "/o/r.git/git-receive-pack/",
    "/o/r.git/info/refs/?service=git-receive-pack",
];

#[test]
fn git_push_is_always_denied_even_where_everything_else_is_allowed() {
    let p = policy();
    let mut cases = Vec::new();
    // No matches and no git rule; git fetch enabled; a wildcard; a route with auth.
    for host in ["gitlab.com", "github.com", "a.example.com", "open.example"] {
        for &target in PUSH_TARGETS {
            for method in ["GET", "POST"] {
                cases.push((https(host, method, target), ReasonCode::GitPushDenied));
                cases.push((http(host, method, target), ReasonCode::GitPushDenied));
            }
        }
    }
    check(&p, &cases);
    let d = p.decide(&https("github.com", "POST", "/o/r.git/git-receive-pack"));
    assert!(d.message.contains("github.com"), "{}", d.message);
    assert!(d.auth.is_none());
}

#[test]
fn git_push_is_denied_even_when_a_matches_entry_names_its_path() {
    let p = load(
        r#"version: 1
routes:
  - host: git.example
    git: {fetch: true}
    matches:
      - paths: [{type: regex, value: "/.*"}]
      - paths: [{type: prefix, value: /o/r.git/git-receive-pack}]
        methods: [POST]
"#,
    );
    check(
        &p,
        &[
            (
                https("git.example", "POST", "/o/r.git/git-receive-pack"),
                ReasonCode::GitPushDenied,
            ),
            (
                https(
                    "git.example",
                    "GET",
                    "/o/r.git/info/refs?service=git-receive-pack",
                ),
                ReasonCode::GitPushDenied,
            ),
        ],
    );
}

/// Targets of git's upload-pack service (clone, fetch), including the dumb protocol.
const FETCH_TARGETS: &[(&str, &str)] = &[
    ("GET", "/o/r.git/info/refs?service=git-upload-pack"),
    ("POST", "/o/r.git/git-upload-pack"),
    ("POST", "/o/r/git-upload-pack"),
    ("GET", "/o/r.git/info/refs"),
    ("GET", "/o/r.git/info/refs?service=GIT-UPLOAD-PACK"),
    ("POST", "/o/r.git/git%2Dupload-pack"),
    ("POST", "/o/r.git/git-upload-pack;x"),
    ("GET", "/o/r.git/info/refs/?service=git-upload-pack"),
];

#[test]
fn git_fetch_is_denied_without_git_fetch_even_on_a_route_without_matches() {
    let p = policy();
    let mut cases = Vec::new();
    for host in ["gitlab.com", "a.example.com", "open.example"] {
        for &(method, target) in FETCH_TARGETS {
            cases.push((https(host, method, target), ReasonCode::GitFetchNotEnabled));
        }
    }
    check(&p, &cases);
}

#[test]
fn git_fetch_is_allowed_with_git_fetch_beside_the_routes_matches() {
    let p = policy();
    let mut cases = Vec::new();
    for &(method, target) in FETCH_TARGETS {
        cases.push((https("github.com", method, target), ReasonCode::Allowed));
        cases.push((http("github.com", method, target), ReasonCode::Allowed));
    }
    // git.fetch admits GET and POST to the git services; everything else still needs
    // a matches entry.
    cases.extend([
        (
            https("github.com", "PUT", "/o/r.git/git-upload-pack"),
            ReasonCode::NoMatch,
        ),
        (
            https("github.com", "GET", "/api/repos"),
            ReasonCode::Allowed,
        ),
        (
            https("github.com", "POST", "/api/repos"),
            ReasonCode::NoMatch,
        ),
        (https("github.com", "GET", "/o/r"), ReasonCode::NoMatch),
    ]);
    check(&p, &cases);
}

#[test]
fn trace_is_always_denied_in_any_case() {
    let p = policy();
    let mut cases = Vec::new();
    for host in [
        "gitlab.com",
        "a.example.com",
        "open.example",
        "api.anthropic.com",
    ] {
        for method in ["TRACE", "trace", "Trace"] {
            cases.push((https(host, method, "/"), ReasonCode::TraceDenied));
            cases.push((http(host, method, "/"), ReasonCode::TraceDenied));
        }
    }
    check(&p, &cases);
}

#[test]
fn dot_segments_in_any_encoding_are_denied_as_path_not_canonical() {
    let p = policy();
    let targets = [
        "/v1/../admin",
        "/v1/./admin",
        "/v1/..",
        "/..",
        "/v1/%2e%2e/admin",
        "/v1/%2E%2E/admin",
        "/v1/.%2e/admin",
        "/v1/%2e./admin",
        "/v1/%2e/admin",
        "/v1/%252e%252e/admin",
        "/v1/%25252e%25252e/admin",
        "/v1/%2e%2e%2fadmin",
        "/v1/..\\admin",
        "/v1\\..\\admin",
        "/v1/%5c..%5cadmin",
        "/v1/..;/admin",
        "/v1/..;jsessionid=x/admin",
        "/v1/../admin?x=1",
    ];
    let mut cases = Vec::new();
    for &target in &targets {
        // Even on a route that allows every path.
        cases.push((
            https("gitlab.com", "GET", target),
            ReasonCode::PathNotCanonical,
        ));
        cases.push((
            Request::http(
                Kind::Https,
                "api.anthropic.com",
                443,
                "POST",
                target,
                ANTHROPIC_HEADERS,
            ),
            ReasonCode::PathNotCanonical,
        ));
    }
    // Dots that are not whole segments are ordinary characters.
    for target in [
        "/v1/...",
        "/v1/..foo",
        "/v1/.well-known",
        "/v1/a..b",
        "/v1/x?path=../admin",
    ] {
        cases.push((https("gitlab.com", "GET", target), ReasonCode::Allowed));
    }
    check(&p, &cases);
}

#[test]
fn ordinary_routes_admit_tls_and_https_on_443_and_http_on_80_only() {
    let p = policy();
    let mut cases = Vec::new();
    for host in ["gitlab.com", "a.example.com", "ssh.example.org"] {
        cases.extend([
            (Request::tls(host, 443), ReasonCode::Allowed),
            (Request::tls(host, 80), ReasonCode::PortNotAllowed),
            (Request::tls(host, 8443), ReasonCode::PortNotAllowed),
            (Request::tls(host, 853), ReasonCode::PortNotAllowed),
            (Request::tls(host, 22), ReasonCode::PortNotAllowed),
            (Request::tls(host, 0), ReasonCode::PortNotAllowed),
            (
                Request::http(Kind::Http, host, 80, "GET", "/", NO_HEADERS),
                ReasonCode::Allowed,
            ),
            (
                Request::http(Kind::Http, host, 443, "GET", "/", NO_HEADERS),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::http(Kind::Http, host, 8080, "GET", "/", NO_HEADERS),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::http(Kind::Https, host, 443, "GET", "/", NO_HEADERS),
                ReasonCode::Allowed,
            ),
            (
                Request::http(Kind::Https, host, 80, "GET", "/", NO_HEADERS),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::http(Kind::Https, host, 8443, "GET", "/", NO_HEADERS),
                ReasonCode::PortNotAllowed,
            ),
        ]);
    }
    cases.extend([
        (Request::tls("pinned.example.net", 443), ReasonCode::Allowed),
        (
            Request::tls("pinned.example.net", 8443),
            ReasonCode::PortNotAllowed,
        ),
    ]);
    check(&p, &cases);
}

#[test]
fn tcp_is_allowed_only_on_the_ports_the_route_lists() {
    let p = policy();
    check(
        &p,
        &[
            (Request::tcp("ssh.example.org", 22), ReasonCode::Allowed),
            (Request::tcp("ssh.example.org", 2222), ReasonCode::Allowed),
            (Request::tcp("SSH.example.org.", 22), ReasonCode::Allowed),
            (
                Request::tcp("ssh.example.org", 23),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::tcp("ssh.example.org", 443),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::tcp("ssh.example.org", 80),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::tcp("ssh.example.org", 0),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::tcp("ssh.example.org", 65535),
                ReasonCode::PortNotAllowed,
            ),
            // Routes without `tcp` admit no raw TCP at all, not even 80 or 443.
            (Request::tcp("gitlab.com", 22), ReasonCode::PortNotAllowed),
            (Request::tcp("gitlab.com", 443), ReasonCode::PortNotAllowed),
            (Request::tcp("gitlab.com", 80), ReasonCode::PortNotAllowed),
            (
                Request::tcp("pinned.example.net", 443),
                ReasonCode::PortNotAllowed,
            ),
            (
                Request::tcp("a.example.com", 22),
                ReasonCode::PortNotAllowed,
            ),
            (Request::tcp("nowhere.example", 22), ReasonCode::NoRoute),
        ],
    );
}

#[test]
fn auth_is_returned_only_for_allowed_https_requests() {
    let p = policy();
    let post = Request::http(
        Kind::Https,
        "api.anthropic.com",
        443,
        "POST",
        "/v1/messages",
        ANTHROPIC_HEADERS,
    );
    let d = p.decide(&post);
    assert!(d.is_allowed(), "{}", d.message);
    let auth = d.auth.expect("an allowed HTTPS request on an auth route");
    assert_eq!(
        (auth.scheme, auth.token_ref.as_str()),
        (AuthScheme::Bearer, "ANTHROPIC_TOKEN")
    );

    let d = p.decide(&https("open.example", "DELETE", "/x"));
    assert_eq!(
        d.auth.map(|a| (a.scheme, a.token_ref.as_str())),
        Some((AuthScheme::Token, "OPEN_TOKEN"))
    );

    // Allowed, but nothing to inject into: DNS and the TLS handshake.
    for req in [
        Request::dns("api.anthropic.com"),
        Request::tls("api.anthropic.com", 443),
        Request::tls("open.example", 443),
    ] {
        let d = p.decide(&req);
        assert!(
            d.is_allowed() && d.auth.is_none(),
            "{}: {d:?}",
            describe(&req)
        );
    }
    // Routes without auth inject nothing.
    assert!(p.decide(&https("gitlab.com", "GET", "/")).auth.is_none());
}

#[test]
fn a_route_with_auth_refuses_plain_http_instead_of_injecting() {
    let p = policy();
    let post = Request::http(
        Kind::Http,
        "api.anthropic.com",
        80,
        "POST",
        "/v1/messages",
        ANTHROPIC_HEADERS,
    );
    check(
        &p,
        &[
            (post, ReasonCode::AuthRequiresTls),
            (
                http("open.example", "GET", "/"),
                ReasonCode::AuthRequiresTls,
            ),
            // Without auth, plain HTTP is fine.
            (http("gitlab.com", "GET", "/"), ReasonCode::Allowed),
        ],
    );
    let d = p.decide(&post);
    assert!(d.auth.is_none());
    assert!(
        d.message.contains("https://api.anthropic.com"),
        "{}",
        d.message
    );
}

#[test]
fn a_denied_request_never_carries_auth() {
    let p = policy();
    let denied = [
        https("api.anthropic.com", "GET", "/admin"),
        https("api.anthropic.com", "TRACE", "/v1/messages"),
        https("api.anthropic.com", "POST", "/v1/../admin"),
        https("open.example", "POST", "/o/r.git/git-receive-pack"),
        https(
            "open.example",
            "GET",
            "/o/r.git/info/refs?service=git-upload-pack",
        ),
        Request::http(Kind::Https, "open.example", 8443, "GET", "/", NO_HEADERS),
        http("open.example", "GET", "/"),
        https("open.example", "", "/"),
    ];
    for req in denied {
        let d = p.decide(&req);
        assert!(!d.is_allowed(), "{}: allowed", describe(&req));
        assert!(d.auth.is_none(), "{}: {d:?}", describe(&req));
        // The route is still named, so the gateway can log which rule refused it.
        assert!(d.route.is_some(), "{}", describe(&req));
    }
}

#[test]
fn a_no_route_denial_names_the_host_and_the_line_that_would_allow_it() {
    let p = policy();
    let d = p.decide(&Request::tls("evil.example", 443));
    assert_eq!(d.code, ReasonCode::NoRoute);
    assert!(d.message.contains("`evil.example`"), "{}", d.message);
    assert!(d.message.contains("- host: evil.example"), "{}", d.message);
    assert_eq!(d.host.as_deref(), Some("evil.example"));
    assert!(d.route.is_none());
    // The suggestion uses the normalised name.
    let d = p.decide(&Request::dns("Ünknown.Example."));
    assert!(
        d.message.contains("- host: xn--nknown-2ya.example"),
        "{}",
        d.message
    );
}

#[test]
fn the_suggested_route_line_really_allows_the_denied_host() {
    let base = "version: 1\nroutes:\n  - host: gitlab.com\n";
    let p = load(base);
    for host in ["evil.example", "Ünknown.Example.", "a.b.c.example.org"] {
        for kind in [Kind::Dns, Kind::Tls, Kind::Https, Kind::Http] {
            let d = p.decide(&request(kind, host));
            assert_eq!(d.code, ReasonCode::NoRoute);
            let Some(line) = d
                .message
                .lines()
                .find(|l| l.trim_start().starts_with("- host:"))
            else {
                panic!("no suggested line in {:?}", d.message);
            };
            let fixed = load(&format!("{base}{line}\n"));
            assert!(
                fixed.decide(&request(kind, host)).is_allowed(),
                "{host} {kind:?}: `{line}` did not allow it"
            );
        }
    }
}

#[test]
fn a_no_match_denial_names_the_route_line_and_the_entry_that_would_allow_it() {
    let text = "version: 1\nroutes:\n  - host: gitlab.com\n  - host: api.example.com\n    matches:\n      - methods: [POST]\n";
    let p = load(text);
    let req = https("api.example.com", "GET", "/admin/users?page=2");
    let d = p.decide(&req);
    assert_eq!(d.code, ReasonCode::NoMatch);
    assert!(d.message.contains("`api.example.com`"), "{}", d.message);
    assert!(d.message.contains("at line 4"), "{}", d.message);
    assert_eq!(d.route.map(|r| r.line()), Some(4));
    let Some(entry) = d
        .message
        .lines()
        .find(|l| l.trim_start().starts_with("- {"))
    else {
        panic!("no suggested entry in {:?}", d.message);
    };
    assert!(
        entry.contains(r#"{methods: [GET], paths: [{type: exact, value: "/admin/users"}]}"#),
        "{entry}"
    );
    // Adding the suggested entry to the route allows the request.
    let fixed = load(&format!("{text}    {}\n", entry.trim_end()));
    assert!(fixed.decide(&req).is_allowed());
}

#[test]
fn other_denials_say_how_to_change_the_policy() {
    let p = policy();
    let cases: &[(Request<'_>, ReasonCode, &[&str])] = &[
        (
            Request::tcp("ssh.example.org", 23),
            ReasonCode::PortNotAllowed,
            &["23", "`ssh.example.org`", "`tcp` list", "at line 21"],
        ),
        (
            Request::tls("gitlab.com", 8443),
            ReasonCode::PortNotAllowed,
            &["`gitlab.com`", "8443", "tcp: [8443]", "at line 18"],
        ),
        (
            https(
                "gitlab.com",
                "GET",
                "/o/r.git/info/refs?service=git-upload-pack",
            ),
            ReasonCode::GitFetchNotEnabled,
            &["`gitlab.com`", "git: {fetch: true}", "at line 18"],
        ),
        (
            https("gitlab.com", "TRACE", "/"),
            ReasonCode::TraceDenied,
            &["TRACE is always denied"],
        ),
        (
            https("gitlab.com", "GET", "/a/../b"),
            ReasonCode::PathNotCanonical,
            &["/a/../b", "normalised path"],
        ),
        (
            Request::dns("127.0.0.1"),
            ReasonCode::IpLiteral,
            &["`127.0.0.1`", "by name"],
        ),
        (
            Request::dns("a..example"),
            ReasonCode::InvalidHost,
            &["invalid host", "a..example"],
        ),
    ];
    for (req, code, needles) in cases {
        let d = p.decide(req);
        assert_eq!(d.code, *code, "{}: {}", describe(req), d.message);
        for needle in *needles {
            assert!(
                d.message.contains(needle),
                "{}: `{needle}` not in {:?}",
                describe(req),
                d.message
            );
        }
    }
}

#[test]
fn an_allow_names_the_route_and_the_normalised_host() {
    let p = policy();
    let d = p.decide(&Request::tls("WWW.Example.COM.", 443));
    assert!(d.is_allowed());
    assert_eq!(d.host.as_deref(), Some("www.example.com"));
    assert_eq!(
        d.route.map(|r| r.host().to_string()).as_deref(),
        Some("*.example.com")
    );
    assert!(
        d.message.contains("`*.example.com` at line 11"),
        "{}",
        d.message
    );
}

#[test]
fn every_kind_reaches_the_same_verdict_on_the_host_alone() {
    // Threat 12: one policy function for every path. Whatever kind of connection asks,
    // a host without a route, an IP literal or an invalid name is refused the same way.
    let p = policy();
    let hosts = [
        "evil.example",
        "example.com",
        "127.1",
        "[::1]",
        "a..example.com",
        "api.example.com:443",
    ];
    for host in hosts {
        let codes: Vec<ReasonCode> = ALL_KINDS
            .iter()
            .map(|&kind| p.decide(&request(kind, host)).code)
            .collect();
        assert!(
            codes
                .iter()
                .all(|&c| c == codes[0] && c != ReasonCode::Allowed),
            "{host}: {codes:?}"
        );
    }
}

#[test]
fn every_kind_finds_the_same_route_for_every_spelling_of_a_host() {
    let p = policy();
    let families: &[&[&str]] = &[
        &["gitlab.com", "GITLAB.COM", "gitlab.com.", "GitLab.Com."],
        &["bücher.example", "BÜCHER.example.", "xn--bcher-kva.example"],
        &["x.example.com", "X.EXAMPLE.COM."],
        &["ssh.example.org", "SSH.Example.Org."],
    ];
    for family in families {
        for kind in ALL_KINDS {
            let decisions: Vec<_> = family
                .iter()
                .map(|host| {
                    let d = p.decide(&request(kind, host));
                    (d.verdict, d.code, d.host, d.route.map(|r| r.line()))
                })
                .collect();
            assert!(
                decisions.iter().all(|d| *d == decisions[0]),
                "{kind:?}: {decisions:?}"
            );
        }
    }
    // And an open route is open to every kind that has a port on it.
    for host in ["gitlab.com", "x.example.com"] {
        let lines: Vec<_> = [Kind::Dns, Kind::Tls, Kind::Http, Kind::Https]
            .into_iter()
            .map(|kind| {
                let d = p.decide(&request(kind, host));
                assert!(d.is_allowed(), "{host} {kind:?}: {}", d.message);
                d.route.map(|r| r.line())
            })
            .collect();
        assert!(lines.iter().all(|l| *l == lines[0]), "{lines:?}");
    }
}

#[test]
fn the_same_request_always_gets_the_same_decision() {
    let p = policy();
    let q = policy();
    let req = Request::http(
        Kind::Https,
        "api.anthropic.com",
        443,
        "POST",
        "/v1/messages",
        ANTHROPIC_HEADERS,
    );
    let first = p.decide(&req);
    for policy in [&p, &q] {
        for _ in 0..3 {
            let again = policy.decide(&req);
            assert_eq!(
                (again.verdict, again.code, &again.message, &again.host),
                (first.verdict, first.code, &first.message, &first.host)
            );
        }
    }
}
