//! `bottleneck-init`, the agent container's PID 1.
//!
//! Nothing is implemented here yet: this crate is a placeholder in the workspace layout of
//! DESIGN.md section 2. The init-shim issue fills it (route and resolv.conf via netlink, CA
//! trust, dropping every capability, switching user, reaping). It ships no binary until
//! then, so nothing can be mistaken for a working shim.
