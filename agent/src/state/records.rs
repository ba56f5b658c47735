//! What the state file and the attempts file hold, as types: the policy in
//! force, the rejected one, the interfaces enforced (their hook, kind,
//! coverage and verdict typed, not strings), the interface creations seen,
//! each VM's last blocked attempts.

use std::{collections::BTreeMap, path::PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::STATE_VERSION;
use crate::{datapath::Hook, placement::Coverage, policy::Verdict};

/// Everything the agent saves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub version: u32,
    /// The policy whose verdicts the maps hold.
    pub policy: Option<PolicyInForce>,
    /// The last policy that was rejected, while the one in force stays.
    #[serde(default)]
    pub rejected: Option<RejectedPolicy>,
    /// The latest creation the agent observed of each interface name.
    #[serde(default)]
    pub interface_created: BTreeMap<String, DateTime<Utc>>,
    /// The enforced interfaces, by ifindex.
    #[serde(default)]
    pub interfaces: BTreeMap<u32, EnforcedInterface>,
    /// The time the verdicts the maps hold were evaluated at: `status`
    /// evaluates the copy of the policy at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
}

impl AgentState {
    pub fn new() -> Self {
        Self {
            version: STATE_VERSION,
            ..Self::default()
        }
    }

    /// Drops what no agent could have recorded, so that a tampered state
    /// cannot open an exemption: interface creations in the future (after
    /// `now`) or of names Linux never gives. Returns how many were dropped.
    pub fn sanitize(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.interface_created.len();
        self.interface_created
            .retain(|name, at| plausible_creation(name, *at, now));
        before - self.interface_created.len()
    }
}

/// Whether an agent could have seen interface `name` created at `at`,
/// by `now`.
pub fn plausible_creation(name: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    at <= now && crate::policy::check_ifname(name).is_ok()
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInForce {
    pub path: PathBuf,
    /// sha256 of the file's bytes.
    pub hash: String,
    /// Counts the policies this agent state has applied, from 1.
    pub generation: u64,
    pub applied_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedPolicy {
    pub path: PathBuf,
    /// sha256 of the rejected file's bytes.
    #[serde(default)]
    pub hash: String,
    pub at: DateTime<Utc>,
    /// One `file:line:col: message` a line.
    pub errors: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcedInterface {
    pub name: String,
    /// Where the program is.
    pub hook: Hook,
    /// The kind of device (`veth`, `tap`, `tun`, `macvtap`, ...).
    #[serde(default)]
    pub kind: String,
    /// How far its placement is proven.
    #[serde(default = "unverified")]
    pub coverage: Coverage,
    /// The VM it belongs to, or none (an `attach` glob matched it).
    pub vm: Option<String>,
    #[serde(with = "verdict_text")]
    pub verdict: Verdict,
    /// The key of its counters: its VM's, or its own.
    pub key: u64,
}

impl EnforcedInterface {
    /// Whom its counters and attempts are shown under: its VM, or
    /// `unknown:<interface>` for an interface an `attach` glob matched.
    pub fn identity(&self) -> String {
        self.vm
            .clone()
            .unwrap_or_else(|| unknown_identity(&self.name))
    }
}

/// How an interface of no VM is named where a VM's name would go.
pub fn unknown_identity(ifname: &str) -> String {
    format!("unknown:{ifname}")
}

fn unverified() -> Coverage {
    Coverage::Unverified
}

/// A verdict as the policy spells it (`allow`, `block`).
mod verdict_text {
    use serde::{Deserialize as _, Deserializer, Serializer, de::Error as _};

    use crate::policy::Verdict;

    #[allow(
        clippy::trivially_copy_pass_by_ref,
        reason = "serde's `with` signature"
    )]
    pub fn serialize<S: Serializer>(v: &Verdict, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(v.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Verdict, D::Error> {
        let text = String::deserialize(d)?;
        Verdict::from_yaml(&text)
            .ok_or_else(|| D::Error::custom(format!("not a verdict: {text:?}")))
    }
}

/// How many attempts [`RecentAttempts`] keeps per VM.
pub const RECENT_PER_VM: usize = 10;

/// The last blocked connection attempts of each VM, newest first, at most
/// [`RECENT_PER_VM`] each. Repeats of one attempt (same source address,
/// destination and port, within the agent's repeat window) share one entry.
/// The agent writes it (at most once a second, and when it stops); `status
/// --vm` reads it, whether or not an agent runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentAttempts {
    pub version: u32,
    /// By VM name (`unknown:<interface>` for an interface of no VM).
    pub vms: BTreeMap<String, Vec<RecentAttempt>>,
}

/// One blocked connection attempt (or a run of repeats of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentAttempt {
    /// When the (first) SYN arrived.
    pub at: DateTime<Utc>,
    /// When the last repeat arrived (`at` when there was none).
    pub last: DateTime<Utc>,
    /// SYNs this entry stands for (1 and its repeats) whose events reached
    /// the agent.
    pub count: u64,
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub src: std::net::IpAddr,
    pub src_port: u16,
    pub dst: std::net::IpAddr,
    pub dst_port: u16,
    /// The policy was in audit mode: the SYN was let through.
    #[serde(default)]
    pub audit: bool,
}
