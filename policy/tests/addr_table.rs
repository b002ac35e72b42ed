//! `Policy::permits_address`: which upstream addresses the gateway may dial for a loaded
//! policy. Only global unicast, plus whatever `allow_ranges` names.

use std::net::IpAddr;

use bottleneck_policy::Policy;
use bottleneck_policy::addr::{AddrClass, classify};

#[track_caller]
fn load(text: &str) -> Policy {
    match Policy::from_yaml(text, "policy.yaml") {
        Ok(policy) => policy,
        Err(e) => panic!("policy did not load:\n{e}"),
    }
}

#[track_caller]
fn ip(text: &str) -> IpAddr {
    match text.parse() {
        Ok(ip) => ip,
        Err(e) => panic!("bad address {text}: {e}"),
    }
}

/// Addresses never dialled unless a range allows them, whatever the policy.
const ALWAYS_DENIED: &[&str] = &[
    "0.0.0.0",
    "127.0.0.1",
    "127.255.255.254",
    "10.0.0.1",
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "169.254.0.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "100.100.100.200",
    "224.0.0.1",
    "239.255.255.250",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.0.8",
    "192.0.2.1",
    "203.0.113.9",
    "198.18.0.1",
    "::",
    "::1",
    "fe80::1",
    "fc00::1",
    "fd12:3456::1",
    "fd00:ec2::254",
    "fec0::1",
    "ff02::1",
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "::127.0.0.1",
    "64:ff9b::7f00:1",
    "64:ff9b::a9fe:a9fe",
    "64:ff9b:1::a00:1",
    "2002:7f00:1::",
    "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
    "2001:db8::1",
    "100::1",
];

#[test]
fn with_allow_ranges_only_global_and_allowed_addresses_are_permitted() {
    let policy = load(
        "version: 1\nroutes: []\nallow_ranges: [198.51.100.0/24, 10.20.0.0/16, \"fd00:1::/64\"]\n",
    );
    let mut failures = Vec::new();
    let permitted = [
        // Inside allow_ranges.
        "198.51.100.0",
        "198.51.100.7",
        "198.51.100.255",
        "::ffff:198.51.100.7",
        "10.20.0.1",
        "10.20.255.254",
        "fd00:1::5",
        // Global unicast.
        "11.22.33.44",
        "17.5.6.7",
        "93.184.215.14",
        "2a01:4f8::1",
        "2a00:1450:4001:80b::200e",
        "::ffff:11.22.33.44",
    ];
    let denied_here = [
        // Next to the allowed ranges, but outside them (198.51.100.0/24 is the whole
        // documentation range, so its neighbours are global).
        "10.21.0.1",
        "10.19.255.255",
        "fd00:2::5",
        // An allowed IPv4 range does not extend to other embeddings of its addresses.
        "64:ff9b::c633:6407",
        "2002:c633:6407::1",
    ];
    for text in permitted {
        if !policy.permits_address(ip(text)) {
            failures.push(format!(
                "{text} should be permitted ({})",
                classify(ip(text))
            ));
        }
    }
    for text in ALWAYS_DENIED.iter().chain(&denied_here) {
        if policy.permits_address(ip(text)) {
            failures.push(format!("{text} should be denied ({})", classify(ip(text))));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn without_allow_ranges_only_global_unicast_is_permitted() {
    let policy = load("version: 1\nroutes: []\n");
    for text in ["11.22.33.44", "2a01:4f8::1", "::ffff:11.22.33.44"] {
        assert!(policy.permits_address(ip(text)), "{text}");
        let canonical = ip(text).to_canonical();
        assert_eq!(classify(canonical), AddrClass::Global, "{text}");
    }
    for text in ALWAYS_DENIED.iter().chain(&["198.51.100.7"]) {
        assert!(
            !policy.permits_address(ip(text)),
            "{text} ({})",
            classify(ip(text))
        );
    }
}

#[test]
fn a_v6_allow_range_covering_mapped_addresses_does_not_widen_their_v4_decision() {
    // `::ffff:10.0.0.1` reaches 10.0.0.1; allowing the mapped form must not allow it.
    let policy = load("version: 1\nroutes: []\nallow_ranges: [\"::ffff:0:0/96\"]\n");
    for text in ["::ffff:10.0.0.1", "::ffff:127.0.0.1", "10.0.0.1"] {
        assert!(!policy.permits_address(ip(text)), "{text}");
    }
    // And an IPv4 allow range covers the mapped spelling of its addresses.
    let policy = load("version: 1\nroutes: []\nallow_ranges: [10.0.0.0/8]\n");
    for text in ["::ffff:10.0.0.1", "10.0.0.1"] {
        assert!(policy.permits_address(ip(text)), "{text}");
    }
}

#[test]
fn a_single_address_in_allow_ranges_allows_exactly_that_address() {
    let policy = load("version: 1\nroutes: []\nallow_ranges: [192.168.7.7, \"fd00::7\"]\n");
    assert!(policy.permits_address(ip("192.168.7.7")));
    assert!(!policy.permits_address(ip("192.168.7.8")));
    assert!(policy.permits_address(ip("fd00::7")));
    assert!(!policy.permits_address(ip("fd00::8")));
}

#[test]
fn metadata_endpoints_are_classified_as_cloud_metadata() {
    for text in ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"] {
        assert_eq!(classify(ip(text)), AddrClass::CloudMetadata, "{text}");
        assert_eq!(classify(ip(text)).code(), "cloud_metadata");
    }
}
