//! The harness's smoke test: `--quick` (bottleneck and direct, every scenario briefly) runs
//! as root and its JSON holds every scenario. It checks that the harness works, never the
//! numbers: speed is measured by the benchmark, not asserted by a test.

use std::path::PathBuf;

use bottleneck_bench::{Config, runner};
use bottleneck_lab::require_root;

#[test]
fn quick_mode_produces_every_scenario() {
    if !require_root("quick_mode_produces_every_scenario") {
        return;
    }
    let config = Config::quick(PathBuf::from("/nonexistent-peers"));
    let results = runner::run(config, "cargo test -p bottleneck-bench".into()).expect("run");
    let json = serde_json::to_value(&results).unwrap();

    for kind in ["direct", "bottleneck"] {
        let entry = json["https"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["kind"] == kind)
            .unwrap_or_else(|| panic!("no entry for {kind}: {json}"));
        assert!(entry["error"].is_null(), "{kind}: {}", entry["error"]);
        let r = &entry["result"];
        for scenario in ["keep_alive_one", "keep_alive_many", "new_connections"] {
            assert!(
                r[scenario]["completed"].as_u64().unwrap_or(0) > 0,
                "{kind}/{scenario}: {r}"
            );
        }
        assert!(
            r["bulk"]["bytes"].as_u64().unwrap_or(0) > 0,
            "{kind}/bulk: {r}"
        );
        assert!(
            r["idle"]["connections"].as_u64().unwrap_or(0) > 0,
            "{kind}/idle: {r}"
        );
        assert_eq!(r["errors"].as_array().map(Vec::len), Some(0), "{kind}: {r}");
    }
    let bottleneck = json["https"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "bottleneck")
        .unwrap();
    assert!(bottleneck["result"]["bulk"]["cpu_seconds_per_gb"].is_number());
    assert!(
        bottleneck["result"]["idle"]["rss_idle_connections"]
            .as_u64()
            .unwrap()
            > 0
    );

    let dns = &json["dns"][0];
    for flood in ["allowed", "denied", "direct_authoritative"] {
        assert!(
            dns[flood]["answered"].as_u64().unwrap_or(0) > 0,
            "dns/{flood}: {dns}"
        );
    }
    assert!(
        dns["allowed"]["with_records"].as_u64().unwrap() > 0,
        "{dns}"
    );
    assert!(dns["denied"]["denied"].as_u64().unwrap() > 0, "{dns}");
    assert!(
        json["shim"][0]["with_shim_us"].as_f64().unwrap() > 0.0,
        "{json}"
    );

    // Every summary metric the report needs is there, and the report renders.
    for metric in [
        "keep_alive_one_rps",
        "keep_alive_many_rps",
        "new_connections_per_s",
        "bulk_mb_per_s",
        "idle_rss_connections_mb",
        "dns_allowed_qps",
        "dns_denied_qps",
        "shim_added_us",
    ] {
        let has = results.summary.values().any(|m| m.contains_key(metric));
        assert!(has, "summary lacks {metric}");
    }
    let md = bottleneck_bench::report::render(&results, "x.json", "x.png", None);
    assert!(md.contains("## Ratios to direct"), "{md}");
}
