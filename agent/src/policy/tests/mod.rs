//! Tests of the policy engine: rules, validation messages, the example
//! policy, reports.

mod alloc;
mod example;
mod fast;
mod hostile;
mod readers;
mod report;
mod scale;
mod stream;
mod update;
mod validation;
mod verdict;

use std::collections::HashMap;

use chrono::{DateTime, Utc};

use super::{Desired, Facts, Policy, PolicyError, evaluate, parse};

/// A time from RFC 3339 text (test input, known good).
pub fn t(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
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
