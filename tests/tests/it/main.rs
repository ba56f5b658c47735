//! egress-guard's integration tests, in one binary (laid out as aya's own
//! `integration-test` crate): one module per theme, and [`fixtures`] shared
//! by them. They need root; the end-to-end ones also need the agent
//! (`$EGRESS_GUARD_BIN`, `$EGRESS_GUARD_BIN_UPGRADE`) and the guest image
//! (`$EGRESS_GUARD_GUEST_DIR`), all of which `cargo xtask test` provides.
//!
//! A new theme is a module here (`mod hostile;` for `hostile.rs` beside
//! this file) whose every test takes a [`fixtures::serial`] guard first.
//!
//! Run one theme or one test with a filter:
//! `cargo test -p egress-guard-tests --test it -- live::` or
//! `... --test it -- e2e::delivery::an_exempt_vm_delivers_on_25`.

mod check_hostile;
mod devices;
mod e2e;
mod events;
mod fixtures;
mod guests;
mod hostile;
mod live;
mod observability;
mod testrun;
mod verifier;
