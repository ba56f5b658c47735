//! What `/metrics` shows: the counters and attempts read from the maps, by
//! VM in policy order (unknown interfaces under their own name), the
//! verdicts, the interfaces by hook and by kind.

use std::collections::BTreeMap;

use super::core::{Agent, AgentError};
use crate::{datapath::Hook, metrics};

impl Agent {
    /// What the metrics show now, counters read from the maps.
    pub fn snapshot(&self, ready: bool) -> Result<metrics::Snapshot, AgentError> {
        let totals = self.datapath.maps.counters_by_key()?;
        let attempts = self.datapath.maps.attempts_by_key()?;
        let mut snapshot = metrics::Snapshot {
            ready,
            reloads: self.stats.reloads,
            reload_failures: self.stats.reload_failures,
            attach_failures: self.stats.attach_failures,
            last_apply_seconds: self.stats.last_apply.map_or(0, |t| t.timestamp()),
            ..metrics::Snapshot::default()
        };
        if let Some(p) = &self.state.policy {
            snapshot.policy_generation = p.generation;
            snapshot.policy_hash.clone_from(&p.hash);
            snapshot.policy_path = p.path.display().to_string();
        }
        if let Some(verdicts) = &self.verdicts {
            let blocked = verdicts.blocked();
            snapshot.vms_blocked = blocked as u64;
            snapshot.vms_allowed = (verdicts.len() - blocked) as u64;
            // The VMs with counters (or attempts), in policy order.
            let policy = &self.policy;
            let name = |i: usize| {
                let vm = &policy.vms[i];
                (
                    vm.name.to_string(),
                    policy.subscription_of(vm).id.to_string(),
                )
            };
            let in_policy_order = |keys: Vec<u64>| {
                let mut found: Vec<(usize, u64)> = keys
                    .into_iter()
                    .filter_map(|key| policy.vm_index_by_key(key).map(|i| (i, key)))
                    .collect();
                found.sort_unstable();
                found
            };
            for (i, key) in in_policy_order(totals.keys().copied().collect()) {
                let (vm, subscription) = name(i);
                snapshot.counters.push(metrics::VmCounters {
                    vm,
                    subscription,
                    counters: totals[&key],
                });
            }
            for (i, key) in in_policy_order(attempts.keys().copied().collect()) {
                let (vm, subscription) = name(i);
                snapshot.attempts.push(metrics::VmAttempts {
                    vm,
                    subscription,
                    attempts: attempts[&key],
                });
            }
        }
        // Interfaces that belong to no VM count under their own name.
        for record in self.state.interfaces.values() {
            if record.vm.is_some() {
                continue;
            }
            if let Some(c) = totals.get(&record.key) {
                snapshot.counters.push(metrics::VmCounters {
                    vm: format!("unknown:{}", record.name),
                    subscription: String::new(),
                    counters: *c,
                });
            }
            if let Some(a) = attempts.get(&record.key) {
                snapshot.attempts.push(metrics::VmAttempts {
                    vm: format!("unknown:{}", record.name),
                    subscription: String::new(),
                    attempts: *a,
                });
            }
        }
        // Every hook, 0 when none uses it: a series that comes and goes is
        // hard to alert on.
        let mut hooks: BTreeMap<String, u64> = Hook::ALL
            .iter()
            .map(|h| (h.as_str().to_owned(), 0))
            .collect();
        for record in self.state.interfaces.values() {
            *hooks.entry(record.hook.as_str().to_owned()).or_default() += 1;
        }
        snapshot.interfaces_by_hook = hooks.into_iter().collect();
        let mut kinds: BTreeMap<(String, String), u64> = BTreeMap::new();
        for record in self.state.interfaces.values() {
            *kinds
                .entry((record.kind.clone(), record.coverage.as_str().to_owned()))
                .or_default() += 1;
        }
        snapshot.interfaces_by_kind = kinds.into_iter().collect();
        Ok(snapshot)
    }
}
