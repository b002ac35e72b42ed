//! The bottleneck gateway (sidecar): everything between the agent's packets and the
//! upstream, as a stack of layers, each testable alone:
//!
//! * [`firewall`]: nftables redirects of the agent's TCP 80/443 (and `tcp` rule ports) to
//!   the listeners; everything else from the agent interface rejected fast.
//! * [`admission`]: the bounds on agent connections (all at once, and per client address),
//!   checked by every listener before a byte is read.
//! * [`listen`]: accept -> original destination -> ClientHello -> policy on the SNI ->
//!   intercept (or splice a passthrough route).
//! * [`explicit`]: the explicit proxy (`--listen-proxy`): CONNECT and absolute-form
//!   requests fed into the same pipeline.
//! * [`tls`]: the bottle CA, leaf certificates minted per SNI (cached), the ClientHello peek.
//! * [`request_head`]: the checks on every request head before anything goes upstream
//!   (size, authority against the SNI, policy, declared body length, credentials).
//! * [`proxy`]: per request: authority = SNI, policy, credentials, forward, and
//!   [`proxy::rescue`], the one place refusals become responses.
//! * [`relay`]: raw TCP for the policy's `tcp` rules, decided by the name the DNS server
//!   handed the destination out for (its pins), never by the address alone.
//! * [`splice`]: both-way byte copy with counts and an idle timeout (passthrough, relay).
//! * [`upstream`]: resolve the checked name, vet every address, dial a vetted one.
//! * [`dns`]: the allowlist DNS server (agent port 53, any destination, is redirected to
//!   it), deciding every name with the same policy, pinning the addresses it hands out.
//! * [`audit`]: one JSON line per decision.
//!
//! [`service`] puts them together (prepare, serve, drain); the binary adds the firewall and
//! the privilege drop around it.
//!
//! Every decision goes through `bottleneck_policy::Policy::decide`.
#![forbid(unsafe_code)]

pub mod admission;
pub mod audit;
pub mod config;
pub mod dns;
pub mod explicit;
pub mod firewall;
pub mod listen;
pub mod privilege;
pub mod proxy;
pub mod relay;
pub mod request_head;
pub mod rewind;
pub mod service;
pub mod splice;
pub mod state;
pub mod tls;
pub mod upstream;
