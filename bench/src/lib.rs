//! bottleneck-bench: the benchmark harness of issue 7.
//!
//! It measures bottleneck-gateway side by side with the direct path (no gateway),
//! mitmproxy in transparent mode, Squid with intercept + ssl-bump and httpjail, in the
//! network lab (`bottleneck-lab`): agent, gateway and wan namespaces on this machine, the
//! same origins and test CA for everyone. Contenders alternate in rounds; every metric is
//! reported as median, min and max over the rounds.
//!
//! Scenarios (see [`scenarios`]): 1 HTTPS keep-alive small responses (one connection for
//! latency, several for the rate), 2 a new TLS connection per request, 3 a bulk download
//! with the contender's CPU per GB, 4 idle keep-alive connections and the contender's RSS,
//! 5 bottleneck's DNS (allowed cached and denied floods, upstream query counts), 6 the init
//! shim's exec-to-exec time.
//!
//! Output: a JSON results file ([`runner::Results`]), `BENCHMARKS.md` ([`report`]) and a
//! PNG plot ([`plot`]).

pub mod contender;
pub mod dnsload;
pub mod error;
pub mod httpjail;
pub mod load;
pub mod machine;
pub mod plot;
pub mod procstat;
pub mod report;
pub mod runner;
pub mod scenarios;
pub mod shim;
pub mod stats;

pub use crate::error::{BenchError, Result};
pub use crate::runner::{Config, Results};
