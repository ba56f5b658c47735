//! The report's closing sections: the default hook the figures choose,
//! the goals missed with why (`templates/why/<benchmark>.md`), and the
//! published figures to hold ours against. Values only; the prose is in
//! the templates.

use std::fmt::Write as _;

use crate::{
    Results,
    figure::{Figure, pct},
    flood::{self, Holder},
    lab::Hook,
    stats,
    template::{Templates, values},
    throughput,
};

pub fn default_hook(t: &Templates, r: &Results) -> String {
    let hook_tp = |h: Hook| r.throughput.as_ref().and_then(|tp| tp.hooks.get(&h));
    let blocked = |h: Hook| hook_tp(h).map_or(f64::NAN, throughput::HookThroughput::blocked_share);
    let exempt = |h: Hook| hook_tp(h).map_or(f64::NAN, throughput::HookThroughput::exempt_share);
    // Allowed traffic of both kinds counts alike.
    let allowed = |h: Hook| f64::midpoint(blocked(h), exempt(h));
    let drop = |h: Hook| per_cpu_second(r, Holder::Guard(h));
    let cost = |tc: bool| {
        r.datapath.as_ref().map_or(f64::NAN, |d| {
            stats::median(
                &d.classes
                    .iter()
                    .map(|c| if tc { c.tc.added_ns } else { c.xdp.added_ns })
                    .collect::<Vec<_>>(),
            )
        })
    };
    let others = [Hook::XdpGeneric, Hook::Xdp];
    let best_other = others
        .iter()
        .copied()
        .max_by(|a, b| allowed(*a).total_cmp(&allowed(*b)))
        .unwrap_or(Hook::XdpGeneric);
    let margin = (allowed(Hook::Tc) - allowed(best_other)) * 100.0;
    let best_drop = others
        .iter()
        .copied()
        .max_by(|a, b| drop(*a).total_cmp(&drop(*b)))
        .unwrap_or(Hook::XdpGeneric);
    let drop_x = drop(best_drop) / drop(Hook::Tc);
    let drop_note = if drop_x > 1.3 {
        t.text(
            "default-hook/drop-more.md",
            &values([
                ("hook", best_drop.label().to_owned()),
                ("times", format!("{drop_x:.1}")),
            ]),
        )
    } else {
        t.text("default-hook/drop-alike.md", &values([]))
    };
    let other = best_other.label().to_owned();
    let verdict = if margin >= 5.0 {
        t.text(
            "default-hook/ahead.md",
            &values([
                ("margin", format!("{margin:.0}")),
                ("other", other),
                ("drop_note", drop_note),
            ]),
        )
    } else if margin > -5.0 {
        t.text(
            "default-hook/tie.md",
            &values([("other", other), ("drop_note", drop_note)]),
        )
    } else {
        t.text(
            "default-hook/behind.md",
            &values([("other", other), ("margin", format!("{:.0}", -margin))]),
        )
    };
    t.section(
        "default-hook.md",
        &values([
            ("cx", format!("{:.1}", cost(false))),
            ("ct", format!("{:.1}", cost(true))),
            ("btc", pct(blocked(Hook::Tc))),
            ("etc", pct(exempt(Hook::Tc))),
            ("bgen", pct(blocked(Hook::XdpGeneric))),
            ("egen", pct(exempt(Hook::XdpGeneric))),
            ("bnat", pct(blocked(Hook::Xdp))),
            ("enat", pct(exempt(Hook::Xdp))),
            (
                "dgen",
                format!("{:.2}", drop(Hook::XdpGeneric) / drop(Hook::Tc)),
            ),
            ("dnat", format!("{:.2}", drop(Hook::Xdp) / drop(Hook::Tc))),
            ("verdict", verdict),
        ]),
    )
}

/// What `holder` held back per softirq CPU-second in the drop benchmark.
fn per_cpu_second(r: &Results, holder: Holder) -> f64 {
    r.flood
        .as_ref()
        .and_then(|f| f.holders.get(&holder))
        .map_or(f64::NAN, flood::HolderResult::per_cpu_second)
}

pub fn missed(t: &Templates, r: &Results, figures: &[Figure]) -> String {
    let misses: Vec<&Figure> = figures.iter().filter(|f| f.met == Some(false)).collect();
    let mut list = String::new();
    if misses.is_empty() {
        list = t.text("missed-none.md", &values([]));
    }
    let mut said = std::collections::BTreeSet::new();
    for f in misses {
        let _ = writeln!(
            list,
            "- **{}: {}**: {} against {}.",
            f.bench, f.what, f.measured, f.goal
        );
        if said.insert(f.bench) {
            for line in why(t, r, f.bench).lines() {
                let _ = writeln!(list, "  {line}");
            }
        }
    }
    t.section("missed.md", &values([("list", list)]))
}

/// Why a benchmark missed its goals, and what would close them.
fn why(t: &Templates, r: &Results, bench: &str) -> String {
    let name = match bench {
        "1 datapath" => return t.text("why/datapath.md", &datapath_why(r)),
        "2 throughput" => {
            let none = r
                .throughput
                .as_ref()
                .and_then(|tp| tp.hooks.get(&Hook::None))
                .map(|h| h.blocked_gbps.clone())
                .unwrap_or_default();
            return t.text(
                "why/throughput.md",
                &values([
                    ("lo", format!("{:.1}", stats::min(&none))),
                    ("hi", format!("{:.1}", stats::max(&none))),
                ]),
            );
        }
        "3 drop" => return t.text("why/drop.md", &drop_why(r)),
        "4 control" => "why/control.md",
        "5 churn" => "why/churn.md",
        "6 idle" => "why/idle.md",
        "7 taps" => "why/taps.md",
        _ => return String::new(),
    };
    t.text(name, &values([]))
}

fn datapath_why(r: &Results) -> crate::template::Values {
    let (exempt, loop_ns) = r.datapath.as_ref().map_or((f64::NAN, f64::NAN), |d| {
        (
            d.classes
                .iter()
                .find(|c| c.name == "exempt VM")
                .map_or(f64::NAN, |c| c.xdp.added_ns),
            d.empty_xdp_ns,
        )
    });
    values([
        ("exempt", format!("{exempt:+.1}")),
        (
            "exempt_met",
            if exempt <= crate::datapath::GOAL_PASS_NS {
                "within the goal"
            } else {
                "over the goal"
            }
            .to_owned(),
        ),
        ("loop_ns", format!("{loop_ns:.1}")),
        ("slower", format!("{:.0}", loop_ns / 1.3)),
    ])
}

fn drop_why(r: &Results) -> crate::template::Values {
    let tc = per_cpu_second(r, Holder::Guard(Hook::Tc));
    let ingress = per_cpu_second(r, Holder::NftIngress);
    let held_ns = r
        .datapath
        .as_ref()
        .and_then(|d| d.classes.iter().find(|c| c.name == "TCP to 25, held back"))
        .map_or(f64::NAN, |c| c.tc.added_ns);
    values([
        ("ingress_m", format!("{:.2}", ingress / 1e6)),
        ("tc_m", format!("{:.2}", tc / 1e6)),
        ("ns_ing", format!("{:.0}", 1e9 / ingress)),
        ("ns_tc", format!("{:.0}", 1e9 / tc)),
        ("held_ns", format!("{held_ns:.0}")),
    ])
}

pub fn anchors(t: &Templates, r: &Results) -> String {
    let per = |h: Holder| r.flood.as_ref().and_then(|f| f.holders.get(&h));
    let drop_tc = per(Holder::Guard(Hook::Tc)).map_or_else(
        || "-".to_owned(),
        |h| {
            format!(
                "`tc`: {:.2} M held back per softirq CPU-second",
                h.per_cpu_second() / 1e6
            )
        },
    );
    let drop_nat = per(Holder::Guard(Hook::Xdp)).map_or_else(
        || "-".to_owned(),
        |h| {
            format!(
                "native `xdp` on veth: {:.2} M per softirq CPU-second",
                h.per_cpu_second() / 1e6
            )
        },
    );
    let nft = r.flood.as_ref().map_or_else(
        || "-".to_owned(),
        |_| {
            let g = |h: Holder| per_cpu_second(r, h) / 1e6;
            format!(
                "nftables forward {:.2} M, netdev ingress {:.2} M per softirq CPU-second",
                g(Holder::NftForward),
                g(Holder::NftIngress)
            )
        },
    );
    let ns = r.datapath.as_ref().map_or_else(
        || "-".to_owned(),
        |d| {
            let c = d.classes.iter().find(|c| c.name == "exempt VM");
            format!(
                "{:.1} ns per test run (exempt VM, XDP), of which the empty loop {:.1} ns",
                c.map_or(f64::NAN, |c| c.xdp.ns),
                d.empty_xdp_ns
            )
        },
    );
    t.section(
        "anchors.md",
        &values([
            ("drop_tc", drop_tc),
            ("nft", nft),
            ("ns", ns),
            ("drop_nat", drop_nat),
        ]),
    )
}
