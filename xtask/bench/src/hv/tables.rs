//! The tables and the figure-bearing lines of benchmark 7's section.

use std::fmt::Write as _;

use super::{
    drop::{Device, DropResult, HolderResult},
    flow::FlowResult,
    guest::GuestResult,
    qemu::QemuResult,
};
use crate::lab::Hook;

pub fn flow_table(f: &FlowResult) -> String {
    let mut out = String::from(
        "| hook | `status` shows | delivered, Gbit/s | share of no agent | Gbit per CPU-second (sending CPU, kernel) | super-frames delivered / written |\n|---|---|---|---|---|---|\n",
    );
    for hook in std::iter::once(Hook::None).chain(f.params.hooks.iter().copied()) {
        let Some(h) = f.hooks.get(&hook) else {
            continue;
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:.2} | {:.1} % | {:.2} | {:.4} |",
            hook.label(),
            if h.actual.is_empty() { "-" } else { &h.actual },
            h.gbps(),
            h.ratio() * 100.0,
            h.per_cpu_second(),
            h.delivered_share()
        );
    }
    out
}

pub fn drop_table(d: &DropResult, device: Device) -> String {
    let mut out = String::from(
        "| what holds the flood back | `status` shows | written, M frames/s | sending CPU in the kernel | held back, M per CPU-second | ns a frame | ns above its floor | over its floor | over nftables |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    for holder in d.params.holders(device) {
        let Some(h) = d.get(device, holder) else {
            continue;
        };
        let floor_ns = d
            .get(device, holder.floor())
            .map_or(f64::NAN, HolderResult::ns_per_frame);
        let _ = writeln!(
            out,
            "| {} | {} | {:.3} | {:.0} % | {:.3} | {:.0} | {:+.0} | {:.3} | {:.3} |",
            holder.label(device),
            if h.actual.is_empty() { "-" } else { &h.actual },
            h.written_pps() / 1e6,
            h.kernel_share() * 100.0,
            h.per_cpu_second() / 1e6,
            h.ns_per_frame(),
            h.ns_per_frame() - floor_ns,
            h.vs_floor(),
            h.vs_nft()
        );
    }
    out
}

pub fn guest_line(g: &GuestResult) -> String {
    format!(
        "Booted under **{}** in {:.1} s. {} MiB a transfer, {} rounds: without the agent **{:.0} Mbit/s**, with it (`status` shows `{}`) **{:.0} Mbit/s**, **{:.1} %** of the no-agent figures around it (runs: without {}; with {}). The guest's frames on its tap averaged up to {} bytes ({}).",
        g.accel,
        g.boot_s,
        g.params.mib,
        g.params.rounds,
        g.none(),
        g.hook,
        g.agent(),
        g.ratio() * 100.0,
        g.none_mbps
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        g.agent_mbps
            .iter()
            .map(|x| format!("{x:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        g.mean_frame,
        if g.mean_frame > 1514 {
            "TSO super-frames, taken whole by the host"
        } else {
            "MTU-sized: no TSO reached the host"
        }
    )
}

pub fn qemu_line(q: &QemuResult) -> String {
    format!(
        "{} QEMU starts: from the tap existing to the program on it, median **{:.2} ms**, max {:.2} ms; QEMU's own start, from its exec to the tap existing, median {:.0} ms. `status` shows hook `{}` on QEMU's tap.",
        q.params.creations,
        q.median(),
        q.max(),
        q.start_median(),
        q.hook
    )
}
