//! Every VM's verdict at a time in its compact form, a byte a VM
//! ([`Verdicts`]): what the agent keeps, for a policy of any size. A
//! reason is found again when it is asked for ([`Policy::decide`]).
//!
//! Invariant: the verdicts are those of the rules ([`super::rules`]) for
//! the same facts, and `next_change` is the earliest instant after `now`
//! at which any VM's verdict or reason changes by time alone.

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use crate::policy::{
    choices::Verdict,
    keys::unknown_key,
    model::{Policy, Vm},
};

use super::{
    reason::Reason,
    rules::{change_after, why},
};

/// What the agent knows besides the policy.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    /// Latest creation time the agent observed for each interface name (a
    /// VM stop+start makes a new interface).
    pub interface_created: &'a HashMap<String, DateTime<Utc>>,
}

/// Every VM's verdict at a time, compact (a byte a VM): what the agent
/// keeps. Reasons are found again when they are asked for
/// ([`Policy::decide`]): the rules are pure, so the same facts give the
/// same reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdicts {
    /// The time these are for (`Facts::now`).
    pub at: DateTime<Utc>,
    /// As [`Desired::next_change`].
    pub next_change: Option<DateTime<Utc>>,
    by_vm: Vec<Verdict>,
}

impl Verdicts {
    /// The verdict of `vms[i]`.
    pub fn of(&self, i: usize) -> Verdict {
        self.by_vm[i]
    }

    pub fn len(&self) -> usize {
        self.by_vm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_vm.is_empty()
    }

    /// How many VMs are blocked.
    pub fn blocked(&self) -> usize {
        self.by_vm.iter().filter(|v| **v == Verdict::Block).count()
    }
}

/// The verdict for one interface, compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforced {
    pub verdict: Verdict,
    pub key: u64,
    /// The index in `vms` of its VM, if it belongs to one.
    pub vm: Option<usize>,
}

/// Every VM's verdict at `facts.now`, compact.
pub fn verdicts(policy: &Policy, facts: &Facts) -> Verdicts {
    let now = facts.now;
    let cutoff = policy.enforcement.cutoff;
    let mut next_change: Option<DateTime<Utc>> = None;
    let by_vm = policy
        .vms
        .iter()
        .map(|vm| {
            let sub = policy.subscription_of(vm);
            let created = created(facts, vm);
            let (verdict, why) = why(vm, sub, cutoff, now, created);
            if let Some(ex) = &sub.exemption
                && let Some(t) = change_after(vm, sub, ex, cutoff, now, created, why)
            {
                next_change = Some(next_change.map_or(t, |n| n.min(t)));
            }
            verdict
        })
        .collect();
    Verdicts {
        at: now,
        next_change,
        by_vm,
    }
}

pub(super) fn created(facts: &Facts, vm: &Vm) -> Option<DateTime<Utc>> {
    if facts.interface_created.is_empty() {
        None
    } else {
        facts.interface_created.get(&*vm.interface).copied()
    }
}

impl Policy {
    /// The verdict of `vms[i]` at `facts.now`, and why.
    pub fn decide(&self, i: usize, facts: &Facts) -> (Verdict, Reason) {
        let vm = &self.vms[i];
        let sub = self.subscription_of(vm);
        let cutoff = self.enforcement.cutoff;
        let (verdict, why) = why(vm, sub, cutoff, facts.now, created(facts, vm));
        (verdict, why.reason(sub, cutoff))
    }

    /// The verdict for an interface under `verdicts`: its VM's, else (if
    /// it matches an `attach` glob) the `unknown` verdict, else `None` (not
    /// enforced).
    pub fn enforced(&self, verdicts: &Verdicts, ifname: &str) -> Option<Enforced> {
        if let Some(i) = self.vm_index_by_interface(ifname)
            && i < verdicts.len()
        {
            return Some(Enforced {
                verdict: verdicts.of(i),
                key: self.vms[i].key,
                vm: Some(i),
            });
        }
        if self.enforcement.matches_attach(ifname) {
            return Some(Enforced {
                verdict: self.enforcement.unknown,
                key: unknown_key(ifname),
                vm: None,
            });
        }
        None
    }
}
