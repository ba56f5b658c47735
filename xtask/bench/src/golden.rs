//! BENCHMARKS.md rendered from fixed figures (`fixture`) must be what the
//! golden files under `xtask/bench/testdata/` hold, byte for byte: the
//! prose lives in templates, and moving it must not change a character.
//! `EGB_BLESS=1 cargo test -p egress-guard-bench golden` rewrites them
//! (then read the diff).

use std::path::PathBuf;

use crate::{Results, fixture, report};

fn check(name: &str, r: &Results) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(format!("{name}.md"));
    let text = report::markdown(r);
    if std::env::var_os("EGB_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("testdata");
        std::fs::write(&path, &text).expect("writing the golden file");
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    if text != want {
        let line = text
            .lines()
            .zip(want.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| text.lines().count().min(want.lines().count()));
        panic!(
            "{name}: the rendered report differs from {} from line {}:\n  got:  {:?}\n  want: {:?}",
            path.display(),
            line + 1,
            text.lines().nth(line),
            want.lines().nth(line)
        );
    }
}

#[test]
fn report_with_every_goal_met_is_the_golden_one() {
    check("all-met", &fixture::all_met());
}

#[test]
fn report_with_every_goal_missed_is_the_golden_one() {
    check("all-missed", &fixture::all_missed());
}

#[test]
fn report_of_a_partial_run_is_the_golden_one() {
    check("partial", &fixture::partial());
}

#[test]
fn report_with_no_goal_missed_is_the_golden_one() {
    check("churn-only", &fixture::churn_only());
}
