//! Drop capacity on hypervisor devices: a SYN flood to port 25 written as a
//! VMM writes it (a `virtio_net_hdr` with `NEEDS_CSUM`, as a virtio-net
//! guest with its default offloads hands a SYN over, one write() a frame,
//! from a thread pinned to one CPU) into a blocked VM's tap, and into a
//! blocked VM's macvtap through its `/dev/tapN` (the guest's side).
//!
//! Per device, in the same run and interleaved round by round (the order
//! rotating), what holds it back: egress-guard under each hook that applies,
//! one nftables netdev rule at the same place (`ingress` on the tap,
//! `egress` on the macvtap: `tcp dport 25 counter drop`), and the floor at
//! each hook, a program that drops every frame and does nothing else
//! (`r0 = XDP_DROP` or `TC_ACT_SHOT`; tcx ingress, native and generic XDP on
//! the tap, tcx egress on the macvtap).
//!
//! The figure is frames held back per CPU-second of the sending CPU's
//! kernel time (system + irq + softirq of that CPU in /proc/stat), where the
//! tap's or macvtap's whole path runs. Held back: egress-guard's and
//! nftables' own counters; for a floor, the frames written, less any the
//! receiver saw. Invariant: nothing written reaches the receiver in any
//! window (a window where more than 0.1 % does is an error, not a figure).

use std::{collections::BTreeMap, os::fd::OwnedFd, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use egress_guard_netns::{
    Agent,
    bpf::{
        self, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_EGRESS, BPF_TCX_INGRESS, BPF_XDP,
        XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE,
    },
    vmframe::{Offload, Segment},
};

use super::{
    lab::{Guest, HvLab, MACVTAP, TAP_BLOCKED, sink},
    sender::{CpuKernel, SENDER_CPU, Sender},
};
use crate::{flood, lab::Hook, signals, stats};

#[derive(Debug, Clone)]
pub struct Params {
    pub seconds: f64,
    pub warmup: f64,
    pub rounds: usize,
    /// The `hook:` settings egress-guard runs with on the tap (the smoke
    /// run needs one to cover the code; the floors are all measured).
    pub tap_hooks: Vec<Hook>,
}

impl Params {
    /// What holds the flood back on `device` in this run.
    pub fn holders(&self, device: Device) -> Vec<Holder> {
        device
            .holders()
            .into_iter()
            .filter(|h| match (device, h) {
                (Device::Tap, Holder::Guard(hook)) => self.tap_hooks.contains(hook),
                _ => true,
            })
            .collect()
    }
}

/// The device flooded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    Tap,
    Macvtap,
}

impl Device {
    pub const ALL: [Device; 2] = [Device::Tap, Device::Macvtap];

    pub fn name(self) -> &'static str {
        match self {
            Device::Tap => TAP_BLOCKED,
            Device::Macvtap => MACVTAP,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Device::Tap => "tap",
            Device::Macvtap => "macvtap",
        }
    }

    /// What holds the flood back on this device, in the order of the first
    /// round.
    pub fn holders(self) -> Vec<Holder> {
        match self {
            Device::Tap => vec![
                Holder::Guard(Hook::Tc),
                Holder::Floor(Hook::Tc),
                Holder::Nft,
                Holder::Guard(Hook::Xdp),
                Holder::Floor(Hook::Xdp),
                Holder::Guard(Hook::XdpGeneric),
                Holder::Floor(Hook::XdpGeneric),
            ],
            // Only tcx egress sees a macvtap guest's frames: the agent puts
            // its TC program there under every `hook:` setting.
            Device::Macvtap => vec![
                Holder::Guard(Hook::Tc),
                Holder::Floor(Hook::Tc),
                Holder::Nft,
            ],
        }
    }

    /// nftables' netdev hook at the place the programs sit.
    pub fn nft_hook(self) -> &'static str {
        match self {
            Device::Tap => "ingress",
            Device::Macvtap => "egress",
        }
    }

    pub fn nft_rules(self) -> String {
        format!(
            "table netdev egb_hv {{\n  chain c {{\n    type filter hook {hook} device \"{dev}\" priority filter; policy accept;\n    tcp dport 25 counter drop\n  }}\n}}\n",
            hook = self.nft_hook(),
            dev = self.name()
        )
    }
}

/// What holds the flood back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// egress-guard with this `hook:`.
    Guard(Hook),
    /// The nftables rule.
    Nft,
    /// The drop-all program at this hook.
    Floor(Hook),
}

impl Holder {
    pub fn label(self, device: Device) -> String {
        let at = |hook: Hook| match (device, hook) {
            (Device::Macvtap, _) => "tcx egress",
            (_, Hook::Xdp) => "native XDP",
            (_, Hook::XdpGeneric) => "generic XDP",
            _ => "tcx ingress",
        };
        match self {
            Holder::Guard(hook) if device == Device::Macvtap => {
                format!("egress-guard, `{}` ({})", hook.policy_value(), at(hook))
            }
            Holder::Guard(hook) => format!("egress-guard, `{}`", hook.policy_value()),
            Holder::Nft => format!("nftables netdev {} rule", device.nft_hook()),
            Holder::Floor(hook) => format!("drop-all program, {}", at(hook)),
        }
    }

    /// The floor this holder is held against: the drop-all at its hook (for
    /// nftables, the tc floor: a netdev chain runs in the same receive or
    /// transmit path, right after tcx).
    pub fn floor(self) -> Holder {
        match self {
            Holder::Guard(h) | Holder::Floor(h) => Holder::Floor(h),
            Holder::Nft => Holder::Floor(Hook::Tc),
        }
    }
}

/// One measured window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub seconds: f64,
    pub written: u64,
    pub failed: u64,
    pub held: u64,
    /// Packets the receiver counted (frames that got through, and anything
    /// else that reached it).
    pub received: u64,
    pub cpu: CpuKernel,
}

impl Window {
    pub fn per_cpu_second(&self) -> f64 {
        self.held as f64 / self.cpu.kernel()
    }
    /// Nanoseconds of the sending CPU's kernel time a frame held back.
    pub fn ns_per_frame(&self) -> f64 {
        self.cpu.kernel() * 1e9 / self.held as f64
    }
    /// The share of the window the sending CPU spent in the kernel.
    pub fn kernel_share(&self) -> f64 {
        self.cpu.kernel() / self.cpu.total
    }
}

#[derive(Debug, Clone, Default)]
pub struct HolderResult {
    /// The hook `status` showed on the device (egress-guard only).
    pub actual: String,
    pub windows: Vec<Window>,
    /// Held back per CPU-second over the same round's floor at its hook.
    pub vs_floor: Vec<f64>,
    /// ... over the same round's nftables rule.
    pub vs_nft: Vec<f64>,
}

impl HolderResult {
    fn median(&self, f: fn(&Window) -> f64) -> f64 {
        stats::median(&self.windows.iter().map(f).collect::<Vec<_>>())
    }
    pub fn per_cpu_second(&self) -> f64 {
        self.median(Window::per_cpu_second)
    }
    pub fn ns_per_frame(&self) -> f64 {
        self.median(Window::ns_per_frame)
    }
    pub fn written_pps(&self) -> f64 {
        self.median(|w| w.written as f64 / w.seconds)
    }
    pub fn kernel_share(&self) -> f64 {
        self.median(Window::kernel_share)
    }
    pub fn vs_floor(&self) -> f64 {
        stats::median(&self.vs_floor)
    }
    pub fn vs_nft(&self) -> f64 {
        stats::median(&self.vs_nft)
    }
    pub fn received(&self) -> u64 {
        self.windows.iter().map(|w| w.received).sum()
    }
}

#[derive(Debug, Clone)]
pub struct DropResult {
    pub params: Params,
    pub devices: BTreeMap<Device, BTreeMap<Holder, HolderResult>>,
}

impl DropResult {
    pub fn get(&self, device: Device, holder: Holder) -> Option<&HolderResult> {
        self.devices.get(&device)?.get(&holder)
    }
}

/// What holds the flood back while it is in scope.
enum Holding<'a> {
    Guard(Box<Agent<'a>>),
    Nft,
    /// The drop-all program's link (dropping it detaches the program).
    Floor(OwnedFd),
}

fn hold(lab: &HvLab, device: Device, holder: Holder) -> Result<(Holding<'_>, String)> {
    match holder {
        Holder::Guard(hook) => {
            let (agent, hooks) = lab.agent(hook.policy_value())?;
            let actual = hooks
                .get(device.name())
                .cloned()
                .with_context(|| format!("status shows no hook on {}", device.name()))?;
            Ok((Holding::Guard(Box::new(agent)), actual))
        }
        Holder::Nft => {
            let path = lab.dir.write("hv.nft", device.nft_rules())?;
            lab.hv()
                .run("nft", [std::ffi::OsStr::new("-f"), path.as_os_str()])?;
            Ok((Holding::Nft, String::new()))
        }
        Holder::Floor(hook) => {
            let ifindex = match device {
                Device::Tap => lab.tap_blocked.ifindex(),
                Device::Macvtap => lab.macvtap.ifindex(),
            };
            let (prog_type, ret, attach, flags) = match (device, hook) {
                (Device::Macvtap, _) => (BPF_PROG_TYPE_SCHED_CLS, 2, BPF_TCX_EGRESS, 0),
                (_, Hook::Xdp) => (BPF_PROG_TYPE_XDP, 1, BPF_XDP, XDP_FLAGS_DRV_MODE),
                (_, Hook::XdpGeneric) => (BPF_PROG_TYPE_XDP, 1, BPF_XDP, XDP_FLAGS_SKB_MODE),
                _ => (BPF_PROG_TYPE_SCHED_CLS, 2, BPF_TCX_INGRESS, 0),
            };
            let link = bpf::in_netns(&lab.hv().path(), move || {
                let prog = bpf::load_trivial(prog_type, 0, ret, "egb_drop_all")?;
                bpf::link_create_flags(std::os::fd::AsFd::as_fd(&prog), ifindex, attach, flags)
            })
            .context("attaching the drop-all program")?;
            Ok((Holding::Floor(link), String::new()))
        }
    }
}

impl Holding<'_> {
    /// Held back so far (a floor counts nothing: `written` is used).
    fn held(&self, lab: &HvLab) -> Result<u64> {
        match self {
            Holding::Guard(agent) => flood::guard_held(agent.pin_dir()),
            Holding::Nft => {
                let out = lab
                    .hv()
                    .run("nft", ["-j", "list", "table", "netdev", "egb_hv"])?;
                let doc: serde_json::Value = serde_json::from_str(&out.stdout)
                    .with_context(|| format!("`{}` printed {}", out.command, out.stdout))?;
                Ok(flood::nft_counter_packets(&doc))
            }
            Holding::Floor(_) => Ok(0),
        }
    }

    fn release(self, lab: &HvLab) -> Result<()> {
        match self {
            Holding::Guard(agent) => drop(agent),
            Holding::Nft => {
                lab.hv()
                    .run("nft", ["delete", "table", "netdev", "egb_hv"])?;
            }
            Holding::Floor(link) => drop(link),
        }
        Ok(())
    }
}

/// 64 SYNs to port 25 from `guest`, source ports 1024 up, each a
/// `virtio_net_hdr` (`NEEDS_CSUM`) and its frame in one buffer.
pub fn syn_frames(guest: &Guest) -> Vec<Vec<u8>> {
    (0..64u16)
        .map(|i| {
            let seg = Segment::syn(guest.ip.into(), sink(), 1024 + i, 25, u32::from(i) * 7919);
            let (hdr, frame) = seg.vnet(guest.mac, guest.next_hop_mac, Offload::Checksum);
            let mut buf = hdr.to_bytes().to_vec();
            buf.extend_from_slice(&frame);
            buf
        })
        .collect()
}

fn window(
    lab: &HvLab,
    device: Device,
    holder: Holder,
    frames: &[Vec<u8>],
    params: &Params,
) -> Result<(Window, String)> {
    let dev = match device {
        Device::Tap => &lab.tap_blocked,
        Device::Macvtap => &lab.macvtap,
    };
    let macvtap = device == Device::Macvtap;
    let (holding, actual) = hold(lab, device, holder)?;
    let measured = thread::scope(|s| -> Result<Window> {
        let sender = Sender::start(s, dev, frames);
        signals::sleep(Duration::from_secs_f64(params.warmup))?;
        let c0 = CpuKernel::read(SENDER_CPU)?;
        let s0 = sender.sent();
        let h0 = holding.held(lab)?;
        let r0 = lab.received(macvtap)?.0;
        let t0 = std::time::Instant::now();
        signals::sleep(Duration::from_secs_f64(params.seconds))?;
        let c1 = CpuKernel::read(SENDER_CPU)?;
        let s1 = sender.sent();
        let h1 = holding.held(lab)?;
        let r1 = lab.received(macvtap)?.0;
        let seconds = t0.elapsed().as_secs_f64();
        if let Some(e) = sender.stop()? {
            bail!("writes into {} failed: {e}", device.name());
        }
        let sent = s1.since(&s0);
        let received = r1.saturating_sub(r0);
        let held = match holder {
            Holder::Floor(_) => sent.written.saturating_sub(received),
            _ => h1.saturating_sub(h0),
        };
        Ok(Window {
            seconds,
            written: sent.written,
            failed: sent.failed,
            held,
            received,
            cpu: c1.since(&c0),
        })
    });
    holding.release(lab)?;
    let w = measured?;
    if w.held == 0 || w.cpu.kernel() <= 0.0 {
        bail!(
            "{} on the {}: {} held back with {:.3} s of the sending CPU's kernel time: the flood was not held back where it is counted",
            holder.label(device),
            device.label(),
            w.held,
            w.cpu.kernel()
        );
    }
    if w.received * 1000 > w.written {
        bail!(
            "{} on the {}: the receiver counted {} packets of {} written: the flood got through",
            holder.label(device),
            device.label(),
            w.received,
            w.written
        );
    }
    Ok((w, actual))
}

pub fn run(lab: &HvLab, params: Params) -> Result<DropResult> {
    let frames: BTreeMap<Device, Vec<Vec<u8>>> = [
        (Device::Tap, syn_frames(&lab.blocked_guest)),
        (Device::Macvtap, syn_frames(&lab.macvtap_guest)),
    ]
    .into();
    let mut devices: BTreeMap<Device, BTreeMap<Holder, HolderResult>> = BTreeMap::new();
    for round in 0..params.rounds {
        for device in Device::ALL {
            let mut order = params.holders(device);
            let n = order.len();
            order.rotate_left(round % n);
            let mut this = BTreeMap::new();
            for holder in order {
                signals::check()?;
                let (w, actual) = window(lab, device, holder, &frames[&device], &params)
                    .with_context(|| {
                        format!(
                            "the {} flood held back by {}",
                            device.label(),
                            holder.label(device)
                        )
                    })?;
                println!(
                    "  hv drop round {}: {:<8} {:<44} written {:5.2} M/s, sending CPU {:3.0} % kernel (softirq {:2.0} %), {:5.3} M held/CPU-s ({:4.0} ns a frame)",
                    round + 1,
                    device.label(),
                    holder.label(device),
                    w.written as f64 / w.seconds / 1e6,
                    w.kernel_share() * 100.0,
                    w.cpu.softirq / w.cpu.total * 100.0,
                    w.per_cpu_second() / 1e6,
                    w.ns_per_frame()
                );
                this.insert(holder, w.per_cpu_second());
                let entry = devices
                    .entry(device)
                    .or_default()
                    .entry(holder)
                    .or_default();
                entry.actual = actual;
                entry.windows.push(w);
            }
            let nft = this[&Holder::Nft];
            for (holder, v) in &this {
                let floor = this[&holder.floor()];
                let entry = devices
                    .entry(device)
                    .or_default()
                    .entry(*holder)
                    .or_default();
                entry.vs_floor.push(v / floor);
                entry.vs_nft.push(v / nft);
            }
        }
    }
    Ok(DropResult { params, devices })
}
