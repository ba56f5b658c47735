//! `egress-guard status`: what is enforced under one pin directory, whether
//! or not an agent is running: the policy in force, each interface with its
//! hook, each VM with its verdict, reason and counters (held back, by
//! reason, and its blocked connection attempts). `--vm NAME` shows one VM,
//! with its last blocked attempts (from the agent's state directory).
//!
//! The VMs' verdicts and reasons are those the agent enforces: the copy of
//! the policy in force that it keeps in its state directory, evaluated at
//! the time it evaluated it, with the interface creations it had seen. The
//! state names that copy by its sha256, so what is read is exactly the
//! policy in force, with no retry.
//!
//! [`view`] holds what is shown, as types; [`render`] turns it into a table
//! or JSON.

mod render;
mod view;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use egress_guard_common::maps::{IfaceEntry, user::Verdict};
use thiserror::Error;
use tracing::warn;

use self::view::Vms;
pub use self::{
    render::render,
    view::{
        AgentStatus, AttemptsStatus, Count, EventsLost, InterfaceStatus, Status, VmStatus, counts,
    },
};
use super::Location;
use crate::{
    datapath::{
        Maps,
        links::{LinkError, pinned_links},
        maps::MapsError,
    },
    netdev::{self, NetdevError},
    policy,
    state::{AgentState, StateError},
};

#[derive(Debug, Error)]
pub enum StatusError {
    #[error(
        "nothing is enforced under {0}: no agent has run with this pin directory, or it was detached"
    )]
    Nothing(String),
    /// `--vm NAME` names no VM of the policy in force (a usage error).
    #[error("{}", unknown_vm(.name, .pin_dir, .known))]
    UnknownVm {
        name: String,
        pin_dir: String,
        known: Vec<String>,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Netdev(#[from] NetdevError),
}

fn unknown_vm(name: &str, pin_dir: &str, known: &[String]) -> String {
    const SHOWN: usize = 10;
    if known.is_empty() {
        return format!(
            "no VM {name:?} under {pin_dir}: the policy in force there has no VMs (or none was applied yet)"
        );
    }
    let mut list = known[..known.len().min(SHOWN)].join(", ");
    if known.len() > SHOWN {
        use std::fmt::Write as _;
        let _ = write!(list, ", ... ({} in all)", known.len());
    }
    format!("no VM {name:?} in the policy in force under {pin_dir}; its VMs are: {list}")
}

impl StatusError {
    /// 2 for a usage error (an unknown `--vm`), 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            StatusError::UnknownVm { .. } => 2,
            _ => 1,
        }
    }
}

/// The state, and the VMs of the policy in force: the copy the state names
/// by its sha256, and nothing else. (The agent writes the copy before the
/// state that names it, so the copy a state names is there.) A copy that
/// is missing, does not match its hash, or does not read with this build
/// gives no VMs, and is said on stderr: never a wrong verdict.
fn load(location: &Location) -> Result<(Option<AgentState>, Vms), StatusError> {
    let Some(state) = location.states.load()? else {
        return Ok((
            None,
            Vms {
                policy: None,
                at: Utc::now(),
            },
        ));
    };
    let at = state
        .evaluated_at
        .or(state.policy.as_ref().map(|p| p.applied_at))
        .unwrap_or_else(Utc::now);
    let Some(hash) = state.policy.as_ref().map(|p| p.hash.clone()) else {
        return Ok((Some(state), Vms { policy: None, at }));
    };
    let copy = location.states.policy_file(&hash);
    let policy = match location.states.load_policy(&hash) {
        Ok(Some(bytes)) => match policy::from_vec(&copy, bytes) {
            Ok(policy) => Some(Box::new(policy)),
            // Not a policy this build reads (another build's agent wrote
            // it): no verdicts to show, and it is said.
            Err(e) => {
                warn!(copy = %copy.display(), error = %e, "the copy of the policy in force does not read with this build: its VMs are not shown");
                None
            }
        },
        Ok(None) => {
            warn!(copy = %copy.display(), "the copy of the policy in force is missing: its VMs are not shown");
            None
        }
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "the copy of the policy in force does not read: its VMs are not shown");
            None
        }
    };
    Ok((Some(state), Vms { policy, at }))
}

/// Reads the pinned state of `location`: everything, or with `vm` only that
/// VM (by name, or by its interface), its interfaces and its last blocked
/// attempts.
pub async fn status(location: &Location, vm: Option<&str>) -> Result<Status, StatusError> {
    let root = location.pins.root();
    let (state, vms) = load(location)?;
    if !root.exists() && state.is_none() {
        return Err(StatusError::Nothing(root.display().to_string()));
    }
    let state = state.unwrap_or_default();
    let only = match vm {
        Some(name) => match vms.find(name) {
            Some(i) => Some(i),
            None => {
                return Err(StatusError::UnknownVm {
                    name: name.to_owned(),
                    pin_dir: root.display().to_string(),
                    known: (0..vms.len()).map(|i| vms.name(i).to_owned()).collect(),
                });
            }
        },
        None => None,
    };
    let only_name = only.map(|i| vms.name(i).to_owned());
    let pid = location.states.running_agent();
    let maps = Maps::open_pinned(&location.pins)?;
    let totals = maps.counters_by_key()?;
    let attempts = maps.attempts_by_key()?;
    let recent = match &only {
        // A missing or unreadable file only means no attempts to show.
        Some(_) => location.states.load_attempts().ok().flatten(),
        None => None,
    };
    let entries = maps.read_state()?.ifaces;
    let names: HashMap<u32, String> = netdev::list()
        .await?
        .into_iter()
        .map(|d| (d.index, d.name))
        .collect();

    let interfaces = interfaces(location, &state, only_name.as_deref(), &entries, &names)?;

    // Creations no agent could have seen (a tampered state) are left out,
    // as the agent leaves them out: they could show an exemption open.
    let created: HashMap<String, DateTime<Utc>> = state
        .interface_created
        .iter()
        .filter(|(name, at)| crate::state::plausible_creation(name, **at, Utc::now()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let selected: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..vms.len()).collect(),
    };
    let vms = selected
        .into_iter()
        .filter_map(|i| vms.line(i, &created))
        .map(|vm| {
            let c = totals.get(&vm.key).copied().unwrap_or_default();
            VmStatus {
                name: vm.name.clone(),
                subscription: vm.subscription,
                offer: vm.offer,
                interface: vm.interface,
                verdict: vm.verdict,
                reason: vm.reason,
                reason_code: vm.reason_code,
                held_back: {
                    let (packets, bytes) = c.held_back();
                    Count { packets, bytes }
                },
                counters: counts(&c),
                attempts: attempts.get(&vm.key).copied().unwrap_or_default().into(),
                recent_attempts: only.as_ref().map(|_| {
                    recent
                        .as_ref()
                        .and_then(|r| r.vms.get(&vm.name).cloned())
                        .unwrap_or_default()
                }),
            }
        })
        .collect();

    Ok(Status {
        pin_dir: root.display().to_string(),
        state_dir: location.states.path().display().to_string(),
        policy: state.policy,
        rejected: state.rejected,
        agent: AgentStatus {
            running: pid.is_some(),
            pid,
        },
        interfaces,
        vms,
    })
}

/// The enforced interfaces (of VM `only`, when given).
fn interfaces(
    location: &Location,
    state: &AgentState,
    only: Option<&str>,
    entries: &BTreeMap<u32, IfaceEntry>,
    names: &HashMap<u32, String>,
) -> Result<Vec<InterfaceStatus>, StatusError> {
    Ok(pinned_links(&location.pins)?
        .into_iter()
        .filter(|link| {
            only.is_none_or(|name| {
                state
                    .interfaces
                    .get(&link.ifindex)
                    .and_then(|r| r.vm.as_deref())
                    == Some(name)
            })
        })
        .map(|link| {
            let record = state.interfaces.get(&link.ifindex);
            let live = link.is_live();
            InterfaceStatus {
                name: names
                    .get(&link.ifindex)
                    .cloned()
                    .or_else(|| record.map(|r| r.name.clone())),
                ifindex: link.ifindex,
                hook: link.hook,
                kind: record.map(|r| r.kind.clone()).filter(|k| !k.is_empty()),
                coverage: record.map(|r| r.coverage),
                live,
                vm: record.and_then(|r| r.vm.clone()),
                verdict: entries
                    .get(&link.ifindex)
                    .map(|e| Verdict::from_code(e.verdict).as_str().to_owned()),
            }
        })
        .collect())
}
