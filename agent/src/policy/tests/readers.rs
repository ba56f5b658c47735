//! The three readers agree (issue 13, item 3). On random edits of policies
//! written in block and flow style, with the pieces of YAML that change
//! what a line means (and those the bounds refuse):
//!
//! - whenever two readers both read a file, they read the same thing; the
//!   line reader and the streaming reader never read a file serde_norway
//!   refuses;
//! - the whole pipeline (`parse`: line reader, streaming reader, then
//!   serde_norway) gives the same result as serde_norway's reader alone:
//!   the same verdicts and reasons, or the same diagnostics at the same
//!   lines and columns;
//! - a file beyond a bound is refused by every reader, and its diagnostic
//!   is the bound's.
//!
//! Deterministic (a fixed seed), so that it runs in every `cargo test` and
//! in `cargo xtask test`; `EGRESS_GUARD_FUZZ_ROUNDS` runs more rounds.

use std::fmt::Write as _;

use super::{
    fast::{PIECES, PLAIN, Rng, VALUES, fast_read, with_vms},
    scale::big_policy,
};
use crate::policy::{
    Facts, Policy, PolicyError, limits, parse, parse_by_serde, raw::RawPolicy, stream,
};

const EXAMPLE: &str = include_str!("../../../../deploy/policy.example.yaml");

/// A policy in flow style, with an anchor.
const FLOW: &str = "version: 1
enforcement: {ports: [25, 465], attach: ['tap*'], unknown: allow, cutoff: 2017-11-15}
offers:
  lab: {restricted: always, exemption: on-request}
  msdn: {restricted: never}
subscriptions:
  - {id: a, offer: lab, created: 2020-01-01, exemption: &g {granted: 2021-01-01T00:00:00Z}}
  - {id: b, offer: pay-as-you-go, created: 2016-01-01}
vms:
  - {name: x, subscription: a, interface: tap0, addresses: [10.0.0.1, \"fd00::1\"]}
  - {name: y, subscription: b, interface: \"tap1\", started: 2021-06-01T00:00:00Z, override: ~}
";

/// What YAML the bounds refuse, or that readers may read differently.
const HOSTILE: &[&str] = &[
    "!evil ",
    "!!str ",
    "!!int ",
    "!!map ",
    "&x ",
    "*x",
    "[[[[[[[[[[",
    "{a: {a: {a: ",
    "? ",
    "\\0",
    "\"\\0\"",
    "%",
    "\\t",
];

/// The result of a pipeline, comparable: verdicts and reasons, or the
/// diagnostics.
fn outcome(result: Result<Policy, PolicyError>) -> String {
    match result {
        Ok(policy) => {
            let facts = Facts {
                now: super::t("2026-01-01T00:00:00Z"),
                interface_created: &std::collections::HashMap::new(),
            };
            let mut out = format!("{:?}\n", policy.enforcement);
            for i in 0..policy.vms.len() {
                let (verdict, reason) = policy.decide(i, &facts);
                let _ = writeln!(
                    out,
                    "{} {} {} {verdict:?} {reason}",
                    policy.vms[i].name,
                    policy.vms[i].interface,
                    policy.subscription_of(&policy.vms[i]).id
                );
            }
            out
        }
        Err(e) => format!("error:\n{e}"),
    }
}

fn streamed(text: &str) -> Option<String> {
    with_vms(|vm| stream::read(text, vm).ok())
}

fn serde_read(text: &str) -> Option<String> {
    serde_norway::from_str::<RawPolicy>(text)
        .ok()
        .map(|raw| format!("{raw:?}"))
}

/// One random edit of `text`.
fn edit(rng: &mut Rng, text: &mut String) {
    let at = rng.below(text.len() + 1);
    if !text.is_char_boundary(at) {
        return;
    }
    match rng.below(7) {
        0 => text.insert_str(at, PIECES[rng.below(PIECES.len())]),
        1 => text.insert_str(at, HOSTILE[rng.below(HOSTILE.len())]),
        2 if at < text.len() => {
            text.remove(at);
        }
        3 | 4 => {
            let values: Vec<usize> = text.match_indices(": ").map(|(i, _)| i + 2).collect();
            if let Some(&start) = values.get(rng.below(values.len().max(1))) {
                let end = text[start..]
                    .find(['\n', ',', '}'])
                    .map_or(text.len(), |i| start + i);
                text.replace_range(start..end, VALUES[rng.below(VALUES.len())]);
            }
        }
        _ => {
            // A line repeated, or moved.
            let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
            let end = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
            let line = text[start..end].to_owned();
            let to = rng.below(text.len() + 1);
            if text.is_char_boundary(to) {
                text.insert_str(to, &line);
            }
        }
    }
}

/// Checks one file; says which readers read it.
fn agree(text: &str) -> [bool; 3] {
    let guarded = limits::guard(text);
    let fast = fast_read(text);
    let stream = streamed(text);
    if !guarded.breaches.is_empty() {
        // Beyond a bound: no reader takes it, and the bound is said.
        assert_eq!(
            fast, None,
            "the line reader read a file beyond a bound:\n{text}"
        );
        assert_eq!(
            stream, None,
            "the streaming reader read a file beyond a bound:\n{text}"
        );
        let e = outcome(parse("p.yaml", text));
        assert!(
            e.contains(&guarded.breaches[0].message),
            "a file beyond a bound:\n{text}\ngave:\n{e}"
        );
        return [false; 3];
    }
    let serde = if guarded.syntax_error {
        None
    } else {
        serde_read(text)
    };
    for (name, read) in [("line", &fast), ("streaming", &stream)] {
        if let Some(read) = read {
            assert_eq!(
                Some(read),
                serde.as_ref(),
                "the {name} reader and serde_norway read this differently:\n{text}\n{text:?}"
            );
        }
    }
    assert_eq!(
        outcome(parse("p.yaml", text)),
        outcome(parse_by_serde("p.yaml", text)),
        "the pipeline and serde_norway alone differ on:\n{text}"
    );
    [fast.is_some(), stream.is_some(), serde.is_some()]
}

#[test]
fn the_readers_agree_on_random_edits() {
    let rounds: usize = std::env::var("EGRESS_GUARD_FUZZ_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2000);
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let bases = [
        PLAIN.to_owned(),
        EXAMPLE.to_owned(),
        FLOW.to_owned(),
        big_policy(3),
    ];
    let mut read_by = [0usize; 3];
    for round in 0..rounds {
        let mut text = bases[round % bases.len()].clone();
        for _ in 0..=rng.below(3) {
            edit(&mut rng, &mut text);
        }
        for (n, read) in agree(&text).iter().enumerate() {
            read_by[n] += usize::from(*read);
        }
    }
    // Each reader reads many of the edited files (the test can fail).
    println!(
        "read by the line reader, the streaming reader, serde_norway: {read_by:?} of {rounds}"
    );
    assert!(read_by[0] > rounds / 20, "{read_by:?}");
    assert!(read_by[1] > rounds / 10, "{read_by:?}");
    assert!(read_by[2] > rounds / 10, "{read_by:?}");
}
