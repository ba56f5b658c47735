//! Benchmark 7's goals and the hook it holds them to: the figures, the
//! prose and the report all read them here.

use super::drop::{Device, DropResult, Holder, HolderResult};
use crate::lab::Hook;

/// The goal for the default hook's share of the no-agent tap throughput.
pub const GOAL_FLOW_SHARE: f64 = 0.98;
/// The goal for the best hook against its own floor.
pub const GOAL_VS_FLOOR: f64 = 0.97;
/// What `auto` chooses on a tap today (agent/src/placement.rs).
pub const AUTO_ON_TAP: Hook = Hook::Tc;

pub fn guard_hooks(d: &DropResult, device: Device) -> Vec<Hook> {
    d.params
        .holders(device)
        .into_iter()
        .filter_map(|h| match h {
            Holder::Guard(hook) => Some(hook),
            _ => None,
        })
        .collect()
}

/// The hook whose egress-guard figure is highest per CPU-second.
pub fn best_hook(d: &DropResult, device: Device) -> Option<Hook> {
    guard_hooks(d, device)
        .into_iter()
        .filter(|h| d.get(device, Holder::Guard(*h)).is_some())
        .max_by(|a, b| {
            let v = |h: Hook| {
                d.get(device, Holder::Guard(h))
                    .map_or(0.0, HolderResult::per_cpu_second)
            };
            v(*a).total_cmp(&v(*b))
        })
}
