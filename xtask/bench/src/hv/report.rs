//! Benchmark 7 in the summary, the smoke run's checks, and BENCHMARKS.md.
//! The section's prose is a markdown template read at run time
//! (`xtask/bench/templates/hypervisor.md`, `{{name}}` placeholders); this
//! module computes the tables and the figures the template names.
//!
//! Invariants: the section is wrapped in [`BEGIN`] and [`END`] markers, so
//! that a run of this benchmark alone (`--only taps --out BENCHMARKS.md`)
//! replaces just this section of an existing report ([`splice`]); a
//! template that names a figure this module does not give renders an
//! error line, which the smoke run refuses.

use std::{fmt::Write as _, path::Path};

use super::{
    HvResult,
    drop::{Device, Holder, HolderResult},
    flow,
    goals::{AUTO_ON_TAP, GOAL_FLOW_SHARE, GOAL_VS_FLOOR, best_hook},
    prose,
    tables::{drop_table, flow_table, guest_line, qemu_line},
};
use crate::{
    Results, churn,
    figure::{Figure, met},
    lab::Hook,
    template::{self, Values},
};

pub const BEGIN: &str = "<!-- hypervisor devices: begin -->";
pub const END: &str = "<!-- hypervisor devices: end -->";
pub const HEADING: &str = "## 7. Hypervisor devices: tap and macvtap";
/// The template, under `template::DIR`.
pub const TEMPLATE: &str = "hypervisor.md";

pub fn figures(r: &Results, out: &mut Vec<Figure>) {
    let Some(hv) = &r.hv else { return };
    if let Some(h) = hv.flow.hooks.get(&AUTO_ON_TAP) {
        out.push(Figure {
            bench: "7 taps",
            what: format!(
                "tap, allowed VM, `auto` ({}): share of no-agent throughput (vhost-net-style writes)",
                AUTO_ON_TAP.policy_value()
            ),
            goal: format!(">= {:.0} %", GOAL_FLOW_SHARE * 100.0),
            measured: format!("{:.1} % ({:.1} Gbit/s)", h.ratio() * 100.0, h.gbps()),
            met: Some(h.ratio() >= GOAL_FLOW_SHARE),
        });
    }
    for device in Device::ALL {
        let Some(best) = best_hook(&hv.drop, device) else {
            continue;
        };
        let Some(g) = hv.drop.get(device, Holder::Guard(best)) else {
            continue;
        };
        out.push(Figure {
            bench: "7 taps",
            what: format!(
                "{}, best hook (`{}`): held back per CPU-second over the nftables rule",
                device.label(),
                best.policy_value()
            ),
            goal: "> 1.00x".to_owned(),
            measured: format!(
                "{:.3}x ({:.3} M/CPU-s)",
                g.vs_nft(),
                g.per_cpu_second() / 1e6
            ),
            met: Some(g.vs_nft() > 1.0),
        });
        out.push(Figure {
            bench: "7 taps",
            what: format!(
                "{}, best hook (`{}`): held back per CPU-second over its drop-all floor",
                device.label(),
                best.policy_value()
            ),
            goal: format!(">= {GOAL_VS_FLOOR:.2}"),
            measured: format!("{:.3}", g.vs_floor()),
            met: Some(g.vs_floor() >= GOAL_VS_FLOOR),
        });
    }
    if let Some(g) = &hv.guest {
        out.push(Figure {
            bench: "7 taps",
            what: format!(
                "a real guest on a tap ({}), allowed: share of no-agent throughput under `tc`",
                g.accel.split(' ').next().unwrap_or_default()
            ),
            goal: "- (the guest's CPU bounds it)".to_owned(),
            measured: format!(
                "{:.1} % ({:.0} Mbit/s, {:.0} without)",
                g.ratio() * 100.0,
                g.agent(),
                g.none()
            ),
            met: None,
        });
    }
    out.push(Figure {
        bench: "7 taps",
        what: format!(
            "QEMU's tap ({} starts): existing to enforced, median (max)",
            hv.qemu.params.creations
        ),
        goal: format!("median < {:.0} ms (as churn)", churn::GOAL_MEDIAN_MS),
        measured: format!("{:.2} ms ({:.2} ms)", hv.qemu.median(), hv.qemu.max()),
        met: Some(hv.qemu.median() < churn::GOAL_MEDIAN_MS),
    });
}

/// Every figure the smoke run checks: (what, value, must be > 0).
pub fn sane_figures(hv: &HvResult, figures: &mut Vec<(String, f64, bool)>) {
    for hook in std::iter::once(Hook::None).chain(hv.flow.params.hooks.iter().copied()) {
        let h = hv.flow.hooks.get(&hook);
        let label = hook.label();
        figures.push((
            format!("taps throughput {label}: Gbit/s"),
            h.map_or(f64::NAN, flow::HookFlow::gbps),
            true,
        ));
        figures.push((
            format!("taps throughput {label}: share"),
            h.map_or(f64::NAN, flow::HookFlow::ratio),
            true,
        ));
    }
    for device in Device::ALL {
        for holder in hv.drop.params.holders(device) {
            let h = hv.drop.get(device, holder);
            let label = format!("taps drop {}: {}", device.label(), holder.label(device));
            figures.push((
                format!("{label}: per CPU-second"),
                h.map_or(f64::NAN, HolderResult::per_cpu_second),
                true,
            ));
            figures.push((
                format!("{label}: over floor"),
                h.map_or(f64::NAN, HolderResult::vs_floor),
                true,
            ));
            figures.push((
                format!("{label}: over nftables"),
                h.map_or(f64::NAN, HolderResult::vs_nft),
                true,
            ));
        }
    }
    figures.push(("taps: QEMU attach median".into(), hv.qemu.median(), false));
    if let Some(g) = &hv.guest {
        figures.push(("taps: guest, no agent".into(), g.none(), true));
        figures.push(("taps: guest, agent".into(), g.agent(), true));
        figures.push(("taps: guest, share".into(), g.ratio(), true));
    }
}

/// This benchmark's goals, as the summary has them (a run of this
/// benchmark alone replaces only this section, not the summary).
fn goals_table(r: &Results) -> String {
    let mut all = Vec::new();
    figures(r, &mut all);
    let mut out = String::from("| figure | goal | measured | |\n|---|---|---|---|\n");
    for f in all {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            f.what,
            f.goal,
            f.measured,
            met(f.met)
        );
    }
    out
}

/// The values the template names.
fn values(r: &Results, hv: &HvResult) -> Values {
    let machine = &r.machine;
    let mut v = Values::new();
    let mut put = |k: &str, x: String| {
        v.insert(k.to_owned(), x);
    };
    put("heading", HEADING.to_owned());
    put("mode", r.mode.name().to_owned());
    put("date", r.started.format("%Y-%m-%d %H:%M UTC").to_string());
    put("commit", machine.commit.clone());
    put(
        "busy",
        format!("{:.0} %", (machine.busy_before * 100.0).max(0.0)),
    );
    put(
        "load",
        format!(
            "{:.2} / {:.2}",
            machine.load_at_start.0, machine.load_at_start.1
        ),
    );
    put("steal", format!("{:.1} %", r.steal_share * 100.0));
    put("sender_cpu", super::SENDER_CPU.to_string());
    put("flow_rounds", hv.flow.params.rounds.to_string());
    put("flow_seconds", format!("{}", hv.flow.params.seconds));
    put("frame_len", hv.flow.frame_len.to_string());
    put("flow_table", flow_table(&hv.flow));
    put("drop_rounds", hv.drop.params.rounds.to_string());
    put("drop_seconds", format!("{}", hv.drop.params.seconds));
    put("drop_tap_table", drop_table(&hv.drop, Device::Tap));
    put("drop_macvtap_table", drop_table(&hv.drop, Device::Macvtap));
    put("qemu_line", qemu_line(&hv.qemu));
    put("qemu_command", hv.qemu.command.clone());
    put(
        "guest_line",
        hv.guest.as_ref().map_or_else(
            || "Not run in this mode (the smoke run boots no guest).".to_owned(),
            guest_line,
        ),
    );
    put("testrun_rounds", hv.testrun.params.rounds.to_string());
    put("decision", prose::decision(hv));
    put("goals", goals_table(r));
    put("misses", prose::misses(hv));
    for (key, class) in [("held", prose::HELD_CLASS), ("exempt", prose::EXEMPT_CLASS)] {
        let c = hv.testrun.classes.iter().find(|c| c.name == class);
        put(
            &format!("testrun_{key}_xdp"),
            format!("{:+.1}", c.map_or(f64::NAN, |c| c.xdp.added_ns)),
        );
        put(
            &format!("testrun_{key}_tc"),
            format!("{:+.1}", c.map_or(f64::NAN, |c| c.tc.added_ns)),
        );
    }
    v
}

/// The section, markers included.
pub fn section(r: &Results, hv: &HvResult) -> String {
    let body = template::Templates::in_workspace(&r.workspace)
        .render(TEMPLATE, &values(r, hv))
        .unwrap_or_else(|e| format!("{HEADING}\n\nRENDERING ERROR: {e}\n"));
    format!("{BEGIN}\n{}\n{END}\n\n", body.trim_end())
}

/// What is wrong with the rendered section (for the smoke run).
pub fn rendering_problems(r: &Results, hv: &HvResult) -> Vec<String> {
    let text = section(r, hv);
    let mut bad = Vec::new();
    if !text.contains(HEADING) {
        bad.push(format!("the report has no `{HEADING}`"));
    }
    if let Some(line) = text.lines().find(|l| l.contains("RENDERING ERROR")) {
        bad.push(line.to_owned());
    }
    bad
}

/// `existing` with its hypervisor-device section replaced by this run's
/// (inserted before the default-hook section, or at the end, when it has
/// none).
pub fn splice(existing: &str, r: &Results, hv: &HvResult) -> String {
    splice_text(existing, &section(r, hv))
}

/// `existing` with the text between [`BEGIN`] and [`END`] (markers
/// included) replaced by `new`, or `new` put before the default-hook
/// section, or at the end.
fn splice_text(existing: &str, new: &str) -> String {
    if let (Some(b), Some(e)) = (existing.find(BEGIN), existing.find(END))
        && b < e
    {
        let after = existing[e + END.len()..].trim_start_matches('\n');
        return format!("{}{new}{after}", &existing[..b]);
    }
    match existing.find("## The default hook") {
        Some(at) => format!("{}{new}{}", &existing[..at], &existing[at..]),
        None => format!("{}\n{new}", existing.trim_end()),
    }
}

/// Whether `path` is where this section would be spliced.
pub fn can_splice(path: &Path) -> bool {
    std::fs::read_to_string(path).is_ok_and(|t| t.starts_with("# egress-guard benchmarks"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splicing_replaces_only_the_section() {
        let new = format!("{BEGIN}\nNEW\n{END}\n\n");
        let old = format!("# t\n\n{BEGIN}\nOLD\n{END}\n\n## The default hook\n");
        assert_eq!(
            splice_text(&old, &new),
            format!("# t\n\n{BEGIN}\nNEW\n{END}\n\n## The default hook\n")
        );
        let without = "# t\n\n## 6. Idle\n\n## The default hook\nrest\n";
        assert_eq!(
            splice_text(without, &new),
            format!("# t\n\n## 6. Idle\n\n{new}## The default hook\nrest\n")
        );
        assert_eq!(splice_text("# t\n", &new), format!("# t\n{new}"));
    }
}
