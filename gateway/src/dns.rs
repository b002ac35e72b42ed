//! The gateway's DNS server: the `bottleneck-dns` allowlist handler wired to the policy in
//! force (every name goes through the same `decide` as every other path, kind `dns`) and
//! to the audit stream (one `dns` line per query).

use std::net::SocketAddr;
use std::sync::Arc;

use bottleneck_dns::forward::ForwardError;
use bottleneck_dns::server::serve;
use bottleneck_dns::{
    AllowlistHandler, DnsConfig, GateDecision, NameGate, Pins, QueryEntry, QueryLog, Resolver,
};
use bottleneck_policy::Request;
use hickory_server::Server;
use tokio::net::{TcpListener, UdpSocket};

use crate::audit::{Audit, Record};
use crate::state::PolicyHandle;

/// Most (address, name) pins held; beyond it the ones closest to expiry go first.
pub const PIN_CAPACITY: usize = 65_536;

/// Asks the policy in force (reloads take effect at the next query).
pub struct PolicyGate(pub PolicyHandle);

impl NameGate for PolicyGate {
    fn check(&self, name: &str) -> GateDecision {
        let snapshot = self.0.current();
        let decision = snapshot.policy.decide(&Request::dns(name));
        GateDecision {
            allowed: decision.is_allowed(),
            reason: decision.code.as_str(),
        }
    }
}

/// Writes one audit line per query.
pub struct AuditLog(pub Audit);

impl QueryLog for AuditLog {
    fn record(&self, entry: &QueryEntry) {
        self.0.write(Record {
            kind: "dns",
            client: Some(SocketAddr::new(
                entry.client.ip().to_canonical(),
                entry.client.port(),
            )),
            host: Some(entry.name.clone()).filter(|n| !n.is_empty()),
            qtype: entry.qtype.map(|t| t.to_string()),
            rcode: Some(entry.rcode.to_string()),
            answers: Some(entry.answers),
            cached: Some(entry.cached),
            upstream_ms: entry.upstream.map(|d| millis(d.as_micros())),
            decision: if entry.allowed { "allow" } else { "deny" },
            reason: entry.reason,
            duration_ms: u64::try_from(entry.duration.as_millis()).unwrap_or(u64::MAX),
            ..Record::default()
        });
    }
}

/// Microseconds as fractional milliseconds (DNS answers take well under one).
fn millis(micros: u128) -> f64 {
    micros as f64 / 1000.0
}

/// The resolver every lookup goes through (the agent's queries and the gateway's own),
/// deciding with the policy in force. Must run inside the runtime.
pub fn resolver(
    upstreams: Vec<SocketAddr>,
    policy: PolicyHandle,
) -> Result<Resolver, ForwardError> {
    let config = DnsConfig {
        upstreams,
        ..DnsConfig::default()
    };
    Resolver::new(&config, Arc::new(PolicyGate(policy)))
}

/// Start serving the agent's DNS on the given sockets.
pub fn start(
    resolver: Arc<Resolver>,
    audit: Audit,
    pins: Arc<Pins>,
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
) -> Server<AllowlistHandler> {
    let handler = AllowlistHandler::new(
        &DnsConfig::default(),
        resolver,
        Arc::new(AuditLog(audit)),
        pins,
    );
    serve(handler, udp, tcp)
}
