//! The validated policy: what a policy file means once it has been read.
//!
//! Invariants: every VM's `subscription_index` points into
//! `subscriptions`; names and interfaces are unique, and the index finds
//! each VM by its interface (unless empty), its name and its key; the
//! policy is only built by validation ([`super::validate`]) or changed in
//! place by [`super::update`], which keeps all of this.

use std::{fmt, net::IpAddr, sync::Arc};

use chrono::{DateTime, NaiveDate, Utc};
use hashbrown::HashTable;
use serde::Serialize;

use super::{
    choices::{ExemptionRule, Restricted, Verdict},
    enforcement::Enforcement,
    keys::{name_hash, vm_key},
    source::Source,
};

/// A validated policy file.
#[derive(Clone, Debug)]
pub struct Policy {
    pub enforcement: Enforcement,
    /// Every offer a subscription may name: the built-in ones (as overridden
    /// by the file's `offers:`) and the file's own, by name.
    pub offers: std::collections::BTreeMap<String, Offer>,
    /// In file order.
    pub subscriptions: Vec<Subscription>,
    /// In file order.
    pub vms: Vec<Vm>,
    /// sha256 of the file's bytes, lowercase hex.
    pub hash: String,
    /// The VMs by interface name and by key (which also finds them by name).
    pub(crate) index: VmIndex,
    /// The file's text (when it was read from bytes the policy could keep,
    /// [`super::from_vec`]), and where its VMs are in it when the file is
    /// simple enough for a changed one to be read VM by VM
    /// ([`super::update`]).
    pub(crate) source: Option<Arc<Source>>,
}

impl Policy {
    /// The subscription a VM belongs to.
    pub fn subscription_of(&self, vm: &Vm) -> &Subscription {
        &self.subscriptions[vm.subscription_index as usize]
    }

    /// The index in `vms` of the VM whose host-side interface is `ifname`.
    pub fn vm_index_by_interface(&self, ifname: &str) -> Option<usize> {
        self.index.by_interface(&self.vms, ifname)
    }

    /// The VM whose host-side interface is `ifname`.
    pub fn vm_by_interface(&self, ifname: &str) -> Option<&Vm> {
        self.vm_index_by_interface(ifname).map(|i| &self.vms[i])
    }

    /// The index in `vms` of the VM called `name`.
    pub fn vm_index_by_name(&self, name: &str) -> Option<usize> {
        self.index.by_name(&self.vms, name)
    }

    /// The index in `vms` of a VM whose key ([`super::vm_key`]) is `key`.
    pub fn vm_index_by_key(&self, key: u64) -> Option<usize> {
        self.index.by_key(&self.vms, key)
    }

    /// The text of the policy file, when it is kept ([`super::from_vec`],
    /// [`super::load`]).
    pub fn text(&self) -> Option<&str> {
        self.source.as_ref().map(|s| s.text.as_str())
    }
}

/// The VMs of a policy by interface name and by key, as indices into
/// `vms`: the names themselves stay in the VMs.
#[derive(Clone, Default)]
pub(crate) struct VmIndex {
    interfaces: HashTable<u32>,
    keys: HashTable<u32>,
}

impl fmt::Debug for VmIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VmIndex({} interfaces, {} keys)",
            self.interfaces.len(),
            self.keys.len()
        )
    }
}

impl VmIndex {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            interfaces: HashTable::with_capacity(n),
            keys: HashTable::with_capacity(n),
        }
    }

    pub(crate) fn by_interface(&self, vms: &[Vm], ifname: &str) -> Option<usize> {
        self.interfaces
            .find(name_hash(ifname), |&i| {
                &*vms[i as usize].interface == ifname
            })
            .map(|&i| i as usize)
    }

    pub(crate) fn by_name(&self, vms: &[Vm], name: &str) -> Option<usize> {
        self.keys
            .find(vm_key(name), |&i| &*vms[i as usize].name == name)
            .map(|&i| i as usize)
    }

    fn by_key(&self, vms: &[Vm], key: u64) -> Option<usize> {
        self.keys
            .find(key, |&i| vms[i as usize].key == key)
            .map(|&i| i as usize)
    }

    /// Adds `vms[i]` (whose interface and name are not in the index yet);
    /// an empty interface is left out.
    pub(crate) fn insert(&mut self, vms: &[Vm], i: usize) {
        self.insert_interface(vms, i);
        self.insert_key(vms, i);
    }

    /// Adds the interface of `vms[i]` (not in the index yet), unless empty.
    pub(crate) fn insert_interface(&mut self, vms: &[Vm], i: usize) {
        let vm = &vms[i];
        if !vm.interface.is_empty() {
            let at = u32::try_from(i).unwrap_or(u32::MAX);
            self.interfaces
                .insert_unique(name_hash(&vm.interface), at, |&j| {
                    name_hash(&vms[j as usize].interface)
                });
        }
    }

    /// Adds the name (and key) of `vms[i]` (not in the index yet).
    pub(crate) fn insert_key(&mut self, vms: &[Vm], i: usize) {
        let at = u32::try_from(i).unwrap_or(u32::MAX);
        self.keys
            .insert_unique(vms[i].key, at, |&j| vms[j as usize].key);
    }

    /// Takes `vms[i]` out (before it changes or goes).
    pub(crate) fn remove(&mut self, vms: &[Vm], i: usize) {
        let vm = &vms[i];
        let at = u32::try_from(i).unwrap_or(u32::MAX);
        if let Ok(entry) = self
            .interfaces
            .find_entry(name_hash(&vm.interface), |&j| j == at)
        {
            entry.remove();
        }
        if let Ok(entry) = self.keys.find_entry(vm.key, |&j| j == at) {
            entry.remove();
        }
    }

    /// Moves every index at or above `from` (which is at least `removed`)
    /// by `added - removed`: VMs put in and taken out before them.
    pub(crate) fn shift(&mut self, from: usize, added: usize, removed: usize) {
        if added == removed {
            return;
        }
        for table in [&mut self.interfaces, &mut self.keys] {
            for i in table.iter_mut() {
                if *i as usize >= from {
                    *i = (*i as usize + added - removed) as u32;
                }
            }
        }
    }
}

/// An offer type: built in, overridden, or declared in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub name: String,
    pub restricted: Restricted,
    pub exemption: ExemptionRule,
    /// Whether the name is one of the built-in offers (overridden or not).
    pub builtin: bool,
}

/// A subscription, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: Arc<str>,
    pub offer: Arc<str>,
    /// The offer's rules, as resolved when the policy was read.
    pub restricted: Restricted,
    pub exemption_rule: ExemptionRule,
    pub created: NaiveDate,
    pub exemption: Option<Exemption>,
}

/// An exemption from the restriction (Azure grants these on request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exemption {
    pub granted: DateTime<Utc>,
    /// Always after `granted` when set.
    pub revoked: Option<DateTime<Utc>>,
}

/// A VM, validated. Its subscription is [`Policy::subscription_of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub name: Box<str>,
    /// Host-side interface of its NIC.
    pub interface: Box<str>,
    pub addresses: Box<[IpAddr]>,
    pub started: Option<DateTime<Utc>>,
    pub override_verdict: Option<Verdict>,
    /// `vm_key(name)`.
    pub key: u64,
    pub(crate) subscription_index: u32,
}
