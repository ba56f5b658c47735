//! Tests of the policy engine: rules, validation messages, the example
//! policy, reports.

mod alloc;
mod example;
mod exemptions;
mod fast;
mod files;
mod hostile;
mod inputs;
mod interfaces;
mod readers;
mod references;
mod report;
mod scale;
mod stream;
mod update;
mod validation;
mod values;
mod verdict;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Desired, Facts, Policy, PolicyError, Verdict, evaluate, parse};

/// A time from RFC 3339 text (test input, known good).
pub fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

/// A valid base: subscriptions `s` (msdn) and `p` (pay-as-you-go), no VMs.
pub const BASE: &str = "version: 1
subscriptions:
  - id: s
    offer: msdn
    created: 2020-01-01
  - id: p
    offer: pay-as-you-go
    created: 2020-01-01
";

/// The one diagnostic of test YAML that must be invalid.
pub fn one(yaml: &str) -> String {
    let e = errors(yaml);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap_or_default()
}

/// Parses test YAML that must be valid.
pub fn ok(yaml: &str) -> Policy {
    match parse("p.yaml", yaml) {
        Ok(p) => p,
        Err(e) => panic!("expected a valid policy, got:\n{e}\n--- in:\n{yaml}"),
    }
}

/// The diagnostics of test YAML that must be invalid, one string each.
pub fn errors(yaml: &str) -> Vec<String> {
    match parse("p.yaml", yaml) {
        Ok(_) => panic!("expected errors, the policy is valid:\n{yaml}"),
        Err(PolicyError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// Evaluates at `now` with no observed interfaces.
pub fn eval(policy: &Policy, now: &str) -> Desired {
    let none = HashMap::new();
    evaluate(
        policy,
        &Facts {
            now: t(now),
            interface_created: &none,
        },
    )
}

/// Evaluates at `now` with observed interface creations.
pub fn eval_seen(policy: &Policy, now: &str, seen: &[(&str, &str)]) -> Desired {
    let created: HashMap<String, DateTime<Utc>> =
        seen.iter().map(|(i, c)| ((*i).to_owned(), t(c))).collect();
    evaluate(
        policy,
        &Facts {
            now: t(now),
            interface_created: &created,
        },
    )
}

/// One subscription `s` (its fields indented by 4) and one VM `v` on `tap0`
/// (extra fields indented by 4).
pub fn single(sub: &str, vm: &str) -> Policy {
    ok(&format!(
        "version: 1\nsubscriptions:\n  - id: s\n{sub}vms:\n  - name: v\n    subscription: s\n    interface: tap0\n{vm}"
    ))
}

/// The fields of a pay-as-you-go subscription created after the cutoff.
pub const PAYG_2020: &str = "    offer: pay-as-you-go\n    created: 2020-05-01\n";

/// [`single`], the subscription [`PAYG_2020`] with an exemption granted at
/// `granted`.
pub fn exempted_since(granted: &str, vm: &str) -> Policy {
    single(
        &format!("{PAYG_2020}    exemption:\n      granted: {granted}\n"),
        vm,
    )
}

/// Verdict, reason sentence and reason code of the only VM.
pub fn only(d: &Desired) -> (Verdict, String, &'static str) {
    assert_eq!(d.vms.len(), 1);
    let vm = &d.vms[0];
    (vm.verdict, vm.reason.to_string(), vm.reason.code())
}
