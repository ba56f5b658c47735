//! Every program loads on this kernel with every feature switched on (the
//! actions, fragment tracking and the reply rate limit are all compiled into
//! the one object), and the verifier's work stays within a budget well below
//! its limit of 1,000,000 instructions processed: a change that makes the
//! verifier walk far more paths fails here before it fails to load.
//! `cargo test -p egress-guard-tests --test it -- verifier:: --nocapture` prints
//! the figures recorded in `docs/datapath.md`; `cargo run -p
//! egress-guard-tests --example vstats` prints them even for a program that
//! does not load. Needs root.

use egress_guard::datapath::{Capacities, Datapath, TC_EGRESS_PROGRAM, TC_L3_PROGRAM, TC_PROGRAM};

use crate::fixtures::serial;

/// Instructions the verifier may process per program: half its limit.
const VERIFIER_BUDGET: u32 = 500_000;

#[test]
fn every_program_loads_within_the_verifier_budget() {
    let _serial = serial::shared(module_path!());
    let mut datapath =
        Datapath::load_unpinned(Capacities::default()).expect("loading the programs");
    let xdp = datapath.xdp().unwrap().info().unwrap();
    let mut programs = vec![("eg_xdp", xdp)];
    for name in [TC_PROGRAM, TC_EGRESS_PROGRAM, TC_L3_PROGRAM] {
        programs.push((name, datapath.tc_program(name).unwrap().info().unwrap()));
    }
    for (name, info) in programs {
        let translated = info.size_translated().unwrap_or(0);
        let verified = info
            .verified_instruction_count()
            .expect("the kernel reports the verifier's count");
        println!(
            "{name}: {} instructions ({translated} bytes translated, {} bytes jited), {verified} instructions processed by the verifier",
            translated / 8,
            info.size_jitted()
        );
        assert!(
            verified < VERIFIER_BUDGET,
            "{name}: the verifier processed {verified} instructions (budget {VERIFIER_BUDGET})"
        );
    }
}
