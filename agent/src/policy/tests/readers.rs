//! The three readers agree (issue 13, item 3; the oracle is
//! `policy::agree`) on random edits of policies written in block and flow
//! style, with the pieces of YAML that change what a line means (and those
//! the bounds refuse).
//!
//! Deterministic (a fixed seed), so that it runs in every `cargo test` and
//! in `cargo xtask test`; `EGRESS_GUARD_FUZZ_ROUNDS` runs more rounds.

use super::{
    inputs::{EXAMPLE, PIECES, PLAIN, Rng, repeat_line, replace_value},
    scale::big_policy,
};
use crate::policy::readers_agree;

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
    "\u{0}",
    "\u{7}",
    "\u{85}",
    "\u{feff}",
    "\u{2028}",
    "\r\n",
];

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
        3 | 4 => replace_value(rng, text, &['\n', ',', '}']),
        _ => repeat_line(rng, text, at),
    }
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
        match readers_agree(&text) {
            Ok(by) => {
                for (n, read) in [by.line, by.streaming, by.serde].into_iter().enumerate() {
                    read_by[n] += usize::from(read);
                }
            }
            Err(e) => panic!("{e}"),
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
