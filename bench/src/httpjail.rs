//! httpjail (0.1.0, the last release that builds from crates.io alone: later ones need a
//! prebuilt V8 library downloaded from GitHub at build time).
//!
//! httpjail's Linux mode wraps the agent command: it creates a jail namespace with a veth
//! to the namespace it runs in, DNATs the jail's TCP 80/443 to its own proxy and runs the
//! command inside. So here it runs in the lab's gateway namespace (routing mode) and its
//! command is this harness's load generator (`bottleneck-bench agent`), which writes its
//! results to a file. The jail namespace and its 10.99.x.x/30 veth live inside the lab's
//! gateway namespace; nothing reaches the machine's network.
//!
//! Two adaptations, both reported:
//! * httpjail writes `/etc/netns/<jail>/resolv.conf` (naming a public resolver). To keep the
//!   machine's files untouched it runs under an overlay of `/etc` (upper layer on a tmpfs
//!   in its private mount namespace), with the lab's resolv.conf, hosts and nsswitch.conf
//!   bound on top, so its proxy resolves through the lab's DNS only; the load generator
//!   never resolves names (it dials the origin addresses).
//! * httpjail 0.1.0 trusts only the webpki roots and its own CA upstream, with no option
//!   for another CA, so upstream certificate verification is disabled
//!   (`HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION`): this spares it the verification cost the
//!   other contenders pay.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bottleneck_lab::{GatewayMode, Host, Lab};

use crate::contender::Tools;
use crate::error::{BenchError, Result};
use crate::scenarios::{self, HttpsRound, Plan};

/// Mounts an overlay over /etc (upper layer on a tmpfs), binds the lab's files back on
/// top, then runs the rest. Arguments: DIR RESOLV HOSTS NSSWITCH -- COMMAND...
const OVERLAY_AND_RUN: &str = r#"d="$1"; resolv="$2"; hosts="$3"; nss="$4"; shift 4; shift
mkdir -p "$d" && mount -t tmpfs bench-etc "$d" && mkdir "$d/upper" "$d/work" \
 && mount -t overlay bench-etc -o "lowerdir=/etc,upperdir=$d/upper,workdir=$d/work" /etc \
 && mount --bind "$resolv" /etc/resolv.conf && mount --bind "$hosts" /etc/hosts \
 && { [ ! -e "$nss" ] || mount --bind "$nss" /etc/nsswitch.conf; } \
 || { echo "bench: cannot overlay /etc" >&2; exit 125; }
exec "$@""#;

/// Runs scenarios 1-4 through httpjail in a fresh lab; `bench` is this harness's binary.
pub fn https_round(tools: &Tools, plan: &Plan) -> Result<HttpsRound> {
    let httpjail = tools
        .httpjail
        .as_ref()
        .map_err(|why| BenchError::setup("httpjail", why.clone()))?;
    let bench =
        std::env::current_exe().map_err(|e| BenchError::io("finding the harness binary", e))?;
    let bench = agent_binary(&bench)?;
    let lab = Lab::new(GatewayMode::Router)?;
    let plan_path = lab.dir().join("httpjail-plan.json");
    let out_path = lab.dir().join("httpjail-result.json");
    std::fs::write(&plan_path, serde_json::to_vec(plan)?)
        .map_err(|e| BenchError::io("writing the plan", e))?;
    let argv: Vec<String> = vec![
        "sh".into(),
        "-c".into(),
        OVERLAY_AND_RUN.into(),
        "bench-httpjail".into(),
        lab.dir().join("etc-overlay").display().to_string(),
        lab.resolv_conf_path(Host::Gateway).display().to_string(),
        lab.dir().join("hosts").display().to_string(),
        lab.dir().join("nsswitch.conf").display().to_string(),
        "--".into(),
        httpjail.display().to_string(),
        "-r".into(),
        "allow: .*".into(),
        "--".into(),
        bench.display().to_string(),
        "agent".into(),
        "--plan".into(),
        plan_path.display().to_string(),
        "--result".into(),
        out_path.display().to_string(),
    ];
    let out = lab
        .command(Host::Gateway, &argv)
        .env("HTTPJAIL_DANGER_DISABLE_CERT_VALIDATION", "1")
        .env("RUST_LOG", "warn")
        .timeout(Duration::from_secs(900))
        .run()?;
    let text = std::fs::read_to_string(&out_path).map_err(|_| {
        BenchError::setup(
            "httpjail",
            format!(
                "no result (exit {:?}): {}",
                out.code(),
                tail(&(out.stdout_str() + &out.stderr_str()), 1500)
            ),
        )
    })?;
    Ok(serde_json::from_str(&text)?)
}

fn tail(s: &str, n: usize) -> String {
    let chars: Vec<char> = s.chars().collect();
    chars[chars.len().saturating_sub(n)..].iter().collect()
}

/// The harness binary to run as the jailed agent: this binary if it is
/// `bottleneck-bench`, else (a test) the one in the same cargo target.
fn agent_binary(exe: &Path) -> Result<PathBuf> {
    if exe.file_name().and_then(|n| n.to_str()) == Some("bottleneck-bench") {
        return Ok(exe.to_owned());
    }
    let mut looked = Vec::new();
    let mut dir = exe.parent();
    while let Some(d) = dir {
        let candidate = d.join("bottleneck-bench");
        if candidate.is_file() {
            return Ok(candidate);
        }
        looked.push(candidate);
        dir = d.parent();
    }
    Err(BenchError::MissingBinary {
        what: "bottleneck-bench".into(),
        looked,
        hint: "cargo build -p bottleneck-bench".into(),
    })
}

/// The jailed side (`bottleneck-bench agent`): runs scenarios 1-4 against whatever
/// intercepts this namespace's traffic, trusting `SSL_CERT_FILE` (set by httpjail), and
/// writes the result to `result`. CPU and RSS are those of this process group (httpjail's)
/// without this process.
pub fn agent_main(plan: &Path, result: &Path) -> Result<()> {
    let plan: Plan = serde_json::from_slice(
        &std::fs::read(plan)
            .map_err(|e| BenchError::io(format!("reading {}", plan.display()), e))?,
    )?;
    let ca = std::env::var_os("SSL_CERT_FILE")
        .map(PathBuf::from)
        .ok_or_else(|| BenchError::setup("httpjail", "SSL_CERT_FILE is not set in the jail"))?;
    let pgid = nix::unistd::getpgrp().as_raw() as u32;
    let round = scenarios::https_round_with(ca, Some(pgid), Some(std::process::id()), plan)?;
    std::fs::write(result, serde_json::to_vec(&round)?)
        .map_err(|e| BenchError::io(format!("writing {}", result.display()), e))
}
