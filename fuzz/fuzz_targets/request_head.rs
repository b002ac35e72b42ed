//! Arbitrary bytes as an HTTP/1.1 request head, parsed the way hyper parses it (httparse),
//! then put through the checks the gateway makes itself (`request_head::check`: size,
//! authority against the SNI, policy, declared body, credentials) and its hop-by-hop
//! stripping. Nothing may panic, and an allowed request must never name another host than
//! its TLS connection's SNI, nor carry credentials the route does not inject.
#![no_main]

use std::sync::OnceLock;

use bottleneck_gateway::audit::Record;
use bottleneck_gateway::proxy::{ConnInfo, strip_hop_by_hop};
use bottleneck_gateway::request_head;
use bottleneck_gateway::state::Snapshot;
use bottleneck_policy::Policy;
use bottleneck_policy::host::normalize_name;
use http::header::{HeaderName, HeaderValue};
use http::{Method, Request, Uri};
use libfuzzer_sys::fuzz_target;

const POLICY: &str = r#"
version: 1
routes:
  - host: a.example
  - host: api.example
    auth: {scheme: Bearer, token_ref: API_TOKEN}
    matches:
      - paths: [{type: prefix, value: /v1/}]
        methods: [GET, POST]
  - host: "*.wild.example"
    matches:
      - paths: [{type: regex, value: "/[a-z]+/[0-9]+"}]
        methods: [GET]
        headers: [{name: x-tenant, value: one}]
  - host: git.example
    git: {fetch: true}
"#;

const SNIS: [Option<&str>; 5] = [
    None,
    Some("a.example"),
    Some("api.example"),
    Some("x.wild.example"),
    Some("git.example"),
];

/// The most body bytes the fuzzed gateway forwards.
const MAX_BODY: u64 = 1 << 20;

fn snapshot() -> &'static Snapshot {
    static SNAPSHOT: OnceLock<Snapshot> = OnceLock::new();
    SNAPSHOT.get_or_init(|| {
        let policy = Policy::from_yaml(POLICY, "fuzz.yaml").expect("the fuzz policy loads");
        Snapshot::new(policy, |_| Some("fuzz-secret".into())).expect("the secret is valid")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let sni = SNIS[usize::from(selector) % SNIS.len()];
    let declared = if selector & 0x80 != 0 {
        MAX_BODY + 1
    } else {
        0
    };

    let mut fields = [httparse::EMPTY_HEADER; 128];
    let mut parsed = httparse::Request::new(&mut fields);
    let Ok(httparse::Status::Complete(_)) = parsed.parse(rest) else {
        return;
    };
    let (Some(method), Some(path)) = (parsed.method, parsed.path) else {
        return;
    };
    // What hyper would refuse before the gateway sees the request.
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let Ok(uri) = path.parse::<Uri>() else {
        return;
    };
    let mut builder = Request::builder().method(method).uri(uri);
    for field in parsed.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(field.name.as_bytes()),
            HeaderValue::from_bytes(field.value),
        ) else {
            return;
        };
        builder = builder.header(name, value);
    }
    let Ok(request) = builder.body(()) else {
        return;
    };
    let (mut head, ()) = request.into_parts();
    let target = head
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();

    let conn = ConnInfo {
        client: "198.18.0.2:40000".parse().expect("a socket address"),
        original_dst: None,
        sni: sni.map(str::to_owned),
        tls_denial: None,
    };
    let mut record = Record::default();
    let checked = request_head::check(
        &conn,
        snapshot(),
        &head,
        &target,
        declared,
        MAX_BODY,
        &mut record,
    );
    let _ = request_head::is_websocket_upgrade(&head);
    match checked {
        Ok(checked) => {
            assert!(
                declared <= MAX_BODY,
                "an oversized declared body was allowed"
            );
            if let Some(sni) = sni {
                assert_eq!(
                    normalize_name(&checked.name).ok(),
                    normalize_name(sni).ok(),
                    "a request for {} was allowed on a connection for {sni}",
                    checked.name
                );
            }
            if checked.authorization.is_some() {
                assert_eq!(checked.name, "api.example", "credentials for another host");
                assert!(sni.is_some(), "credentials injected over plain HTTP");
            }
            assert_eq!(record.host.as_deref(), Some(checked.name.as_str()));
        }
        Err(refusal) => {
            assert!(
                refusal.status.is_client_error(),
                "a head check answered {}",
                refusal.status
            );
            assert!(!refusal.code.is_empty());
        }
    }

    strip_hop_by_hop(&mut head.headers);
    for name in [
        "connection",
        "upgrade",
        "transfer-encoding",
        "te",
        "proxy-authorization",
    ] {
        assert!(
            !head.headers.contains_key(name),
            "{name} survived stripping"
        );
    }
});
