//! What `egress-guard check` prints. Written a VM at a time from the policy
//! and its compact verdicts, each reason found as its line is written, so
//! that a policy of any size costs no copy of its VMs.

use std::{
    fmt::Write as _,
    io::{self, Write},
    path::Path,
};

use serde::Serialize;
use serde_json::{Value, json};

use super::{
    model::Policy,
    values::fmt_time,
    verdict::{Facts, Verdicts, verdicts},
};

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
pub fn write_table(out: &mut dyn Write, policy: &Policy, facts: &Facts) -> io::Result<()> {
    let evaluated = verdicts(policy, facts);
    let mut widths = HEADER.map(|h| h.chars().count()).to_vec();
    for vm in &policy.vms {
        let sub = policy.subscription_of(vm);
        for (w, cell) in widths
            .iter_mut()
            .zip([&*vm.name, &*sub.id, &*sub.offer, &*vm.interface])
        {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths[4] = widths[4].max("allow".len()).max("block".len());
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    let mut text = String::new();
    // One line at a time, through the table writer `status` uses too.
    let mut line = |out: &mut dyn Write, cells: [&str; 6]| {
        text.clear();
        crate::table::push_row(&mut text, &widths, cells);
        out.write_all(text.as_bytes())
    };
    line(&mut out, HEADER)?;
    let mut reason = String::new();
    for (i, vm) in policy.vms.iter().enumerate() {
        let sub = policy.subscription_of(vm);
        let (verdict, why) = policy.decide(i, facts);
        reason.clear();
        let _ = write!(reason, "{why}");
        line(
            &mut out,
            [
                &vm.name,
                &sub.id,
                &sub.offer,
                &vm.interface,
                verdict.as_str(),
                &reason,
            ],
        )?;
    }
    if let Some(t) = evaluated.next_change {
        write!(out, "\nnext change: {}\n", fmt_time(t))?;
    }
    out.flush()
}

/// [`write_table`] into a string.
pub fn table(policy: &Policy, facts: &Facts) -> String {
    let mut out = Vec::new();
    let _ = write_table(&mut out, policy, facts);
    String::from_utf8(out).unwrap_or_default()
}

/// `{"at", "enforcement", "vms": [{name, subscription, offer, interface,
/// verdict, reason, reason_code}], "next_change"}`; times in RFC 3339 UTC,
/// `next_change` null when nothing changes by time alone.
pub fn json(policy: &Policy, facts: &Facts) -> Value {
    let evaluated = verdicts(policy, facts);
    let mut doc = head(policy, facts, &evaluated);
    doc["vms"] = Value::Array(
        (0..policy.vms.len())
            .map(|i| serde_json::to_value(VmLine::new(policy, facts, i)).unwrap_or(Value::Null))
            .collect(),
    );
    doc
}

/// `check --format json`: [`json`] with `"policy": {"path", "hash"}`, pretty
/// printed (keys in order, two spaces), written a VM at a time.
pub fn write_json(
    out: &mut dyn Write,
    policy: &Policy,
    facts: &Facts,
    path: &Path,
) -> io::Result<()> {
    let evaluated = verdicts(policy, facts);
    let mut doc = head(policy, facts, &evaluated);
    doc["policy"] = json!({ "path": path, "hash": policy.hash });
    doc["vms"] = json!([]);
    // The document without its VMs, then the VMs where its empty list is:
    // the same text as pretty-printing it whole.
    let text = serde_json::to_string_pretty(&doc).map_err(io::Error::other)?;
    let (before, after) = text
        .split_once("\"vms\": []")
        .ok_or_else(|| io::Error::other("no vms in the report"))?;
    let mut out = io::BufWriter::with_capacity(1 << 16, out);
    out.write_all(before.as_bytes())?;
    out.write_all(b"\"vms\": [")?;
    let mut item = Vec::new();
    for i in 0..policy.vms.len() {
        item.clear();
        let mut ser = serde_json::Serializer::with_formatter(
            &mut item,
            serde_json::ser::PrettyFormatter::with_indent(b"  "),
        );
        VmLine::new(policy, facts, i)
            .serialize(&mut ser)
            .map_err(io::Error::other)?;
        out.write_all(if i == 0 { b"\n    " } else { b",\n    " })?;
        // Indented two levels, as inside the document.
        for (n, line) in item.split(|b| *b == b'\n').enumerate() {
            if n > 0 {
                out.write_all(b"\n    ")?;
            }
            out.write_all(line)?;
        }
    }
    if !policy.vms.is_empty() {
        out.write_all(b"\n  ")?;
    }
    out.write_all(b"]")?;
    out.write_all(after.as_bytes())?;
    out.write_all(b"\n")?;
    out.flush()
}

/// Everything but the VMs.
fn head(policy: &Policy, facts: &Facts, evaluated: &Verdicts) -> Value {
    let e = &policy.enforcement;
    json!({
        "at": fmt_time(facts.now),
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
        "next_change": evaluated.next_change.map(fmt_time),
    })
}

/// One VM of the JSON report; fields in the order `serde_json` sorts them.
#[derive(Serialize)]
struct VmLine<'a> {
    interface: &'a str,
    name: &'a str,
    offer: &'a str,
    reason: String,
    reason_code: &'static str,
    subscription: &'a str,
    verdict: &'static str,
}

impl<'a> VmLine<'a> {
    fn new(policy: &'a Policy, facts: &Facts, i: usize) -> Self {
        let vm = &policy.vms[i];
        let sub = policy.subscription_of(vm);
        let (verdict, reason) = policy.decide(i, facts);
        Self {
            interface: &vm.interface,
            name: &vm.name,
            offer: &sub.offer,
            reason: reason.to_string(),
            reason_code: reason.code(),
            subscription: &sub.id,
            verdict: verdict.as_str(),
        }
    }
}
