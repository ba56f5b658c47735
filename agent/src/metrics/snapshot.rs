//! What the metrics show, taken at one moment by the run loop: the
//! [`Snapshot`] is all a scrape renders, so the HTTP side never touches
//! the agent.
//!
//! Invariant: a VM is in a snapshot only while it is in the policy in
//! force, so the label sets are bounded by the policy.

use egress_guard_common::maps::{Attempts, Counters};

/// One VM (or unknown interface) with counters.
#[derive(Clone, Debug)]
pub struct VmCounters {
    pub vm: String,
    pub subscription: String,
    pub counters: Counters,
}

/// One VM (or unknown interface) with blocked connection attempts.
#[derive(Clone, Debug)]
pub struct VmAttempts {
    pub vm: String,
    pub subscription: String,
    pub attempts: Attempts,
}

/// Everything the metrics show, taken at one moment by the run loop.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Vec<VmCounters>,
    /// VMs of the policy in force by verdict.
    pub vms_allowed: u64,
    pub vms_blocked: u64,
    /// Enforced interfaces by hook name.
    pub interfaces_by_hook: Vec<(String, u64)>,
    /// Enforced interfaces by (device kind, coverage).
    pub interfaces_by_kind: Vec<((String, String), u64)>,
    pub policy_generation: u64,
    pub policy_hash: String,
    pub policy_path: String,
    pub reloads: u64,
    pub reload_failures: u64,
    pub attach_failures: u64,
    /// Unix time of the last successful apply.
    pub last_apply_seconds: i64,
    pub ready: bool,
    /// Blocked connection attempts (SYNs to a held port) by VM, and the
    /// events about them the kernel did not send (rate limit, full ring).
    pub attempts: Vec<VmAttempts>,
}
