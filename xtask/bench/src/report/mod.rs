//! The figures as a summary (stdout), as sanity checks (the smoke run), and
//! as BENCHMARKS.md.
//!
//! Layers, from the top: this module assembles the report from its
//! sections (`sections`, `closing`, `commands`, and benchmark 7's from
//! `hv::report`); each section fills its template (`crate::template`) with
//! values from the results; `figures` gives every figure with its goal
//! (`crate::figure`). Nothing below imports this module.

mod closing;
mod commands;
mod figures;
mod sanity;
mod sections;

use std::fmt::Write as _;

pub use figures::figures;
pub use sanity::sanity;

use crate::{Results, template::Templates};

fn status(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

/// The summary printed at the end of every run.
pub fn summary(r: &Results) -> String {
    let mut out = format!(
        "benchmark summary ({} run, {:.0} s):\n",
        r.mode.name(),
        r.took.as_secs_f64()
    );
    for f in figures(r) {
        let _ = writeln!(
            out,
            "  {:<7} {:<12} {:<90} goal {:<24} {}",
            status(f.met),
            f.bench,
            f.what,
            f.goal,
            f.measured
        );
    }
    out
}

/// What is missing from the rendered report: a section of a benchmark
/// that ran, or the summary.
pub fn rendering_problems(r: &Results) -> Vec<String> {
    let text = markdown(r);
    let mut want = vec![
        "## Summary",
        "## Goals missed",
        "## Anchors",
        "## What each benchmark runs",
    ];
    for (ran, heading) in [
        (r.datapath.is_some(), "## 1. Datapath cost per packet"),
        (r.throughput.is_some(), "## 2. Allowed traffic"),
        (r.flood.is_some(), "## 3. Drop capacity"),
        (r.control.is_some(), "## 4. Control plane"),
        (r.churn.is_some(), "## 5. Interface churn"),
        (r.control.is_some(), "## 6. Cost while idle"),
    ] {
        if ran {
            want.push(heading);
        }
    }
    let mut bad: Vec<String> = want
        .into_iter()
        .filter(|h| !text.contains(h))
        .map(|h| format!("the report has no `{h}`"))
        .collect();
    // A template that cannot be read or names what the code does not give.
    bad.extend(
        text.lines()
            .filter(|l| l.contains("RENDERING ERROR"))
            .map(str::to_owned),
    );
    if let Some(hv) = &r.hv {
        bad.extend(crate::hv::report::rendering_problems(r, hv));
    }
    bad
}

/// BENCHMARKS.md: every figure beside its goal, how it was measured, why
/// it is what it is, and the published figures to hold it against.
pub fn markdown(r: &Results) -> String {
    let t = Templates::in_workspace(&r.workspace);
    let figures = figures(r);
    let mut out = sections::intro(&t, r);
    out.push_str(&sections::summary(&t, &figures));
    if let Some(d) = &r.datapath {
        out.push_str(&sections::datapath(&t, d));
    }
    if let Some(tp) = &r.throughput {
        out.push_str(&sections::throughput(&t, tp));
    }
    if let Some(f) = &r.flood {
        out.push_str(&sections::drop(&t, f));
    }
    if let Some(c) = &r.control {
        out.push_str(&sections::control(&t, r, c));
    }
    if let Some(ch) = &r.churn {
        out.push_str(&sections::churn(&t, ch));
    }
    if let Some(c) = &r.control {
        out.push_str(&sections::idle(&t, c));
    }
    if let Some(hv) = &r.hv {
        out.push_str(&crate::hv::report::section(r, hv));
    }
    out.push_str(&closing::default_hook(&t, r));
    out.push_str(&closing::missed(&t, r, &figures));
    out.push_str(&closing::anchors(&t, r));
    out.push_str(&commands::section(&t, r));
    out
}
