//! Resolution of allowed names: the cache, else the upstream, with the CNAME chain checked
//! link by link ([`crate::chain`]).
//!
//! One [`Resolver`] serves both the agent's queries (through the
//! [`handler`](crate::handler)) and the gateway's own lookups of the names it dials
//! ([`Resolver::lookup_ip`]), so there is one cache and one upstream path, and a name the
//! agent just resolved costs the gateway no second upstream query.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::{Name, RData, Record, RecordType};

use crate::cache::{AnswerCache, Cached};
use crate::chain::{self, Walk};
use crate::forward::{ForwardError, Forwarder};
use crate::gate::NameGate;
use crate::handler::DnsConfig;

/// The outcome of resolving one (name, type).
#[derive(Clone, Debug)]
pub struct Resolution {
    /// Response code (the upstream's, or NXDOMAIN for a cut chain, SERVFAIL on failure).
    pub rcode: ResponseCode,
    /// The permitted chain and the data.
    pub records: Vec<Record>,
    /// The chain's names after the query name.
    pub chain: Vec<String>,
    /// Stable reason code.
    pub reason: &'static str,
    /// Time spent on the upstream (`None`: served from the cache).
    pub upstream: Option<Duration>,
    /// Whether the answer came from the cache.
    pub cached: bool,
}

/// Why [`Resolver::lookup_ip`] found no address.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// The policy does not allow the name.
    #[error("the policy does not allow resolving `{name}` ({reason})")]
    Denied {
        /// The name.
        name: String,
        /// The gate's reason.
        reason: &'static str,
    },
    /// The name is not a valid DNS name.
    #[error("`{0}` is not a valid DNS name")]
    InvalidName(String),
    /// The upstream failed or the chain could not be followed.
    #[error("resolving `{name}` failed: {reason}")]
    Failed {
        /// The name.
        name: String,
        /// What went wrong.
        reason: String,
    },
    /// The name exists but has no address (or does not exist).
    #[error("`{name}` has no address ({rcode})")]
    NoAddress {
        /// The name.
        name: String,
        /// The response code.
        rcode: ResponseCode,
    },
}

/// Cache + upstream + chain checks. Shared; cheap to call concurrently.
pub struct Resolver {
    gate: Arc<dyn NameGate>,
    forwarder: Forwarder,
    cache: AnswerCache,
    negative_ttl: u32,
}

impl Resolver {
    /// A resolver asking `config.upstreams`, checking chain links with `gate`. Must be
    /// called inside a Tokio runtime.
    pub fn new(config: &DnsConfig, gate: Arc<dyn NameGate>) -> Result<Resolver, ForwardError> {
        Ok(Resolver {
            gate,
            forwarder: Forwarder::new(&config.upstreams, config.upstream_deadline)?,
            cache: AnswerCache::new(config.cache_entries, config.ttl),
            negative_ttl: config.negative_ttl,
        })
    }

    /// The gate this resolver checks chain links with.
    pub fn gate(&self) -> &dyn NameGate {
        &*self.gate
    }

    /// Resolve (`name`, `qtype`); the caller has already checked `name` itself with the
    /// gate (`reason` is that decision's reason). Chain links are checked here, on cached
    /// answers too, so a reload that denies a link takes effect at once.
    pub async fn resolve(
        &self,
        name: &Name,
        qtype: RecordType,
        reason: &'static str,
    ) -> Resolution {
        let lower = name.into();
        if let Some(hit) = self.cache.get(&lower, qtype)
            && hit.chain.iter().all(|n| self.gate.check(n).allowed)
        {
            return Resolution {
                rcode: hit.rcode,
                records: hit.aged_answers(Instant::now()),
                chain: hit.chain.clone(),
                reason: hit.reason,
                upstream: None,
                cached: true,
            };
        }
        let failed = |reason, waited| Resolution {
            rcode: ResponseCode::ServFail,
            records: Vec::new(),
            chain: Vec::new(),
            reason,
            upstream: Some(waited),
            cached: false,
        };

        let mut current = name.clone();
        let mut records = Vec::new();
        let mut chain_names = Vec::new();
        let mut waited = Duration::ZERO;
        let (rcode, negative_ttl, reason) = loop {
            let reply = match self.forwarder.ask(&current, qtype).await {
                Ok(reply) => reply,
                Err(e) => {
                    tracing::warn!(name = %name, %qtype, error = %e, "upstream DNS failed");
                    return failed("upstream_failed", waited);
                }
            };
            waited += reply.elapsed;
            let step = chain::walk(
                &current,
                qtype,
                &reply.answers,
                &*self.gate,
                chain_names.len(),
            );
            records.extend(step.records);
            chain_names.extend(step.names);
            match step.end {
                Walk::Done => break (reply.rcode, reply.negative_ttl, reason),
                Walk::Follow(next) => current = next,
                Walk::Cut(denied) => {
                    tracing::info!(name = %name, denied = %denied, "CNAME chain cut at a denied name");
                    records.clear();
                    break (ResponseCode::NXDomain, None, "cname_target_denied");
                }
                Walk::TooLong => return failed("cname_chain_too_long", waited),
            }
        };

        let clamp = self.cache.clamp();
        let ttl = match records.iter().map(|r| r.ttl).min() {
            Some(ttl) => clamp.apply(ttl),
            None => clamp.apply(negative_ttl.unwrap_or(self.negative_ttl)),
        };
        if matches!(rcode, ResponseCode::NoError | ResponseCode::NXDomain) {
            self.cache.insert(
                lower,
                qtype,
                Cached::new(rcode, records.clone(), chain_names.clone(), reason, ttl),
            );
        }
        Resolution {
            rcode,
            records,
            chain: chain_names,
            reason,
            upstream: Some(waited),
            cached: false,
        }
    }

    /// The IPv4 and IPv6 addresses of `host` (checked with the gate first), for the
    /// gateway's own connections. Both families are asked concurrently.
    pub async fn lookup_ip(&self, host: &str) -> Result<Vec<IpAddr>, LookupError> {
        let decision = self.gate.check(host);
        if !decision.allowed {
            return Err(LookupError::Denied {
                name: host.to_owned(),
                reason: decision.reason,
            });
        }
        let name = Name::from_ascii(format!("{host}."))
            .map_err(|_| LookupError::InvalidName(host.to_owned()))?;
        let (v4, v6) = tokio::join!(
            self.resolve(&name, RecordType::A, decision.reason),
            self.resolve(&name, RecordType::AAAA, decision.reason)
        );
        let addrs: Vec<IpAddr> = v4
            .records
            .iter()
            .chain(&v6.records)
            .filter_map(|r| match &r.data {
                RData::A(a) => Some(IpAddr::V4(a.0)),
                RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
                _ => None,
            })
            .collect();
        if !addrs.is_empty() {
            return Ok(addrs);
        }
        match (v4.rcode, v6.rcode) {
            (ResponseCode::ServFail, _) | (_, ResponseCode::ServFail) => Err(LookupError::Failed {
                name: host.to_owned(),
                reason: if v4.rcode == ResponseCode::ServFail {
                    v4.reason
                } else {
                    v6.reason
                }
                .to_owned(),
            }),
            (rcode, _) => Err(LookupError::NoAddress {
                name: host.to_owned(),
                rcode,
            }),
        }
    }
}
