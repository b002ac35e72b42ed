//! Arbitrary bytes as an upstream resolver's answer: the CNAME chain walk must never
//! panic, never serve a record off the chain, and never serve (or follow) a denied name.
#![no_main]

use std::str::FromStr;

use bottleneck_dns::GateDecision;
use bottleneck_dns::chain::{Walk, name_key, walk};
use hickory_proto::op::Message;
use hickory_proto::rr::{Name, RData, RecordType};
use libfuzzer_sys::fuzz_target;

fn gate(name: &str) -> GateDecision {
    GateDecision {
        allowed: !name.contains("denied"),
        reason: "fuzz",
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::from_vec(data) else {
        return;
    };
    let (start, qtype) = match message.queries.first() {
        Some(q) => (q.name().clone(), q.query_type()),
        None => (Name::from_str("a.allowed.test.").unwrap(), RecordType::A),
    };
    if !gate(&name_key(&start)).allowed {
        return;
    }
    let result = walk(&start, qtype, &message.answers, &gate, 0);
    let mut chain = vec![name_key(&start)];
    chain.extend(result.names.iter().cloned());
    assert!(
        chain.iter().all(|n| gate(n).allowed),
        "a denied name on the chain"
    );
    for record in &result.records {
        assert!(
            chain.contains(&name_key(&record.name)),
            "a record off the chain"
        );
        if let RData::CNAME(target) = &record.data {
            assert!(
                gate(&name_key(&target.0)).allowed,
                "a CNAME to a denied name"
            );
        }
    }
    match result.end {
        Walk::Cut(denied) => {
            assert!(result.records.is_empty());
            assert!(!gate(&denied).allowed);
        }
        Walk::Follow(next) => assert!(gate(&name_key(&next)).allowed),
        Walk::Done | Walk::TooLong => {}
    }
});
