//! Every VM's verdict at a time in full ([`Desired`]): settings, every VM
//! with its reason, and the verdict of any interface; for `status`, tests
//! and reports of small policies.
//!
//! Invariant: it says what [`super::verdicts`] and [`Policy::decide`] say
//! for the same facts, VM by VM, in policy order.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use hashbrown::HashTable;

use crate::policy::{
    choices::Verdict,
    enforcement::Enforcement,
    keys::{name_hash, unknown_key},
    model::Policy,
};

use super::{
    compact::{Facts, verdicts},
    reason::{Reason, UNKNOWN_INTERFACE_CODE, unknown_reason},
};

/// One VM's verdict, in full: what `evaluate` gives for each VM.
#[derive(Clone, Debug, PartialEq)]
pub struct VmVerdict {
    pub name: String,
    pub subscription: String,
    pub offer: String,
    pub interface: String,
    pub addresses: Vec<IpAddr>,
    pub verdict: Verdict,
    pub reason: Reason,
    /// [`super::vm_key`] of the name.
    pub key: u64,
}

/// What the policy wants at a time, in full: settings and every VM's
/// verdict with its reason. [`Verdicts`] is the compact form the agent keeps.
#[derive(Clone, Debug)]
pub struct Desired {
    pub enforcement: Enforcement,
    /// In policy order.
    pub vms: Vec<VmVerdict>,
    /// The earliest instant after `at` at which a VM's verdict or reason
    /// changes by time alone (a grant or revocation coming, a `started` or
    /// an observed interface creation in the future): evaluate again then.
    pub next_change: Option<DateTime<Utc>>,
    /// The time this is for (`Facts::now`).
    pub at: DateTime<Utc>,
    interfaces: HashTable<u32>,
}

/// The verdict for one interface.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceVerdict<'a> {
    pub verdict: Verdict,
    pub key: u64,
    /// Its VM, if it belongs to one.
    pub vm: Option<&'a VmVerdict>,
    pub reason: String,
    pub reason_code: &'static str,
}

impl Desired {
    /// The verdict for an interface: its VM's, else (if it matches an
    /// `attach` glob) the `unknown` verdict, else `None` (not enforced).
    pub fn interface(&self, ifname: &str) -> Option<InterfaceVerdict<'_>> {
        if let Some(vm) = self.vm_by_interface(ifname) {
            return Some(InterfaceVerdict {
                verdict: vm.verdict,
                key: vm.key,
                vm: Some(vm),
                reason: vm.reason.to_string(),
                reason_code: vm.reason.code(),
            });
        }
        if self.enforcement.matches_attach(ifname) {
            let verdict = self.enforcement.unknown;
            return Some(InterfaceVerdict {
                verdict,
                key: unknown_key(ifname),
                vm: None,
                reason: unknown_reason(ifname, verdict),
                reason_code: UNKNOWN_INTERFACE_CODE,
            });
        }
        None
    }

    /// The VM whose interface is `ifname`.
    pub fn vm_by_interface(&self, ifname: &str) -> Option<&VmVerdict> {
        self.interfaces
            .find(name_hash(ifname), |&i| {
                self.vms[i as usize].interface == ifname
            })
            .map(|&i| &self.vms[i as usize])
    }

    /// How many VMs are blocked.
    pub fn blocked(&self) -> usize {
        self.vms
            .iter()
            .filter(|v| v.verdict == Verdict::Block)
            .count()
    }
}

/// Every VM's verdict at `facts.now`, each with its reason.
pub fn evaluate(policy: &Policy, facts: &Facts) -> Desired {
    let verdicts = verdicts(policy, facts);
    let vms: Vec<VmVerdict> = (0..policy.vms.len())
        .map(|i| {
            let vm = &policy.vms[i];
            let sub = policy.subscription_of(vm);
            let (verdict, reason) = policy.decide(i, facts);
            VmVerdict {
                name: vm.name.to_string(),
                subscription: sub.id.to_string(),
                offer: sub.offer.to_string(),
                interface: vm.interface.to_string(),
                addresses: vm.addresses.to_vec(),
                verdict,
                reason,
                key: vm.key,
            }
        })
        .collect();
    let mut interfaces = HashTable::with_capacity(vms.len());
    for (i, vm) in vms.iter().enumerate() {
        if !vm.interface.is_empty() {
            interfaces.insert_unique(name_hash(&vm.interface), i as u32, |&j: &u32| {
                name_hash(&vms[j as usize].interface)
            });
        }
    }
    Desired {
        enforcement: policy.enforcement.clone(),
        vms,
        next_change: verdicts.next_change,
        at: verdicts.at,
        interfaces,
    }
}
