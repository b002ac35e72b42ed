//! The bottleneck gateway (sidecar).
//!
//! Nothing is implemented here yet: this crate is a placeholder in the workspace layout of
//! DESIGN.md section 2. The gateway issue fills it with the nftables redirects, the
//! transparent TLS/HTTP listeners, interception, credential injection and the audit log,
//! all deciding through `bottleneck_policy::Policy::decide`. It ships no binary until then,
//! so nothing can be mistaken for a working gateway.
