//! The HTTPS scenarios (1-4 of issue 7) against one running contender, from the agent
//! namespace, and the DNS scenario (5) against bottleneck's DNS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bottleneck_lab::{Host, addr};
use serde::{Deserialize, Serialize};

use crate::contender::Running;
use crate::dnsload::{self, DnsResult};
use crate::error::{BenchError, Result};
use crate::load::{self, BulkResult, IdleResult, RateResult, Target, Timing};
use crate::procstat;

/// The sizes and durations of one run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Plan {
    /// Keep-alive and new-connection windows.
    pub timing: Timing,
    /// The small response asked in scenarios 1, 2 and 4.
    pub small_path: String,
    /// Connections of the concurrent keep-alive run (scenario 1b).
    pub keep_alive_connections: usize,
    /// Parallel connect loops of scenario 2.
    pub new_connection_loops: usize,
    /// Bytes of the bulk download (scenario 3).
    pub bulk_bytes: u64,
    /// Bytes downloaded first on the same connection, not measured.
    pub bulk_warmup_bytes: u64,
    /// Idle keep-alive connections (scenario 4).
    pub idle_connections: usize,
    /// How long the idle connections sit before the RSS reading.
    pub idle_settle: Duration,
    /// DNS flood window.
    pub dns_timing: Timing,
    /// DNS queries in flight.
    pub dns_window: usize,
    /// Runs per variant of the init-shim measurement, per round.
    pub shim_runs: usize,
}

/// What one contender scored in one round (each scenario may have failed on its own).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HttpsRound {
    /// 1a: one keep-alive connection, requests back to back (latency).
    pub keep_alive_one: Option<RateResult>,
    /// 1b: several keep-alive connections (request rate).
    pub keep_alive_many: Option<RateResult>,
    /// 2: a new TLS connection per request.
    pub new_connections: Option<RateResult>,
    /// 3: bulk download.
    pub bulk: Option<BulkResult>,
    /// 4: idle keep-alive connections.
    pub idle: Option<IdleResult>,
    /// Errors of scenarios that did not produce a result, `scenario: error`.
    pub errors: Vec<String>,
}

/// The two origins of the lab; requests go to their addresses under their names.
pub fn targets() -> [Target; 2] {
    [
        Target {
            addr: SocketAddr::from((addr::ORIGIN_V4, addr::HTTPS_PORT)),
            host: "allowed.test".into(),
        },
        Target {
            addr: SocketAddr::from((addr::OTHER_ORIGIN_V4, addr::HTTPS_PORT)),
            host: "other.allowed.test".into(),
        },
    ]
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| BenchError::io("starting the load generator's runtime", e))
}

/// Runs scenarios 1-4 from the agent namespace against `running`.
pub fn https_round(running: &Running, plan: &Plan) -> Result<HttpsRound> {
    let plan = plan.clone();
    let ca = running.agent_ca.clone();
    let pgid = running.pgid();
    running
        .lab
        .run_in(Host::Agent, move || https_round_in_agent(ca, pgid, plan))?
}

/// The agent side of [`https_round`].
pub fn https_round_in_agent(ca: PathBuf, pgid: Option<u32>, plan: Plan) -> Result<HttpsRound> {
    https_round_with(ca, pgid, None, plan)
}

/// Scenarios 1-4 from the current namespace, trusting `ca`; the contender is the process
/// group `pgid` without the process `exclude` (the load generator itself, when it runs
/// inside the contender's group, as under httpjail).
pub fn https_round_with(
    ca: PathBuf,
    pgid: Option<u32>,
    exclude: Option<u32>,
    plan: Plan,
) -> Result<HttpsRound> {
    let rt = runtime()?;
    let keep = load::client_config(&ca, true)?;
    let fresh = load::client_config(&ca, false)?;
    let [main, other] = targets();
    let mut round = HttpsRound::default();
    let mut errors = Vec::new();
    let cpu = || pgid.map(|g| procstat::group_cpu_seconds(g, exclude));
    rt.block_on(async {
        match load::with_cpu(
            plan.timing,
            cpu,
            load::keep_alive(&main, keep.clone(), &plan.small_path, 1, plan.timing),
        )
        .await
        {
            Ok(r) => round.keep_alive_one = Some(r),
            Err(e) => errors.push(round_errors_push("keep_alive_one", e)),
        }
        match load::with_cpu(
            plan.timing,
            cpu,
            load::keep_alive(
                &main,
                keep.clone(),
                &plan.small_path,
                plan.keep_alive_connections,
                plan.timing,
            ),
        )
        .await
        {
            Ok(r) => round.keep_alive_many = Some(r),
            Err(e) => errors.push(round_errors_push("keep_alive_many", e)),
        }
        match load::with_cpu(
            plan.timing,
            cpu,
            load::new_connections(
                &main,
                fresh.clone(),
                &plan.small_path,
                plan.new_connection_loops,
                plan.timing,
            ),
        )
        .await
        {
            Ok(r) => round.new_connections = Some(r),
            Err(e) => errors.push(round_errors_push("new_connections", e)),
        }
        match load::bulk(
            &main,
            keep.clone(),
            plan.bulk_warmup_bytes,
            plan.bulk_bytes,
            cpu,
        )
        .await
        {
            Ok(r) => round.bulk = Some(r),
            Err(e) => errors.push(round_errors_push("bulk", e)),
        }
        let rss = || pgid.map(|g| procstat::group_rss_bytes(g, exclude));
        match load::idle_connections(
            &[main.clone(), other.clone()],
            fresh.clone(),
            &plan.small_path,
            plan.idle_connections,
            plan.idle_settle,
            rss,
        )
        .await
        {
            Ok(r) => round.idle = Some(r),
            Err(e) => errors.push(round_errors_push("idle", e)),
        }
    });
    round.errors = errors;
    Ok(round)
}

fn round_errors_push(what: &str, e: BenchError) -> String {
    format!("{what}: {e}")
}

/// One round of scenario 5.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DnsRound {
    /// Allowed name, answered from bottleneck's cache.
    pub allowed: Option<DnsResult>,
    /// Name without a route: answered NXDOMAIN by bottleneck, never asked upstream.
    pub denied: Option<DnsResult>,
    /// Reference: the same allowed flood straight at the lab's authoritative server.
    pub direct_authoritative: Option<DnsResult>,
    /// Errors of floods that failed.
    pub errors: Vec<String>,
}

/// Floods bottleneck's DNS (the agent's port 53 on the gateway address) with an allowed
/// name and a denied one; `direct` is the lab's authoritative server asked directly
/// (from a routing lab) for reference.
pub fn dns_round(bottleneck: &Running, direct: &Running, plan: &Plan) -> Result<DnsRound> {
    let gateway_dns = SocketAddr::from((addr::GATEWAY_AGENT_V4, 53));
    let mut errors = Vec::new();
    let flood = |running: &Running, server: SocketAddr, name: &'static str| {
        let dns = running.lab.dns().clone();
        let (timing, window) = (plan.dns_timing, plan.dns_window);
        running.lab.run_in(Host::Agent, move || {
            runtime()?.block_on(dnsload::flood(server, name, window, timing, || {
                dns.queries()
            }))
        })
    };
    let mut take = |what: &str, r: Result<Result<DnsResult>, bottleneck_lab::LabError>| match r {
        Ok(Ok(r)) => Some(r),
        Ok(Err(e)) => {
            errors.push(format!("{what}: {e}"));
            None
        }
        Err(e) => {
            errors.push(format!("{what}: {e}"));
            None
        }
    };
    let allowed = take("allowed", flood(bottleneck, gateway_dns, "allowed.test"));
    let denied = take("denied", flood(bottleneck, gateway_dns, "denied.test"));
    let direct_authoritative = take("direct", flood(direct, addr::dns_v4(), "allowed.test"));
    Ok(DnsRound {
        allowed,
        denied,
        direct_authoritative,
        errors,
    })
}
