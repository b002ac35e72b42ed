//! The allowlist DNS server of bottleneck.
//!
//! Nothing is implemented here yet: this crate is a placeholder in the workspace layout of
//! DESIGN.md section 2. The DNS issue fills it with a hickory-server `RequestHandler` that
//! answers only the names the policy allows (`bottleneck_policy::Policy::decide` with
//! `Kind::Dns`), never forwards a denied name, and pins the addresses it returns.
