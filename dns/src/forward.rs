//! The upstream side: ask the configured resolvers one question, get one raw answer.
//!
//! This is hickory-resolver's name-server pool, not its resolver: the resolver would
//! follow CNAMEs on its own, sending a denied alias target upstream before [`crate::chain`]
//! could stop it. The pool gives exactly one question per call, UDP first with a TCP retry
//! when the answer is truncated, identical in-flight questions sent once, the servers tried
//! in order within one deadline.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_resolver::config::{NameServerConfig, ResolverOpts, ServerOrderingStrategy};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::xfer::{DnsHandle, FirstAnswer};
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::{DnsRequestOptions, Query, ResponseCode};
use hickory_resolver::proto::rr::{Name, Record, RecordType};
use hickory_resolver::{NameServerPool, PoolContext, TlsConfig};

/// EDNS payload advertised upstream (the DNS flag day 2020 value: no fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Why the upstream gave no usable answer (the agent gets SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// No server answered within the deadline.
    #[error("no upstream resolver answered within {0:?}")]
    Timeout(Duration),
    /// The pool could not be built or the exchange failed.
    #[error("upstream resolver: {0}")]
    Upstream(String),
}

/// One upstream answer, reduced to what the handler serves.
#[derive(Clone, Debug)]
pub struct UpstreamAnswer {
    /// The upstream's response code.
    pub rcode: ResponseCode,
    /// The answer section.
    pub answers: Vec<Record>,
    /// The negative-caching TTL of an NXDOMAIN/NODATA answer, if the upstream gave one.
    pub negative_ttl: Option<u32>,
    /// How long the upstream took.
    pub elapsed: Duration,
}

/// Asks the upstream resolvers.
#[derive(Clone)]
pub struct Forwarder {
    pool: NameServerPool<TokioRuntimeProvider>,
    deadline: Duration,
}

impl Forwarder {
    /// Resolvers tried in the order given, each over UDP then TCP; `deadline` bounds one
    /// question end to end. Must be called inside a Tokio runtime.
    pub fn new(servers: &[SocketAddr], deadline: Duration) -> Result<Forwarder, ForwardError> {
        if servers.is_empty() {
            return Err(ForwardError::Upstream(
                "no upstream resolver configured".into(),
            ));
        }
        let configs = servers.iter().map(|addr| {
            let mut server = NameServerConfig::udp_and_tcp(addr.ip());
            for connection in &mut server.connections {
                connection.port = addr.port();
            }
            server
        });
        let mut options = ResolverOpts::default();
        options.timeout = deadline;
        options.attempts = 2;
        options.num_concurrent_reqs = 1;
        options.server_ordering_strategy = ServerOrderingStrategy::UserProvidedOrder;
        options.edns_payload_len = EDNS_PAYLOAD;
        let tls = TlsConfig::new().map_err(|e| ForwardError::Upstream(e.to_string()))?;
        let context = Arc::new(PoolContext::new(options, tls));
        Ok(Forwarder {
            pool: NameServerPool::from_config(configs, context, TokioRuntimeProvider::default()),
            deadline,
        })
    }

    /// Ask for (`name`, `qtype`) with recursion desired. NXDOMAIN and NODATA are answers,
    /// not errors.
    pub async fn ask(
        &self,
        name: &Name,
        qtype: RecordType,
    ) -> Result<UpstreamAnswer, ForwardError> {
        let mut fqdn = name.clone();
        fqdn.set_fqdn(true);
        let mut options = DnsRequestOptions::default();
        options.recursion_desired = true;
        options.use_edns = true;
        options.edns_payload_len = EDNS_PAYLOAD;
        let started = Instant::now();
        let exchange = self
            .pool
            .lookup(Query::query(fqdn, qtype), options)
            .first_answer();
        let result = tokio::time::timeout(self.deadline, exchange)
            .await
            .map_err(|_| ForwardError::Timeout(self.deadline))?;
        let elapsed = started.elapsed();
        match result {
            Ok(response) => {
                let message = response.into_message();
                Ok(UpstreamAnswer {
                    rcode: message.metadata.response_code,
                    answers: message.answers,
                    negative_ttl: None,
                    elapsed,
                })
            }
            Err(NetError::Dns(DnsError::NoRecordsFound(none)))
                if matches!(
                    none.response_code,
                    ResponseCode::NXDomain | ResponseCode::NoError
                ) =>
            {
                Ok(UpstreamAnswer {
                    rcode: none.response_code,
                    answers: Vec::new(),
                    negative_ttl: none.negative_ttl,
                    elapsed,
                })
            }
            Err(NetError::Timeout) => Err(ForwardError::Timeout(self.deadline)),
            Err(e) => Err(ForwardError::Upstream(e.to_string())),
        }
    }
}
