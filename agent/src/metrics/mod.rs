//! Prometheus metrics, `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! The HTTP side never touches the agent: a scrape sends a request to the
//! run loop, which owns the agent, and gets back a [`Snapshot`] taken there
//! (counters read from the maps at that moment). The text is rendered with
//! prometheus-client, from the snapshot alone.
//!
//! Label cardinality is bounded by the policy: a VM has series only while it
//! is in the policy in force (the agent also drops its kernel counters when
//! it leaves), and per-VM counter series exist only for VMs that have had
//! something held back.
//!
//! Layers, each importing only those below it: [`snapshot`], [`render`],
//! [`serve`].

mod render;
mod serve;
mod snapshot;

pub use render::render;
pub use serve::{DEFAULT_ADDR, MetricsError, Request, serve};
pub use snapshot::{Snapshot, VmAttempts, VmCounters};
