//! The sentences of benchmark 7's section that depend on its figures:
//! which hook the figures choose for `auto` on a tap, what each device's
//! best hook missed and where the time goes.

use std::fmt::Write as _;

use super::{
    HvResult,
    drop::{Device, Holder, HolderResult},
    flow,
    goals::{AUTO_ON_TAP, GOAL_VS_FLOOR, best_hook, guard_hooks},
};
use crate::lab::Hook;

/// The TestRun classes this section quotes.
pub const HELD_CLASS: &str = "TCP to 25, held back";
pub const EXEMPT_CLASS: &str = "exempt VM";

/// For each device, what its best hook missed, by how much, and where the
/// time goes, from this run's figures.
pub fn misses(hv: &HvResult) -> String {
    let mut out = String::new();
    for device in Device::ALL {
        let Some(best) = best_hook(&hv.drop, device) else {
            continue;
        };
        let (Some(g), Some(f)) = (
            hv.drop.get(device, Holder::Guard(best)),
            hv.drop.get(device, Holder::Floor(best)),
        ) else {
            continue;
        };
        let above = g.ns_per_frame() - f.ns_per_frame();
        // The most a frame may cost above the floor at 0.97 of it.
        let budget = f.ns_per_frame() * (1.0 / GOAL_VS_FLOOR - 1.0);
        let testrun = hv
            .testrun
            .classes
            .iter()
            .find(|c| c.name == HELD_CLASS)
            .map_or(f64::NAN, |c| {
                if matches!(best, Hook::Xdp | Hook::XdpGeneric) {
                    c.xdp.added_ns
                } else {
                    c.tc.added_ns
                }
            });
        let floor_met = g.vs_floor() >= GOAL_VS_FLOOR;
        let nft_met = g.vs_nft() > 1.0;
        let _ = writeln!(
            out,
            "- **{}, `{}`**: {:.3}x the nftables rule ({}) and {:.3} of its floor ({}). A held-back SYN costs {:.0} ns of the sending CPU's kernel time against the floor's {:.0} ns: {:+.0} ns. 0.97 of the floor leaves {:.0} ns a frame for everything the program does; in this run's TestRun the program alone adds {:+.1} ns to an empty program for the same SYN{}.",
            device.label(),
            best.policy_value(),
            g.vs_nft(),
            if nft_met { "met" } else { "**missed**" },
            g.vs_floor(),
            if floor_met { "met" } else { "**missed**" },
            g.ns_per_frame(),
            f.ns_per_frame(),
            above,
            budget,
            testrun,
            if floor_met {
                String::new()
            } else if testrun > budget {
                ", more than that budget: the held-back path's work (below) does not fit in it at this hook, whatever the hook costs around it".to_owned()
            } else {
                format!(
                    ", which fits; the other {:.0} ns are the hook's work around a program that reads maps (and, on a busy shared CPU, noise)",
                    above - testrun
                )
            },
        );
    }
    out
}

/// The hook the figures choose for `auto` on a tap: the one that keeps
/// the most allowed throughput; a hook within 2 points of it on throughput
/// wins if it holds back more than 5 % more per CPU-second.
pub fn auto_choice(hv: &HvResult) -> Hook {
    let share = |h: Hook| hv.flow.hooks.get(&h).map_or(0.0, flow::HookFlow::ratio);
    let drop = |h: Hook| {
        hv.drop
            .get(Device::Tap, Holder::Guard(h))
            .map_or(0.0, HolderResult::per_cpu_second)
    };
    let hooks = guard_hooks(&hv.drop, Device::Tap);
    let top = hooks
        .iter()
        .copied()
        .max_by(|a, b| share(*a).total_cmp(&share(*b)))
        .unwrap_or(Hook::Tc);
    hooks
        .into_iter()
        .filter(|h| share(top) - share(*h) <= 0.02 && drop(*h) > drop(top) * 1.05)
        .max_by(|a, b| drop(*a).total_cmp(&drop(*b)))
        .unwrap_or(top)
}

pub fn decision(hv: &HvResult) -> String {
    let share = |h: Hook| {
        hv.flow
            .hooks
            .get(&h)
            .map_or(f64::NAN, flow::HookFlow::ratio)
    };
    let g = |dev: Device, h: Holder| hv.drop.get(dev, h);
    let tap = |h: Hook| {
        g(Device::Tap, Holder::Guard(h)).map_or_else(String::new, |x| {
            format!(
                "`{}` {:.3} M ({:.3} of its floor, {:.3}x nftables)",
                h.policy_value(),
                x.per_cpu_second() / 1e6,
                x.vs_floor(),
                x.vs_nft()
            )
        })
    };
    let choice = auto_choice(hv);
    let verdict = if choice == AUTO_ON_TAP {
        format!(
            "So `auto` stays `{}` on a tap, as `agent/src/placement.rs` has it.",
            AUTO_ON_TAP.policy_value()
        )
    } else {
        format!(
            "So these figures say `auto` on a tap should be `{}`, not `{}` as `agent/src/placement.rs` has it.",
            choice.policy_value(),
            AUTO_ON_TAP.policy_value()
        )
    };
    let mvt = g(Device::Macvtap, Holder::Guard(Hook::Tc)).map_or_else(String::new, |x| {
        format!(
            "{:.3} M per CPU-second, {:.3} of the drop-all floor there and {:.3}x the nftables egress rule",
            x.per_cpu_second() / 1e6,
            x.vs_floor(),
            x.vs_nft()
        )
    });
    format!(
        "**Tap.** Allowed throughput, share of no agent: `tc` {:.1} %, `xdp-generic` {:.1} %, `xdp` {:.1} %. Held back per CPU-second: {}; {}; {}. {verdict}\n\n**Macvtap.** Only tcx egress sees a macvtap guest's frames, so `auto` (and every other setting) puts the TC program there: the choice is forced, and these figures only measure it: {mvt}.",
        share(Hook::Tc) * 100.0,
        share(Hook::XdpGeneric) * 100.0,
        share(Hook::Xdp) * 100.0,
        tap(Hook::Tc),
        tap(Hook::XdpGeneric),
        tap(Hook::Xdp),
    )
}
