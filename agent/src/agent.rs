//! The running agent: from the policy and the interfaces that exist to the
//! maps and links the kernel holds, and back again whenever either changes.
//!
//! [`Agent::reconcile`] is the one place that makes the kernel match the
//! policy. It is idempotent: run twice on the same inputs, the second run
//! writes nothing (not even the state file).
//!
//! The agent keeps the policy's verdicts compact (a byte a VM,
//! [`policy::Verdicts`]) and evaluates them again only when they can have
//! changed: a new policy, an interface created (rule 3), or the next instant
//! a verdict changes by time alone. The periodic reconcile lists the
//! interfaces and compares the kernel with those verdicts, which costs what
//! the interfaces cost, not what the policy does.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::maps::{MapData, RingBuf};
use chrono::{DateTime, SubsecRound as _, Utc};
use egress_guard_common::maps::{
    ACTION_DROP, ACTION_ICMP, ACTION_RESET, AttemptEvent, Config, DEFAULT_REPLY_BURST,
    DEFAULT_REPLY_RATE, IfaceEntry, MODE_AUDIT, MODE_ENFORCE, VERDICT_ALLOW, VERDICT_BLOCK,
};
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    datapath::{
        Capacities, Datapath, DatapathError, Hook, KernelState, LinkError, PinDir, Staged,
        SyncReport,
        links::{pinned_links, unpin},
        maps::MapsError,
    },
    events::{self, Attempt, AttemptLog, Clock, Who},
    metrics,
    netdev::{self, DevKind, LinkEvent, NetDev, NetdevError},
    placement::{self, Coverage, Placement},
    policy::{self, Enforcement, Policy, PolicyError, Verdicts},
    state::{AgentLock, AgentState, EnforcedInterface, PolicyInForce, StateDir, StateError},
};

mod reload;

pub use reload::{ReloadJob, ReloadStep};

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
    #[error(transparent)]
    Watch(#[from] crate::watch::WatchError),
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("starting a thread to load the programs: {0}")]
    Thread(#[source] std::io::Error),
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

/// The kernel's view of the settings of a policy.
pub fn kernel_config(e: &Enforcement, generation: u64) -> Config {
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
        ..Config::default()
    }
    .with_reply_rate(DEFAULT_REPLY_RATE, DEFAULT_REPLY_BURST)
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
    placement: Placement,
    record: EnforcedInterface,
    /// Native XDP on a veth with `reset` or `icmp`: the veth driver does not
    /// deliver the replies (XDP_TX) to its peer; the segments are only
    /// dropped. Warned about when the program is attached.
    replies_lost: bool,
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
    /// How long it took (for a reload: from reading the file on).
    pub took: Duration,
}

/// What a look at the policy file led to.
#[derive(Clone, Debug)]
pub enum Reload {
    /// The file holds the policy in force (or the one already rejected).
    Unchanged,
    /// A new policy is in force.
    Applied { generation: u64, done: Reconciled },
    /// The file is invalid (or unreadable); the policy in force stays.
    Rejected,
}

/// What a link event asks of the run loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterLinkEvent {
    /// Nothing more to do.
    Done,
    /// Re-evaluate the policy soon: a creation may open a pending exemption.
    Reconcile,
}

/// The agent, holding the lock of its pin directory.
pub struct Agent {
    pins: PinDir,
    states: StateDir,
    _lock: AgentLock,
    datapath: Datapath,
    state: AgentState,
    /// The state file as it was last written: a save that would write the
    /// same bytes is skipped.
    saved: Vec<u8>,
    /// The sha256 of the copy of the policy in the state directory.
    copied: Option<String>,
    policy_path: PathBuf,
    /// The bounds on reading the policy file.
    limits: policy::Limits,
    policy: Policy,
    /// The policy's verdicts, compact, for the reconcile, the per-interface
    /// fast path and the next time-driven change.
    verdicts: Option<Verdicts>,
    /// `state.interface_created`, as the policy engine looks it up.
    created: HashMap<String, DateTime<Utc>>,
    /// A fact the verdicts depend on changed since they were evaluated (an
    /// interface was created): the next reconcile evaluates them again.
    stale: bool,
    /// Interfaces known to exist, by ifindex: a NEWLINK for an ifindex not
    /// here is a creation.
    known: HashMap<u32, String>,
    /// Our programs' ids, to tell a link that already runs them.
    program_ids: BTreeMap<&'static str, u32>,
    /// What the metrics count about the agent itself.
    pub stats: AgentStats,
    /// The log of blocked connection attempts, and each VM's last ones.
    attempts: AttemptLog,
}

/// Counts of what the agent did since it started.
#[derive(Clone, Copy, Debug, Default)]
pub struct AgentStats {
    /// New policies applied after the first.
    pub reloads: u64,
    /// Policy files rejected.
    pub reload_failures: u64,
    /// Failed attempts to put the program on an interface.
    pub attach_failures: u64,
    /// The last reconcile that enforced every interface.
    pub last_apply: Option<DateTime<Utc>>,
}

impl Agent {
    /// Validates the policy, takes the pin directory's lock, and loads (or
    /// re-adopts) the pinned maps. Touches no interface yet.
    ///
    /// The programs are loaded and verified on another thread while the
    /// policy is read ([`Datapath::stage`]: the maps already pinned are
    /// opened, new ones are made unpinned). Nothing is written to the pin
    /// directory until the policy is known to be valid: an invalid one
    /// drops what was loaded, and the kernel keeps nothing of it.
    pub fn start(
        policy_path: &Path,
        limits: policy::Limits,
        pins: PinDir,
        states: StateDir,
    ) -> Result<Self, AgentError> {
        let bytes = policy::read(policy_path, limits)?;
        let lock = match states.lock() {
            Ok(lock) => lock,
            // Another agent: an invalid policy is still said first.
            Err(e) => {
                policy::from_vec(policy_path, bytes)?;
                return Err(e.into());
            }
        };
        // Sized from a count of the file's VMs made before it is read;
        // a policy that turns out larger grows the maps at the first
        // reconcile.
        let capacities = Capacities::for_vms(policy::estimate_vms(&bytes));
        let staging = {
            let pins = pins.clone();
            std::thread::Builder::new()
                .name("load-programs".to_owned())
                .spawn(move || Datapath::stage(&pins, capacities))
                .map_err(AgentError::Thread)?
        };
        let policy = policy::from_vec(policy_path, bytes);
        let staged = staging
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let policy = policy?;
        // The state is the agent's own memory, not its input: one that does
        // not read is set aside (the policy file is the truth, and what is
        // pinned stays enforced meanwhile), and rewritten at the first save.
        let mut state = match states.load() {
            Ok(Some(state)) => state,
            Ok(None) => AgentState::new(),
            Err(e) => {
                warn!(
                    error = %crate::error_chain(&e),
                    "the saved state does not read; starting afresh from the policy file (what is pinned stays enforced)"
                );
                AgentState::new()
            }
        };
        let dropped = state.sanitize(Utc::now());
        if dropped > 0 {
            warn!(
                dropped,
                "the saved state named interface creations no agent could have seen (in the future, or names Linux never gives): dropped"
            );
        }
        let datapath = commit_datapath(&pins, staged?)?;
        // The last attempts are a convenience for `status --vm`: a file
        // that cannot be read is started afresh, not a reason to stop.
        let recent = states.load_attempts().unwrap_or_else(|e| {
            warn!(error = %crate::error_chain(&e), "the last blocked attempts are lost");
            None
        });
        let mut agent = Self {
            pins,
            states,
            _lock: lock,
            datapath,
            created: state
                .interface_created
                .iter()
                .map(|(k, v)| (k.clone(), *v))
                .collect(),
            state,
            saved: Vec::new(),
            copied: None,
            policy_path: policy_path.to_owned(),
            limits,
            policy,
            verdicts: None,
            stale: true,
            known: HashMap::new(),
            program_ids: BTreeMap::new(),
            stats: AgentStats::default(),
            attempts: AttemptLog::new(events::DEFAULT_REPEAT_WINDOW, recent.unwrap_or_default()),
        };
        agent.program_ids = agent.datapath.program_ids()?;
        Ok(agent)
    }

    /// Repeated attempts from a VM to one destination within `window` are
    /// logged once, then summarised.
    pub fn set_repeat_window(&mut self, window: std::time::Duration) {
        let recent = self.attempts.recent().clone();
        self.attempts = AttemptLog::new(window, recent);
    }

    /// The ring buffer of blocked connection attempts of the programs
    /// loaded now: once after the start, and once after each move to a new
    /// map set (the run loop reads it).
    pub fn take_event_ring(&mut self) -> Option<RingBuf<MapData>> {
        self.datapath.take_events()
    }

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

    fn save_attempts(&mut self) {
        if let Some(recent) = self.attempts.take_changed()
            && let Err(e) = self.states.save_attempts(recent)
        {
            warn!(error = %crate::error_chain(&e), "saving the last blocked attempts");
        }
    }

    /// The VM (or unknown interface) of an attempt, by the policy in force.
    fn who(&self, attempt: &Attempt) -> Who {
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
    fn retain_attempts(&mut self) {
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

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn state(&self) -> &AgentState {
        &self.state
    }

    /// The next instant at which a verdict changes by time alone.
    pub fn next_change(&self) -> Option<DateTime<Utc>> {
        self.verdicts.as_ref().and_then(|v| v.next_change)
    }

    /// Makes the next reconcile evaluate the verdicts again (SIGHUP).
    pub fn refresh_verdicts(&mut self) {
        self.stale = true;
    }

    /// Handles one rtnetlink event at once, without a full reconcile: a
    /// new interface the policy wants enforced gets its map entry and its
    /// program now; a vanished one loses its link and entry (its VM's
    /// counters stay).
    pub fn on_link_event(
        &mut self,
        event: LinkEvent,
        now: DateTime<Utc>,
    ) -> Result<AfterLinkEvent, AgentError> {
        match event {
            LinkEvent::New(dev) => self.on_new_link(&dev, now),
            LinkEvent::Del { index, name } => {
                self.known.remove(&index);
                let mut changed = false;
                for link in pinned_links(&self.pins)? {
                    if link.ifindex == index {
                        unpin(&link.path)?;
                        changed = true;
                    }
                }
                changed |= self.datapath.maps.remove_interface(index)?;
                if self.state.interfaces.remove(&index).is_some() || changed {
                    info!(
                        ifindex = index,
                        interface = name.as_deref().unwrap_or("?"),
                        "interface gone; took the program off"
                    );
                    self.save()?;
                }
                Ok(AfterLinkEvent::Done)
            }
        }
    }

    fn on_new_link(
        &mut self,
        dev: &NetDev,
        now: DateTime<Utc>,
    ) -> Result<AfterLinkEvent, AgentError> {
        let previous = self.known.insert(dev.index, dev.name.clone());
        let created = previous.is_none();
        let renamed = previous.is_some_and(|old| old != dev.name);
        let Some(verdicts) = &self.verdicts else {
            return Ok(AfterLinkEvent::Reconcile);
        };
        let Some(target) = target(&self.policy, verdicts, dev) else {
            // Not ours, or no longer ours under its new name.
            return Ok(if renamed {
                AfterLinkEvent::Reconcile
            } else {
                AfterLinkEvent::Done
            });
        };
        if !created && !renamed && self.state.interfaces.contains_key(&dev.index) {
            // Up/down or another attribute: nothing changes for us.
            return Ok(AfterLinkEvent::Done);
        }
        if created {
            // Rule 3: a new interface is the VM stopped and started.
            // Whole seconds, rounded down: never later than the creation.
            let at = now.trunc_subsecs(0);
            self.state.interface_created.insert(dev.name.clone(), at);
            self.created.insert(dev.name.clone(), at);
            self.stale = true;
        }
        self.datapath.maps.set_interface(dev.index, target.entry)?;
        let hook = self
            .datapath
            .enforce(&self.pins, dev.index, &dev.name, target.hook)
            .inspect_err(|_| self.stats.attach_failures += 1)?;
        info!(
            interface = %dev.name,
            ifindex = dev.index,
            hook = %hook,
            vm = target.record.vm.as_deref().unwrap_or("-"),
            verdict = %target.record.verdict,
            "new interface enforced"
        );
        warn_placement(&target);
        let mut record = target.record;
        record.hook = hook.to_string();
        self.state.interfaces.insert(dev.index, record);
        self.save()?;
        Ok(AfterLinkEvent::Reconcile)
    }

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
        let targets: Vec<Target> = devs
            .iter()
            .filter_map(|dev| target(&self.policy, verdicts, dev))
            .collect();
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
            .filter(|r| r.verdict == policy::Verdict::Block.as_str())
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
            *hooks.entry(record.hook.clone()).or_default() += 1;
        }
        snapshot.interfaces_by_hook = hooks.into_iter().collect();
        let mut kinds: BTreeMap<(String, String), u64> = BTreeMap::new();
        for record in self.state.interfaces.values() {
            *kinds
                .entry((record.kind.clone(), record.coverage.clone()))
                .or_default() += 1;
        }
        snapshot.interfaces_by_kind = kinds.into_iter().collect();
        Ok(snapshot)
    }

    /// Moves to larger maps when the policy outgrows them: a new map set
    /// and new programs, filled by the reconcile that follows before any
    /// link moves to them, so no interface is ever without a full map.
    fn grow_if_needed(&mut self, entries: usize) -> Result<(), AgentError> {
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
        self.datapath = load_datapath(&self.pins, wanted)?;
        self.program_ids = self.datapath.program_ids()?;
        Ok(())
    }

    /// Evaluates the policy's verdicts at `now`, with the interface
    /// creations seen.
    fn evaluate(&mut self, now: DateTime<Utc>) {
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
    fn sync_maps(
        &mut self,
        targets: &[Target],
        generation: u64,
    ) -> Result<(KernelState, KernelState, SyncReport), AgentError> {
        let e = &self.policy.enforcement;
        let mut wanted = KernelState {
            config: kernel_config(e, generation),
            ports: e.ports.iter().copied().collect(),
            ..KernelState::default()
        };
        wanted.set_allowed(&e.allow_destinations);
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
                    && p.target.is_some_and(|t| {
                        self.program_ids.get(target.hook.program()) == Some(&t.prog_id)
                    })
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

    /// What the state says of the policy in force and the interfaces
    /// enforced; the copy of the policy file first when it is new.
    fn record(
        &mut self,
        now: DateTime<Utc>,
        generation: u64,
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
        self.state.evaluated_at = self.verdicts.as_ref().map(|v| v.at);
        self.state.version = crate::state::STATE_VERSION;
        // A state of version 1 had a record of every VM: `status` reads the
        // policy copy instead.
        self.state.vms = Vec::new();
        if self.copied.as_deref() != Some(self.policy.hash.as_str())
            && let Some(text) = self.policy.text()
        {
            self.states.save_policy(text.as_bytes())?;
            self.copied = Some(self.policy.hash.clone());
        }
        self.save()
    }

    /// Saves the state, if it changed since it was last saved.
    fn save(&mut self) -> Result<(), AgentError> {
        self.states.save_if_changed(&self.state, &mut self.saved)?;
        Ok(())
    }
}

/// Says what an operator must know of where a target's program went: a
/// setting that was overridden, a kind whose coverage is not proven,
/// replies that cannot reach the VM.
fn warn_placement(target: &Target) {
    let dev = &target.dev;
    if let Some(why) = target.placement.overridden {
        warn!(
            interface = %dev.name,
            kind = %dev.kind,
            hook = %target.hook,
            "the policy's hook cannot see this interface's VM traffic: {why}"
        );
    }
    match target.placement.coverage {
        Coverage::Verified => {}
        Coverage::Reasoned => warn!(
            interface = %dev.name,
            kind = %dev.kind,
            hook = %target.hook,
            "coverage of this kind of device is reasoned from the kernel's code, not tested here: it takes the same hook as a macvtap"
        ),
        Coverage::Unverified => warn!(
            interface = %dev.name,
            kind = %dev.kind,
            hook = %target.hook,
            "coverage of this kind of device is unverified: egress-guard has no rule for it and does not know that its VM's frames pass this hook (docs/datapath.md lists the verified kinds)"
        ),
    }
    if target.replies_lost {
        warn!(
            interface = %dev.name,
            "native XDP on a veth cannot send the reset/icmp replies back to the VM (the veth driver drops XDP_TX frames to its peer): held-back segments are dropped without a reply; use hook tc or xdp-generic for replies"
        );
    }
}

/// The enforcement the policy wants on one interface, if any.
fn target(policy: &Policy, verdicts: &Verdicts, dev: &NetDev) -> Option<Target> {
    let enforced = policy.enforced(verdicts, &dev.name)?;
    let e = &policy.enforcement;
    let placement = placement::place(e.hook, &dev.kind);
    let hook = placement.hook;
    Some(Target {
        dev: dev.clone(),
        entry: IfaceEntry {
            vm_key: enforced.key,
            verdict: verdict_code(enforced.verdict),
            flags: 0,
        },
        hook,
        placement,
        replies_lost: hook == Hook::Xdp
            && dev.kind == DevKind::Veth
            && e.action != policy::Action::Drop,
        record: EnforcedInterface {
            name: dev.name.clone(),
            hook: hook.to_string(),
            kind: dev.kind.to_string(),
            coverage: placement.coverage.as_str().to_owned(),
            vm: enforced.vm.map(|i| policy.vms[i].name.to_string()),
            verdict: enforced.verdict.as_str().to_owned(),
            key: enforced.key,
        },
    })
}

/// Loads the programs over the pinned maps, carrying the counters over when
/// the maps are new (another layout, or larger).
fn load_datapath(pins: &PinDir, capacities: Capacities) -> Result<Datapath, AgentError> {
    commit_datapath(pins, Datapath::stage(pins, capacities)?)
}

/// Pins what [`Datapath::stage`] loaded, and carries the counters over when
/// the maps are new.
fn commit_datapath(pins: &PinDir, staged: Staged) -> Result<Datapath, AgentError> {
    let mut datapath = staged.commit(pins)?;
    if let Some(old) = datapath.replaces().map(Path::to_owned) {
        let carried = datapath.maps.carry_counters(&old)?;
        info!(from = %old.display(), vms = carried, "carried the counters over to the new maps");
    }
    Ok(datapath)
}
