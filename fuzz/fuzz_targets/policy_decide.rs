//! Arbitrary requests against a policy using every feature: `decide` must never panic, and
//! credentials must never be handed out on a denial or over plain text.
#![no_main]

use std::sync::OnceLock;

use bottleneck_policy::{Kind, Policy, Request};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
version: 1
routes:
  - host: api.example.com
    auth: {scheme: Bearer, token_ref: TOKEN}
    matches:
      - paths: [{type: prefix, value: /v1/}, {type: regex, value: "/r/[a-z]+"}]
        methods: [GET, POST]
        headers: [{name: x-version, value: "1"}]
      - paths: [{type: exact, value: /health}]
  - host: "*.example.com"
    git: {fetch: true}
    tcp: [22]
  - host: "*.deep.example.com"
  - host: pinned.example.org
    tls: passthrough
"#;

fn policy() -> &'static Policy {
    static POLICY_CELL: OnceLock<Policy> = OnceLock::new();
    POLICY_CELL.get_or_init(|| match Policy::from_yaml(POLICY, "fuzz.yaml") {
        Ok(policy) => policy,
        Err(e) => panic!("the fuzz policy must load: {e}"),
    })
}

fuzz_target!(
    |input: (u8, u16, String, String, String, Vec<(String, Vec<u8>)>)| {
        let (kind, port, host, method, target, headers) = input;
        let kind = match kind % 5 {
            0 => Kind::Dns,
            1 => Kind::Tls,
            2 => Kind::Http,
            3 => Kind::Https,
            _ => Kind::Tcp,
        };
        let headers: Vec<(&str, &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_slice()))
            .collect();
        let request = Request::http(kind, &host, port, &method, &target, &headers);
        let decision = policy().decide(&request);
        if decision.auth.is_some() {
            assert!(decision.is_allowed());
            assert_eq!(kind, Kind::Https);
        }
    }
);
