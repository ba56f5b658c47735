//! `egress-guard status`: what is enforced under one pin directory, whether
//! or not an agent is running: the policy in force, each interface with its
//! hook, each VM with its verdict, reason and counters.

use std::collections::HashMap;

use egress_guard_common::maps::{Counters, VERDICT_ALLOW, reason};
use serde::Serialize;
use thiserror::Error;

use super::{Format, Location};
use crate::{
    datapath::{
        Maps,
        links::{LinkError, pinned_links},
        maps::MapsError,
    },
    netdev::{self, NetdevError},
    state::{PolicyInForce, RejectedPolicy, StateError},
};

#[derive(Debug, Error)]
pub enum StatusError {
    #[error(
        "nothing is enforced under {0}: no agent has run with this pin directory, or it was detached"
    )]
    Nothing(String),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Maps(#[from] MapsError),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    Netdev(#[from] NetdevError),
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
    pub counters: HashMap<&'static str, Count>,
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

/// Reasons whose packets were held back (not audit, and not the replies
/// counted on top of a held-back packet).
const HELD_BACK: [usize; 3] = [reason::POLICY, reason::MALFORMED, reason::ORPHAN_FRAGMENT];

fn counts(c: &Counters) -> HashMap<&'static str, Count> {
    (0..reason::COUNT - 1)
        .map(|i| {
            (
                reason::NAMES[i],
                Count {
                    packets: c.packets[i],
                    bytes: c.bytes[i],
                },
            )
        })
        .collect()
}

/// Reads the pinned state of `location`.
pub async fn status(location: &Location) -> Result<Status, StatusError> {
    let root = location.pins.root();
    let state = location.states.load()?;
    if !root.exists() && state.is_none() {
        return Err(StatusError::Nothing(root.display().to_string()));
    }
    let state = state.unwrap_or_default();
    let pid = location.states.running_agent();
    let maps = Maps::open_pinned(&location.pins)?;
    let totals = maps.counters_by_key()?;
    let entries = maps.read_state()?.ifaces;
    let names: HashMap<u32, String> = netdev::list()
        .await?
        .into_iter()
        .map(|d| (d.index, d.name))
        .collect();

    let interfaces = pinned_links(&location.pins)?
        .into_iter()
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
                live,
                vm: record.and_then(|r| r.vm.clone()),
                verdict: entries.get(&link.ifindex).map(|e| {
                    if e.verdict == VERDICT_ALLOW {
                        "allow"
                    } else {
                        "block"
                    }
                    .to_owned()
                }),
            }
        })
        .collect();

    let vms = state
        .vms
        .iter()
        .map(|vm| {
            let c = totals.get(&vm.key).copied().unwrap_or_default();
            VmStatus {
                name: vm.name.clone(),
                subscription: vm.subscription.clone(),
                offer: vm.offer.clone(),
                interface: vm.interface.clone(),
                verdict: vm.verdict.clone(),
                reason: vm.reason.clone(),
                reason_code: vm.reason_code.clone(),
                held_back: Count {
                    packets: HELD_BACK.iter().map(|&r| c.packets[r]).sum(),
                    bytes: HELD_BACK.iter().map(|&r| c.bytes[r]).sum(),
                },
                counters: counts(&c),
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
                i.vm.clone().unwrap_or_else(|| "-".into()),
                i.verdict.clone().unwrap_or_else(|| "block".into()),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["INTERFACE", "IFINDEX", "HOOK", "VM", "VERDICT"],
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
            "REASON",
        ],
        &rows,
    ));
    out
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
