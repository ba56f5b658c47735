//! `egress-guard status`: what is enforced under one pin directory, whether
//! or not an agent is running: the policy in force, each interface with its
//! hook, each VM with its verdict, reason and counters (held back, by
//! reason, and its blocked connection attempts). `--vm NAME` shows one VM,
//! with its last blocked attempts (from the agent's state directory).
//!
//! The VMs' verdicts and reasons are those the agent enforces: the copy of
//! the policy in force that it keeps in its state directory, evaluated at
//! the time it evaluated it, with the interface creations it had seen. A
//! state directory written before that copy existed (state version 1) has
//! a record of every VM instead, which is shown as it is.

use std::{
    collections::{BTreeMap, HashMap},
    time::Duration,
};

use egress_guard_common::maps::{
    Attempts, Counters, IfaceEntry,
    user::{Reason, Verdict},
};
use serde::Serialize;
use thiserror::Error;
use tracing::warn;

use super::{Format, Location};
use crate::{
    datapath::{
        Maps,
        links::{LinkError, pinned_links},
        maps::MapsError,
    },
    netdev::{self, NetdevError},
    policy::{self, Facts, Policy},
    state::{AgentState, PolicyInForce, RecentAttempt, RejectedPolicy, StateError, VmRecord},
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
    pub hook: String,
    /// The kind of device (`veth`, `tap`, `tun`, `macvtap`, ...), as the
    /// agent saw it when it attached.
    pub kind: Option<String>,
    /// How far the hook is proven to see the VM's frames on that kind:
    /// `verified`, `reasoned` or `unverified`.
    pub coverage: Option<String>,
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

fn counts(c: &Counters) -> BTreeMap<&'static str, Count> {
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

/// The VMs of the policy in force, and where their verdicts come from.
enum Vms {
    /// The copy of the policy in force, evaluated as the agent did.
    Evaluated {
        policy: Box<Policy>,
        /// When the agent evaluated it.
        at: chrono::DateTime<chrono::Utc>,
    },
    /// A state of version 1: its records.
    Recorded(Vec<VmRecord>),
}

impl Vms {
    fn len(&self) -> usize {
        match self {
            Vms::Evaluated { policy, .. } => policy.vms.len(),
            Vms::Recorded(records) => records.len(),
        }
    }

    fn name(&self, i: usize) -> &str {
        match self {
            Vms::Evaluated { policy, .. } => &policy.vms[i].name,
            Vms::Recorded(records) => &records[i].name,
        }
    }

    /// The VM `--vm NAME` means: a VM named so, or else the VM of the
    /// interface named so.
    fn find(&self, name: &str) -> Option<usize> {
        match self {
            Vms::Evaluated { policy, .. } => policy
                .vm_index_by_name(name)
                .or_else(|| policy.vm_index_by_interface(name)),
            Vms::Recorded(records) => records
                .iter()
                .position(|v| v.name == name)
                .or_else(|| records.iter().position(|v| v.interface == name)),
        }
    }

    /// The `i`th VM's record: its verdict and reason as enforced.
    fn record(
        &self,
        i: usize,
        created: &HashMap<String, chrono::DateTime<chrono::Utc>>,
    ) -> VmRecord {
        match self {
            Vms::Recorded(records) => records[i].clone(),
            Vms::Evaluated { policy, at } => {
                let vm = &policy.vms[i];
                let sub = policy.subscription_of(vm);
                let (verdict, reason) = policy.decide(
                    i,
                    &Facts {
                        now: *at,
                        interface_created: created,
                    },
                );
                VmRecord {
                    name: vm.name.to_string(),
                    subscription: sub.id.to_string(),
                    offer: sub.offer.to_string(),
                    interface: vm.interface.to_string(),
                    verdict: verdict.as_str().to_owned(),
                    reason: reason.to_string(),
                    reason_code: reason.code().to_owned(),
                    key: vm.key,
                }
            }
        }
    }
}

/// The state, and the VMs of the policy in force. The agent writes the copy
/// of a new policy before the state that names it: a state read between
/// the two still names the previous policy, and is read again.
async fn load(location: &Location) -> Result<(Option<AgentState>, Vms), StatusError> {
    for _ in 0..50 {
        let Some(state) = location.states.load()? else {
            return Ok((None, Vms::Recorded(Vec::new())));
        };
        let hash = state.policy.as_ref().map(|p| p.hash.clone());
        let copy = match (&hash, location.states.load_policy()?) {
            (Some(hash), Some(bytes)) => Some((policy::sha256_hex(&bytes) == *hash, bytes)),
            _ => None,
        };
        match copy {
            Some((true, bytes)) => {
                let at = state
                    .evaluated_at
                    .or(state.policy.as_ref().map(|p| p.applied_at))
                    .unwrap_or_else(chrono::Utc::now);
                let vms = match policy::from_vec(&location.states.policy_file(), bytes) {
                    Ok(policy) => Vms::Evaluated {
                        policy: Box::new(policy),
                        at,
                    },
                    // Not a policy this build reads (another build's
                    // agent wrote it): no verdicts to show, and it is said.
                    Err(e) => {
                        warn!(
                            copy = %location.states.policy_file().display(),
                            error = %e,
                            "the copy of the policy in force does not read with this build: only the state's own records of VMs, if any, are shown"
                        );
                        Vms::Recorded(state.vms.clone())
                    }
                };
                return Ok((Some(state), vms));
            }
            Some((false, _)) => tokio::time::sleep(Duration::from_millis(10)).await,
            None => {
                let records = state.vms.clone();
                return Ok((Some(state), Vms::Recorded(records)));
            }
        }
    }
    // The copy never matched: the state's own records, if any.
    warn!(
        copy = %location.states.policy_file().display(),
        "the copy of the policy in force does not match the state's sha256: only the state's own records of VMs, if any, are shown"
    );
    let state = location.states.load()?;
    let records = state.as_ref().map(|s| s.vms.clone()).unwrap_or_default();
    Ok((state, Vms::Recorded(records)))
}

/// Reads the pinned state of `location`: everything, or with `vm` only that
/// VM (by name, or by its interface), its interfaces and its last blocked
/// attempts.
pub async fn status(location: &Location, vm: Option<&str>) -> Result<Status, StatusError> {
    let root = location.pins.root();
    let (state, vms) = load(location).await?;
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

    let created: HashMap<String, chrono::DateTime<chrono::Utc>> = state
        .interface_created
        .iter()
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    let selected: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..vms.len()).collect(),
    };
    let vms = selected
        .into_iter()
        .map(|i| vms.record(i, &created))
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
                hook: link.hook.to_string(),
                kind: record.map(|r| r.kind.clone()).filter(|k| !k.is_empty()),
                coverage: record.map(|r| r.coverage.clone()).filter(|c| !c.is_empty()),
                live,
                vm: record.and_then(|r| r.vm.clone()),
                verdict: entries
                    .get(&link.ifindex)
                    .map(|e| Verdict::from_code(e.verdict).as_str().to_owned()),
            }
        })
        .collect())
}

/// Renders a status for people or for programs.
pub fn render(status: &Status, format: Format) -> String {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(status).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Table => table(status),
    }
}

fn table(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "Pin directory: {}", s.pin_dir);
    let _ = match &s.agent.pid {
        Some(pid) => writeln!(out, "Agent:         running (pid {pid})"),
        None => writeln!(
            out,
            "Agent:         not running (enforcement below stays in place)"
        ),
    };
    let _ = match &s.policy {
        Some(p) => writeln!(
            out,
            "Policy:        {} (sha256:{}, generation {}, applied {})",
            p.path.display(),
            p.hash.get(..12).unwrap_or(&p.hash),
            p.generation,
            p.applied_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => writeln!(out, "Policy:        none applied"),
    };
    if let Some(r) = &s.rejected {
        let _ = writeln!(
            out,
            "Rejected:      {} at {} (the policy above stays in force):",
            r.path.display(),
            r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        for line in r.errors.lines() {
            let _ = writeln!(out, "               {line}");
        }
    }

    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone().unwrap_or_else(|| "(gone)".into()),
                i.ifindex.to_string(),
                if i.live {
                    i.hook.clone()
                } else {
                    format!("{} (detached: interface gone)", i.hook)
                },
                match (&i.kind, i.coverage.as_deref()) {
                    (Some(kind), Some("verified") | None) => kind.clone(),
                    (Some(kind), Some(coverage)) => format!("{kind} ({coverage})"),
                    (None, _) => "-".into(),
                },
                i.vm.clone().unwrap_or_else(|| "-".into()),
                i.verdict.clone().unwrap_or_else(|| "block".into()),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["INTERFACE", "IFINDEX", "HOOK", "KIND", "VM", "VERDICT"],
        &rows,
    ));

    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .vms
        .iter()
        .map(|vm| {
            vec![
                vm.name.clone(),
                vm.subscription.clone(),
                vm.interface.clone(),
                vm.verdict.clone(),
                format!("{} pkts / {} B", vm.held_back.packets, vm.held_back.bytes),
                by_reason(vm),
                vm.attempts.total.to_string(),
                vm.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "VM",
            "SUBSCRIPTION",
            "INTERFACE",
            "VERDICT",
            "HELD BACK",
            "BY REASON (PKTS)",
            "ATTEMPTS",
            "REASON",
        ],
        &rows,
    ));
    for vm in s.vms.iter().filter(|vm| vm.recent_attempts.is_some()) {
        vm_detail(&mut out, vm);
    }
    out
}

/// The non-zero packet counters of a VM: `policy 5, malformed 1`, or `-`.
fn by_reason(vm: &VmStatus) -> String {
    let parts: Vec<String> = Reason::all()
        .filter_map(|r| {
            let name = r.name();
            let n = vm.counters.get(name).map_or(0, |c| c.packets);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `status --vm`: one VM in full.
fn vm_detail(out: &mut String, vm: &VmStatus) {
    use std::fmt::Write as _;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "VM {} (subscription {}, offer {}, interface {})",
        vm.name, vm.subscription, vm.offer, vm.interface
    );
    let _ = writeln!(
        out,
        "  verdict: {} ({}): {}",
        vm.verdict, vm.reason_code, vm.reason
    );
    let _ = writeln!(out, "  counters:");
    let rows: Vec<Vec<String>> = Reason::all()
        .map(|r| {
            let c = vm.counters.get(r.name()).copied().unwrap_or_default();
            vec![
                format!("    {}", r.name()),
                c.packets.to_string(),
                c.bytes.to_string(),
            ]
        })
        .collect();
    out.push_str(&columns(&["    REASON", "PACKETS", "BYTES"], &rows));
    let a = &vm.attempts;
    let _ = writeln!(
        out,
        "  blocked connection attempts: {} ({} reported to the agent; not reported: {} over the VM's event rate, {} with the ring buffer full)",
        a.total, a.events, a.events_lost.rate_limited, a.events_lost.ring_full
    );
    let recent = vm.recent_attempts.as_deref().unwrap_or_default();
    if recent.is_empty() {
        let _ = writeln!(out, "  last blocked attempts: none recorded");
        return;
    }
    let _ = writeln!(out, "  last blocked attempts, newest first:");
    let rows: Vec<Vec<String>> = recent
        .iter()
        .map(|r| {
            let secs = chrono::SecondsFormat::Secs;
            vec![
                format!("    {}", r.at.to_rfc3339_opts(secs, true)),
                if r.count > 1 {
                    format!("{} (until {})", r.count, r.last.to_rfc3339_opts(secs, true))
                } else {
                    "1".to_owned()
                },
                socket(r.src, r.src_port),
                socket(r.dst, r.dst_port),
                r.interface.clone(),
                if r.audit {
                    "audit: let through"
                } else {
                    "held back"
                }
                .to_owned(),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["    AT", "COUNT", "FROM", "TO", "INTERFACE", "WHAT"],
        &rows,
    ));
}

fn socket(addr: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}

/// Left-aligned columns, two spaces apart, the last one unpadded.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let cells: Vec<&str> = cells.collect();
        let last = cells.len().saturating_sub(1);
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i < last {
                let pad = widths[i] + 2 - cell.chars().count();
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}
