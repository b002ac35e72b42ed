//! The whole benchmark: contenders alternated in rounds, results collected and summarised.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::contender::{self, Kind, Mode, Tools};
use crate::error::Result;
use crate::httpjail;
use crate::load::Timing;
use crate::machine::Machine;
use crate::scenarios::{self, DnsRound, HttpsRound, Plan};
use crate::shim::{self, ShimRound};
use crate::stats::Summary;

/// What to run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Config {
    /// Quick mode: brief scenarios, bottleneck and direct only, one round.
    pub quick: bool,
    /// Rounds (each runs every contender once, in a rotated order).
    pub rounds: usize,
    /// The contenders.
    pub contenders: Vec<Kind>,
    /// Sizes and durations.
    pub plan: Plan,
    /// Where the peers were installed.
    pub peers_dir: PathBuf,
    /// Extra environment of bottleneck-gateway (experiments; empty for the reference run).
    #[serde(default)]
    pub gateway_env: Vec<(String, String)>,
    /// Extra flags of bottleneck-gateway (experiments; empty for the reference run).
    #[serde(default)]
    pub gateway_args: Vec<String>,
}

impl Config {
    /// The full benchmark: every contender, 5 rounds.
    pub fn full(peers_dir: PathBuf) -> Config {
        Config {
            quick: false,
            rounds: 5,
            contenders: Kind::ALL.to_vec(),
            plan: Plan {
                timing: Timing {
                    warmup: Duration::from_secs(1),
                    measure: Duration::from_secs(5),
                },
                small_path: "/bytes/100".into(),
                keep_alive_connections: 8,
                new_connection_loops: 4,
                bulk_bytes: 256 << 20,
                bulk_warmup_bytes: 8 << 20,
                idle_connections: 1000,
                idle_settle: Duration::from_secs(2),
                dns_timing: Timing {
                    warmup: Duration::from_millis(500),
                    measure: Duration::from_secs(3),
                },
                dns_window: 64,
                shim_runs: 11,
            },
            peers_dir,
            gateway_env: Vec::new(),
            gateway_args: Vec::new(),
        }
    }

    /// The smoke test of the harness: bottleneck and direct, every scenario briefly.
    pub fn quick(peers_dir: PathBuf) -> Config {
        Config {
            quick: true,
            rounds: 1,
            contenders: vec![Kind::Direct, Kind::Bottleneck],
            plan: Plan {
                timing: Timing {
                    warmup: Duration::from_millis(100),
                    measure: Duration::from_millis(400),
                },
                small_path: "/bytes/100".into(),
                keep_alive_connections: 4,
                new_connection_loops: 2,
                bulk_bytes: 8 << 20,
                bulk_warmup_bytes: 1 << 20,
                idle_connections: 50,
                idle_settle: Duration::from_millis(200),
                dns_timing: Timing {
                    warmup: Duration::from_millis(100),
                    measure: Duration::from_millis(400),
                },
                dns_window: 32,
                shim_runs: 3,
            },
            peers_dir,
            gateway_env: Vec::new(),
            gateway_args: Vec::new(),
        }
    }
}

/// How a contender fared overall.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContenderInfo {
    /// Which.
    pub kind: Kind,
    /// Its version (first line of `--version`).
    pub version: String,
    /// How it was placed (None if it never started).
    pub mode: Option<Mode>,
    /// `measured`, or why not.
    pub status: String,
}

/// One contender's HTTPS scenarios in one round.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HttpsEntry {
    /// Round number (0-based).
    pub round: usize,
    /// Which contender.
    pub kind: Kind,
    /// Its results, if it started.
    pub result: Option<HttpsRound>,
    /// Why it did not start or run.
    pub error: Option<String>,
}

/// The results file.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    /// Start time (UTC, RFC 3339).
    pub started: String,
    /// End time (UTC, RFC 3339).
    pub finished: String,
    /// The command line that produced this.
    pub command: String,
    /// The configuration.
    pub config: Config,
    /// The machine.
    pub machine: Machine,
    /// The contenders and their status.
    pub contenders: Vec<ContenderInfo>,
    /// Scenarios 1-4.
    pub https: Vec<HttpsEntry>,
    /// Scenario 5, per round.
    pub dns: Vec<DnsRound>,
    /// Scenario 6, per round.
    pub shim: Vec<ShimRound>,
    /// Why scenario 5 or 6 failed, if they did.
    pub other_errors: Vec<String>,
    /// Median/min/max per contender and metric.
    pub summary: BTreeMap<String, BTreeMap<String, Summary>>,
}

fn now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn log(line: &str) {
    eprintln!("[bench {}] {line}", now());
}

/// Runs the benchmark described by `config`.
pub fn run(config: Config, command: String) -> Result<Results> {
    let started = now();
    let machine_start = Machine::read();
    let mut tools = Tools::locate(&config.peers_dir, config.quick)?;
    tools.gateway_env = config.gateway_env.clone();
    tools.gateway_args = config.gateway_args.clone();
    log(&format!(
        "gateway: {} ({})",
        tools.gateway.display(),
        if tools.gateway_release {
            "release"
        } else {
            "debug"
        }
    ));
    let mut infos: BTreeMap<Kind, ContenderInfo> = config
        .contenders
        .iter()
        .map(|k| {
            (
                *k,
                ContenderInfo {
                    kind: *k,
                    version: tools.version(*k),
                    mode: None,
                    status: "measured".into(),
                },
            )
        })
        .collect();
    let mut https = Vec::new();
    let mut dns = Vec::new();
    let mut shim_rounds = Vec::new();
    let mut other_errors = Vec::new();
    let n = config.contenders.len().max(1);
    for round in 0..config.rounds {
        for i in 0..config.contenders.len() {
            let kind = config.contenders[(i + round) % n];
            log(&format!(
                "round {} / {}: {}",
                round + 1,
                config.rounds,
                kind.name()
            ));
            let (result, error, mode) = run_one(kind, &tools, &config.plan);
            if let Some(info) = infos.get_mut(&kind) {
                if mode.is_some() {
                    info.mode = mode;
                }
                if let Some(e) = &error
                    && info.mode.is_none()
                {
                    info.status = format!("not measured: {e}");
                }
            }
            if let Some(r) = &result {
                for e in &r.errors {
                    log(&format!("  {}: {e}", kind.name()));
                }
            }
            if let Some(e) = &error {
                log(&format!("  {}: {e}", kind.name()));
            }
            https.push(HttpsEntry {
                round,
                kind,
                result,
                error,
            });
        }
        if config.contenders.contains(&Kind::Bottleneck) {
            log(&format!("round {} / {}: dns", round + 1, config.rounds));
            match dns_once(&tools, &config.plan) {
                Ok(d) => {
                    for e in &d.errors {
                        log(&format!("  dns: {e}"));
                    }
                    dns.push(d)
                }
                Err(e) => other_errors.push(format!("dns round {round}: {e}")),
            }
            log(&format!(
                "round {} / {}: init shim",
                round + 1,
                config.rounds
            ));
            match shim_once(&tools, &config.plan) {
                Ok(s) => shim_rounds.push(s),
                Err(e) => other_errors.push(format!("init shim round {round}: {e}")),
            }
        }
    }
    for e in &other_errors {
        log(e);
    }
    let mut results = Results {
        started,
        finished: now(),
        command,
        config,
        machine: machine_start.with_end(Machine::read()),
        contenders: infos.into_values().collect(),
        https,
        dns,
        shim: shim_rounds,
        other_errors,
        summary: BTreeMap::new(),
    };
    results.summary = summarise(&results);
    Ok(results)
}

fn run_one(
    kind: Kind,
    tools: &Tools,
    plan: &Plan,
) -> (Option<HttpsRound>, Option<String>, Option<Mode>) {
    if kind == Kind::Httpjail {
        return match httpjail::https_round(tools, plan) {
            Ok(r) => (Some(r), None, Some(Mode::TransparentJail)),
            Err(e) => (None, Some(e.to_string()), None),
        };
    }
    let running = match contender::start(kind, tools) {
        Ok(r) => r,
        Err(e) => return (None, Some(e.to_string()), None),
    };
    let mode = running.mode;
    let result = scenarios::https_round(&running, plan);
    let output = running.stop();
    match result {
        Ok(r) => {
            if !r.errors.is_empty() && !output.is_empty() {
                let tail: String = output
                    .chars()
                    .rev()
                    .take(1500)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                log(&format!("  {} output (tail): {tail}", kind.name()));
            }
            (Some(r), None, Some(mode))
        }
        Err(e) => (None, Some(e.to_string()), Some(mode)),
    }
}

fn dns_once(tools: &Tools, plan: &Plan) -> Result<DnsRound> {
    let bottleneck = contender::start(Kind::Bottleneck, tools)?;
    let direct = contender::start(Kind::Direct, tools)?;
    let r = scenarios::dns_round(&bottleneck, &direct, plan);
    direct.stop();
    bottleneck.stop();
    r
}

fn shim_once(tools: &Tools, plan: &Plan) -> Result<ShimRound> {
    let shim = tools
        .init
        .clone()
        .ok_or_else(|| crate::error::BenchError::MissingBinary {
            what: "bottleneck-init".into(),
            looked: Vec::new(),
            hint: "cargo build --release -p bottleneck-init".into(),
        })?;
    let lab = bottleneck_lab::Lab::new(bottleneck_lab::GatewayMode::Router)?;
    shim::measure(&lab, &shim, plan.shim_runs)
}

/// Metric names of the summary, with their unit and whether higher is better.
pub const METRICS: &[(&str, &str, bool)] = &[
    ("keep_alive_one_rps", "req/s, 1 conn", true),
    ("keep_alive_one_p50_us", "p50 µs, 1 conn", false),
    ("keep_alive_one_p99_us", "p99 µs, 1 conn", false),
    (
        "keep_alive_one_cpu_us",
        "contender CPU µs per request, 1 conn",
        false,
    ),
    ("keep_alive_many_rps", "req/s, N conns", true),
    ("keep_alive_many_p50_us", "p50 µs, N conns", false),
    ("keep_alive_many_p99_us", "p99 µs, N conns", false),
    (
        "keep_alive_many_cpu_us",
        "contender CPU µs per request, N conns",
        false,
    ),
    ("new_connections_per_s", "new TLS conn/s", true),
    (
        "new_connection_p50_us",
        "p50 µs per new conn + request",
        false,
    ),
    (
        "new_connection_cpu_us",
        "contender CPU µs per new conn + request",
        false,
    ),
    ("bulk_mb_per_s", "bulk MB/s", true),
    ("bulk_cpu_s_per_gb", "contender CPU s/GB", false),
    ("idle_rss_before_mb", "RSS idle MB", false),
    ("idle_rss_connections_mb", "RSS with idle conns MB", false),
    ("idle_connections_open", "idle conns held", true),
    ("dns_allowed_qps", "DNS allowed q/s (cached)", true),
    ("dns_denied_qps", "DNS denied q/s", true),
    (
        "dns_allowed_upstream_queries",
        "upstream queries during allowed flood",
        false,
    ),
    (
        "dns_denied_upstream_queries",
        "upstream queries during denied flood",
        false,
    ),
    (
        "dns_direct_authoritative_qps",
        "DNS q/s straight to the authoritative server",
        true,
    ),
    ("shim_added_us", "init shim adds µs", false),
    ("shim_baseline_us", "exec-to-exec without shim µs", false),
];

/// Median/min/max of every metric, per contender name.
pub fn summarise(results: &Results) -> BTreeMap<String, BTreeMap<String, Summary>> {
    let mut values: BTreeMap<String, BTreeMap<String, Vec<f64>>> = BTreeMap::new();
    let mut push = |kind: &str, metric: &str, v: f64| {
        values
            .entry(kind.to_owned())
            .or_default()
            .entry(metric.to_owned())
            .or_default()
            .push(v);
    };
    for entry in &results.https {
        let Some(r) = &entry.result else { continue };
        let k = entry.kind.name();
        if let Some(x) = &r.keep_alive_one
            && x.completed > 0
        {
            push(k, "keep_alive_one_rps", x.per_second);
            push(k, "keep_alive_one_p50_us", x.p50_us as f64);
            push(k, "keep_alive_one_p99_us", x.p99_us as f64);
            if let Some(c) = x.contender_cpu_us_per_op {
                push(k, "keep_alive_one_cpu_us", c);
            }
        }
        if let Some(x) = &r.keep_alive_many
            && x.completed > 0
        {
            push(k, "keep_alive_many_rps", x.per_second);
            push(k, "keep_alive_many_p50_us", x.p50_us as f64);
            push(k, "keep_alive_many_p99_us", x.p99_us as f64);
            if let Some(c) = x.contender_cpu_us_per_op {
                push(k, "keep_alive_many_cpu_us", c);
            }
        }
        if let Some(x) = &r.new_connections
            && x.completed > 0
        {
            push(k, "new_connections_per_s", x.per_second);
            push(k, "new_connection_p50_us", x.p50_us as f64);
            if let Some(c) = x.contender_cpu_us_per_op {
                push(k, "new_connection_cpu_us", c);
            }
        }
        if let Some(x) = &r.bulk {
            push(k, "bulk_mb_per_s", x.mb_per_s);
            if let Some(c) = x.cpu_seconds_per_gb {
                push(k, "bulk_cpu_s_per_gb", c);
            }
        }
        if let Some(x) = &r.idle {
            push(k, "idle_connections_open", x.connections as f64);
            if let Some(b) = x.rss_before {
                push(k, "idle_rss_before_mb", b as f64 / 1e6);
            }
            if let Some(b) = x.rss_idle_connections {
                push(k, "idle_rss_connections_mb", b as f64 / 1e6);
            }
        }
    }
    for d in &results.dns {
        if let Some(x) = &d.allowed {
            push("bottleneck", "dns_allowed_qps", x.per_second);
            push(
                "bottleneck",
                "dns_allowed_upstream_queries",
                x.upstream_queries as f64,
            );
        }
        if let Some(x) = &d.denied {
            push("bottleneck", "dns_denied_qps", x.per_second);
            push(
                "bottleneck",
                "dns_denied_upstream_queries",
                x.upstream_queries as f64,
            );
        }
        if let Some(x) = &d.direct_authoritative {
            push("direct", "dns_direct_authoritative_qps", x.per_second);
        }
    }
    for s in &results.shim {
        push("bottleneck", "shim_added_us", s.added_us);
        push("bottleneck", "shim_baseline_us", s.baseline_us);
    }
    values
        .into_iter()
        .map(|(k, m)| {
            let m = m
                .into_iter()
                .filter_map(|(name, v)| Some((name, Summary::of(&v)?)))
                .collect();
            (k, m)
        })
        .collect()
}
