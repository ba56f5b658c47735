//! Allowed TCP throughput through a tap written as vhost-net writes it: GSO
//! super-frames (a `virtio_net_hdr` with `NEEDS_CSUM` and `GSO_TCPV4`, MSS
//! 1448, 45 segments, 65,214-byte frames: what a Linux guest's TCP hands its
//! virtio-net with TSO), one write() a super-frame, from a thread pinned to
//! one CPU, by an allowed VM to port 25, routed by the hypervisor namespace
//! to the internet namespace.
//!
//! The receiver: the internet namespace's interface counts the bytes that
//! reach it (its rx counter), then drops them (a blackhole route). There is
//! no TCP endpoint: a real connection needs a TCP stack behind the tap,
//! that is, a guest, and under TCG the guest's own CPU would bound the
//! figure long before the host path. So the figure is the host path's
//! capacity for one VM's bulk TCP with one sending CPU: bytes delivered a
//! second while the sender keeps that CPU busy. Everything from the write()
//! to the receiver's interface (tun, the hook, routing, the veth) runs on
//! the sending CPU, so a hook's cost shows in it directly. Bytes per
//! CPU-second of that CPU's kernel time are recorded too.
//!
//! Each round runs no agent, a hook, no agent, the next hook, ..., no
//! agent (the hooks' order rotating); each hook's figure is taken over the
//! mean of the no-agent figures just before and after it.

use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::{Result, bail, ensure};
use egress_guard_netns::{
    attachments,
    vmframe::{Offload, Segment, pattern},
};

use super::{
    lab::{HvLab, TAP_ALLOWED, sink},
    sender::{CpuKernel, SENDER_CPU, Sender},
};
use crate::{lab::Hook, signals, stats};

#[derive(Debug, Clone)]
pub struct Params {
    pub seconds: f64,
    pub warmup: f64,
    pub rounds: usize,
    /// The hooks measured (besides no agent).
    pub hooks: Vec<Hook>,
}

pub const MSS: u16 = 1448;
pub const SEGMENTS: usize = 45;
/// The port the allowed VM sends to.
pub const PORT: u16 = 25;

#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    pub seconds: f64,
    pub written: u64,
    pub written_bytes: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub cpu: CpuKernel,
}

impl Window {
    pub fn gbps(&self) -> f64 {
        self.delivered_bytes as f64 * 8.0 / self.seconds / 1e9
    }
    /// Gbit delivered per CPU-second of the sending CPU's kernel time.
    pub fn gbit_per_cpu_second(&self) -> f64 {
        self.delivered_bytes as f64 * 8.0 / 1e9 / self.cpu.kernel()
    }
}

#[derive(Debug, Clone, Default)]
pub struct HookFlow {
    pub actual: String,
    pub windows: Vec<Window>,
    /// Over the mean of the no-agent figures around it.
    pub ratio: Vec<f64>,
}

impl HookFlow {
    pub fn gbps(&self) -> f64 {
        stats::median(&self.windows.iter().map(Window::gbps).collect::<Vec<_>>())
    }
    pub fn per_cpu_second(&self) -> f64 {
        stats::median(
            &self
                .windows
                .iter()
                .map(Window::gbit_per_cpu_second)
                .collect::<Vec<_>>(),
        )
    }
    pub fn ratio(&self) -> f64 {
        stats::median(&self.ratio)
    }
    /// Super-frames delivered over written, all windows.
    pub fn delivered_share(&self) -> f64 {
        let (d, w) = self
            .windows
            .iter()
            .fold((0, 0), |(d, w), x| (d + x.delivered, w + x.written));
        d as f64 / w as f64
    }
}

#[derive(Debug, Clone)]
pub struct FlowResult {
    pub params: Params,
    pub hooks: BTreeMap<Hook, HookFlow>,
    pub frame_len: usize,
}

/// 16 super-frames of the allowed VM's stream (consecutive sequence
/// numbers), each header and frame in one buffer.
fn frames(lab: &HvLab) -> Vec<Vec<u8>> {
    let g = lab.allowed_guest;
    let len = usize::from(MSS) * SEGMENTS;
    (0..16u32)
        .map(|i| {
            let seg = Segment::data(
                g.ip.into(),
                sink(),
                40_000,
                PORT,
                1 + i * u32::try_from(len).unwrap_or(0),
                pattern(i, len),
            );
            let (hdr, frame) = seg.vnet(g.mac, g.next_hop_mac, Offload::Gso { mss: MSS });
            let mut buf = hdr.to_bytes().to_vec();
            buf.extend_from_slice(&frame);
            buf
        })
        .collect()
}

fn window(
    lab: &HvLab,
    hook: Hook,
    frames: &[Vec<u8>],
    params: &Params,
) -> Result<(Window, String)> {
    let agent = if hook == Hook::None {
        let on = attachments(lab.hv(), TAP_ALLOWED)?;
        ensure!(on.is_empty(), "no agent, but {on}");
        None
    } else {
        Some(lab.agent(hook.policy_value())?)
    };
    let actual = agent
        .as_ref()
        .and_then(|(_, hooks)| hooks.get(TAP_ALLOWED).cloned())
        .unwrap_or_default();
    let w = thread::scope(|s| -> Result<Window> {
        let sender = Sender::start(s, &lab.tap_allowed, frames);
        signals::sleep(Duration::from_secs_f64(params.warmup))?;
        let c0 = CpuKernel::read(SENDER_CPU)?;
        let s0 = sender.sent();
        let r0 = lab.received(false)?;
        let t0 = std::time::Instant::now();
        signals::sleep(Duration::from_secs_f64(params.seconds))?;
        let c1 = CpuKernel::read(SENDER_CPU)?;
        let s1 = sender.sent();
        let r1 = lab.received(false)?;
        let seconds = t0.elapsed().as_secs_f64();
        if let Some(e) = sender.stop()? {
            bail!("writes into {TAP_ALLOWED} failed: {e}");
        }
        let sent = s1.since(&s0);
        Ok(Window {
            seconds,
            written: sent.written,
            written_bytes: sent.bytes,
            delivered: r1.0.saturating_sub(r0.0),
            delivered_bytes: r1.1.saturating_sub(r0.1),
            cpu: c1.since(&c0),
        })
    })?;
    drop(agent);
    if w.delivered_bytes == 0 || w.cpu.kernel() <= 0.0 {
        bail!(
            "{}: {} bytes delivered with {:.3} s of the sending CPU's kernel time",
            hook.label(),
            w.delivered_bytes,
            w.cpu.kernel()
        );
    }
    Ok((w, actual))
}

pub fn run(lab: &HvLab, params: &Params) -> Result<FlowResult> {
    let frames = frames(lab);
    let mut hooks: BTreeMap<Hook, HookFlow> = BTreeMap::new();
    for round in 0..params.rounds {
        let mut order = params.hooks.clone();
        if !order.is_empty() {
            let n = order.len();
            order.rotate_left(round % n);
        }
        let mut measure = |hook: Hook| -> Result<f64> {
            signals::check()?;
            let (w, actual) = window(lab, hook, &frames, params)?;
            println!(
                "  hv throughput round {}: {:<16} {:6.2} Gbit/s delivered ({:.3} of the super-frames written), {:5.2} Gbit per CPU-s",
                round + 1,
                hook.label(),
                w.gbps(),
                w.delivered as f64 / w.written.max(1) as f64,
                w.gbit_per_cpu_second()
            );
            let entry = hooks.entry(hook).or_default();
            entry.actual = actual;
            entry.windows.push(w);
            Ok(w.gbps())
        };
        let mut before = measure(Hook::None)?;
        let mut ratios = Vec::new();
        for hook in order {
            let x = measure(hook)?;
            let after = measure(Hook::None)?;
            ratios.push((hook, x / f64::midpoint(before, after)));
            before = after;
        }
        for (hook, r) in ratios {
            hooks.entry(hook).or_default().ratio.push(r);
        }
        hooks.entry(Hook::None).or_default().ratio.push(1.0);
    }
    Ok(FlowResult {
        params: params.clone(),
        hooks,
        frame_len: usize::from(MSS) * SEGMENTS + 54,
    })
}
