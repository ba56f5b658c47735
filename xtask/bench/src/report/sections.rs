//! The report's opening and the sections of benchmarks 1 to 6: the values
//! and tables each section's template (`templates/<section>.md`) names.
//! The prose is in the templates; nothing here is a sentence.

use crate::{
    Results, churn, control,
    datapath::{DatapathResult, Origin},
    figure::{Figure, met, pct, thousands},
    flood::{self, FloodResult, Holder},
    stats,
    template::{Templates, table, values},
    throughput::{self, ThroughputResult},
};

pub fn intro(t: &Templates, r: &Results) -> String {
    let m = &r.machine;
    let how = if m.busy_before >= 0.25 {
        "busy with other work"
    } else if m.busy_before >= 0.05 {
        "lightly used by other work"
    } else {
        "quiet"
    };
    t.section(
        "intro.md",
        &values([
            ("mode", r.mode.name().to_owned()),
            ("nice", r.nice.to_string()),
            ("date", r.started.format("%Y-%m-%d %H:%M UTC").to_string()),
            ("commit", m.commit.clone()),
            ("minutes", format!("{:.0}", r.took.as_secs_f64() / 60.0)),
            ("cpu", m.cpu_model.clone()),
            ("cpus", m.cpus.to_string()),
            (
                "virt",
                if m.virtualised {
                    " (a virtual machine)"
                } else {
                    ""
                }
                .to_owned(),
            ),
            ("mem", format!("{:.1}", m.memory_gib)),
            ("kernel", m.kernel.clone()),
            ("how", how.to_owned()),
            ("busy", format!("{:.0}", m.busy_before * 100.0)),
            ("load_1m", format!("{:.2}", m.load_at_start.0)),
            ("load_5m", format!("{:.2}", m.load_at_start.1)),
            ("steal", format!("{:.1}", r.steal_share * 100.0)),
        ]),
    )
}

pub fn summary(t: &Templates, figures: &[Figure]) -> String {
    let rows: Vec<[String; 5]> = figures
        .iter()
        .map(|f| {
            [
                f.bench.to_owned(),
                f.what.clone(),
                f.goal.clone(),
                f.measured.clone(),
                met(f.met).to_owned(),
            ]
        })
        .collect();
    let header = ["benchmark", "figure", "goal", "measured", ""];
    t.section(
        "summary.md",
        &values([("table", table(&header, rows.iter().map(|r| &r[..])))]),
    )
}

pub fn datapath(t: &Templates, d: &DatapathResult) -> String {
    let rows: Vec<[String; 9]> = d
        .classes
        .iter()
        .map(|c| {
            let goal = c.goal_ns();
            let worst = c.xdp.added_ns.max(c.tc.added_ns);
            let from = if c.from == Origin::Exempt {
                ""
            } else {
                ", from the blocked VM"
            };
            [
                c.name.to_owned(),
                format!("{}{from} ({} B)", c.frame, c.frame_len),
                if c.held { "held back" } else { "passes" }.to_owned(),
                format!("{:.1}", c.xdp.ns),
                format!("{:+.1} ({:+.1})", c.xdp.added_ns, c.xdp.best_added_ns),
                format!("{:.1}", c.tc.ns),
                format!("{:+.1} ({:+.1})", c.tc.added_ns, c.tc.best_added_ns),
                format!("<= {goal:.0} ns"),
                met(Some(worst <= goal)).to_owned(),
            ]
        })
        .collect();
    let header = [
        "class",
        "frame",
        "verdict",
        "XDP ns/packet",
        "XDP added (best round)",
        "TC ns/packet",
        "TC added (best round)",
        "goal (added)",
        "",
    ];
    let by = |name: &str| d.classes.iter().find(|c| c.name == name);
    let xdp_added = |name: &str| by(name).map_or(f64::NAN, |c| c.xdp.added_ns);
    let tc_added = |name: &str| by(name).map_or(f64::NAN, |c| c.tc.added_ns);
    let added = |x: f64| format!("{x:+.1}");
    let other = xdp_added("TCP, another port");
    let held = xdp_added("TCP to 25, held back");
    let relay = xdp_added("TCP to 25, allowed destination");
    let v6 = "IPv6, 3 extension headers, to 25";
    t.section(
        "datapath.md",
        &values([
            ("repeat", thousands(d.params.repeat as usize)),
            ("rounds", d.params.rounds.to_string()),
            ("table", table(&header, rows.iter().map(|r| &r[..]))),
            ("ex", format!("{:.1}", d.empty_xdp_ns)),
            ("et", format!("{:.1}", d.empty_tc_ns)),
            ("exempt", added(xdp_added("exempt VM"))),
            ("arp", added(xdp_added("non-IP"))),
            ("other", added(other)),
            ("relay", added(relay)),
            ("lpm", added(relay - other)),
            ("held", added(held)),
            ("count", added(held - relay)),
            ("first", added(xdp_added("first fragment"))),
            ("later", added(xdp_added("later fragment"))),
            ("v6", added(xdp_added(v6).max(tc_added(v6)))),
            ("vlan", added(xdp_added("VLAN-tagged, to 25"))),
            (
                "total",
                format!("{:.1}", by("exempt VM").map_or(f64::NAN, |c| c.xdp.ns)),
            ),
            (
                "held_total",
                format!(
                    "{:.1}",
                    by("TCP to 25, held back").map_or(f64::NAN, |c| c.xdp.ns)
                ),
            ),
        ]),
    )
}

pub fn throughput(t: &Templates, tp: &ThroughputResult) -> String {
    let rows: Vec<[String; 6]> = throughput::HOOKS
        .iter()
        .filter_map(|hook| Some((hook, tp.hooks.get(hook)?)))
        .map(|(hook, h)| {
            [
                hook.label().to_owned(),
                if h.actual.is_empty() {
                    "-".to_owned()
                } else {
                    format!("`{}`", h.actual)
                },
                format!("{:.1} Gbit/s", h.blocked()),
                pct(h.blocked_share()),
                format!("{:.1} Gbit/s", h.exempt()),
                pct(h.exempt_share()),
            ]
        })
        .collect();
    let header = [
        "hook",
        "status shows",
        "blocked VM, port 5201",
        "share",
        "exempt VM, port 25",
        "share",
    ];
    t.section(
        "throughput.md",
        &values([
            ("secs", tp.params.seconds.to_string()),
            ("omit", tp.params.omit.to_string()),
            ("ap", throughput::ALLOWED_PORT.to_string()),
            ("ep", throughput::EXEMPT_PORT.to_string()),
            ("rounds", tp.params.rounds.to_string()),
            ("table", table(&header, rows.iter().map(|r| &r[..]))),
            ("goal", pct(throughput::GOAL_RATIO)),
        ]),
    )
}

pub fn drop(t: &Templates, f: &FloodResult) -> String {
    let rows: Vec<[String; 8]> = Holder::ALL
        .iter()
        .filter_map(|holder| Some((holder, f.holders.get(holder)?)))
        .map(|(holder, h)| {
            let status = if h.actual_hook.is_empty() {
                String::new()
            } else {
                format!(" (status: `{}`)", h.actual_hook)
            };
            let missed = if h.capture_drops() > 0 {
                format!(" (capture missed {})", h.capture_drops())
            } else {
                String::new()
            };
            [
                format!("{}{status}", holder.label()),
                format!("{:.2} Mpps", h.offered_pps() / 1e6),
                format!("{:.2} Mpps", h.held_pps() / 1e6),
                format!("{:.2} CPUs", h.softirq_cpus()),
                format!("{:.2} CPUs", h.system_cpus()),
                format!("{:.2} M", h.per_cpu_second() / 1e6),
                format!("{:.2}x", stats::median(&h.vs_best_nft)),
                format!("{} of {}{missed}", h.exempt_lost(), h.exempt_sent()),
            ]
        })
        .collect();
    let header = [
        "held back by",
        "offered",
        "held back",
        "softirq",
        "sender (system)",
        "held back per softirq CPU-second",
        "vs best nftables",
        "exempt VM's SYNs lost",
    ];
    t.section(
        "drop.md",
        &values([
            ("warm", format!("{:.0}", f.params.warmup)),
            ("secs", format!("{:.0}", f.params.seconds)),
            ("rounds", f.params.rounds.to_string()),
            ("rate", f.params.exempt_rate.to_string()),
            ("nft_forward", flood::NFT_FORWARD.to_owned()),
            ("nft_ingress", flood::NFT_INGRESS.to_owned()),
            ("table", table(&header, rows.iter().map(|r| &r[..]))),
            ("goal", format!("{:.0}", flood::GOAL_VS_NFT)),
        ]),
    )
}

pub fn control(t: &Templates, r: &Results, c: &[control::SizeResult]) -> String {
    let rows: Vec<[String; 9]> = c
        .iter()
        .map(|s| {
            [
                thousands(s.vms),
                format!("{:.1} MB", s.policy_bytes as f64 / 1e6),
                format!("{:.0} ms", s.check() * 1000.0),
                format!("{:.0} ms", s.ready() * 1000.0),
                format!("{:.0} ms", s.change_e2e()),
                format!("{:.0} ms", s.change_work()),
                format!("{:.1} ms", s.change_apply()),
                format!("{:.1} MiB", s.ready_rss_mib),
                format!("{:.1} MiB", s.peak_rss_mib),
            ]
        })
        .collect();
    let header = [
        "VMs",
        "policy file",
        "`check`",
        "start to `ready`",
        "one-VM change: rename to `applied`",
        "of which reload work",
        "of which map apply",
        "peak RSS at `ready`",
        "peak RSS",
    ];
    let sizes: Vec<String> = c.iter().map(|s| thousands(s.vms)).collect();
    let load = r.datapath.as_ref().map_or_else(
        || "(not measured in this run)".to_owned(),
        |d| format!("{:.0} ms", d.load_s * 1000.0),
    );
    t.section(
        "control.md",
        &values([
            ("sizes", sizes.join(", ")),
            ("checks", r.control_params.check_repeats.to_string()),
            ("starts", r.control_params.start_repeats.to_string()),
            ("changes", r.control_params.changes.to_string()),
            ("table", table(&header, rows.iter().map(|r| &r[..]))),
            ("load", load),
            ("full", format!("{:.0}", control::GOAL_FULL_APPLY_S)),
            ("quiet", format!("{:.0}", control::FILE_QUIET_MS)),
            ("change", format!("{:.0}", control::GOAL_CHANGE_MS)),
            ("rss", format!("{:.0}", control::GOAL_RSS_MIB)),
        ]),
    )
}

pub fn churn(t: &Templates, ch: &churn::ChurnResult) -> String {
    let ms = |x: f64| format!("{x:.2} ms");
    let rows = [
        [
            "the interface existing".to_owned(),
            ms(ch.median()),
            ms(ch.p99()),
            ms(stats::max(&ch.from_exists_ms)),
            format!(
                "median < {:.0} ms: {}",
                churn::GOAL_MEDIAN_MS,
                met(Some(ch.median() < churn::GOAL_MEDIAN_MS))
            ),
        ],
        [
            "`ip link add` returning".to_owned(),
            ms(stats::median(&ch.from_return_ms)),
            ms(stats::percentile(&ch.from_return_ms, 99.0)),
            ms(stats::max(&ch.from_return_ms)),
            String::new(),
        ],
    ];
    let header = ["from", "median", "p99", "max", "goal"];
    t.section(
        "churn.md",
        &values([
            ("n", ch.params.creations.to_string()),
            ("table", table(&header, rows.iter().map(|r| &r[..]))),
            ("before", ch.before_return.to_string()),
        ]),
    )
}

pub fn idle(t: &Templates, c: &[control::SizeResult]) -> String {
    let rows: Vec<[String; 4]> = c
        .iter()
        .map(|s| {
            [
                thousands(s.vms),
                format!("{:.0} s", s.idle_seconds),
                format!("{:.3} % of a core", s.idle_cpu_pct),
                format!(
                    "well under 1 % (<= {} %): {}",
                    control::GOAL_IDLE_PCT,
                    met(Some(s.idle_cpu_pct <= control::GOAL_IDLE_PCT))
                ),
            ]
        })
        .collect();
    let header = ["VMs", "window", "CPU", "goal"];
    t.section(
        "idle.md",
        &values([("table", table(&header, rows.iter().map(|r| &r[..])))]),
    )
}
