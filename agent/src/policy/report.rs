//! What `egress-guard check` prints.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::verdict::{Desired, fmt_time};

const HEADER: [&str; 6] = [
    "VM",
    "SUBSCRIPTION",
    "OFFER",
    "INTERFACE",
    "VERDICT",
    "REASON",
];

/// Aligned columns `VM SUBSCRIPTION OFFER INTERFACE VERDICT REASON`, one VM a
/// line in policy order; then, if a verdict will change by time alone, a
/// blank line and `next change: TIME`.
pub fn table(desired: &Desired) -> String {
    let rows: Vec<[String; 6]> = desired
        .vms
        .iter()
        .map(|vm| {
            [
                vm.name.clone(),
                vm.subscription.clone(),
                vm.offer.clone(),
                vm.interface.clone(),
                vm.verdict.as_str().to_owned(),
                vm.reason.to_string(),
            ]
        })
        .collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: [&str; 6]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<width$}  ", width = widths[i]);
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(HEADER);
    for row in &rows {
        line([&row[0], &row[1], &row[2], &row[3], &row[4], &row[5]]);
    }
    if let Some(t) = desired.next_change {
        let _ = write!(out, "\nnext change: {}\n", fmt_time(t));
    }
    out
}

/// `{"at", "enforcement", "vms": [{name, subscription, offer, interface,
/// verdict, reason, reason_code}], "next_change"}`; times in RFC 3339 UTC,
/// `next_change` null when nothing changes by time alone.
pub fn json(desired: &Desired, at: DateTime<Utc>) -> Value {
    let e = &desired.enforcement;
    let vms: Vec<Value> = desired
        .vms
        .iter()
        .map(|vm| {
            json!({
                "name": vm.name,
                "subscription": vm.subscription,
                "offer": vm.offer,
                "interface": vm.interface,
                "verdict": vm.verdict.as_str(),
                "reason": vm.reason.to_string(),
                "reason_code": vm.reason.code(),
            })
        })
        .collect();
    json!({
        "at": fmt_time(at),
        "enforcement": {
            "ports": e.ports,
            "action": e.action.as_str(),
            "mode": e.mode.as_str(),
            "hook": e.hook.as_str(),
            "attach": e.attach,
            "unknown": e.unknown.as_str(),
            "allow_destinations": e.allow_destinations.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "cutoff": e.cutoff.to_string(),
        },
        "vms": vms,
        "next_change": desired.next_change.map(fmt_time),
    })
}
