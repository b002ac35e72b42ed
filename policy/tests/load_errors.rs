//! Every kind of mistake in a policy file is an error that names the file, line, column
//! and key path and says how to fix it; all mistakes are reported at once, in line order,
//! and a policy with any mistake is never returned.

use std::path::PathBuf;

use bottleneck_policy::{Diagnostic, LoadError, MAX_POLICY_BYTES, Policy};

const FILE: &str = "policy.yaml";

/// One mistake and the diagnostic it must produce.
struct Case {
    /// What the mistake is, for failure messages.
    what: &'static str,
    /// The policy, one element per line (line numbers count from 1).
    lines: &'static [&'static str],
    line: usize,
    column: usize,
    key_path: &'static str,
    /// A fragment of the message.
    message: &'static str,
    /// A fragment of the hint.
    hint: &'static str,
}

fn text_of(lines: &[&str]) -> String {
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

/// Why the case does not hold, if it does not.
fn failure(case: &Case) -> Option<String> {
    let text = text_of(case.lines);
    let err = match Policy::from_yaml(&text, FILE) {
        Ok(_) => return Some(format!("{}: the policy loaded", case.what)),
        Err(err) => err,
    };
    let rendered = err.to_string();
    let found = err.diagnostics().iter().find(|d| {
        d.line == case.line
            && d.column == case.column
            && d.key_path == case.key_path
            && d.message.contains(case.message)
            && d.hint.as_deref().is_some_and(|h| h.contains(case.hint))
    });
    if found.is_none() {
        return Some(format!(
            "{}: no diagnostic at {}:{} `{}` with message ~{:?} and hint ~{:?}; got:\n{rendered}",
            case.what, case.line, case.column, case.key_path, case.message, case.hint
        ));
    }
    let place = if case.key_path.is_empty() {
        format!("{FILE}:{}:{}: ", case.line, case.column)
    } else {
        format!("{FILE}:{}:{}: {}: ", case.line, case.column, case.key_path)
    };
    if !rendered.contains(&place) {
        return Some(format!(
            "{}: rendered error lacks `{place}`:\n{rendered}",
            case.what
        ));
    }
    let hint = format!("hint: {}", case.hint);
    if !rendered
        .lines()
        .any(|l| l.contains("hint: ") && l.contains(case.hint))
    {
        return Some(format!(
            "{}: rendered error lacks `{hint}`:\n{rendered}",
            case.what
        ));
    }
    None
}

#[track_caller]
fn check_all(cases: &[Case]) {
    let failures: Vec<String> = cases.iter().filter_map(failure).collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[track_caller]
fn load_err(text: &str) -> LoadError {
    match Policy::from_yaml(text, FILE) {
        Ok(policy) => panic!(
            "expected an error, loaded {} route(s)",
            policy.routes().len()
        ),
        Err(err) => err,
    }
}

/// A fresh path under Cargo's per-target scratch directory.
fn scratch_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("bottleneck-policy-{}-{name}", std::process::id()))
}

#[test]
fn unknown_keys_are_errors_naming_the_key_and_suggesting_the_nearest_known_one() {
    check_all(&[
        Case {
            what: "typo at top level",
            lines: &["version: 1", "routes: []", "allow_range: []"],
            line: 3,
            column: 1,
            key_path: "allow_range",
            message: "unknown key `allow_range`",
            hint: "did you mean `allow_ranges`?",
        },
        Case {
            what: "unrelated key at top level",
            lines: &["version: 1", "routes: []", "proxy: {port: 8080}"],
            line: 3,
            column: 1,
            key_path: "proxy",
            message: "unknown key `proxy`",
            hint: "known keys here: version, routes, dns, allow_ranges",
        },
        Case {
            what: "`hosts` for `host` in a route",
            lines: &["version: 1", "routes:", "  - hosts: api.example.com"],
            line: 3,
            column: 5,
            key_path: "routes[0].hosts",
            message: "unknown key `hosts`",
            hint: "did you mean `host`?",
        },
        Case {
            what: "unknown key in a route",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    ports: [22]",
            ],
            line: 4,
            column: 5,
            key_path: "routes[0].ports",
            message: "unknown key `ports`",
            hint: "known keys here: host, auth, matches, git, tls, tcp",
        },
        Case {
            what: "unknown key in auth",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth:",
                "      scheme: Bearer",
                "      token_ref: API_TOKEN",
                "      secret: hunter2",
            ],
            line: 7,
            column: 7,
            key_path: "routes[0].auth.secret",
            message: "unknown key `secret`",
            hint: "known keys here: scheme, token_ref",
        },
        Case {
            what: "`method` for `methods` in a matches entry",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths: [{type: prefix, value: /v1/}]",
                "        method: [GET]",
            ],
            line: 6,
            column: 9,
            key_path: "routes[0].matches[0].method",
            message: "unknown key `method`",
            hint: "did you mean `methods`?",
        },
        Case {
            what: "`vaule` for `value` in a path",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths:",
                "          - type: prefix",
                "            value: /v1/",
                "            vaule: /v2/",
            ],
            line: 8,
            column: 13,
            key_path: "routes[0].matches[0].paths[0].vaule",
            message: "unknown key `vaule`",
            hint: "did you mean `value`?",
        },
        Case {
            what: "`nmae` for `name` in a header",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - headers:",
                "          - {nmae: x-api-version, value: \"2\"}",
            ],
            line: 6,
            column: 14,
            key_path: "routes[0].matches[0].headers[0].nmae",
            message: "unknown key `nmae`",
            hint: "did you mean `name`?",
        },
        Case {
            what: "unknown key in git",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: github.com",
                "    git: {fetch: true, push: true}",
            ],
            line: 4,
            column: 24,
            key_path: "routes[0].git.push",
            message: "unknown key `push`",
            hint: "known keys here: fetch",
        },
        Case {
            what: "unknown key in dns",
            lines: &[
                "version: 1",
                "routes: []",
                "dns: {upstreams: [203.0.113.53]}",
            ],
            line: 3,
            column: 7,
            key_path: "dns.upstreams",
            message: "unknown key `upstreams`",
            hint: "did you mean `upstream`?",
        },
    ]);
}

#[test]
fn values_of_the_wrong_type_are_errors_saying_what_was_expected_and_found() {
    check_all(&[
        Case {
            what: "host as a number",
            lines: &["version: 1", "routes:", "  - host: 42"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "expected a string, found a number",
            hint: "quote it if you mean the text: \"42\"",
        },
        Case {
            what: "host as a list",
            lines: &["version: 1", "routes:", "  - host: [a.example, b.example]"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "expected a string, found a list",
            hint: "single value",
        },
        Case {
            what: "host as a mapping",
            lines: &["version: 1", "routes:", "  - host: {name: a.example}"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "expected a string, found a mapping",
            hint: "single value",
        },
        Case {
            what: "tcp as a string",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: ssh.example.com",
                "    tcp: \"22\"",
            ],
            line: 4,
            column: 10,
            key_path: "routes[0].tcp",
            message: "expected a list of ports, found a string",
            hint: "list",
        },
        Case {
            what: "a tcp port as a quoted string",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: ssh.example.com",
                "    tcp: [\"22\"]",
            ],
            line: 4,
            column: 11,
            key_path: "routes[0].tcp[0]",
            message: "expected a whole number, found a string",
            hint: "without quotes",
        },
        Case {
            what: "git.fetch as a string",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: github.com",
                "    git: {fetch: \"yes\"}",
            ],
            line: 4,
            column: 18,
            key_path: "routes[0].git.fetch",
            message: "expected true or false, found a string",
            hint: "`true` or `false`",
        },
        Case {
            what: "git as a string",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: github.com",
                "    git: fetch",
            ],
            line: 4,
            column: 10,
            key_path: "routes[0].git",
            message: "expected a mapping, found a string",
            hint: "{fetch: true}",
        },
        Case {
            what: "matches as a mapping",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      paths: [{type: prefix, value: /v1/}]",
            ],
            line: 5,
            column: 7,
            key_path: "routes[0].matches",
            message: "expected a list of match entries, found a mapping",
            hint: "list",
        },
        Case {
            what: "a matches entry as a string",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches: [GET]",
            ],
            line: 4,
            column: 15,
            key_path: "routes[0].matches[0]",
            message: "expected a mapping, found a string",
            hint: "mapping",
        },
        Case {
            what: "version as a string",
            lines: &["version: \"1\"", "routes: []"],
            line: 1,
            column: 10,
            key_path: "version",
            message: "expected a whole number, found a string",
            hint: "without quotes",
        },
        Case {
            what: "routes as a mapping",
            lines: &["version: 1", "routes:", "  host: api.example.com"],
            line: 3,
            column: 3,
            key_path: "routes",
            message: "expected a list of routes, found a mapping",
            hint: "list",
        },
        Case {
            what: "a route as a string",
            lines: &["version: 1", "routes:", "  - api.example.com"],
            line: 3,
            column: 5,
            key_path: "routes[0]",
            message: "expected a mapping, found a string",
            hint: "{host: example.com}",
        },
        Case {
            what: "the document as a list",
            lines: &["- host: api.example.com"],
            line: 1,
            column: 1,
            key_path: "",
            message: "expected a mapping with `version` and `routes`, found a list",
            hint: "policy format",
        },
        Case {
            what: "tls as a boolean",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: pinned.example.com",
                "    tls: false",
            ],
            line: 4,
            column: 10,
            key_path: "routes[0].tls",
            message: "expected a string, found a boolean",
            hint: "quote it",
        },
        Case {
            what: "unknown tls mode",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: pinned.example.com",
                "    tls: splice",
            ],
            line: 4,
            column: 10,
            key_path: "routes[0].tls",
            message: "unknown tls mode `splice`",
            hint: "`intercept` (the default) or `passthrough`",
        },
    ]);
}

#[test]
fn wildcards_anywhere_but_a_whole_leading_label_are_errors() {
    check_all(&[
        Case {
            what: "wildcard in the middle",
            lines: &["version: 1", "routes:", "  - host: a.*.example.com"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "wildcard that is not a whole leading label",
            hint: "`*.example.com`",
        },
        Case {
            what: "wildcard glued to a label",
            lines: &["version: 1", "routes:", "  - host: \"*example.com\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "wildcard that is not a whole leading label",
            hint: "`*.example.com`",
        },
        Case {
            what: "wildcard at the end",
            lines: &["version: 1", "routes:", "  - host: example.*"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "wildcard that is not a whole leading label",
            hint: "`*.example.com`",
        },
        Case {
            what: "two wildcard labels",
            lines: &["version: 1", "routes:", "  - host: \"*.*.example.com\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "wildcard that is not a whole leading label",
            hint: "`*.example.com`",
        },
        Case {
            what: "a bare wildcard",
            lines: &["version: 1", "routes:", "  - host: \"*\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "`*` alone would match every host",
            hint: "`*.example.com`",
        },
    ]);
}

#[test]
fn ip_literals_ports_and_empty_names_in_host_are_errors() {
    let ip_hint = "bottleneck decides by name";
    check_all(&[
        Case {
            what: "dotted quad",
            lines: &["version: 1", "routes:", "  - host: 127.0.0.1"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "is an IP address (",
            hint: ip_hint,
        },
        Case {
            what: "short form 127.1, quoted",
            lines: &["version: 1", "routes:", "  - host: \"127.1\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "`127.1` is an IP address (127.0.0.1), not a name",
            hint: ip_hint,
        },
        Case {
            what: "short form 127.1, unquoted (a YAML number)",
            lines: &["version: 1", "routes:", "  - host: 127.1"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "expected a string, found a number",
            hint: "quote it",
        },
        Case {
            what: "decimal integer, quoted",
            lines: &["version: 1", "routes:", "  - host: \"2130706433\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "`2130706433` is an IP address (127.0.0.1), not a name",
            hint: ip_hint,
        },
        Case {
            what: "bracketed IPv6",
            lines: &["version: 1", "routes:", "  - host: \"[::1]\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "is an IP address (",
            hint: ip_hint,
        },
        Case {
            what: "IPv4-mapped IPv6",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: \"::ffff:169.254.169.254\"",
            ],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "is an IP address (",
            hint: ip_hint,
        },
        Case {
            what: "hex and short",
            lines: &["version: 1", "routes:", "  - host: 0x7f.1"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "is an IP address (",
            hint: ip_hint,
        },
        Case {
            what: "address-shaped but invalid",
            lines: &["version: 1", "routes:", "  - host: 1.2.3.999"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "shaped like an IP address",
            hint: ip_hint,
        },
        Case {
            what: "host with port",
            lines: &["version: 1", "routes:", "  - host: api.example.com:443"],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "includes a port",
            hint: "remove the port",
        },
        Case {
            what: "empty host",
            lines: &["version: 1", "routes:", "  - host: \"\""],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "the host is empty",
            hint: "write the host name",
        },
        Case {
            what: "a URL instead of a host",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: https://api.example.com/v1",
            ],
            line: 3,
            column: 11,
            key_path: "routes[0].host",
            message: "it is a URL; write only the host name",
            hint: "no scheme, path or spaces",
        },
        Case {
            what: "missing host",
            lines: &["version: 1", "routes:", "  - tls: passthrough"],
            line: 3,
            column: 5,
            key_path: "routes[0]",
            message: "missing key `host`",
            hint: "every route names its host",
        },
    ]);
}

#[test]
fn duplicate_hosts_are_errors_even_when_they_differ_only_before_normalisation() {
    check_all(&[
        Case {
            what: "the same host twice",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "  - host: api.example.com",
            ],
            line: 4,
            column: 11,
            key_path: "routes[1].host",
            message: "duplicate host `api.example.com`; it is already a route at line 3",
            hint: "merge the two routes",
        },
        Case {
            what: "unicode and punycode spellings",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: Bücher.example",
                "  - host: xn--bcher-kva.example",
            ],
            line: 4,
            column: 11,
            key_path: "routes[1].host",
            message: "duplicate host `xn--bcher-kva.example`; it is already a route at line 3",
            hint: "merge the two routes",
        },
        Case {
            what: "case and trailing dot",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: Example.com",
                "    matches: [{methods: [GET]}]",
                "  - host: example.com.",
            ],
            line: 5,
            column: 11,
            key_path: "routes[1].host",
            message: "duplicate host `example.com`; it is already a route at line 3",
            hint: "merge the two routes",
        },
        Case {
            what: "the same wildcard in two spellings",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: \"*.CDN.example\"",
                "  - host: \"*.cdn.example.\"",
            ],
            line: 4,
            column: 11,
            key_path: "routes[1].host",
            message: "duplicate host `*.cdn.example`; it is already a route at line 3",
            hint: "merge the two routes",
        },
        Case {
            what: "a duplicate of a route that has its own error",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    tcp: [0]",
                "  - host: API.example.com",
            ],
            line: 5,
            column: 11,
            key_path: "routes[1].host",
            message: "duplicate host `api.example.com`; it is already a route at line 3",
            hint: "merge the two routes",
        },
    ]);
}

#[test]
fn tcp_ports_out_of_range_on_the_http_listeners_or_repeated_are_errors() {
    let lines: &[&str] = &[
        "version: 1",
        "routes:",
        "  - host: ssh.example.com",
        "    tcp: [0, 65536, 80, 443, 22, 22, -1]",
    ];
    check_all(&[
        Case {
            what: "port 0",
            lines,
            line: 4,
            column: 11,
            key_path: "routes[0].tcp[0]",
            message: "port 0 is out of range",
            hint: "ports are 1 to 65535",
        },
        Case {
            what: "port 65536",
            lines,
            line: 4,
            column: 14,
            key_path: "routes[0].tcp[1]",
            message: "port 65536 is out of range",
            hint: "ports are 1 to 65535",
        },
        Case {
            what: "port 80",
            lines,
            line: 4,
            column: 21,
            key_path: "routes[0].tcp[2]",
            message: "port 80 is served by the HTTP/TLS listeners",
            hint: "the route already allows HTTP and HTTPS",
        },
        Case {
            what: "port 443",
            lines,
            line: 4,
            column: 25,
            key_path: "routes[0].tcp[3]",
            message: "port 443 is served by the HTTP/TLS listeners",
            hint: "`tls: passthrough`",
        },
        Case {
            what: "port 22 twice",
            lines,
            line: 4,
            column: 34,
            key_path: "routes[0].tcp[5]",
            message: "port 22 is listed twice",
            hint: "remove the duplicate",
        },
        Case {
            what: "a negative port",
            lines,
            line: 4,
            column: 38,
            key_path: "routes[0].tcp[6]",
            message: "port -1 is out of range",
            hint: "ports are 1 to 65535",
        },
        Case {
            what: "an empty tcp list",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: ssh.example.com",
                "    tcp: []",
            ],
            line: 4,
            column: 10,
            key_path: "routes[0].tcp",
            message: "the list is empty",
            hint: "remove `tcp`",
        },
    ]);
    let err = load_err(&text_of(lines));
    assert_eq!(err.diagnostics().len(), 6, "{err}");
}

#[test]
fn auth_matches_and_git_on_a_passthrough_route_are_errors_naming_line_and_key() {
    let lines: &[&str] = &[
        "version: 1",
        "routes:",
        "  - host: pinned.example.com",
        "    tls: passthrough",
        "    auth: {scheme: Bearer, token_ref: PINNED_TOKEN}",
        "    matches: [{methods: [GET]}]",
        "    git: {fetch: true}",
    ];
    check_all(&[
        Case {
            what: "auth on passthrough",
            lines,
            line: 5,
            column: 5,
            key_path: "routes[0].auth",
            message: "credentials cannot be injected into a passthrough route",
            hint: "remove `auth`, or remove `tls: passthrough`",
        },
        Case {
            what: "matches on passthrough",
            lines,
            line: 6,
            column: 5,
            key_path: "routes[0].matches",
            message: "cannot be checked on a passthrough route",
            hint: "remove `matches`, or remove `tls: passthrough`",
        },
        Case {
            what: "git on passthrough",
            lines,
            line: 7,
            column: 5,
            key_path: "routes[0].git",
            message: "cannot be enforced on a passthrough route",
            hint: "remove `git`, or remove `tls: passthrough`",
        },
    ]);
    let err = load_err(&text_of(lines));
    assert_eq!(err.diagnostics().len(), 3, "{err}");
}

#[test]
fn auth_with_an_unknown_scheme_or_a_token_ref_that_is_not_a_variable_name_is_an_error() {
    check_all(&[
        Case {
            what: "Basic scheme",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth: {scheme: Basic, token_ref: API_TOKEN}",
            ],
            line: 4,
            column: 20,
            key_path: "routes[0].auth.scheme",
            message: "unknown auth scheme `Basic`",
            hint: "use `Bearer` or `token`",
        },
        Case {
            what: "token_ref with a hyphen",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth: {scheme: Bearer, token_ref: my-token}",
            ],
            line: 4,
            column: 39,
            key_path: "routes[0].auth.token_ref",
            message: "`my-token` is not an environment variable name",
            hint: "never the secret itself",
        },
        Case {
            what: "a secret pasted as token_ref",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth:",
                "      scheme: Bearer",
                "      token_ref: sk-ant-api03-AAAA",
            ],
            line: 6,
            column: 18,
            key_path: "routes[0].auth.token_ref",
            message: "is not an environment variable name",
            hint: "environment variable",
        },
        Case {
            what: "token_ref starting with a digit",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth: {scheme: token, token_ref: \"1TOKEN\"}",
            ],
            line: 4,
            column: 38,
            key_path: "routes[0].auth.token_ref",
            message: "`1TOKEN` is not an environment variable name",
            hint: "environment variable",
        },
        Case {
            what: "token_ref with a dollar sign",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth: {scheme: token, token_ref: $TOKEN}",
            ],
            line: 4,
            column: 38,
            key_path: "routes[0].auth.token_ref",
            message: "`$TOKEN` is not an environment variable name",
            hint: "environment variable",
        },
        Case {
            what: "auth without scheme",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth: {token_ref: API_TOKEN}",
            ],
            line: 4,
            column: 11,
            key_path: "routes[0].auth",
            message: "missing key `scheme`",
            hint: "`scheme: Bearer`",
        },
        Case {
            what: "auth without token_ref",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    auth: {scheme: Bearer}",
            ],
            line: 4,
            column: 11,
            key_path: "routes[0].auth",
            message: "missing key `token_ref`",
            hint: "token_ref: NAME_OF_ENV_VAR",
        },
    ]);
}

#[test]
fn bad_paths_methods_headers_and_regexes_are_errors() {
    check_all(&[
        Case {
            what: "a regex that does not compile",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths:",
                "          - type: regex",
                "            value: \"/v1/(unclosed\"",
            ],
            line: 7,
            column: 20,
            key_path: "routes[0].matches[0].paths[0].value",
            message: "invalid regular expression `/v1/(unclosed`",
            hint: "Rust `regex` syntax",
        },
        Case {
            what: "a regex with look-around (unsupported)",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths: [{type: regex, value: \"/(?!admin).*\"}]",
            ],
            line: 5,
            column: 38,
            key_path: "routes[0].matches[0].paths[0].value",
            message: "invalid regular expression",
            hint: "Rust `regex` syntax",
        },
        Case {
            what: "an exact path without the leading slash",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths: [{type: exact, value: v1/messages}]",
            ],
            line: 5,
            column: 38,
            key_path: "routes[0].matches[0].paths[0].value",
            message: "path `v1/messages` does not start with `/`",
            hint: "`/v1/messages`",
        },
        Case {
            what: "a prefix path with a query string",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths: [{type: prefix, value: \"/v1?x=1\"}]",
            ],
            line: 5,
            column: 39,
            key_path: "routes[0].matches[0].paths[0].value",
            message: "without the query string",
            hint: "remove everything from `?`",
        },
        Case {
            what: "an unknown path type",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths: [{type: glob, value: /v1/*}]",
            ],
            line: 5,
            column: 24,
            key_path: "routes[0].matches[0].paths[0].type",
            message: "unknown path type `glob`",
            hint: "`exact`, `prefix` or `regex`",
        },
        Case {
            what: "a path without a type",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - paths: [{value: /v1/}]",
            ],
            line: 5,
            column: 17,
            key_path: "routes[0].matches[0].paths[0]",
            message: "needs both `type` and `value`",
            hint: "{type: prefix, value: /v1/}",
        },
        Case {
            what: "TRACE in methods",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - methods: [GET, TRACE]",
            ],
            line: 5,
            column: 24,
            key_path: "routes[0].matches[0].methods[1]",
            message: "TRACE is always denied",
            hint: "remove it",
        },
        Case {
            what: "trace in lower case in methods",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - methods: [trace]",
            ],
            line: 5,
            column: 19,
            key_path: "routes[0].matches[0].methods[0]",
            message: "TRACE is always denied",
            hint: "remove it",
        },
        Case {
            what: "a method that is not a token",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - methods: [\"GET /\"]",
            ],
            line: 5,
            column: 19,
            key_path: "routes[0].matches[0].methods[0]",
            message: "is not an HTTP method",
            hint: "GET, POST",
        },
        Case {
            what: "empty matches",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches: []",
            ],
            line: 4,
            column: 14,
            key_path: "routes[0].matches",
            message: "the list is empty",
            hint: "remove `matches` to allow every method and path",
        },
        Case {
            what: "an empty matches entry",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches: [{}]",
            ],
            line: 4,
            column: 15,
            key_path: "routes[0].matches[0]",
            message: "an empty match entry would allow everything",
            hint: "remove `matches` altogether",
        },
        Case {
            what: "empty methods",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches: [{methods: []}]",
            ],
            line: 4,
            column: 25,
            key_path: "routes[0].matches[0].methods",
            message: "the list is empty",
            hint: "remove `methods`",
        },
        Case {
            what: "a header name with a space",
            lines: &[
                "version: 1",
                "routes:",
                "  - host: api.example.com",
                "    matches:",
                "      - headers: [{name: \"x version\", value: \"1\"}]",
            ],
            line: 5,
            column: 26,
            key_path: "routes[0].matches[0].headers[0].name",
            message: "is not a valid header name",
            hint: "`anthropic-version`",
        },
    ]);
}

#[test]
fn bad_allow_ranges_and_dns_upstreams_are_errors() {
    check_all(&[
        Case {
            what: "a range with host bits set",
            lines: &["version: 1", "routes: []", "allow_ranges: [10.1.2.3/8]"],
            line: 3,
            column: 16,
            key_path: "allow_ranges[0]",
            message: "`10.1.2.3/8` has host bits set",
            hint: "did you mean `10.0.0.0/8`?",
        },
        Case {
            what: "an IPv6 range with host bits set",
            lines: &["version: 1", "routes: []", "allow_ranges:", "  - fd00::1/8"],
            line: 4,
            column: 5,
            key_path: "allow_ranges[0]",
            message: "has host bits set",
            hint: "did you mean `fd00::/8`?",
        },
        Case {
            what: "garbage in allow_ranges",
            lines: &[
                "version: 1",
                "routes: []",
                "allow_ranges: [10.0.0.0/8, intranet]",
            ],
            line: 3,
            column: 28,
            key_path: "allow_ranges[1]",
            message: "`intranet` is not a CIDR range",
            hint: "`10.20.0.0/16`",
        },
        Case {
            what: "a prefix length out of range",
            lines: &["version: 1", "routes: []", "allow_ranges: [10.0.0.0/33]"],
            line: 3,
            column: 16,
            key_path: "allow_ranges[0]",
            message: "is not a CIDR range",
            hint: "`10.20.0.0/16`",
        },
        Case {
            what: "allow_ranges as a string",
            lines: &["version: 1", "routes: []", "allow_ranges: 10.0.0.0/8"],
            line: 3,
            column: 15,
            key_path: "allow_ranges",
            message: "expected a list of CIDR ranges, found a string",
            hint: "list",
        },
        Case {
            what: "a name as dns upstream",
            lines: &[
                "version: 1",
                "routes: []",
                "dns:",
                "  upstream: [dns.google]",
            ],
            line: 4,
            column: 14,
            key_path: "dns.upstream[0]",
            message: "`dns.google` is not a resolver address",
            hint: "`203.0.113.53`",
        },
        Case {
            what: "a URL as dns upstream",
            lines: &[
                "version: 1",
                "routes: []",
                "dns:",
                "  upstream:",
                "    - 203.0.113.53",
                "    - https://17.5.6.7/dns-query",
            ],
            line: 6,
            column: 7,
            key_path: "dns.upstream[1]",
            message: "is not a resolver address",
            hint: "`[2001:db8::53]:5353`",
        },
        Case {
            what: "port 0 on a dns upstream",
            lines: &[
                "version: 1",
                "routes: []",
                "dns: {upstream: [\"203.0.113.53:0\"]}",
            ],
            line: 3,
            column: 18,
            key_path: "dns.upstream[0]",
            message: "is not a resolver address",
            hint: "optionally with a port",
        },
        Case {
            what: "an empty upstream list",
            lines: &["version: 1", "routes: []", "dns: {upstream: []}"],
            line: 3,
            column: 17,
            key_path: "dns.upstream",
            message: "the list is empty",
            hint: "remove `upstream`",
        },
    ]);
}

#[test]
fn missing_routes_unsupported_versions_and_versionless_extras_are_errors() {
    check_all(&[
        Case {
            what: "no routes",
            lines: &["version: 1", "dns: {upstream: [203.0.113.53]}"],
            line: 1,
            column: 1,
            key_path: "",
            message: "missing key `routes`",
            hint: "add `routes: []` to deny everything",
        },
        Case {
            what: "version 2",
            lines: &["version: 2", "routes: []"],
            line: 1,
            column: 10,
            key_path: "version",
            message: "unsupported policy version 2",
            hint: "`version: 1`",
        },
        Case {
            what: "version 0",
            lines: &["version: 0", "routes: []"],
            line: 1,
            column: 10,
            key_path: "version",
            message: "unsupported policy version 0",
            hint: "`version: 1`",
        },
        Case {
            what: "a bot-bottle file with a dns key",
            lines: &[
                "routes:",
                "  - host: api.example.com",
                "dns:",
                "  upstream: [203.0.113.53]",
            ],
            line: 3,
            column: 1,
            key_path: "dns",
            message: "`dns` needs a versioned policy",
            hint: "add `version: 1`",
        },
        Case {
            what: "a bot-bottle file with allow_ranges",
            lines: &[
                "routes:",
                "  - host: api.example.com",
                "allow_ranges: [10.0.0.0/8]",
            ],
            line: 3,
            column: 1,
            key_path: "allow_ranges",
            message: "`allow_ranges` needs a versioned policy",
            hint: "add `version: 1`",
        },
    ]);
}

#[test]
fn yaml_level_mistakes_are_errors_with_a_position() {
    // Mistakes the YAML reader catches before the schema is looked at.
    let cases: &[(&str, &str, usize, usize, &str)] = &[
        (
            "an unclosed flow sequence",
            "version: 1\nroutes: [\n",
            3,
            1,
            "YAML syntax error",
        ),
        (
            "a tab used for indentation (reported just after the tab)",
            "version: 1\nroutes:\n\t- host: a.example\n",
            3,
            2,
            "YAML syntax error",
        ),
        (
            "a duplicate top-level key",
            "version: 1\nroutes: []\nversion: 1\n",
            3,
            1,
            "duplicate key `version`",
        ),
        (
            "a duplicate key inside a route",
            "version: 1\nroutes:\n  - host: a.example\n    host: b.example\n",
            4,
            5,
            "duplicate key `host`",
        ),
        (
            "two documents",
            "version: 1\nroutes: []\n---\nversion: 1\nroutes: []\n",
            3,
            1,
            "one YAML document",
        ),
        (
            "a YAML tag",
            "version: 1\nroutes:\n  - host: !!str a.example\n",
            3,
            11,
            "YAML tags",
        ),
        ("an empty file", "", 1, 1, "the policy is empty"),
        (
            "a file with only comments",
            "# nothing here\n\n",
            1,
            1,
            "the policy is empty",
        ),
    ];
    let mut failures = Vec::new();
    for &(what, text, line, column, message) in cases {
        let err = match Policy::from_yaml(text, FILE) {
            Ok(_) => {
                failures.push(format!("{what}: loaded"));
                continue;
            }
            Err(err) => err,
        };
        let rendered = err.to_string();
        let place = format!("{FILE}:{line}:{column}: ");
        let ok = rendered.starts_with(&place)
            && rendered.contains(message)
            && err.diagnostics().len() == 1
            && err.diagnostics()[0].line == line
            && err.diagnostics()[0].column == column;
        if !ok {
            failures.push(format!(
                "{what}: wanted `{place}...{message}`, got:\n{rendered}\n{:?}",
                err.diagnostics()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_duplicate_yaml_key_points_at_the_first_occurrence_in_its_hint() {
    let err = load_err("version: 1\nroutes:\n  - host: a.example\n    host: b.example\n");
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (4, 5));
    assert_eq!(
        d.hint.as_deref(),
        Some("the key first appears at line 3, column 5")
    );
}

#[test]
fn several_mistakes_in_one_file_are_all_reported_in_line_order() {
    let text = text_of(&[
        "allow_ranges: [garbage]",      // 1: allow_ranges[0]
        "version: 1",                   // 2
        "routes:",                      // 3
        "  - host: good.example",       // 4
        "  - host: a.*.example",        // 5: routes[1].host
        "    tcp: [0, 22]",             // 6: routes[1].tcp[0]
        "  - host: good2.example",      // 7
        "    auht: {}",                 // 8: routes[2].auht
        "  - host: GOOD.example",       // 9: routes[3].host (duplicate)
        "    matches: [{methods: []}]", // 10: routes[3].matches[0].methods
        "dns: {upstream: [nowhere]}",   // 11: dns.upstream[0]
    ]);
    let err = load_err(&text);
    let got: Vec<(usize, &str)> = err
        .diagnostics()
        .iter()
        .map(|d| (d.line, d.key_path.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            (1, "allow_ranges[0]"),
            (5, "routes[1].host"),
            (6, "routes[1].tcp[0]"),
            (8, "routes[2].auht"),
            (9, "routes[3].host"),
            (10, "routes[3].matches[0].methods"),
            (11, "dns.upstream[0]"),
        ],
        "{err}"
    );
    // The rendered error lists them in the same order, one `file:line:column` each.
    let rendered = err.to_string();
    let mut at = 0;
    for d in err.diagnostics() {
        let place = format!("{FILE}:{}:{}: {}: ", d.line, d.column, d.key_path);
        let Some(found) = rendered[at..].find(&place) else {
            panic!("`{place}` missing or out of order in:\n{rendered}");
        };
        at += found + place.len();
    }
    assert!(
        rendered
            .lines()
            .filter(|l| l.starts_with(&format!("{FILE}:")))
            .count()
            == 7
    );
}

#[test]
fn diagnostics_on_one_line_are_ordered_by_column() {
    let err = load_err("version: 1\nroutes:\n  - {host: \"*\", tcp: [0], auht: 1}\n");
    let columns: Vec<usize> = err.diagnostics().iter().map(|d| d.column).collect();
    assert_eq!(columns.len(), 3, "{err}");
    assert!(columns.windows(2).all(|w| w[0] < w[1]), "{columns:?}");
}

#[test]
fn a_bad_route_is_reported_and_the_good_routes_around_it_produce_no_diagnostics() {
    let text = text_of(&[
        "version: 1",
        "routes:",
        "  - host: ok1.example",
        "    matches: [{methods: [GET]}]",
        "  - host: bad..example",
        "    tcp: [70000]",
        "  - host: ok2.example",
        "    auth: {scheme: Bearer, token_ref: OK_TOKEN}",
    ]);
    let err = load_err(&text);
    assert_eq!(err.diagnostics().len(), 2, "{err}");
    for d in err.diagnostics() {
        assert!(d.key_path.starts_with("routes[1]."), "{d:?}");
    }
    // The result is an error, not a policy with the two good routes.
    assert!(matches!(err, LoadError::Invalid { .. }));
    let rendered = err.to_string();
    assert!(!rendered.contains("ok1.example") && !rendered.contains("ok2.example"));
}

#[test]
fn every_diagnostic_renders_as_file_line_column_key_path_message_and_hint() {
    let err = load_err("version: 1\nroutes:\n  - host: a.example\n    tcp: [0]\n");
    assert_eq!(
        err.diagnostics(),
        [Diagnostic {
            line: 4,
            column: 11,
            key_path: "routes[0].tcp[0]".into(),
            message: "port 0 is out of range".into(),
            hint: Some("ports are 1 to 65535".into()),
        }]
    );
    assert_eq!(
        err.to_string(),
        "policy.yaml:4:11: routes[0].tcp[0]: port 0 is out of range\n  hint: ports are 1 to 65535"
    );
}

#[test]
fn a_file_with_a_mistake_is_reported_under_its_path() {
    let path = scratch_path("mistake.yaml");
    std::fs::write(&path, "version: 1\nroutes:\n  - host: 10.0.0.1\n").unwrap();
    let err = Policy::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let rendered = err.to_string();
    assert!(
        rendered.starts_with(&format!("{}:3:11: routes[0].host: ", path.display())),
        "{rendered}"
    );
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_at_the_first_bad_character() {
    let path = scratch_path("latin1.yaml");
    // Line 3 is `  - host: bü<0xff>.example`: the bad byte is the 13th character (but the
    // 14th byte).
    std::fs::write(
        &path,
        b"version: 1\nroutes:\n  - host: b\xc3\xbc\xff.example\n",
    )
    .unwrap();
    let err = Policy::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let d = &err.diagnostics()[0];
    assert_eq!((d.line, d.column), (3, 13), "{err}");
    assert!(d.message.contains("not valid UTF-8"), "{err}");
    assert!(d.hint.as_deref().is_some_and(|h| h.contains("UTF-8")));
    assert!(
        err.to_string()
            .starts_with(&format!("{}:3:13: ", path.display()))
    );
}

#[test]
fn an_empty_file_on_disk_is_an_error_not_an_empty_policy() {
    let path = scratch_path("empty.yaml");
    std::fs::write(&path, b"").unwrap();
    let err = Policy::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    assert_eq!(err.diagnostics().len(), 1);
    assert!(
        err.to_string().contains(":1:1: the policy is empty"),
        "{err}"
    );
}

#[test]
fn a_file_larger_than_the_limit_is_refused_without_parsing() {
    let path = scratch_path("huge.yaml");
    let size = usize::try_from(MAX_POLICY_BYTES).unwrap() + 1;
    std::fs::write(&path, vec![b'#'; size]).unwrap();
    let err = Policy::load(&path).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    match &err {
        LoadError::TooLarge { path: p, limit } => {
            assert_eq!(p, &path);
            assert_eq!(*limit, MAX_POLICY_BYTES);
        }
        other => panic!("expected TooLarge, got {other:?}"),
    }
    assert!(err.to_string().contains("larger than"), "{err}");
    assert!(err.diagnostics().is_empty());
}

#[test]
fn a_file_of_exactly_the_limit_is_read() {
    let path = scratch_path("at-limit.yaml");
    let body = "version: 1\nroutes:\n  - host: api.example.com\n";
    let size = usize::try_from(MAX_POLICY_BYTES).unwrap();
    let mut text = body.as_bytes().to_vec();
    text.push(b'#');
    text.resize(size - 1, b'x');
    text.push(b'\n');
    assert_eq!(text.len(), size);
    std::fs::write(&path, &text).unwrap();
    let loaded = Policy::load(&path);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(loaded.unwrap().routes().len(), 1);
}

#[test]
fn a_missing_file_is_a_read_error_naming_the_path() {
    let path = scratch_path("does-not-exist.yaml");
    let err = Policy::load(&path).unwrap_err();
    match &err {
        LoadError::Read { path: p, source } => {
            assert_eq!(p, &path);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected Read, got {other:?}"),
    }
    assert!(
        err.to_string()
            .starts_with(&format!("cannot read policy file {}", path.display())),
        "{err}"
    );
    assert!(err.diagnostics().is_empty());
}

#[test]
fn a_directory_is_a_read_error_not_a_panic() {
    let err = Policy::load(env!("CARGO_TARGET_TMPDIR")).unwrap_err();
    assert!(matches!(err, LoadError::Read { .. }), "{err:?}");
}
