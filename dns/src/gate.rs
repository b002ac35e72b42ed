//! What the DNS server asks of its owner: a decision per name, and somewhere to log.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use hickory_proto::rr::RecordType;

/// The verdict on one name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateDecision {
    /// Whether the name may be resolved upstream.
    pub allowed: bool,
    /// A stable reason code for the audit (`allowed`, `no_route`, ...).
    pub reason: &'static str,
}

/// Decides whether a name may be resolved. The gateway implements it with the policy's
/// `decide` (kind `dns`), so DNS obeys exactly the rules every other path obeys.
pub trait NameGate: Send + Sync + 'static {
    /// `name` is lowercase, without the trailing dot, exactly as it will be asked upstream.
    fn check(&self, name: &str) -> GateDecision;
}

impl<F> NameGate for F
where
    F: Fn(&str) -> GateDecision + Send + Sync + 'static,
{
    fn check(&self, name: &str) -> GateDecision {
        self(name)
    }
}

/// One answered (or refused) query, for the audit stream.
#[derive(Clone, Debug)]
pub struct QueryEntry {
    /// Who asked.
    pub client: SocketAddr,
    /// `udp` or `tcp`.
    pub transport: &'static str,
    /// The query name, lowercase, no trailing dot (empty if the query was unreadable).
    pub name: String,
    /// The query type (`None` if the query was unreadable).
    pub qtype: Option<RecordType>,
    /// Whether the name was allowed.
    pub allowed: bool,
    /// Why: the gate's reason, or the server's (`qtype_suppressed`, `cname_target_denied`...).
    pub reason: &'static str,
    /// The response code sent.
    pub rcode: ResponseCode,
    /// How many answer records were sent.
    pub answers: usize,
    /// Time spent waiting for the upstream (`None`: the upstream was not asked).
    pub upstream: Option<Duration>,
    /// Whether the answer came from the cache.
    pub cached: bool,
    /// Time from receipt to the response being handed to the socket.
    pub duration: Duration,
}

/// Receives one [`QueryEntry`] per query. Must not block for long: it runs on the
/// query's task.
pub trait QueryLog: Send + Sync + 'static {
    /// Record one query.
    fn record(&self, entry: &QueryEntry);
}

/// Logs nothing (tests, benchmarks).
#[derive(Clone, Copy, Debug, Default)]
pub struct NoLog;

impl QueryLog for NoLog {
    fn record(&self, _entry: &QueryEntry) {}
}
