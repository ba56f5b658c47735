//! The whole validation: the VMs as they are read, then the rest of the
//! file, into a [`Policy`] or every issue found.
//!
//! Invariant: a policy is built only when no issue was found; the issues
//! are all found (not only the first), each with its path.

use crate::policy::{
    model::{Policy, Vm},
    raw::{RawPolicy, RawVm},
};

use super::{
    checker::{Checker, Issue},
    settings::{check_version, enforcement},
    subscriptions::{offer_table, subscriptions},
    vms::{SubNames, check_vm, resolve_subscriptions, vm_duplicates},
};

/// Checks what serde read and builds the policy, or says everything that is
/// wrong with it. VMs can be given one at a time as they are read
/// ([`Validator::vm`]), so that a large file's raw VMs are never all held.
pub struct Validator {
    c: Checker,
    vms: Vec<Vm>,
    /// The subscription names the VMs give, each once: a VM's
    /// `subscription_index` is an index here until [`resolve_subscriptions`]
    /// points it at its subscription.
    sub_names: SubNames,
}

impl Default for Validator {
    fn default() -> Self {
        Self::new()
    }
}

impl Validator {
    pub fn new() -> Self {
        Self {
            c: Checker::default(),
            vms: Vec::new(),
            sub_names: SubNames::default(),
        }
    }

    /// The `i`th item of `vms`.
    pub fn vm(&mut self, i: usize, raw: RawVm) {
        let vm = check_vm(&mut self.c, &mut self.sub_names, i, raw);
        self.vms.push(vm);
    }

    /// The rest of the file (its `vms`, if any, come after those given to
    /// [`Validator::vm`]).
    /// On errors: those kept, and how many more there are.
    pub fn finish(mut self, raw: RawPolicy, hash: String) -> Result<Policy, (Vec<Issue>, usize)> {
        for v in raw.vms.unwrap_or_default() {
            self.vm(self.vms.len(), v);
        }
        let Validator {
            mut c,
            mut vms,
            sub_names,
        } = self;
        check_version(&mut c, raw.version);
        let enforcement = enforcement(&mut c, raw.enforcement.unwrap_or_default());
        let offers = offer_table(&mut c, raw.offers.unwrap_or_default());
        let subscriptions = subscriptions(&mut c, raw.subscriptions.unwrap_or_default(), &offers);
        resolve_subscriptions(&mut c, &mut vms, &sub_names, 0, &subscriptions);
        drop(sub_names);
        let index = vm_duplicates(&mut c, &vms);

        if c.issues.is_empty() {
            vms.shrink_to_fit();
            Ok(Policy {
                enforcement,
                offers,
                subscriptions,
                vms,
                hash,
                index,
                source: None,
            })
        } else {
            Err((c.issues, c.dropped))
        }
    }
}
