//! The TCP relay for the policy's `tcp` rules (SSH to a git host, a database port...).
//!
//! nftables redirects agent TCP to the rule ports here. Raw TCP carries no name, so the
//! relay asks the DNS pins which allowed names the agent could have learned the original
//! destination address for, decides with the policy by name (kind `tcp`, the original
//! port), vets the address like any upstream, and dials exactly that address. An address
//! the agent never got from the gateway's DNS is refused with a reset: an IP list alone is
//! never the decision.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bottleneck_dns::Pins;
use bottleneck_policy::{Kind, Request as PolicyRequest};
use tokio::net::{TcpListener, TcpStream};

use crate::admission::Admission;
use crate::audit::{Audit, Record};
use crate::firewall::sockopt::original_dst;
use crate::listen::elapsed_ms;
use crate::splice::splice;
use crate::state::PolicyHandle;
use crate::upstream::Upstream;

/// A relayed connection with no traffic either way for this long is closed.
pub const TCP_IDLE: Duration = Duration::from_secs(15 * 60);

/// Everything the relay needs.
pub struct TcpRelay {
    /// The policy in force.
    pub policy: PolicyHandle,
    /// Addresses handed out by the DNS server, by name.
    pub pins: Arc<Pins>,
    /// Vetting and dialing.
    pub upstream: Arc<Upstream>,
    /// The audit stream.
    pub audit: Audit,
    /// The connection bounds shared with the other listeners.
    pub admission: Arc<Admission>,
}

impl TcpRelay {
    /// Accept redirected connections forever.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Some((stream, client, permit)) =
                self.admission.accept(&listener, Kind::Tcp.as_str()).await
            else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.connection(stream, client).await;
                drop(permit);
            });
        }
    }

    async fn connection(&self, mut stream: TcpStream, client: SocketAddr) {
        let started = Instant::now();
        let Ok(original) = original_dst(&stream) else {
            tracing::warn!(%client, "relay: no original destination; closing");
            return;
        };
        let mut record = Record {
            kind: Kind::Tcp.as_str(),
            client: Some(client),
            original_dst: Some(original),
            ..Record::default()
        };
        let names = self.pins.names_for(original.ip());
        let snapshot = self.policy.current();
        let decisions: Vec<_> = names
            .iter()
            .map(|name| {
                (
                    name,
                    snapshot
                        .policy
                        .decide(&PolicyRequest::tcp(name, original.port())),
                )
            })
            .collect();
        let chosen = decisions
            .iter()
            .find(|(_, d)| d.is_allowed())
            .or(decisions.first());
        let Some((name, decision)) = chosen else {
            return self.refuse(stream, record, "unpinned_address", started);
        };
        record.host = Some((*name).clone());
        record.route = decision
            .route
            .map(|r| format!("{} (line {})", r.host(), r.line()));
        if !decision.is_allowed() {
            return self.refuse(stream, record, decision.code.as_str(), started);
        }
        let mut upstream = match self.upstream.connect_addr(name, original).await {
            Ok(upstream) => upstream,
            Err(e) => {
                tracing::info!(error = %e, "relay: upstream refused or unreachable");
                return self.refuse(stream, record, "upstream_failed", started);
            }
        };
        record.decision = "allow";
        record.reason = decision.code.as_str();
        record.upstream = upstream.peer_addr().ok();
        let (moved, error) = splice(&mut stream, &mut upstream, TCP_IDLE).await;
        if let Some(e) = error {
            tracing::debug!(error = %e, "relay ended with an error");
        }
        record.bytes_up = moved.up;
        record.bytes_down = moved.down;
        record.duration_ms = elapsed_ms(started);
        self.audit.write(record);
    }

    /// Reset the agent's connection (it fails at once, not after a timeout) and audit why.
    fn refuse(
        &self,
        stream: TcpStream,
        mut record: Record,
        reason: &'static str,
        started: Instant,
    ) {
        tracing::info!(reason, original = ?record.original_dst, "relay refused a connection");
        let _ = stream.set_zero_linger();
        drop(stream);
        record.decision = "deny";
        record.reason = reason;
        record.duration_ms = elapsed_ms(started);
        self.audit.write(record);
    }
}
