//! egress-guard's integration tests (one binary, `tests/tests/it`). They
//! need root.
//!
//! The network-namespace fixtures they use (topology, SMTP sink and client,
//! agent guard) are the crate `egress-guard-netns` in `tests/netns`, shared
//! with `cargo xtask demo`; they are re-exported here as [`netns`].
//! [`testrun`] runs the loaded programs on crafted frames; [`hostile`]
//! makes hostile policy files.

pub use egress_guard_netns as netns;

pub mod hostile;
pub mod testrun;
