//! What `status` shows, as types: the JSON is their serialisation, the
//! table is rendered from them ([`super::render`]). Assembled by
//! [`super::status`] from the state, the copy of the policy in force and the
//! pinned maps.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use egress_guard_common::maps::{Attempts, Counters, user::Reason};
use serde::Serialize;

use crate::{
    datapath::Hook,
    placement::Coverage,
    policy::{Facts, Policy},
    state::{PolicyInForce, RecentAttempt, RejectedPolicy},
};

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Count {
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct AgentStatus {
    pub running: bool,
    pub pid: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct InterfaceStatus {
    pub name: Option<String>,
    pub ifindex: u32,
    pub hook: Hook,
    /// The kind of device (`veth`, `tap`, `tun`, `macvtap`, ...), as the
    /// agent saw it when it attached.
    pub kind: Option<String>,
    /// How far the hook is proven to see the VM's frames on that kind:
    /// `verified`, `reasoned` or `unverified`.
    pub coverage: Option<Coverage>,
    /// The link still sits on the interface (false once it is gone).
    pub live: bool,
    pub vm: Option<String>,
    pub verdict: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct VmStatus {
    pub name: String,
    pub subscription: String,
    pub offer: String,
    pub interface: String,
    pub verdict: String,
    pub reason: String,
    pub reason_code: String,
    /// Packets held back, for every reason that holds back.
    pub held_back: Count,
    /// Every counter, by reason.
    pub counters: BTreeMap<&'static str, Count>,
    /// Its blocked connection attempts.
    pub attempts: AttemptsStatus,
    /// With `--vm`: its last blocked attempts, newest first.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recent_attempts: Option<Vec<RecentAttempt>>,
}

/// A VM's blocked connection attempts (SYNs to a held port), and what
/// became of the events about them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct AttemptsStatus {
    pub total: u64,
    /// Events the kernel sent to the agent (logged, or counted in a
    /// repeat summary).
    pub events: u64,
    /// Events not sent, by cause.
    pub events_lost: EventsLost,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct EventsLost {
    /// The VM was over its event rate.
    #[serde(rename = "rate-limited")]
    pub rate_limited: u64,
    /// The ring buffer was full (the agent slow or not running).
    #[serde(rename = "ring-full")]
    pub ring_full: u64,
}

impl From<Attempts> for AttemptsStatus {
    fn from(a: Attempts) -> Self {
        Self {
            total: a.attempts,
            events: a.events,
            events_lost: EventsLost {
                rate_limited: a.rate_limited,
                ring_full: a.ring_full,
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Status {
    pub pin_dir: String,
    pub state_dir: String,
    pub policy: Option<PolicyInForce>,
    pub rejected: Option<RejectedPolicy>,
    pub agent: AgentStatus,
    pub interfaces: Vec<InterfaceStatus>,
    pub vms: Vec<VmStatus>,
}

/// Every counter of `c`, by reason name.
pub fn counts(c: &Counters) -> BTreeMap<&'static str, Count> {
    Reason::all()
        .map(|r| {
            (
                r.name(),
                Count {
                    packets: c.packets[r.index()],
                    bytes: c.bytes[r.index()],
                },
            )
        })
        .collect()
}

/// One VM of the policy in force, with its verdict and reason as the agent
/// enforces them.
#[derive(Clone, Debug)]
pub struct VmLine {
    pub name: String,
    pub subscription: String,
    pub offer: String,
    pub interface: String,
    pub verdict: String,
    pub reason: String,
    pub reason_code: String,
    pub key: u64,
}

/// The VMs of the policy in force: its copy, evaluated at the time the agent
/// evaluated it. None when there is no copy to evaluate (said on stderr).
pub struct Vms {
    pub policy: Option<Box<Policy>>,
    /// When the agent evaluated it.
    pub at: DateTime<Utc>,
}

impl Vms {
    pub fn len(&self) -> usize {
        self.policy.as_ref().map_or(0, |p| p.vms.len())
    }

    pub fn name(&self, i: usize) -> &str {
        self.policy.as_ref().map_or("", |p| &*p.vms[i].name)
    }

    /// The VM `--vm NAME` means: a VM named so, or else the VM of the
    /// interface named so.
    pub fn find(&self, name: &str) -> Option<usize> {
        let policy = self.policy.as_ref()?;
        policy
            .vm_index_by_name(name)
            .or_else(|| policy.vm_index_by_interface(name))
    }

    /// The `i`th VM: its verdict and reason as enforced.
    pub fn line(&self, i: usize, created: &HashMap<String, DateTime<Utc>>) -> Option<VmLine> {
        let policy = self.policy.as_ref()?;
        let vm = &policy.vms[i];
        let sub = policy.subscription_of(vm);
        let (verdict, reason) = policy.decide(
            i,
            &Facts {
                now: self.at,
                interface_created: created,
            },
        );
        Some(VmLine {
            name: vm.name.to_string(),
            subscription: sub.id.to_string(),
            offer: sub.offer.to_string(),
            interface: vm.interface.to_string(),
            verdict: verdict.as_str().to_owned(),
            reason: reason.to_string(),
            reason_code: reason.code().to_owned(),
            key: vm.key,
        })
    }
}
