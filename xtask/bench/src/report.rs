//! The figures as a summary (stdout), as sanity checks (the smoke run), and
//! as BENCHMARKS.md.

use std::fmt::Write as _;

use crate::{
    Bench, Results, churn, control, datapath,
    flood::{self, Holder},
    lab::Hook,
    stats, throughput,
};

/// One figure with its goal.
pub struct Figure {
    pub bench: &'static str,
    pub what: String,
    pub goal: String,
    pub measured: String,
    /// None: no goal to meet.
    pub met: Option<bool>,
}

fn status(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "-",
    }
}

/// The default hook on a veth (`hook: auto`).
pub const DEFAULT_HOOK: Hook = Hook::Tc;

pub fn figures(r: &Results) -> Vec<Figure> {
    let mut out = Vec::new();
    datapath_figures(r, &mut out);
    throughput_figures(r, &mut out);
    flood_figures(r, &mut out);
    control_churn_idle_figures(r, &mut out);
    crate::hv::report::figures(r, &mut out);
    out
}

fn datapath_figures(r: &Results, out: &mut Vec<Figure>) {
    if let Some(d) = &r.datapath {
        let worst = |held: bool, tc: bool| {
            d.classes
                .iter()
                .filter(|c| c.held == held)
                .map(|c| (c.name, if tc { c.tc.added_ns } else { c.xdp.added_ns }))
                .max_by(|a, b| a.1.total_cmp(&b.1))
        };
        for (held, goal) in [
            (false, datapath::GOAL_PASS_NS),
            (true, datapath::GOAL_HELD_NS),
        ] {
            for tc in [false, true] {
                if let Some((name, ns)) = worst(held, tc) {
                    out.push(Figure {
                        bench: "1 datapath",
                        what: format!(
                            "{} program, worst {} class ({name}): ns added to an empty program",
                            if tc { "TC" } else { "XDP" },
                            if held { "held-back" } else { "passing" }
                        ),
                        goal: format!("<= {goal:.0} ns"),
                        measured: format!("{ns:.1} ns"),
                        met: Some(ns <= goal),
                    });
                }
            }
        }
    }
}

fn throughput_figures(r: &Results, out: &mut Vec<Figure>) {
    if let Some(h) = r
        .throughput
        .as_ref()
        .and_then(|t| t.hooks.get(&DEFAULT_HOOK))
    {
        for (who, share, gbps) in [
            ("blocked VM, allowed port", h.blocked_share(), h.blocked()),
            ("exempt VM", h.exempt_share(), h.exempt()),
        ] {
            out.push(Figure {
                bench: "2 throughput",
                what: format!("default hook (tc), {who}: share of no-agent throughput"),
                goal: format!(">= {:.0} %", throughput::GOAL_RATIO * 100.0),
                measured: format!("{:.1} % ({gbps:.1} Gbit/s)", share * 100.0),
                met: Some(share >= throughput::GOAL_RATIO),
            });
        }
    }
}

fn flood_figures(r: &Results, out: &mut Vec<Figure>) {
    if let Some(f) = &r.flood {
        for hook in [Hook::Xdp, Hook::XdpGeneric, Hook::Tc] {
            if let Some(h) = f.holders.get(&Holder::Guard(hook)) {
                let x = stats::median(&h.vs_best_nft);
                out.push(Figure {
                    bench: "3 drop",
                    what: format!(
                        "{}: held back per CPU-second, over the best nftables rule",
                        hook.label()
                    ),
                    goal: format!(">= {:.0}x", flood::GOAL_VS_NFT),
                    measured: format!("{x:.2}x ({:.2} M/CPU-s)", h.per_cpu_second() / 1e6),
                    met: Some(x >= flood::GOAL_VS_NFT),
                });
            }
        }
        let (sent, lost) = f.holders.values().fold((0, 0), |(s, l), h| {
            (s + h.exempt_sent(), l + h.exempt_lost())
        });
        out.push(Figure {
            bench: "3 drop",
            what: "exempt VM's SYNs lost during every flood".to_owned(),
            goal: "0".to_owned(),
            measured: format!("{lost} of {sent}"),
            met: Some(lost == 0),
        });
    }
}

fn control_churn_idle_figures(r: &Results, out: &mut Vec<Figure>) {
    if let Some(c) = &r.control {
        for s in c {
            out.push(Figure {
                bench: "4 control",
                what: format!("{} VMs: `check`", thousands(s.vms)),
                goal: "-".to_owned(),
                measured: format!("{:.0} ms", s.check() * 1000.0),
                met: None,
            });
            let big = s.vms >= 100_000;
            out.push(Figure {
                bench: "4 control",
                what: format!("{} VMs: full apply (start to `ready`)", thousands(s.vms)),
                goal: if big {
                    format!("<= {:.0} s", control::GOAL_FULL_APPLY_S)
                } else {
                    "-".to_owned()
                },
                measured: format!("{:.0} ms", s.ready() * 1000.0),
                met: big.then_some(s.ready() <= control::GOAL_FULL_APPLY_S),
            });
            out.push(Figure {
                bench: "4 control",
                what: format!(
                    "{} VMs: one-VM change, reload work (rename to `applied`, less the 100 ms quiet)",
                    thousands(s.vms)
                ),
                goal: if big {
                    format!("<= {:.0} ms", control::GOAL_CHANGE_MS)
                } else {
                    "-".to_owned()
                },
                measured: format!(
                    "{:.0} ms (map apply {:.1} ms)",
                    s.change_work(),
                    s.change_apply()
                ),
                met: big.then_some(s.change_work() <= control::GOAL_CHANGE_MS),
            });
            out.push(Figure {
                bench: "4 control",
                what: format!("{} VMs: agent peak RSS", thousands(s.vms)),
                goal: if big {
                    format!("<= {:.0} MB", control::GOAL_RSS_MIB)
                } else {
                    "-".to_owned()
                },
                measured: format!("{:.1} MiB", s.peak_rss_mib),
                met: big.then_some(s.peak_rss_mib <= control::GOAL_RSS_MIB),
            });
        }
    }
    if let Some(ch) = &r.churn {
        out.push(Figure {
            bench: "5 churn",
            what: format!(
                "{} creations: interface existing to enforced, median (p99)",
                ch.params.creations
            ),
            goal: format!("median < {:.0} ms", churn::GOAL_MEDIAN_MS),
            measured: format!("{:.2} ms ({:.2} ms)", ch.median(), ch.p99()),
            met: Some(ch.median() < churn::GOAL_MEDIAN_MS),
        });
    }
    if let Some(c) = &r.control {
        for s in c {
            out.push(Figure {
                bench: "6 idle",
                what: format!(
                    "agent CPU while idle, {} VMs, {:.0} s",
                    thousands(s.vms),
                    s.idle_seconds
                ),
                goal: format!("well under 1 % of a core (<= {} %)", control::GOAL_IDLE_PCT),
                measured: format!("{:.3} %", s.idle_cpu_pct),
                met: Some(s.idle_cpu_pct <= control::GOAL_IDLE_PCT),
            });
        }
    }
}

pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
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

/// What is not sane in the results: a benchmark that was asked for and
/// gave nothing, a figure that is not finite, or not positive where it must
/// be. Timings are never compared with their goals here.
pub fn sanity(r: &Results) -> Vec<String> {
    let mut bad = Vec::new();
    let mut missing = |bench: Bench, ran: bool| {
        if r.requested.contains(&bench) && !ran {
            bad.push(format!("{bench:?}: asked for, but no result"));
        }
    };
    missing(Bench::Datapath, r.datapath.is_some());
    missing(Bench::Throughput, r.throughput.is_some());
    missing(Bench::Drop, r.flood.is_some());
    missing(
        Bench::Control,
        r.control.as_ref().is_some_and(|c| !c.is_empty()),
    );
    missing(Bench::Churn, r.churn.is_some());
    missing(Bench::Taps, r.hv.is_some());
    if let Some(ch) = &r.churn
        && ch.from_exists_ms.len() != ch.params.creations
    {
        bad.push(format!(
            "churn: {} windows for {} creations",
            ch.from_exists_ms.len(),
            ch.params.creations
        ));
    }
    for (what, v, strictly) in sane_figures(r) {
        let ok = v.is_finite() && if strictly { v > 0.0 } else { v >= 0.0 };
        if !ok {
            bad.push(format!("{what}: {v}"));
        }
    }
    bad
}

/// Every figure the smoke run checks: (what, value, whether it must be > 0;
/// else >= 0 is enough).
fn sane_figures(r: &Results) -> Vec<(String, f64, bool)> {
    let mut figures: Vec<(String, f64, bool)> = Vec::new();
    if let Some(d) = &r.datapath {
        figures.push(("datapath: empty XDP ns".into(), d.empty_xdp_ns, true));
        figures.push(("datapath: empty TC ns".into(), d.empty_tc_ns, true));
        for c in &d.classes {
            figures.push((format!("datapath {}: XDP ns", c.name), c.xdp.ns, true));
            figures.push((format!("datapath {}: TC ns", c.name), c.tc.ns, true));
            // A difference: noise may make it negative, but it must exist.
            figures.push((
                format!("datapath {}: XDP added", c.name),
                c.xdp.added_ns.abs(),
                false,
            ));
            figures.push((
                format!("datapath {}: TC added", c.name),
                c.tc.added_ns.abs(),
                false,
            ));
        }
    }
    if let Some(t) = &r.throughput {
        for hook in throughput::HOOKS {
            let h = t.hooks.get(&hook);
            let label = hook.label();
            let get = |f: fn(&throughput::HookThroughput) -> f64| h.map_or(f64::NAN, f);
            figures.push((
                format!("throughput {label}: blocked VM"),
                get(throughput::HookThroughput::blocked),
                true,
            ));
            figures.push((
                format!("throughput {label}: exempt VM"),
                get(throughput::HookThroughput::exempt),
                true,
            ));
            figures.push((
                format!("throughput {label}: share"),
                get(throughput::HookThroughput::blocked_share),
                true,
            ));
        }
    }
    if let Some(f) = &r.flood {
        for holder in Holder::ALL {
            let h = f.holders.get(&holder);
            let label = holder.label();
            let get = |f: fn(&flood::HolderResult) -> f64| h.map_or(f64::NAN, f);
            figures.push((
                format!("drop {label}: per CPU-second"),
                get(flood::HolderResult::per_cpu_second),
                true,
            ));
            figures.push((
                format!("drop {label}: offered pps"),
                get(flood::HolderResult::offered_pps),
                true,
            ));
            figures.push((
                format!("drop {label}: exempt SYNs sent"),
                h.map_or(f64::NAN, |h| h.exempt_sent() as f64),
                true,
            ));
        }
    }
    for s in r.control.iter().flatten() {
        let n = s.vms;
        figures.push((format!("control {n}: check"), s.check(), true));
        figures.push((format!("control {n}: ready"), s.ready(), true));
        figures.push((format!("control {n}: change"), s.change_e2e(), true));
        figures.push((format!("control {n}: apply"), s.change_apply(), true));
        figures.push((format!("control {n}: peak RSS"), s.peak_rss_mib, true));
        figures.push((format!("idle {n}: CPU"), s.idle_cpu_pct, false));
    }
    if let Some(ch) = &r.churn {
        figures.push(("churn: median".into(), ch.median(), false));
        figures.push(("churn: p99".into(), ch.p99(), false));
    }
    if let Some(hv) = &r.hv {
        crate::hv::report::sane_figures(hv, &mut figures);
    }
    figures
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
    if let Some(hv) = &r.hv {
        bad.extend(crate::hv::report::rendering_problems(r, hv));
    }
    bad
}

pub fn markdown(r: &Results) -> String {
    crate::report_md::render(r, &figures(r))
}
