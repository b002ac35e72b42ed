//! Scenario 6: the time from the exec of `bottleneck-init` to the exec of the agent.
//!
//! As in init-shim's lab test `static_binary_is_static_small_and_fast`: the agent command
//! is `date +%s%N`; a shell prints `date +%s%N` just before exec'ing either the agent
//! directly (baseline) or the shim running the agent. The shim runs as PID 1 of a fresh
//! PID namespace in the agent network namespace, with copies of /etc/passwd, /etc/group,
//! resolv.conf and the system CA bundles bind-mounted over the machine's (it rewrites
//! them; the lab's [`ShimFiles`]), so the machine's files are never touched.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use bottleneck_lab::{Host, Lab, ShimFiles};
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// One round of the shim measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ShimRound {
    /// Runs per variant.
    pub runs: usize,
    /// Median exec-to-exec with the agent exec'd directly, microseconds.
    pub baseline_us: f64,
    /// Median exec-to-exec through the shim, microseconds.
    pub with_shim_us: f64,
    /// What the shim adds (median difference), microseconds.
    pub added_us: f64,
}

/// Runs the measurement `runs` times per variant in `lab` (a routing lab).
pub fn measure(lab: &Lab, shim: &Path, runs: usize) -> Result<ShimRound> {
    // A fixture directory of its own for each call (the lab may serve several).
    static CALLS: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "shim-{}-{}",
        std::process::id(),
        CALLS.fetch_add(1, Ordering::Relaxed)
    );
    let files = ShimFiles::new(lab, &name, lab.ca_pem_path())?;
    let one = |with_shim: bool| -> Result<u64> {
        let inner = if with_shim {
            format!("exec {} -- date +%s%N", shim.display())
        } else {
            "exec date +%s%N".to_owned()
        };
        let argv = files.as_pid1(&["sh", "-c", &format!("date +%s%N; {inner}")]);
        let mut exec = lab.command(Host::Agent, &argv);
        for (key, value) in files.env() {
            exec = exec.env(key, value);
        }
        let out = exec.run()?;
        if !out.success() {
            return Err(BenchError::setup(
                "bottleneck-init",
                format!("exit {:?}: {}", out.code(), out.stderr_str()),
            ));
        }
        let t: Vec<u64> = out
            .stdout_str()
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        match t.as_slice() {
            [a, b, ..] => Ok(b.saturating_sub(*a)),
            _ => Err(BenchError::setup(
                "bottleneck-init",
                format!("unexpected output {:?}", out.stdout_str()),
            )),
        }
    };
    let median = |mut v: Vec<u64>| -> f64 {
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0) as f64 / 1e3
    };
    let mut base = Vec::new();
    let mut with = Vec::new();
    for _ in 0..runs.max(1) {
        base.push(one(false)?);
        with.push(one(true)?);
    }
    let (baseline_us, with_shim_us) = (median(base), median(with));
    Ok(ShimRound {
        runs: runs.max(1),
        baseline_us,
        with_shim_us,
        added_us: with_shim_us - baseline_us,
    })
}
