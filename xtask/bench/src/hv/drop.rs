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
//! the tap, tcx egress on the macvtap), each set up by [`super::holder`].
//!
//! The figure is frames held back per CPU-second of the sending CPU's
//! kernel time (system + irq + softirq of that CPU in /proc/stat), where the
//! tap's or macvtap's whole path runs. Held back: egress-guard's and
//! nftables' own counters; for a floor, the frames written, less any the
//! receiver saw. Invariant: what is written does not reach the receiver (a
//! window where more than 0.1 % of it does is an error, not a figure).

use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::{Context as _, Result, bail};
use egress_guard_netns::vmframe::{Offload, Segment};

pub use super::holder::{Device, Holder};
use super::{
    holder::hold,
    lab::{Guest, HvLab, sink},
    sender::{CpuKernel, SENDER_CPU, Sender},
};
use crate::{lab::Hook, signals, stats};

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
