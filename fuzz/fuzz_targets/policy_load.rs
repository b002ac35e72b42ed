//! Arbitrary bytes into the policy loader: it must return a policy or diagnostics with a
//! position, never panic, hang or blow up memory.
#![no_main]

use bottleneck_policy::{LoadError, Policy};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Policy::from_yaml(text, "fuzz.yaml") {
        Ok(policy) => {
            let _ = policy.describe();
        }
        Err(LoadError::Invalid { diagnostics, .. }) => {
            assert!(!diagnostics.is_empty());
            assert!(diagnostics.iter().all(|d| d.line >= 1 && d.column >= 1));
        }
        Err(other) => panic!("from_yaml does no I/O, yet: {other}"),
    }
});
