//! `bottleneck demo`: a self-contained world and a scripted agent, to show what a bottle
//! does.
//!
//! The simulated internet is the network lab's wan namespace (`bottleneck_lab`:
//! authoritative DNS for `*.test`, HTTPS origins signed by a test CA that echo what they
//! received, echo servers), served from this process. The bottle is built by the netns
//! backend's real code path, [`crate::netns::run`], with its uplink plugged into that
//! namespace instead of the host: the real `bottleneck-gateway` and `bottleneck-init` run
//! the scripted agent (`demo_agent.sh`: shell, curl, a Python probe for DNS and UDP)
//! under `examples/demo-policy.yaml`. No address outside the namespaces the demo creates
//! is ever used, and everything is removed at the end.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use bottleneck_lab::{GatewayMode, Lab, RequestRecord};

use crate::ExitCode;
use crate::bottle::{self, Names, RunConfig, Secrets};
use crate::cli::DemoArgs;
use crate::netns::{self, AgentIo};

/// The demo's policy (also `examples/demo-policy.yaml`).
pub const POLICY: &str = include_str!("../../examples/demo-policy.yaml");
const AGENT_SCRIPT: &str = include_str!("demo_agent.sh");
const PROBE: &str = include_str!("demo_probe.py");
/// The variable holding the injected credential.
pub const SECRET_VAR: &str = "DEMO_API_KEY";

/// One line of the demo's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// `ok`, `FAIL`, `pending` (waits for a piece still being built) or `skipped` (a
    /// tool the probe needs is missing here).
    pub verdict: &'static str,
    /// What was tried.
    pub what: &'static str,
    /// What happened.
    pub detail: String,
}

/// What the agent's probe prints without Python.
const NO_PYTHON: &str = "python3-missing";

impl Finding {
    fn skipped(what: &'static str, why: &str) -> Finding {
        Finding {
            verdict: "skipped",
            what,
            detail: why.to_owned(),
        }
    }

    fn new(ok: bool, what: &'static str, detail: String) -> Finding {
        Finding {
            verdict: if ok { "ok" } else { "FAIL" },
            what,
            detail,
        }
    }
}

/// The sections of the agent's output, separated by lines `==NAME==`.
pub fn sections(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    let mut current = String::from("head");
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("==").and_then(|l| l.strip_suffix("==")) {
            current = name.to_owned();
            map.entry(current.clone()).or_insert_with(String::new);
            continue;
        }
        let entry: &mut String = map.entry(current.clone()).or_default();
        entry.push_str(line);
        entry.push('\n');
    }
    map
}

/// Splits curl's `body\nSTATUS` output (from `-w '\n%{http_code}\n'`).
fn body_and_status(section: &str) -> (String, String) {
    let trimmed = section.trim_end();
    match trimmed.rsplit_once('\n') {
        Some((body, status)) => (body.to_owned(), status.trim().to_owned()),
        None => (String::new(), trimmed.to_owned()),
    }
}

fn ms_of(line: &str) -> Option<u64> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("ms="))
        .and_then(|v| v.parse().ok())
}

/// A random-looking label of 40 hex digits, like data smuggled out in a DNS name.
fn exfil_label() -> String {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let mut x = (seed as u64) ^ u64::from(std::process::id()).rotate_left(32);
    let mut out = String::new();
    for _ in 0..5 {
        // xorshift: enough to look random, nothing depends on it.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{:08x}", x as u32));
    }
    out
}

/// Judges the agent's output against the policy; `secret` is the injected credential.
pub fn judge(s: &BTreeMap<String, String>, secret: &str, exfil_name: &str) -> Vec<Finding> {
    let get = |name: &str| s.get(name).map(String::as_str).unwrap_or("");
    let mut out = Vec::new();

    let (body, status) = body_and_status(get("allowed"));
    let echo: Option<RequestRecord> = serde_json::from_str(body.trim()).ok();
    out.push(Finding::new(
        status == "200" && echo.as_ref().is_some_and(|e| e.sni.as_deref() == Some("allowed.test")),
        "allowed host",
        match &echo {
            Some(e) => format!(
                "GET https://allowed.test/echo/hello -> {status}; the origin answered (it saw {} from {}, not the agent)",
                e.sni.as_deref().unwrap_or("no SNI"),
                e.peer().map(|p| p.ip().to_string()).unwrap_or_else(|| "?".into())
            ),
            None => format!("GET https://allowed.test/echo/hello -> {status}: {}", first_line(&body)),
        },
    ));

    let (body, status) = body_and_status(get("denied"));
    let deny_header = body.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case("x-bottleneck-deny")
            .then(|| v.trim().to_owned())
    });
    // The body explains itself: the line naming the policy change that would allow it.
    let reason_line = body
        .lines()
        .skip_while(|l| !l.trim().is_empty())
        .find(|l| l.contains("policy"))
        .map(|l| l.trim().trim_end_matches(':'))
        .unwrap_or("")
        .to_owned();
    out.push(Finding::new(
        status == "403" && deny_header.is_some(),
        "denied host",
        format!(
            "denied.test does not resolve ({}); with its address forced, https://denied.test/ -> {status}, \
             x-bottleneck-deny: {}; the gateway says: {}",
            get("denied-dns").split_whitespace().nth(1).unwrap_or("no answer"),
            deny_header.as_deref().unwrap_or("(missing)"),
            reason_line.trim()
        ),
    ));

    let (body, status) = body_and_status(get("inject"));
    let echo: Option<RequestRecord> = serde_json::from_str(body.trim()).ok();
    let received = echo
        .as_ref()
        .and_then(|e| e.header("authorization").map(str::to_owned));
    let agent_env = get("env");
    let agent_had_it = agent_env.contains(secret) || agent_env.contains(SECRET_VAR);
    let shown: String = secret.chars().take(10).collect();
    out.push(Finding::new(
        status == "200"
            && received.as_deref() == Some(&format!("Bearer {secret}"))
            && !agent_had_it,
        "credential injected",
        format!(
            "POST https://other.allowed.test/v1/messages -> {status}; the agent sent \
             `Bearer made-up-by-the-agent`, the origin received `{}`; ${SECRET_VAR} in the agent's environment: {}",
            match &received {
                Some(r) if r.contains(secret) => format!("Bearer {shown}… (the real key)"),
                Some(r) => r.clone(),
                None => "(no Authorization)".into(),
            },
            if agent_had_it { "YES (leak)" } else { "no" }
        ),
    ));

    let dns_line = get("dns").trim().to_owned();
    let exfil_line = get("exfil").trim().to_owned();
    let dns_up = dns_line.contains("NOERROR");
    out.push(if exfil_line.contains(NO_PYTHON) {
        Finding::skipped("DNS exfiltration", "/usr/bin/python3 is missing (the DNS probe needs it)")
    } else if exfil_line.contains("NXDOMAIN") {
        Finding::new(
            dns_up,
            "DNS exfiltration",
            format!(
                "{}… -> NXDOMAIN in {} ms, never forwarded",
                &exfil_name[..24.min(exfil_name.len())],
                ms_of(&exfil_line).unwrap_or(0)
            ),
        )
    } else if !dns_up && !exfil_line.contains("NOERROR") {
        Finding {
            verdict: "pending",
            what: "DNS exfiltration",
            detail: format!(
                "the gateway's DNS server does not answer yet ({}): nothing resolves, nothing leaks; \
                 the demo gave curl the addresses",
                dns_line.split_whitespace().nth(1).unwrap_or("no answer")
            ),
        }
    } else {
        Finding::new(false, "DNS exfiltration", format!("answered: {exfil_line}"))
    });

    let direct: Vec<&str> = get("direct-ip")
        .lines()
        .filter(|l| l.starts_with("exit="))
        .collect();
    let fast_fail = |l: &&str| !l.starts_with("exit=0 ") && ms_of(l).is_some_and(|ms| ms < 3000);
    out.push(Finding::new(
        direct.len() == 2 && direct.iter().all(fast_fail),
        "direct IP",
        format!(
            "tcp 198.51.100.7:7 and https://198.51.100.10/ (no name): {}",
            get("direct-ip")
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    ));

    let udp = get("udp").trim().to_owned();
    if udp.contains(NO_PYTHON) {
        out.push(Finding::skipped(
            "UDP",
            "/usr/bin/python3 is missing (the UDP probe needs it)",
        ));
        return out;
    }
    out.push(Finding::new(
        !udp.contains("answered")
            && !udp.contains("timeout")
            && !udp.contains("python3-missing")
            && ms_of(&udp).is_some_and(|ms| ms < 2000),
        "UDP",
        format!("datagram to {udp}"),
    ));
    out
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Runs the demo; the exit status is 0 when every finding is `ok` or `pending`.
pub fn run(_args: &DemoArgs, out: &mut dyn Write, err: &mut dyn Write) -> u8 {
    match demo(out, err) {
        Ok(true) => ExitCode::Ok as u8,
        Ok(false) => ExitCode::Failure as u8,
        Err(e) => {
            let _ = writeln!(err, "error: {e}");
            match e {
                DemoError::Config(_) => ExitCode::Config as u8,
                _ => ExitCode::Failure as u8,
            }
        }
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Not root, missing binaries or tools.
    #[error(transparent)]
    Config(#[from] bottle::ConfigError),
    /// The simulated internet could not be built.
    #[error("building the simulated internet: {0}")]
    Lab(#[from] bottleneck_lab::LabError),
    /// The bottle failed.
    #[error(transparent)]
    Run(#[from] netns::RunError),
    /// Writing the demo's files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

fn demo(out: &mut dyn Write, err: &mut dyn Write) -> Result<bool, DemoError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(bottle::ConfigError::Unsupported(
            "the demo needs root (it creates network namespaces): sudo bottleneck demo".into(),
        )
        .into());
    }
    if let Some(reason) = bottleneck_lab::lab_unavailable_reason() {
        return Err(bottle::ConfigError::Unsupported(reason).into());
    }
    // Checked before the world is built, for a quick, clear message.
    bottle::find_binary("bottleneck-gateway")?;
    bottle::find_binary("bottleneck-init")?;
    if !Path::new("/usr/bin/curl").exists() && !Path::new("/bin/curl").exists() {
        return Err(bottle::ConfigError::Unsupported(
            "the demo's agent uses curl: install it (apt-get install curl)".into(),
        )
        .into());
    }

    let started = std::time::Instant::now();
    let lab = Lab::new(GatewayMode::Bare)?;
    let wan = lab.namespace(bottleneck_lab::Host::Wan).to_owned();
    writeln!(
        err,
        "bottleneck demo: simulated internet in namespace {wan} ({} ms): DNS 198.51.100.53 for *.test, \
         HTTPS origins allowed.test, other.allowed.test, denied.test (test CA), echo 198.51.100.7",
        started.elapsed().as_millis()
    )?;

    let dir = lab.dir().join("demo");
    std::fs::create_dir(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let policy = dir.join("demo-policy.yaml");
    let agent = dir.join("agent.sh");
    for (path, text) in [
        (&policy, POLICY),
        (&agent, AGENT_SCRIPT),
        (&dir.join("probe.py"), PROBE),
    ] {
        std::fs::write(path, text)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o644))?;
    }

    let secret = format!("demo-key-{}", &exfil_label()[..16]);
    let exfil_name = format!("{}.exfil.denied.test", exfil_label());
    let mut secrets = BTreeMap::new();
    secrets.insert(SECRET_VAR.to_owned(), secret.clone());
    let name = format!("demo-{}", &exfil_label()[..6]);
    let config = RunConfig {
        names: Names::new(&name),
        policy_path: policy,
        secrets: Secrets(secrets),
        agent_env: vec![("EXFIL_NAME".into(), exfil_name.clone())],
        volumes: Vec::new(),
        agent: vec!["sh".into(), agent.display().to_string()],
        user: "node".into(),
        uplink_netns: Some(wan),
        upstream_ca: vec![lab.ca_pem_path().to_owned()],
        gateway_timeout: Duration::from_secs(20),
        proxy: false,
    };
    // The same validation as `bottleneck run`.
    bottle::load_policy(&config.policy_path)?;
    let prepared = netns::prepare(&config, false)?;
    writeln!(
        err,
        "bottleneck demo: bottle {name}, policy examples/demo-policy.yaml, agent: {}",
        config.agent.join(" ")
    )?;
    let outcome = netns::run(&config, &prepared, AgentIo::Capture, err)?;
    let text = String::from_utf8_lossy(&outcome.stdout).into_owned();
    let s = sections(&text);
    let mut findings = judge(&s, &secret, &exfil_name);

    // What reached the simulated internet, counted there.
    let denied_at_origin = lab
        .https()
        .log()
        .iter()
        .filter(|r| r.sni.as_deref() == Some("denied.test"))
        .count();
    let exfil_queries = lab.dns().queries_for(&exfil_name);
    let echo_hits = lab.echo().tcp_connections() + lab.echo().udp_datagrams();
    findings.push(Finding::new(
        denied_at_origin == 0 && exfil_queries == 0 && echo_hits == 0,
        "at the origins",
        format!(
            "requests for denied.test: {denied_at_origin}; DNS queries for the exfil name: \
             {exfil_queries}; packets to the echo servers: {echo_hits}"
        ),
    ));
    if outcome.audit.contains(&secret) {
        findings.push(Finding::new(
            false,
            "audit log",
            "contains the secret".into(),
        ));
    }
    if !s.contains_key("end") {
        findings.push(Finding::new(
            false,
            "agent",
            format!("did not finish (status {}):\n{text}", outcome.code),
        ));
    }

    let mut report = String::from("\nWhat the agent tried, and what the gateway did:\n");
    for f in &findings {
        report.push_str(&format!(
            "  [{:<7}] {:<20} {}\n",
            f.verdict, f.what, f.detail
        ));
    }
    let color = std::io::IsTerminal::is_terminal(&std::io::stdout());
    report.push_str("\nThe audit log (`bottleneck logs NAME` shows it while a bottle runs):\n");
    report.push_str(&crate::logs::render_all(&outcome.audit, color));
    let ok = findings.iter().all(|f| f.verdict != "FAIL");
    report.push_str(&format!(
        "\n{} in {:.1} s; nothing is left behind.\n",
        if ok {
            "demo finished"
        } else {
            "demo FAILED (see the FAIL lines)"
        },
        started.elapsed().as_secs_f64()
    ));
    out.write_all(report.as_bytes())?;
    drop(lab);
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_split_on_marker_lines() {
        let s = sections("x\n==a==\n1\n2\n==b==\n==c==\n3\n");
        assert_eq!(s["head"], "x\n");
        assert_eq!(s["a"], "1\n2\n");
        assert_eq!(s["b"], "");
        assert_eq!(s["c"], "3\n");
    }

    #[test]
    fn judging_a_run_where_dns_is_pending() {
        let secret = "demo-key-0123456789abcdef";
        let echo = |auth: &str| {
            serde_json::json!({
                "scheme": "https", "method": "GET", "path": "/echo/hello",
                "version": "HTTP/2.0", "authority": "allowed.test",
                "headers": [["authorization", auth]], "body": "", "body_len": 0,
                "sni": "allowed.test", "alpn": "h2",
                "local_addr": "198.51.100.10:443", "peer_addr": "198.19.1.2:40000"
            })
            .to_string()
        };
        let out = format!(
            "==env==\nPATH=/bin\n==dns==\nallowed.test refused ms=1\n\
             ==allowed==\n{}\n200\n\
             ==denied==\nHTTP/2 403\nx-bottleneck-deny: no_route\ncontent-type: text/plain\n\n\
             denied.test is not in the policy\n\n403\n\
             ==inject==\n{}\n200\n\
             ==exfil==\nabc.exfil.denied.test refused ms=1\n\
             ==direct-ip==\ncurl: (7) Failed\nexit=7 ms=3\ncurl: (35) x\nexit=35 ms=5\n\
             ==udp==\n198.51.100.7:7 refused ms=0\n==end==\n",
            echo("x"),
            echo(&format!("Bearer {secret}")),
        );
        let findings = judge(&sections(&out), secret, "abc.exfil.denied.test");
        let verdicts: Vec<(&str, &str)> = findings.iter().map(|f| (f.what, f.verdict)).collect();
        assert_eq!(
            verdicts,
            [
                ("allowed host", "ok"),
                ("denied host", "ok"),
                ("credential injected", "ok"),
                ("DNS exfiltration", "pending"),
                ("direct IP", "ok"),
                ("UDP", "ok"),
            ],
            "{findings:#?}"
        );
        // The report never prints the whole secret.
        assert!(!findings.iter().any(|f| f.detail.contains(secret)));

        // The agent seeing the secret, an answered exfil query, a slow UDP failure: FAIL.
        let leaked = out
            .replace("PATH=/bin", &format!("X={secret}"))
            .replace(
                "abc.exfil.denied.test refused",
                "abc.exfil.denied.test NOERROR answers=1",
            )
            .replace("refused ms=0", "timeout ms=3000");
        let findings = judge(&sections(&leaked), secret, "abc.exfil.denied.test");
        let failed: Vec<&str> = findings
            .iter()
            .filter(|f| f.verdict == "FAIL")
            .map(|f| f.what)
            .collect();
        assert_eq!(failed, ["credential injected", "DNS exfiltration", "UDP"]);

        // Without Python the probes are skipped, not failed.
        let no_python = out
            .replace("abc.exfil.denied.test refused ms=1", NO_PYTHON)
            .replace("198.51.100.7:7 refused ms=0", NO_PYTHON);
        let findings = judge(&sections(&no_python), secret, "abc.exfil.denied.test");
        let skipped: Vec<&str> = findings
            .iter()
            .filter(|f| f.verdict == "skipped")
            .map(|f| f.what)
            .collect();
        assert_eq!(skipped, ["DNS exfiltration", "UDP"]);
        assert!(
            findings.iter().all(|f| f.verdict != "FAIL"),
            "{findings:#?}"
        );
    }
}
