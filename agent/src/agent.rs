//! The running agent: from the policy and the interfaces that exist to the
//! maps and links the kernel holds, and back again whenever either changes.
//!
//! [`Agent::reconcile`] is the one place that makes the kernel match the
//! policy. It is idempotent: run twice on the same inputs, the second run
//! writes nothing.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use egress_guard_common::maps::{
    ACTION_DROP, ACTION_ICMP, ACTION_RESET, Config, IfaceEntry, MODE_AUDIT, MODE_ENFORCE,
    VERDICT_ALLOW, VERDICT_BLOCK,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    datapath::{
        Capacities, Datapath, DatapathError, Hook, KernelState, LinkError, PinDir, SyncReport,
        links::{pinned_links, unpin},
        maps::MapsError,
    },
    netdev::{self, DevKind, NetDev, NetdevError},
    policy::{self, Desired, Policy, PolicyError},
    state::{
        AgentLock, AgentState, EnforcedInterface, PolicyInForce, StateDir, StateError, VmRecord,
    },
};

#[derive(Debug, Error)]
pub enum AgentError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Datapath(#[from] DatapathError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Netdev(#[from] NetdevError),
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl AgentError {
    /// 2 for an invalid policy (the operator's input), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            AgentError::Policy(PolicyError::Invalid(_)) => 2,
            _ => 1,
        }
    }
}

/// The hook `auto` picks for a kind of interface. From the allowed-traffic
/// throughput measured across a veth (README, "Choosing a hook"): native XDP
/// on veth disables GRO/GSO on the path and costs most of the throughput;
/// tcx ingress costs about nothing and sees GSO skbs whole. On tap, native
/// XDP runs on the vhost-net batch path but falls back to generic XDP for
/// every GSO packet, so tc is the safe default there too. A physical NIC or
/// representor with a driver XDP hook drops before any skb exists.
pub fn auto_hook(kind: &DevKind) -> Hook {
    match kind {
        DevKind::Physical => Hook::Xdp,
        DevKind::Veth | DevKind::Tap | DevKind::Macvtap | DevKind::Other(_) => Hook::Tc,
    }
}

fn hook_for(policy: policy::Hook, kind: &DevKind) -> Hook {
    match policy {
        policy::Hook::Auto => auto_hook(kind),
        policy::Hook::Xdp => Hook::Xdp,
        policy::Hook::XdpGeneric => Hook::XdpGeneric,
        policy::Hook::Tc => Hook::Tc,
    }
}

/// The kernel's view of the settings of a policy.
pub fn kernel_config(desired: &Desired, generation: u64) -> Config {
    let e = &desired.enforcement;
    Config {
        mode: match e.mode {
            policy::Mode::Enforce => MODE_ENFORCE,
            policy::Mode::Audit => MODE_AUDIT,
        },
        action: match e.action {
            policy::Action::Drop => ACTION_DROP,
            policy::Action::Reset => ACTION_RESET,
            policy::Action::Icmp => ACTION_ICMP,
        },
        generation,
    }
}

fn verdict_code(verdict: policy::Verdict) -> u32 {
    match verdict {
        policy::Verdict::Allow => VERDICT_ALLOW,
        policy::Verdict::Block => VERDICT_BLOCK,
    }
}

/// One interface the policy wants enforced, as it exists now.
#[derive(Clone, Debug)]
struct Target {
    dev: NetDev,
    entry: IfaceEntry,
    hook: Hook,
    record: EnforcedInterface,
}

/// What one reconcile did.
#[derive(Clone, Debug, Default)]
pub struct Reconciled {
    /// Interfaces enforced now.
    pub enforced: usize,
    pub blocked: usize,
    /// Interfaces that could not be enforced (each logged).
    pub failed: usize,
    /// Map entries written and removed.
    pub written: usize,
    pub removed: usize,
    /// Links put on, moved to this build's program, or taken off.
    pub attached: usize,
    pub detached: usize,
}

/// The agent, holding the lock of its pin directory.
pub struct Agent {
    pins: PinDir,
    states: StateDir,
    _lock: AgentLock,
    datapath: Datapath,
    state: AgentState,
    policy_path: PathBuf,
    policy: Policy,
    /// Our programs' ids, to tell a link that already runs them.
    program_ids: [u32; 2],
}

impl Agent {
    /// Validates the policy, takes the pin directory's lock, and loads (or
    /// re-adopts) the pinned maps. Touches no interface yet.
    pub fn start(policy_path: &Path, pins: PinDir, states: StateDir) -> Result<Self, AgentError> {
        let policy = policy::load(policy_path)?;
        let lock = states.lock()?;
        let state = states.load()?.unwrap_or_else(AgentState::new);
        let capacities = Capacities::for_vms(policy.vms.len());
        let mut datapath = Datapath::load_pinned(&pins, capacities)?;
        if let Some(old) = datapath.replaces().map(Path::to_owned) {
            let carried = datapath.maps.carry_counters(&old)?;
            info!(from = %old.display(), vms = carried, "carried the counters over to the new maps");
        }
        let program_ids = datapath.program_ids()?;
        Ok(Self {
            pins,
            states,
            _lock: lock,
            datapath,
            state,
            policy_path: policy_path.to_owned(),
            policy,
            program_ids,
        })
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// Makes maps and links match the policy at `now` and the interfaces
    /// that exist, then saves the state.
    pub async fn reconcile(&mut self, now: DateTime<Utc>) -> Result<Reconciled, AgentError> {
        let devs = netdev::list().await?;
        let desired = self.evaluate(now);
        let generation = self.generation();
        let targets = targets(&desired, &devs);

        // Maps first: an interface's entry exists before its program does.
        let (actual, wanted, sync) = self.sync_maps(&desired, &targets, generation)?;
        let mut done = Reconciled {
            written: sync.written,
            removed: sync.removed,
            ..Reconciled::default()
        };
        let enforced = self.sync_links(&targets, &mut done)?;
        self.retire(&actual, &wanted, &desired, &targets, &mut done)?;
        self.commit_map_set(&done)?;

        done.enforced = enforced.len();
        done.blocked = enforced
            .values()
            .filter(|r| r.verdict == policy::Verdict::Block.as_str())
            .count();
        self.record(now, generation, &desired, enforced)?;
        Ok(done)
    }

    /// The policy's verdicts at `now`, with the interface creations seen.
    fn evaluate(&self, now: DateTime<Utc>) -> Desired {
        let interface_created: HashMap<String, DateTime<Utc>> = self
            .state
            .interface_created
            .iter()
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        policy::evaluate(
            &self.policy,
            &policy::Facts {
                now,
                interface_created: &interface_created,
            },
        )
    }

    /// Writes what differs between the maps and the policy; returns what the
    /// maps held, what they hold now, and what was written.
    fn sync_maps(
        &mut self,
        desired: &Desired,
        targets: &[Target],
        generation: u64,
    ) -> Result<(KernelState, KernelState, SyncReport), AgentError> {
        let mut wanted = KernelState {
            config: kernel_config(desired, generation),
            ports: desired.enforcement.ports.iter().copied().collect(),
            ..KernelState::default()
        };
        wanted.set_allowed(&desired.enforcement.allow_destinations);
        wanted.ifaces = targets.iter().map(|t| (t.dev.index, t.entry)).collect();
        let actual = self.datapath.maps.read_state()?;
        let sync = self.datapath.maps.apply(&actual, &wanted)?;
        Ok((actual, wanted, sync))
    }

    /// Puts this build's program on every target that does not run it yet;
    /// returns the interfaces enforced.
    fn sync_links(
        &mut self,
        targets: &[Target],
        done: &mut Reconciled,
    ) -> Result<BTreeMap<u32, EnforcedInterface>, AgentError> {
        let pinned = pinned_links(&self.pins)?;
        let mut enforced = BTreeMap::new();
        for target in targets {
            let runs_ours = pinned.iter().any(|p| {
                p.ifindex == target.dev.index
                    && target.hook.accepts(p.hook)
                    && p.is_live()
                    && p.target
                        .is_some_and(|t| self.program_ids.contains(&t.prog_id))
            });
            let hook = if runs_ours {
                target.hook
            } else {
                match self.datapath.enforce(
                    &self.pins,
                    target.dev.index,
                    &target.dev.name,
                    target.hook,
                ) {
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
            record.hook = hook.to_string();
            enforced.insert(target.dev.index, record);
        }
        Ok(enforced)
    }

    /// Takes the program off interfaces that are gone, no longer enforced,
    /// or moved to another hook, then drops their map entries, and the
    /// counters of VMs that left the policy.
    fn retire(
        &mut self,
        actual: &KernelState,
        wanted: &KernelState,
        desired: &Desired,
        targets: &[Target],
        done: &mut Reconciled,
    ) -> Result<(), AgentError> {
        let keep: BTreeSet<(u32, Hook)> = targets.iter().map(|t| (t.dev.index, t.hook)).collect();
        for link in pinned_links(&self.pins)? {
            let wanted_here = keep
                .iter()
                .any(|&(ifindex, hook)| ifindex == link.ifindex && hook.accepts(link.hook));
            if !wanted_here {
                unpin(&link.path)?;
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
        let keys: BTreeSet<u64> = desired
            .vms
            .iter()
            .map(|vm| vm.key)
            .chain(targets.iter().map(|t| t.entry.vm_key))
            .collect();
        done.removed += self.datapath.maps.prune_counters(&keys)?;
        Ok(())
    }

    /// Once every link runs our programs, the map set they use becomes the
    /// one in use, and older sets go.
    fn commit_map_set(&self, done: &Reconciled) -> Result<(), AgentError> {
        if done.failed > 0 {
            return Ok(());
        }
        if let Some(set) = self.datapath.map_set()
            && (self.pins.current_map_set().as_deref() != Some(set)
                || self.pins.map_sets().len() > 1)
        {
            self.pins.commit_map_set(set)?;
            info!(maps = %set.display(), "map set in use");
        }
        Ok(())
    }

    /// The generation of the policy in force: the saved one if the file is
    /// the same, the next one otherwise.
    fn generation(&self) -> u64 {
        match &self.state.policy {
            Some(p) if p.hash == self.policy.hash => p.generation,
            Some(p) => p.generation + 1,
            None => 1,
        }
    }

    fn record(
        &mut self,
        now: DateTime<Utc>,
        generation: u64,
        desired: &Desired,
        interfaces: BTreeMap<u32, EnforcedInterface>,
    ) -> Result<(), AgentError> {
        let same_policy = self
            .state
            .policy
            .as_ref()
            .is_some_and(|p| p.generation == generation && p.path == self.policy_path);
        if !same_policy {
            self.state.policy = Some(PolicyInForce {
                path: self.policy_path.clone(),
                hash: self.policy.hash.clone(),
                generation,
                applied_at: now,
            });
        }
        self.state.interfaces = interfaces;
        self.state.vms = desired
            .vms
            .iter()
            .map(|vm| VmRecord {
                name: vm.name.clone(),
                subscription: vm.subscription.clone(),
                offer: vm.offer.clone(),
                interface: vm.interface.clone(),
                verdict: vm.verdict.as_str().to_owned(),
                reason: vm.reason.to_string(),
                reason_code: vm.reason.code().to_owned(),
                key: vm.key,
            })
            .collect();
        self.states.save(&self.state)?;
        Ok(())
    }
}

/// The interfaces that exist and that the policy wants enforced.
fn targets(desired: &Desired, devs: &[NetDev]) -> Vec<Target> {
    devs.iter()
        .filter_map(|dev| {
            let verdict = desired.interface(&dev.name)?;
            let hook = hook_for(desired.enforcement.hook, &dev.kind);
            Some(Target {
                dev: dev.clone(),
                entry: IfaceEntry {
                    vm_key: verdict.key,
                    verdict: verdict_code(verdict.verdict),
                    flags: 0,
                },
                hook,
                record: EnforcedInterface {
                    name: dev.name.clone(),
                    hook: hook.to_string(),
                    vm: verdict.vm.map(|vm| vm.name.clone()),
                    verdict: verdict.verdict.as_str().to_owned(),
                    key: verdict.key,
                },
            })
        })
        .collect()
}
