//! Benchmark 2: allowed traffic. iperf3 TCP throughput from a VM across its
//! host-side veth, routed by the hypervisor namespace to a server in the
//! "internet" namespace: the blocked VM on a port that is not held back
//! (5201), and the exempt VM on port 25, under each hook and with no agent.
//! Each round runs no agent, a hook, no agent, the next hook, ..., no agent,
//! and each hook's figure is compared with the mean of the two no-agent
//! figures around it.

use std::{collections::BTreeMap, time::Duration};

use anyhow::{Context as _, Result, ensure};
use egress_guard_netns::{Vm, attachments, cmd, topology::SINK_V4};

use crate::{
    lab::{BLOCKED, Background, Hook, Lab},
    signals, stats,
};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub seconds: u32,
    /// Seconds of each run left out of the figure (slow start).
    pub omit: u32,
    pub rounds: usize,
}

pub const HOOKS: [Hook; 4] = [Hook::None, Hook::Tc, Hook::XdpGeneric, Hook::Xdp];
/// The port the blocked VM uses: not held back.
pub const ALLOWED_PORT: u16 = 5201;
/// The exempt VM sends to port 25 itself.
pub const EXEMPT_PORT: u16 = 25;
/// The pause between setting a configuration up and measuring it.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Default)]
pub struct HookThroughput {
    /// The hook `status` reported on the interface (empty for no agent).
    pub actual: String,
    pub blocked_gbps: Vec<f64>,
    pub exempt_gbps: Vec<f64>,
    /// This hook's figure over the mean of the no-agent figures just before
    /// and just after it.
    pub blocked_ratio: Vec<f64>,
    pub exempt_ratio: Vec<f64>,
}

#[derive(Debug, Clone)]
pub struct ThroughputResult {
    pub params: Params,
    pub hooks: BTreeMap<Hook, HookThroughput>,
    /// The commands, for BENCHMARKS.md.
    pub commands: Vec<String>,
}

/// The default hook's goal: at least this share of the no-agent figure.
pub const GOAL_RATIO: f64 = 0.95;

/// One iperf3 run from `vm` to the sink; Gbit/s received.
fn iperf(vm: &Vm, port: u16, params: Params) -> Result<(f64, String)> {
    let mut command = vm.ns.command("iperf3");
    command.args([
        "-c",
        &SINK_V4.to_string(),
        "-p",
        &port.to_string(),
        "-t",
        &params.seconds.to_string(),
        "-O",
        &params.omit.to_string(),
        // Client and server (and the softirq work the client's sends do)
        // on one CPU, every run: left to the scheduler, they share a CPU in
        // some runs and not in others, and across two CPUs the stream runs
        // at under half the speed, whatever the hook.
        "-A",
        "0,0",
        "-J",
    ]);
    let line = cmd::describe(&command);
    let timeout = Duration::from_secs(u64::from(params.seconds + params.omit) + 30);
    // The server may still be starting on the first run.
    let mut attempt = 0;
    let out = loop {
        let out = cmd::output_within(&mut command, timeout)?;
        attempt += 1;
        if out.success() || attempt == 3 {
            break out.check()?;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let doc: serde_json::Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("`{line}` printed no JSON:\n{}", out.stdout))?;
    let bps = doc["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .with_context(|| format!("`{line}`: no end.sum_received.bits_per_second"))?;
    Ok((bps / 1e9, line))
}

pub fn run(lab: &Lab, params: Params) -> Result<ThroughputResult> {
    let mut servers = Vec::new();
    for port in [ALLOWED_PORT, EXEMPT_PORT] {
        let mut command = lab.topo.internet.command("iperf3");
        command.args(["-s", "-p", &port.to_string()]);
        servers.push(Background::start(
            command,
            lab.dir.path(),
            &format!("iperf3-server-{port}"),
        )?);
    }
    std::thread::sleep(Duration::from_millis(300));
    for s in &mut servers {
        s.check_running()?;
    }
    let mut hooks: BTreeMap<Hook, HookThroughput> = BTreeMap::new();
    let mut commands = Vec::new();
    for round in 0..params.rounds {
        // Each hook sits between two runs with no agent, and is compared
        // with their mean: what the machine's other load does slowly
        // falls on both sides alike. The hooks' order rotates.
        let mut order = [Hook::Tc, Hook::XdpGeneric, Hook::Xdp];
        order.rotate_left(round % 3);
        let mut measure = |hook: Hook| -> Result<(f64, f64)> {
            signals::check()?;
            let agent = if hook == Hook::None {
                let on = attachments(&lab.topo.hv, BLOCKED)?;
                ensure!(on.is_empty(), "no agent, but {on}");
                None
            } else {
                Some(lab.agent(hook)?)
            };
            // Whatever the agent still does after `ready` is over before
            // the traffic starts; and the VMs take turns going first.
            signals::sleep(SETTLE)?;
            let ((blocked, c1), (exempt, c2)) = if round % 2 == 0 {
                let b = iperf(lab.blocked(), ALLOWED_PORT, params)?;
                (b, iperf(lab.exempt(), EXEMPT_PORT, params)?)
            } else {
                let e = iperf(lab.exempt(), EXEMPT_PORT, params)?;
                (iperf(lab.blocked(), ALLOWED_PORT, params)?, e)
            };
            if commands.is_empty() {
                commands = vec![c1, c2];
            }
            let entry = hooks.entry(hook).or_default();
            if let Some((_, actual)) = &agent {
                entry.actual.clone_from(actual);
            }
            entry.blocked_gbps.push(blocked);
            entry.exempt_gbps.push(exempt);
            println!(
                "  throughput round {}: {:<16} blocked VM {blocked:6.2} Gbit/s, exempt VM {exempt:6.2} Gbit/s",
                round + 1,
                hook.label()
            );
            Ok((blocked, exempt))
        };
        let mut before = measure(Hook::None)?;
        let mut ratios = Vec::new();
        for hook in order {
            let (b, e) = measure(hook)?;
            let after = measure(Hook::None)?;
            let (b0, e0) = (
                f64::midpoint(before.0, after.0),
                f64::midpoint(before.1, after.1),
            );
            ratios.push((hook, b / b0, e / e0));
            before = after;
        }
        for (hook, b, e) in ratios {
            let entry = hooks.entry(hook).or_default();
            entry.blocked_ratio.push(b);
            entry.exempt_ratio.push(e);
        }
        let none = hooks.entry(Hook::None).or_default();
        none.blocked_ratio.push(1.0);
        none.exempt_ratio.push(1.0);
    }
    Ok(ThroughputResult {
        params,
        hooks,
        commands,
    })
}

impl HookThroughput {
    pub fn blocked(&self) -> f64 {
        stats::median(&self.blocked_gbps)
    }
    pub fn exempt(&self) -> f64 {
        stats::median(&self.exempt_gbps)
    }
    pub fn blocked_share(&self) -> f64 {
        stats::median(&self.blocked_ratio)
    }
    pub fn exempt_share(&self) -> f64 {
        stats::median(&self.exempt_ratio)
    }
}
