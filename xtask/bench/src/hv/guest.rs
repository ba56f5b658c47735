//! A real guest's TCP throughput through its tap, with and without the
//! agent: Debian's kernel and busybox under QEMU (the fixtures' [`Guest`],
//! virtio-net with its default offloads, `vhost=off` as this machine has no
//! vhost-net), an allowed VM sending a file of random bytes with busybox's
//! `nc` to a receiver in the internet namespace that counts and hashes what
//! arrives. The file is made before the clock starts; the figure is its
//! size over the time from the command reaching the guest to `nc`'s end.
//!
//! Rounds of no agent, the agent under `tc` (what `auto` puts on a tap), no
//! agent, ...; the agent's figure is taken over the mean of the no-agent
//! figures around it. Under TCG (the only accelerator that boots guests on
//! the machines this was written on) the guest's emulated CPU bounds the
//! figure far below what the host path carries (see the vhost-net-style
//! figures): the report says which accelerator ran, beside the figure.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use egress_guard_netns::{
    attachments,
    guest::{Guest, GuestImage, Nic, checks::BulkReceiver},
    topology::SINK_V4,
};

use super::lab::{GUEST_TAP, HvLab};
use crate::{lab::Hook, signals, stats};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub rounds: usize,
    /// The file the guest sends, MiB.
    pub mib: u32,
}

/// The receiver's port (allowed).
const PORT: u16 = 5202;
/// The pause between setting a configuration up and measuring it.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct GuestResult {
    pub params: Params,
    /// `kvm` or `tcg`, and why not KVM.
    pub accel: String,
    pub boot_s: f64,
    /// Mbit/s without the agent, every run.
    pub none_mbps: Vec<f64>,
    /// Mbit/s with the agent.
    pub agent_mbps: Vec<f64>,
    /// The agent's figure over the mean of the no-agent ones around it.
    pub ratio: Vec<f64>,
    /// The hook `status` showed on the guest's tap.
    pub hook: String,
    /// The mean size of the guest's frames on the tap (above 1514: TSO).
    pub mean_frame: u64,
}

impl GuestResult {
    pub fn none(&self) -> f64 {
        stats::median(&self.none_mbps)
    }
    pub fn agent(&self) -> f64 {
        stats::median(&self.agent_mbps)
    }
    pub fn ratio(&self) -> f64 {
        stats::median(&self.ratio)
    }
}

/// One transfer of the file; Mbit/s.
fn transfer(lab: &HvLab, guest: &mut Guest<'_>, params: Params) -> Result<(f64, u64)> {
    let receiver = BulkReceiver::start(&lab.topo.internet, SINK_V4.into(), PORT)?;
    let before = guest.host_counters()?;
    let started = Instant::now();
    let out = guest.check(
        &format!("timeout -s KILL 120 nc {SINK_V4} {PORT} < /tmp/blob"),
        Duration::from_mins(3),
    )?;
    let took = started.elapsed().as_secs_f64();
    let after = guest.host_counters()?;
    let (bytes, _) = receiver.finish()?;
    let want = u64::from(params.mib) << 20;
    ensure!(
        bytes == want,
        "the receiver got {bytes} bytes of {want}; nc said:\n{}",
        out.output
    );
    let mean = (after.1 - before.1) / (after.0 - before.0).max(1);
    Ok((bytes as f64 * 8.0 / took / 1e6, mean))
}

pub fn run(lab: &HvLab, params: Params) -> Result<GuestResult> {
    let image = GuestImage::from_env().context("the guest image (`cargo xtask guest`)")?;
    let mut guest = Guest::boot(&lab.topo, &image, &Nic::tap(GUEST_TAP, 0))?;
    let report = guest.boot_report().clone();
    guest.check(
        &format!(
            "dd if=/dev/urandom of=/tmp/blob bs=1048576 count={} 2>/dev/null",
            params.mib
        ),
        Duration::from_mins(3),
    )?;
    let mut none_mbps = Vec::new();
    let mut agent_mbps = Vec::new();
    let mut ratio = Vec::new();
    let mut hook = String::new();
    let mut mean_frame = 0;
    let mut measure = |with_agent: bool, guest: &mut Guest<'_>| -> Result<f64> {
        signals::check()?;
        let agent = if with_agent {
            let (agent, hooks) = lab.agent(Hook::Tc.policy_value())?;
            hooks
                .get(GUEST_TAP)
                .unwrap_or(&String::new())
                .clone_into(&mut hook);
            Some(agent)
        } else {
            let on = attachments(lab.hv(), GUEST_TAP)?;
            ensure!(on.is_empty(), "no agent, but {on}");
            None
        };
        // Whatever the agent still does after `ready` is over before the
        // transfer starts (QEMU's threads share the CPUs with it); the
        // same pause without it.
        signals::sleep(SETTLE)?;
        let (mbps, mean) = transfer(lab, guest, params)?;
        drop(agent);
        mean_frame = mean_frame.max(mean);
        println!(
            "  guest on a tap ({}): {:<12} {mbps:8.1} Mbit/s (frames of {mean} bytes on average)",
            report.accel.name(),
            if with_agent {
                "agent (`tc`)"
            } else {
                "no agent"
            }
        );
        Ok(mbps)
    };
    let mut before = measure(false, &mut guest)?;
    none_mbps.push(before);
    for _ in 0..params.rounds {
        let x = measure(true, &mut guest)?;
        let after = measure(false, &mut guest)?;
        agent_mbps.push(x);
        none_mbps.push(after);
        ratio.push(x / f64::midpoint(before, after));
        before = after;
    }
    guest.stop()?;
    Ok(GuestResult {
        params,
        accel: format!(
            "{}{}",
            report.accel.name(),
            report
                .kvm
                .as_deref()
                .map(|why| format!(" (KVM: {why})"))
                .unwrap_or_default()
        ),
        boot_s: report.took.as_secs_f64(),
        none_mbps,
        agent_mbps,
        ratio,
        hook,
        mean_frame,
    })
}
