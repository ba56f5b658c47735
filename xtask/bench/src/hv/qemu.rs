//! The attach window for a tap that QEMU creates: with the agent running
//! (`hook: auto`, QEMU's taps matched by an `attach` glob), QEMU is started
//! in the hypervisor namespace as a VMM starts a VM's NIC, `-netdev tap`
//! with `vhost=off` and a virtio-net device, stopped before its first
//! instruction (`-S`: the tap exists from start-up, no guest is needed);
//! the time from the tap existing to a program on its TCX ingress is
//! watched as the churn benchmark watches veth creations ([`AttachWatch`],
//! a thread in the namespace polling every 100 us). Then QEMU is ended,
//! which deletes the tap, and the next one starts.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use egress_guard_netns::{Agent, AttachWatch};

use super::lab::HvLab;
use crate::{lab::Background, signals, stats};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub creations: usize,
}

#[derive(Debug, Clone)]
pub struct QemuResult {
    pub params: Params,
    /// From the tap existing to its program (ms).
    pub attach_ms: Vec<f64>,
    /// From QEMU's start to its tap existing (ms), for scale.
    pub start_ms: Vec<f64>,
    /// The hook `status` showed on QEMU's first tap.
    pub hook: String,
    pub command: String,
}

impl QemuResult {
    pub fn median(&self) -> f64 {
        stats::median(&self.attach_ms)
    }
    pub fn max(&self) -> f64 {
        stats::max(&self.attach_ms)
    }
    pub fn start_median(&self) -> f64 {
        stats::median(&self.start_ms)
    }
}

/// The hook `status` shows on `name`. The program is on the tap before
/// the agent has saved the state `status` reads: asked again for up to 5 s.
fn status_hook(agent: &Agent<'_>, name: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = agent.status_json()?;
        let hook = status["interfaces"]
            .as_array()
            .and_then(|a| a.iter().find(|x| x["name"] == name))
            .and_then(|x| x["hook"].as_str())
            .map(str::to_owned);
        match hook {
            Some(h) => return Ok(h),
            None if Instant::now() >= deadline => {
                bail!("status shows no hook on QEMU's tap {name}:\n{status:#}")
            }
            None => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

pub fn run(lab: &HvLab, params: Params) -> Result<QemuResult> {
    let (agent, _) = lab.agent("auto")?;
    let hv = lab.hv();
    let mut attach_ms = Vec::new();
    let mut start_ms = Vec::new();
    let mut hook = String::new();
    let mut command = String::new();
    for i in 0..params.creations {
        signals::check()?;
        let name = format!("qtap{i}");
        let watch = AttachWatch::start(&hv.path(), &name, Duration::from_secs(30))?;
        let mut qemu = hv.command("qemu-system-x86_64");
        qemu.args(["-netdev"])
            .arg(format!(
                "tap,id=n0,ifname={name},script=no,downscript=no,vhost=off"
            ))
            .args(["-device", "virtio-net-pci,netdev=n0"])
            .args(["-nographic", "-nodefaults", "-S"]);
        let started = Instant::now();
        let mut vmm = Background::start(qemu, lab.logs.path(), &format!("qemu-{i}"))?;
        if command.is_empty() {
            command.clone_from(&vmm.command);
        }
        let times = watch.wait().with_context(|| {
            format!(
                "{name} was not enforced\n{}\n{}",
                vmm.output(),
                agent.output()
            )
        })?;
        vmm.check_running()?;
        if hook.is_empty() {
            hook = status_hook(&agent, &name)?;
        }
        attach_ms.push(
            times
                .attached
                .saturating_duration_since(times.exists)
                .as_secs_f64()
                * 1000.0,
        );
        start_ms.push(
            times
                .exists
                .saturating_duration_since(started)
                .as_secs_f64()
                * 1000.0,
        );
        vmm.stop(libc::SIGTERM)?;
    }
    ensure!(!hook.is_empty(), "status showed no hook on QEMU's tap");
    let result = QemuResult {
        params,
        attach_ms,
        start_ms,
        hook,
        command,
    };
    println!(
        "  QEMU taps over {} starts: existing to enforced median {:.2} ms, max {:.2} ms (QEMU start to tap: median {:.0} ms); hook {}",
        params.creations,
        result.median(),
        result.max(),
        result.start_median(),
        result.hook
    );
    Ok(result)
}
