//! The reconcile: the one place that makes the kernel match the policy
//! ([`crate::desired`]) and the interfaces that exist.
//!
//! Invariants:
//! - **Entry before link**: the maps are written before any program is put
//!   on an interface, so an interface's entry exists before its program
//!   runs.
//! - **No window**: links move to a new program with `bpf_link_update`
//!   (atomic per interface); a link is taken off only once the interface is
//!   gone, no longer enforced, or enforced on another hook.
//! - **Commit only when nothing failed**: a new map set becomes the one in
//!   use only when every link runs the programs that use it.
//! - **Idempotent**: run twice on the same inputs, the second run writes
//!   nothing (not even the state file).
//! - The verdicts are evaluated again only when they can have changed: a new
//!   policy, an interface created (rule 3), or the next instant a verdict
//!   changes by time alone.

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Instant,
};

use chrono::{DateTime, Utc};
use tracing::{info, warn};

use super::core::{Agent, AgentError, Reconciled, commit_datapath};
use crate::{
    datapath::{Capacities, Hook, KernelState, SyncReport},
    desired::{self, Target},
    netdev, policy,
    state::EnforcedInterface,
};

impl Agent {
    /// Makes maps and links match the policy at `now` and the interfaces
    /// that exist, then saves the state (if it changed). The verdicts are
    /// evaluated again only if they can have changed since they were.
    pub async fn reconcile(&mut self, now: DateTime<Utc>) -> Result<Reconciled, AgentError> {
        let began = Instant::now();
        let devs = netdev::list().await?;
        self.known = devs.iter().map(|d| (d.index, d.name.clone())).collect();
        let due = self
            .verdicts
            .as_ref()
            .is_none_or(|v| v.next_change.is_some_and(|t| t <= now));
        if self.stale || due {
            self.evaluate(now);
        }
        let verdicts = self.verdicts.as_ref().expect("evaluated above");
        let generation = self.generation();
        let targets = desired::targets(&self.policy, verdicts, &devs);
        self.grow_if_needed(self.policy.vms.len().max(targets.len()))?;

        // Maps first: an interface's entry exists before its program does.
        let (actual, wanted, sync) = self.sync_maps(&targets, generation)?;
        let mut done = Reconciled {
            written: sync.written,
            removed: sync.removed,
            ..Reconciled::default()
        };
        let enforced = self.sync_links(&targets, &mut done)?;
        self.retire(&actual, &wanted, &targets, &mut done)?;
        self.commit_map_set(&done)?;

        done.enforced = enforced.len();
        done.blocked = enforced
            .values()
            .filter(|r| r.verdict == policy::Verdict::Block)
            .count();
        self.record(now, generation, enforced)?;
        self.retain_attempts();
        self.stats.attach_failures += done.failed as u64;
        if done.failed == 0 {
            self.stats.last_apply = Some(now);
        }
        done.took = began.elapsed();
        Ok(done)
    }

    /// Moves to larger maps when the policy outgrows them: a new map set
    /// and new programs, filled by the reconcile that follows before any
    /// link moves to them, so no interface is ever without a full map.
    pub(super) fn grow_if_needed(&mut self, entries: usize) -> Result<(), AgentError> {
        if self.datapath.capacity().fits(entries) {
            return Ok(());
        }
        let wanted = Capacities::for_vms(entries);
        info!(
            entries,
            from = self.datapath.capacity().ifaces,
            to = wanted.ifaces,
            "the policy outgrows the maps: moving to larger ones"
        );
        self.datapath = commit_datapath(self.datapath.stage_larger(wanted)?)?;
        self.program_ids = self.datapath.program_ids()?;
        Ok(())
    }

    /// Evaluates the policy's verdicts at `now`, with the interface
    /// creations seen.
    pub(super) fn evaluate(&mut self, now: DateTime<Utc>) {
        self.verdicts = Some(policy::verdicts(
            &self.policy,
            &policy::Facts {
                now,
                interface_created: &self.created,
            },
        ));
        self.stale = false;
    }

    /// Writes what differs between the maps and the policy; returns what the
    /// maps held, what they hold now, and what was written.
    pub(super) fn sync_maps(
        &mut self,
        targets: &[Target],
        generation: u64,
    ) -> Result<(KernelState, KernelState, SyncReport), AgentError> {
        let wanted = desired::wanted(&self.policy, generation, targets);
        let actual = self.datapath.maps.read_state()?;
        let sync = self.datapath.maps.apply(&actual, &wanted)?;
        Ok((actual, wanted, sync))
    }

    /// Puts this build's program on every target that does not run it yet;
    /// returns the interfaces enforced.
    pub(super) fn sync_links(
        &mut self,
        targets: &[Target],
        done: &mut Reconciled,
    ) -> Result<BTreeMap<u32, EnforcedInterface>, AgentError> {
        let pinned = self.datapath.links()?;
        let mut enforced = BTreeMap::new();
        for target in targets {
            let runs_ours = pinned.iter().any(|p| {
                p.ifindex == target.dev.index
                    && target.hook.accepts(p.hook)
                    && p.is_live()
                    && p.target.is_some_and(|t| {
                        self.program_ids.get(target.hook.program()) == Some(&t.prog_id)
                    })
            });
            let hook = if runs_ours {
                target.hook
            } else {
                match self
                    .datapath
                    .enforce(target.dev.index, &target.dev.name, target.hook)
                {
                    Ok(hook) => {
                        done.attached += 1;
                        info!(
                            interface = %target.dev.name,
                            ifindex = target.dev.index,
                            hook = %hook,
                            vm = target.record.vm.as_deref().unwrap_or("-"),
                            verdict = %target.record.verdict,
                            "enforcing"
                        );
                        warn_placement(target);
                        hook
                    }
                    Err(e) => {
                        warn!(
                            interface = %target.dev.name,
                            error = %crate::error_chain(&e),
                            "cannot enforce"
                        );
                        done.failed += 1;
                        continue;
                    }
                }
            };
            let mut record = target.record.clone();
            record.hook = hook;
            enforced.insert(target.dev.index, record);
        }
        Ok(enforced)
    }

    /// Takes the program off interfaces that are gone, no longer enforced,
    /// or moved to another hook, then drops their map entries, and the
    /// counters of VMs that left the policy.
    pub(super) fn retire(
        &mut self,
        actual: &KernelState,
        wanted: &KernelState,
        targets: &[Target],
        done: &mut Reconciled,
    ) -> Result<(), AgentError> {
        let keep: BTreeSet<(u32, Hook)> = targets.iter().map(|t| (t.dev.index, t.hook)).collect();
        for link in self.datapath.links()? {
            let wanted_here = keep
                .iter()
                .any(|&(ifindex, hook)| ifindex == link.ifindex && hook.accepts(link.hook));
            if !wanted_here {
                self.datapath.detach(&link)?;
                done.detached += 1;
                info!(ifindex = link.ifindex, hook = %link.hook, "took the program off");
            }
        }
        for ifindex in actual.ifaces.keys() {
            if !wanted.ifaces.contains_key(ifindex)
                && self.datapath.maps.remove_interface(*ifindex)?
            {
                done.removed += 1;
            }
        }
        // The counters kept: those of a VM of the policy, or of an
        // enforced interface. Only keys that have counters are looked at
        // (a VM has some once a packet of it was held back).
        let keys: BTreeSet<u64> = self
            .datapath
            .maps
            .counters_by_key()?
            .into_keys()
            .filter(|&key| {
                self.policy.vm_index_by_key(key).is_some()
                    || targets.iter().any(|t| t.entry.vm_key == key)
            })
            .collect();
        done.removed += self.datapath.maps.prune_counters(&keys)?;
        Ok(())
    }

    /// Once every link runs our programs, the map set they use becomes the
    /// one in use, and older sets go.
    pub(super) fn commit_map_set(&self, done: &Reconciled) -> Result<(), AgentError> {
        if done.failed > 0 {
            return Ok(());
        }
        if let Some(set) = self.datapath.commit_map_set()? {
            info!(maps = %set.display(), "map set in use");
        }
        Ok(())
    }
}

/// Says what an operator must know of where a target's program went: a
/// setting that was overridden, a kind whose coverage is not proven,
/// replies that cannot reach the VM.
pub(super) fn warn_placement(target: &Target) {
    let dev = &target.dev;
    if let Some(why) = target.placement.overridden {
        warn!(
            interface = %dev.name,
            kind = %dev.kind,
            hook = %target.hook,
            "the policy's hook cannot see this interface's VM traffic: {why}"
        );
    }
    if let Some(caveat) = target.placement.coverage.caveat() {
        warn!(
            interface = %dev.name,
            kind = %dev.kind,
            hook = %target.hook,
            "{caveat}"
        );
    }
    if target.replies_lost {
        warn!(
            interface = %dev.name,
            "native XDP on a veth cannot send the reset/icmp replies back to the VM (the veth driver drops XDP_TX frames to its peer): held-back segments are dropped without a reply; use hook tc or xdp-generic for replies"
        );
    }
}
