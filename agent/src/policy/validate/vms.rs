//! The VMs, one at a time as the readers give them, then together: their
//! subscriptions resolved, their names and interfaces unique.
//!
//! Invariants: a VM is checked alone ([`check_vm`]) with the index it has
//! in the file, so that the VMs of a changed file can be checked again on
//! their own ([`crate::policy::update`]) with the same messages as a whole
//! read; a VM's `subscription_index` is an index into [`SubNames`] until
//! [`resolve_subscriptions`] points it at its subscription.

use std::{collections::HashMap, net::IpAddr, str::FromStr};

use crate::policy::{
    choices::Verdict,
    keys::vm_key,
    locate::{Loc, yaml_path},
    model::{Subscription, Vm, VmIndex},
    names::check_ifname,
    raw::{Field, RawVm},
};

use super::checker::Checker;

/// Subscription names as the VMs give them, each kept once.
#[derive(Default)]
pub(crate) struct SubNames {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

/// What a VM without a (valid) subscription name points at.
const NO_SUBSCRIPTION: u32 = u32::MAX;

impl SubNames {
    pub(crate) fn id(&mut self, name: String) -> u32 {
        if let Some(&id) = self.ids.get(name.as_str()) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(NO_SUBSCRIPTION);
        let name = name.into_boxed_str();
        self.names.push(name.clone());
        self.ids.insert(name, id);
        id
    }
}

pub(crate) fn check_vm(c: &mut Checker, sub_names: &mut SubNames, i: usize, v: RawVm) -> Vm {
    let whose = "every VM";
    let name = c.name(v.name, "name", whose, || yaml_path!["vms", i, "name"]);
    let subscription = c.name(v.subscription, "subscription", whose, || {
        yaml_path!["vms", i, "subscription"]
    });
    let interface = match v.interface {
        Field::Text(name) => match check_ifname(&name) {
            Ok(()) => Some(name),
            Err(why) => {
                c.error(Loc::Value(yaml_path!["vms", i, "interface"]), why);
                None
            }
        },
        other => c.required(other, "interface", whose, || {
            yaml_path!["vms", i, "interface"]
        }),
    };
    let mut addresses = Vec::new();
    for (j, field) in v.addresses.unwrap_or_default().into_iter().enumerate() {
        let here = || yaml_path!["vms", i, "addresses", j];
        let Some(text) = c.item(field, "address", "addresses", here) else {
            continue;
        };
        match IpAddr::from_str(&text) {
            Ok(a) => addresses.push(a),
            Err(_) => c.error(
                Loc::Value(here()),
                format!("`{text}` is not an IPv4 or IPv6 address"),
            ),
        }
    }
    let started_at = || yaml_path!["vms", i, "started"];
    let started = c
        .optional(v.started, "started", started_at)
        .and_then(|t| c.time(&t, "started", started_at));
    let override_verdict = c.choice::<Verdict>(v.override_verdict, "override", || {
        yaml_path!["vms", i, "override"]
    });
    let name = name.unwrap_or_default();
    Vm {
        key: vm_key(&name),
        name: name.into_boxed_str(),
        interface: interface.unwrap_or_default().into_boxed_str(),
        addresses: addresses.into_boxed_slice(),
        started,
        override_verdict,
        subscription_index: subscription.map_or(NO_SUBSCRIPTION, |s| sub_names.id(s)),
    }
}

/// Points each VM at its subscription, once all are known (`vms[i]` is
/// the `first + i`th VM of the file).
pub(crate) fn resolve_subscriptions(
    c: &mut Checker,
    vms: &mut [Vm],
    names: &SubNames,
    first: usize,
    subs: &[Subscription],
) {
    let mut sub_index: HashMap<&str, u32> = HashMap::with_capacity(subs.len());
    for (i, s) in subs.iter().enumerate() {
        sub_index.entry(&s.id).or_insert(i as u32);
    }
    // Each name the VMs give, resolved once.
    let resolved: Vec<Option<u32>> = names
        .names
        .iter()
        .map(|n| sub_index.get(&**n).copied())
        .collect();
    for (i, vm) in vms.iter_mut().enumerate() {
        let id = vm.subscription_index;
        if id == NO_SUBSCRIPTION {
            vm.subscription_index = 0;
            continue;
        }
        if let Some(s) = resolved.get(id as usize).copied().flatten() {
            vm.subscription_index = s;
        } else {
            c.error(
                Loc::Value(yaml_path!["vms", first + i, "subscription"]),
                format!(
                    "unknown subscription `{}`; no subscription under `subscriptions` has that id",
                    names.names.get(id as usize).map_or("", |n| &**n)
                ),
            );
            vm.subscription_index = 0;
        }
    }
}

/// Duplicate VM names and interfaces; the index of the VMs.
pub(crate) fn vm_duplicates(c: &mut Checker, vms: &[Vm]) -> VmIndex {
    let mut index = VmIndex::with_capacity(vms.len());
    for (i, vm) in vms.iter().enumerate() {
        let name_first = (!vm.name.is_empty())
            .then(|| index.by_name(vms, &vm.name))
            .flatten();
        let interface_first = (!vm.interface.is_empty())
            .then(|| index.by_interface(vms, &vm.interface))
            .flatten();
        let mut duplicate = |key: &str, first: usize, message: String| {
            c.duplicate(
                Loc::Value(yaml_path!["vms", i, key]),
                Loc::Value(yaml_path!["vms", first, key]),
                message,
            );
        };
        if let Some(f) = name_first {
            duplicate("name", f, format!("duplicate VM name `{}`", vm.name));
        }
        if let Some(f) = interface_first {
            let message = format!(
                "duplicate interface `{}`, already the interface of VM `{}`",
                vm.interface, vms[f].name
            );
            duplicate("interface", f, message);
        }
        // Only the first of a name or an interface is indexed (the policy
        // is invalid anyway when either repeats).
        if name_first.is_none() {
            index.insert_key(vms, i);
        }
        if interface_first.is_none() {
            index.insert_interface(vms, i);
        }
    }
    index
}
