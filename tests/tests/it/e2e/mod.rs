//! End to end, in network namespaces: a hypervisor namespace routes VM
//! namespaces (one behind a Linux bridge) to an "internet" namespace with a
//! real SMTP server (aiosmtpd on 25 and 587); the VMs send with swaks; the
//! agent (`$EGRESS_GUARD_BIN`, set by `cargo xtask test`) runs in the
//! hypervisor namespace. Each test has its own namespaces, pin directory and
//! agent, all removed when it ends, also when it fails. Needs root.
//!
//! - [`delivery`]: who delivers where, under each hook and action;
//! - [`lifecycle`]: status, SIGTERM and detach, a rejected policy at start;
//! - [`check`]: `egress-guard check`, with no kernel at all.

mod check;
mod delivery;
mod lifecycle;

use std::time::Duration;

use anyhow::Result;
use egress_guard_tests::netns::{
    Agent, PolicyBuilder, Role, Topology,
    topology::{RELAY_V4, RELAY_V6},
};

use crate::fixtures::{Probe, Setup, with_agent_output};

/// swaks waits 3 s for each step: a held-back attempt takes that long.
const PROBE: Probe = Probe {
    timeout: Duration::from_secs(3),
    held_at_least: Duration::from_secs(2),
};

/// The usual pair: a blocked VM and an exempt one.
const PAIR: [(&str, Role); 2] = [("vm-blocked", Role::Blocked), ("vm-exempt", Role::Exempt)];

/// A policy for `vms` (VM name = interface name), holding back port 25
/// with `action`, the relay in `allow_destinations`.
fn policy(hook: &str, attach: &[&str], action: &str, vms: &[(&str, Role)]) -> String {
    let mut p = PolicyBuilder::new()
        .hook(hook)
        .action(action)
        .attach(attach)
        .allow(&[format!("{RELAY_V4}/32"), format!("{RELAY_V6}/128")]);
    for (name, role) in vms {
        p = p.vm(name, *role);
    }
    p.yaml()
}

/// The sink, vm-blocked routed and vm-exempt on the bridge.
fn routed_and_bridged() -> Result<Setup> {
    let topo = Topology::builder()
        .routed_vm("vm-blocked")
        .bridged_vm("vm-exempt")
        .build()?;
    Setup::new(topo, PROBE)
}

/// Runs `checks` on a set-up of `topo` with an agent on `policy`; a
/// failure carries the agent's output.
fn with_agent(
    topo: Topology,
    policy: &str,
    checks: impl FnOnce(&Setup, &Agent<'_>) -> Result<()>,
) -> Result<()> {
    let s = Setup::new(topo, PROBE)?;
    let agent = s.start_agent(policy, &[])?;
    with_agent_output(&agent, checks(&s, &agent))
}
