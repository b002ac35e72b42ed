//! The bottleneck allowlist DNS server.
//!
//! An agent that may not reach a host must not be able to talk to it through DNS either: a
//! naive forwarder sends `secret-data.attacker.example` to the attacker's nameserver. This
//! crate answers only what the policy allows and never lets a denied name leave:
//!
//! * [`gate`]: the decision the server asks for every name ([`NameGate`], implemented by
//!   the gateway with the policy crate's `decide`), and the audit sink ([`QueryLog`]).
//! * [`handler`]: the hickory-server [`RequestHandler`](hickory_server::server::RequestHandler):
//!   decide on the query name, refuse or suppress the query types that only serve tunnels
//!   or ECH, answer through the resolver, pin the addresses, log one entry per query.
//! * [`resolver`]: allowed names from the cache or the upstream; also the gateway's own
//!   lookups ([`Resolver::lookup_ip`]), so both share one cache.
//! * [`chain`]: CNAME chains followed link by link, cut (as NXDOMAIN) at the first denied
//!   name, so a denied target is never disclosed nor asked for.
//! * [`forward`]: the upstream side (hickory-resolver's name-server pool: UDP with TCP
//!   retry on truncation, deduplication of identical in-flight queries, timeouts).
//! * [`cache`]: answers kept for their TTL, clamped to a minimum and a maximum.
//! * [`pins`]: every address handed out, remembered with the names it was handed out for,
//!   so the gateway's TCP relay dials only addresses the agent could have learned.
//! * [`limit`]: a bound on the queries in flight per client.
//!
//! The crate knows nothing of the gateway: the gateway passes a [`NameGate`] to
//! [`Resolver::new`], a [`QueryLog`] to [`AllowlistHandler::new`] and the sockets to
//! [`server::serve`].
#![forbid(unsafe_code)]

pub mod cache;
pub mod chain;
pub mod forward;
pub mod gate;
pub mod handler;
pub mod limit;
pub mod pins;
pub mod resolver;
pub mod server;

pub use gate::{GateDecision, NameGate, QueryEntry, QueryLog};
pub use handler::{AllowlistHandler, DnsConfig};
pub use pins::Pins;
pub use resolver::Resolver;
