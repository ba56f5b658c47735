//! Every figure beside its goal, as the summary, the report's table and
//! its list of missed goals give them.

use crate::{
    Results, churn, control, datapath,
    figure::{Figure, thousands},
    flood::{self, Holder},
    lab::Hook,
    stats, throughput,
};

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
