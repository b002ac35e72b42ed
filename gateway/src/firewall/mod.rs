//! The gateway's nftables ruleset and the socket options that go with it.
//!
//! * [`ruleset`]: renders `table inet bottleneck` (redirects of the agent's TCP 80/443,
//!   `tcp` rule ports and DNS to the local listeners; everything else from the agent
//!   rejected fast) as one atomic, idempotent nft script.
//! * [`apply`](mod@apply): runs that script with `nft -f -`, removes the table, switches forwarding
//!   on, reads the named counters.
//! * [`sockopt`]: `SO_ORIGINAL_DST` for redirected connections (IPv4, IPv6 and
//!   IPv4-mapped) and `SO_MARK` for the gateway's own upstream sockets.
//!
//! Everything here acts on the calling thread's network namespace.

pub mod apply;
mod error;
pub mod ruleset;
pub mod sockopt;

pub use apply::{
    Counter, Counters, apply, counters, disable_forwarding, disable_redirects, enable_forwarding,
    remove,
};
pub use error::FirewallError;
pub use ruleset::{FirewallConfig, remove_script, render};
pub use sockopt::{original_dst, set_mark};
