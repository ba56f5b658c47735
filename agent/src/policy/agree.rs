//! The oracle that the three readers agree (issue 13, item 3), for the
//! differential test (`tests::readers`) and the fuzz target
//! (`agent/fuzz`, run by `cargo xtask fuzz` and `cargo xtask test`):
//!
//! - a file beyond a bound ([`super::limits::guard`]) is read by neither the
//!   line reader nor the streaming reader, and [`super::parse`] reports the
//!   bound;
//! - otherwise, when two readers both read a file they read the same thing,
//!   and the line reader and the streaming reader never read a file that
//!   serde_norway's reader refuses;
//! - the whole pipeline ([`super::parse`]) gives what serde_norway's reader
//!   alone gives ([`super::parse_by_serde`]): the same verdicts and reasons,
//!   or the same diagnostics at the same lines and columns.

use std::{collections::HashMap, fmt::Write as _};

use chrono::{TimeZone as _, Utc};

use super::{
    error::PolicyError,
    fast, limits,
    model::Policy,
    raw::{RawPolicy, RawVm},
    read::{parse, parse_by_serde},
    stream,
    verdict::Facts,
};

/// Which readers read a file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReadBy {
    pub line: bool,
    pub streaming: bool,
    pub serde: bool,
}

/// What a reader read, VMs put in place, as text to compare.
fn with_vms(
    read: impl FnOnce(&mut dyn FnMut(usize, RawVm)) -> Option<RawPolicy>,
) -> Option<String> {
    let mut vms = Vec::new();
    let mut raw = read(&mut |_, vm| vms.push(vm))?;
    if !vms.is_empty() {
        raw.vms = Some(vms);
    }
    Some(comparable(raw))
}

/// `raw` as text to compare. An empty list of subscriptions or VMs is the
/// same as none (docs/policy.md: "A section that is present but empty is
/// the same as leaving it out"); the readers may give either.
fn comparable(mut raw: RawPolicy) -> String {
    if raw.vms.as_ref().is_some_and(Vec::is_empty) {
        raw.vms = None;
    }
    if raw.subscriptions.as_ref().is_some_and(Vec::is_empty) {
        raw.subscriptions = None;
    }
    format!("{raw:?}")
}

/// The result of a pipeline, comparable: verdicts and reasons, or the
/// diagnostics.
fn outcome(result: Result<Policy, PolicyError>) -> String {
    match result {
        Ok(policy) => {
            let none = HashMap::new();
            let facts = Facts {
                now: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap(),
                interface_created: &none,
            };
            let mut out = format!("{:?}\n", policy.enforcement);
            for (i, vm) in policy.vms.iter().enumerate() {
                let (verdict, reason) = policy.decide(i, &facts);
                let _ = writeln!(
                    out,
                    "{} {} {} {verdict:?} {reason}",
                    vm.name,
                    vm.interface,
                    policy.subscription_of(vm).id
                );
            }
            out
        }
        Err(e) => format!("error:\n{e}"),
    }
}

/// Checks that the readers agree on `text`; says which read it, or how
/// they disagree.
pub fn readers_agree(text: &str) -> Result<ReadBy, String> {
    let guarded = limits::guard(text);
    let line = with_vms(|vm| fast::read(text, vm).map(|(raw, _)| raw));
    let streaming = with_vms(|vm| stream::read(text, vm).ok());
    if let Some(breach) = guarded.breaches.first() {
        if line.is_some() || streaming.is_some() {
            return Err(format!(
                "a reader read a file beyond a bound ({}):\n{text:?}",
                breach.message
            ));
        }
        let e = outcome(parse("p.yaml", text));
        if !e.contains(&breach.message) {
            return Err(format!(
                "a file beyond a bound ({}) gave:\n{e}\nfor:\n{text:?}",
                breach.message
            ));
        }
        return Ok(ReadBy::default());
    }
    let serde = if guarded.syntax_error {
        None
    } else {
        serde_norway::from_str::<RawPolicy>(text)
            .ok()
            .map(comparable)
    };
    for (name, read) in [("line", &line), ("streaming", &streaming)] {
        if let Some(read) = read
            && Some(read) != serde.as_ref()
        {
            return Err(format!(
                "the {name} reader read\n{read}\nserde_norway's\n{serde:?}\nfor:\n{text:?}"
            ));
        }
    }
    let (whole, alone) = (
        outcome(parse("p.yaml", text)),
        outcome(parse_by_serde("p.yaml", text)),
    );
    if whole != alone {
        return Err(format!(
            "the pipeline gave\n{whole}\nserde_norway's reader alone\n{alone}\nfor:\n{text:?}"
        ));
    }
    Ok(ReadBy {
        line: line.is_some(),
        streaming: streaming.is_some(),
        serde: serde.is_some(),
    })
}
