//! Scenario 6: the time from the exec of `bottleneck-init` to the exec of the agent.
//!
//! As in init-shim's lab test `static_binary_is_static_small_and_fast`: the agent command
//! is `date +%s%N`; a shell prints `date +%s%N` just before exec'ing either the agent
//! directly (baseline) or the shim running the agent. The shim runs as PID 1 of a fresh
//! PID namespace in the agent network namespace, with copies of /etc/passwd, /etc/group,
//! resolv.conf and the system CA bundles bind-mounted over the machine's (it rewrites
//! them), so the machine's files are never touched.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bottleneck_lab::{Host, Lab, addr};
use serde::{Deserialize, Serialize};

use crate::error::{BenchError, Result};

/// System CA bundle locations the shim may rewrite (as in init-shim's `trust` module).
const SYSTEM_BUNDLES: [&str; 6] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cert.pem",
];

/// Binds `SRC DST` pairs up to `--`, then runs the rest.
const BIND_AND_RUN: &str = r#"while [ "$1" != -- ]; do
  mount --bind "$1" "$2" || { echo "bench: cannot bind-mount $1 over $2" >&2; exit 125; }
  shift 2
done
shift
exec "$@""#;

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

fn write(path: &Path, text: &str) -> Result<()> {
    fs::write(path, text).map_err(|e| BenchError::io(format!("writing {}", path.display()), e))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o644))
        .map_err(|e| BenchError::io(format!("chmod {}", path.display()), e))
}

/// Runs the measurement `runs` times per variant in `lab` (a routing lab).
pub fn measure(lab: &Lab, shim: &Path, runs: usize) -> Result<ShimRound> {
    let dir = lab.dir().join(format!("shim-{}", std::process::id()));
    if !dir.exists() {
        fs::create_dir(&dir).map_err(|e| BenchError::io("creating the shim fixture", e))?;
    }
    let home = lab.home().display().to_string();
    let passwd = dir.join("passwd");
    write(
        &passwd,
        &format!(
            "root:x:0:0:root:/root:/bin/sh\nnode:x:1000:1000:node:{home}:/bin/sh\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        ),
    )?;
    let group = dir.join("group");
    write(&group, "root:x:0:\nnode:x:1000:\nnogroup:x:65534:\n")?;
    let resolv = dir.join("resolv.conf");
    let lab_resolv = fs::read_to_string(lab.resolv_conf_path(Host::Agent))
        .map_err(|e| BenchError::io("reading the lab's resolv.conf", e))?;
    write(&resolv, &lab_resolv)?;
    let mut binds: Vec<(PathBuf, PathBuf)> = vec![
        (passwd, "/etc/passwd".into()),
        (group, "/etc/group".into()),
        (resolv, "/etc/resolv.conf".into()),
    ];
    let mut seen = Vec::new();
    for (i, candidate) in SYSTEM_BUNDLES.iter().enumerate() {
        let Ok(real) = fs::canonicalize(candidate) else {
            continue;
        };
        if !real.is_file() || seen.contains(&real) {
            continue;
        }
        let copy = dir.join(format!("bundle-{i}.pem"));
        fs::copy(&real, &copy).map_err(|e| BenchError::io("copying a CA bundle", e))?;
        seen.push(real.clone());
        binds.push((copy, real));
    }
    let trust = dir.join("trust");
    let ca = lab.ca_pem_path().display().to_string();
    let one = |with_shim: bool| -> Result<u64> {
        let inner = if with_shim {
            format!("exec {} -- date +%s%N", shim.display())
        } else {
            "exec date +%s%N".to_owned()
        };
        let mut argv: Vec<String> = vec![
            "sh".into(),
            "-c".into(),
            BIND_AND_RUN.into(),
            "bench".into(),
        ];
        for (src, dst) in &binds {
            argv.push(src.display().to_string());
            argv.push(dst.display().to_string());
        }
        argv.push("--".into());
        argv.extend(["unshare", "--pid", "--fork", "--mount-proc"].map(String::from));
        argv.extend(["sh".into(), "-c".into(), format!("date +%s%N; {inner}")]);
        let out = lab
            .command(Host::Agent, &argv)
            .env("BOTTLENECK_GATEWAY", addr::GATEWAY_AGENT_V4.to_string())
            .env("BOTTLENECK_CA_FILE", &ca)
            .env("BOTTLENECK_TRUST_DIR", trust.display().to_string())
            .run()?;
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
