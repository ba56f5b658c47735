//! The agent's state and its start: the pin directory's lock, the
//! datapath, the policy in force and its verdicts, the state file. What it
//! does when things change is in the sibling modules: [`super::reconcile`],
//! [`super::netlink`], [`super::reload`], [`super::attempts`].
//!
//! Invariants:
//! - Nothing is written to the pin directory until the policy is known to be
//!   valid.
//! - The saved state is the agent's memory, not its input: one that does not
//!   read is set aside, and what is pinned stays enforced meanwhile.

use std::{
    collections::{BTreeMap, HashMap},
    path::{Path, PathBuf},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use chrono::{DateTime, Utc};
use thiserror::Error;
use tracing::{info, warn};

use crate::{
    datapath::{Capacities, Datapath, DatapathError, LinkError, PinDir, Staged, maps::MapsError},
    events::{self, AttemptLog},
    netdev::NetdevError,
    policy::{self, Policy, PolicyError, Verdicts},
    state::{AgentLock, AgentState, StateDir, StateError},
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
    pub(super) states: StateDir,
    pub(super) _lock: AgentLock,
    pub(super) datapath: Datapath,
    pub(super) state: AgentState,
    /// The state file as it was last written: a save that would write the
    /// same bytes is skipped.
    pub(super) saved: Vec<u8>,
    /// The sha256 of the copy of the policy in the state directory.
    pub(super) copied: Option<String>,
    pub(super) policy_path: PathBuf,
    /// The bounds on reading the policy file.
    pub(super) limits: policy::Limits,
    pub(super) policy: Policy,
    /// The policy's verdicts, compact, for the reconcile, the per-interface
    /// fast path and the next time-driven change.
    pub(super) verdicts: Option<Verdicts>,
    /// `state.interface_created`, as the policy engine looks it up.
    pub(super) created: HashMap<String, DateTime<Utc>>,
    /// A fact the verdicts depend on changed since they were evaluated (an
    /// interface was created): the next reconcile evaluates them again.
    pub(super) stale: bool,
    /// Interfaces known to exist, by ifindex: a NEWLINK for an ifindex not
    /// here is a creation.
    pub(super) known: HashMap<u32, String>,
    /// Our programs' ids, to tell a link that already runs them.
    pub(super) program_ids: BTreeMap<&'static str, u32>,
    /// What the metrics count about the agent itself.
    pub stats: AgentStats,
    /// The log of blocked connection attempts, and each VM's last ones.
    pub(super) attempts: AttemptLog,
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
        let read = policy::read(policy_path, limits);
        let lock = match states.lock() {
            Ok(lock) => lock,
            // Another agent: an invalid policy is still said first.
            Err(e) => {
                policy::from_vec(policy_path, read?)?;
                return Err(e.into());
            }
        };
        // A restart (a previous agent left a policy in force, and its copy)
        // onto a file that does not read or validate keeps enforcing that
        // policy, so that new interfaces are enforced too, instead of
        // exiting into a restart loop; the file's errors are the rejection.
        // A first start on an invalid file still refuses to start. The
        // valid file, the usual case, is parsed once, while the programs
        // load.
        let (capacities, input) = match read {
            // Sized from a count of the file's VMs made before it is read;
            // a policy that turns out larger grows the maps at the first
            // reconcile.
            Ok(bytes) => (Capacities::for_vms(policy::estimate_vms(&bytes)), Ok(bytes)),
            Err(e) => {
                let Some(good) = last_good(&states) else {
                    return Err(e.into());
                };
                (
                    Capacities::for_vms(good.vms.len()),
                    Err((good, e.to_string())),
                )
            }
        };
        // The pin directory goes to the datapath, which owns it from here.
        let staging = std::thread::Builder::new()
            .name("load-programs".to_owned())
            .spawn(move || Datapath::stage(&pins, capacities))
            .map_err(AgentError::Thread)?;
        let parsed = match input {
            Ok(bytes) => policy::from_vec(policy_path, bytes).map(|p| (p, None)),
            Err((good, why)) => Ok((good, Some(why))),
        };
        let staged = staging
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        let (policy, rejected) = match parsed {
            Ok(parsed) => parsed,
            Err(e) => match last_good(&states) {
                Some(good) => (good, Some(e.to_string())),
                None => return Err(e.into()),
            },
        };
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
        let datapath = commit_datapath(staged?)?;
        // The last attempts are a convenience for `status --vm`: a file
        // that cannot be read is started afresh, not a reason to stop.
        let recent = states.load_attempts().unwrap_or_else(|e| {
            warn!(error = %crate::error_chain(&e), "the last blocked attempts are lost");
            None
        });
        let mut agent = Self {
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
        if let Some(e) = rejected {
            warn!(
                file = %policy_path.display(),
                in_force = %agent.policy.hash,
                "the policy file does not read or validate: the policy in force before the restart stays until the file is fixed"
            );
            agent.reject(String::new(), &e, Utc::now())?;
        }
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

    /// Saves the state, if it changed since it was last saved.
    pub(super) fn save(&mut self) -> Result<(), AgentError> {
        self.states.save_if_changed(&self.state, &mut self.saved)?;
        Ok(())
    }
}

/// Pins what [`Datapath::stage`] loaded, and carries the counters over when
/// the maps are new.
pub(super) fn commit_datapath(staged: Staged) -> Result<Datapath, AgentError> {
    let mut datapath = staged.commit()?;
    if let Some(old) = datapath.replaces().map(Path::to_owned) {
        let carried = datapath.maps.carry_counters(&old)?;
        info!(from = %old.display(), vms = carried, "carried the counters over to the new maps");
    }
    Ok(datapath)
}

/// The policy in force before a restart: the state's policy, read from its
/// copy (checked against its sha256) and valid with this build. None when
/// there is none, or it does not read.
fn last_good(states: &StateDir) -> Option<Policy> {
    let state = states.load().ok()??;
    let hash = state.policy?.hash;
    let bytes = states.load_policy(&hash).ok()??;
    policy::from_vec(&states.policy_file(&hash), bytes).ok()
}
