//! Blocked connection attempts: the events the programs send, logged under
//! the VM (or unknown interface) they came from by the policy in force, and
//! each VM's last ones saved for `status --vm`.

use std::collections::BTreeSet;

use egress_guard_common::maps::AttemptEvent;
use tracing::warn;

use super::core::Agent;
use crate::events::{self, Attempt, Clock, Who};

impl Agent {
    /// Logs events from the ring buffer.
    pub fn on_attempts(&mut self, batch: &[AttemptEvent]) {
        let clock = Clock::now();
        for event in batch {
            let Some(attempt) = Attempt::from_event(event, &clock) else {
                continue;
            };
            let who = self.who(&attempt);
            self.attempts.record(&attempt, &who);
        }
    }

    /// Closes the repeat windows that ended (their summaries are logged) and
    /// saves the last attempts if they changed. The run loop calls it every
    /// second.
    pub fn tick_attempts(&mut self) {
        self.attempts.flush(events::monotonic_ns());
        self.save_attempts();
    }

    /// Before the agent stops: every open window is summarised, the last
    /// attempts saved.
    pub fn finish_attempts(&mut self) {
        self.attempts.flush_all();
        self.save_attempts();
    }

    pub(super) fn save_attempts(&mut self) {
        if let Some(recent) = self.attempts.take_changed()
            && let Err(e) = self.states.save_attempts(recent)
        {
            warn!(error = %crate::error_chain(&e), "saving the last blocked attempts");
        }
    }

    /// The VM (or unknown interface) of an attempt, by the policy in force.
    pub(super) fn who(&self, attempt: &Attempt) -> Who {
        let record = self.state.interfaces.get(&attempt.ifindex);
        let interface = record.map_or_else(
            || {
                self.known
                    .get(&attempt.ifindex)
                    .cloned()
                    .unwrap_or_else(|| format!("ifindex {}", attempt.ifindex))
            },
            |r| r.name.clone(),
        );
        if let Some(i) = self.policy.vm_index_by_key(attempt.vm_key) {
            let vm = &self.policy.vms[i];
            return Who {
                vm: vm.name.to_string(),
                subscription: self.policy.subscription_of(vm).id.to_string(),
                interface,
            };
        }
        let vm = match record {
            Some(r) if r.vm.is_none() && r.key == attempt.vm_key => format!("unknown:{}", r.name),
            _ => "unknown".to_owned(),
        };
        Who {
            vm,
            subscription: String::new(),
            interface,
        }
    }

    /// The attempt log keeps attempts only under the VMs of the policy in
    /// force and its unknown interfaces.
    pub(super) fn retain_attempts(&mut self) {
        let unknown: BTreeSet<String> = self
            .state
            .interfaces
            .values()
            .filter(|r| r.vm.is_none())
            .map(|r| format!("unknown:{}", r.name))
            .collect();
        let policy = &self.policy;
        self.attempts
            .retain_vms(|vm| policy.vm_index_by_name(vm).is_some() || unknown.contains(vm));
    }
}
