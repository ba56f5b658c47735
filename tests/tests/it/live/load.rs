//! Restarts under load: a blocked VM's and an exempt VM's steady streams
//! of SYNs while the agent is killed, stopped and started again; not one
//! SYN of the blocked VM may escape, not one of the exempt VM be lost.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use egress_guard_tests::netns::{
    Agent, Captured, Role, Sent, SynCapture, SynStream, Topology, Vm, held_back_packets,
    require_root,
    topology::{SINK_V4, SINK_V6},
};

use super::{policy, tcx_program};
use crate::fixtures::{Setup, ms, routed, serial, with_agent_output};

// 7. Restart, upgrade and foreign maps under load: zero escapes
// ---------------------------------------------------------------------------

/// SYNs a second in each stream.
const RATE: u32 = 250;

/// A blocked VM's stream of port-25 SYNs, an exempt VM's, and the capture in
/// the internet namespace that counts what arrives of both.
pub(super) struct Load {
    capture: SynCapture,
    blocked: SynStream,
    allowed: SynStream,
    blocked_addrs: [IpAddr; 2],
    allowed_addrs: [IpAddr; 2],
    started: Instant,
}

/// What a [`Load`] sent and what arrived.
pub(super) struct LoadReport {
    pub(super) blocked: Sent,
    allowed: Sent,
    /// SYNs from the blocked VM that reached the internet namespace.
    escaped: u64,
    /// Sequence numbers of the exempt VM's SYNs that never arrived.
    missing: Vec<u64>,
    captured: Captured,
}

impl Load {
    pub(super) fn start(topo: &Topology, blocked: &Vm, allowed: &Vm) -> Result<Self> {
        let capture = SynCapture::start(&topo.internet, "eth0", &[25])?;
        Ok(Self {
            capture,
            blocked: SynStream::start(blocked, SINK_V4, Some(SINK_V6), 25, RATE)?,
            allowed: SynStream::start(allowed, SINK_V4, Some(SINK_V6), 25, RATE)?,
            blocked_addrs: [blocked.ipv4.into(), blocked.ipv6.into()],
            allowed_addrs: [allowed.ipv4.into(), allowed.ipv6.into()],
            started: Instant::now(),
        })
    }

    pub(super) fn finish(mut self) -> Result<LoadReport> {
        let blocked = self.blocked.stop()?;
        let allowed = self.allowed.stop()?;
        // What is in flight arrives.
        thread::sleep(Duration::from_millis(300));
        let captured = self.capture.stop()?;
        println!(
            "load: {:.1} s, {} SYN/s per stream",
            self.started.elapsed().as_secs_f64(),
            RATE
        );
        Ok(LoadReport {
            escaped: captured.syns_from(&self.blocked_addrs),
            missing: captured.missing(&self.allowed_addrs, allowed.sent),
            blocked,
            allowed,
            captured,
        })
    }
}

impl LoadReport {
    pub(super) fn check(&self, what: &str) -> Result<()> {
        let arrived = self.allowed.sent - self.missing.len() as u64;
        println!(
            "{what}: blocked VM sent {} port-25 SYNs ({} v4, {} v6), {} reached the internet; \
             exempt VM sent {}, {} arrived, {} lost; capture saw {} frames, kernel drops {}",
            self.blocked.sent,
            self.blocked.sent_v4,
            self.blocked.sent_v6,
            self.escaped,
            self.allowed.sent,
            arrived,
            self.missing.len(),
            self.captured.frames,
            self.captured.kernel_drops
        );
        ensure!(
            self.captured.kernel_drops == 0,
            "the capture lost {} frames: its counts are not complete",
            self.captured.kernel_drops
        );
        ensure!(
            self.blocked.errors == 0 && self.allowed.errors == 0,
            "a sender failed: {:?} {:?}",
            self.blocked.first_error,
            self.allowed.first_error
        );
        ensure!(
            self.blocked.sent > 0 && self.allowed.sent > 0,
            "the streams sent nothing"
        );
        ensure!(
            self.escaped == 0,
            "{what}: {} SYNs of the blocked VM reached the internet",
            self.escaped
        );
        ensure!(
            self.missing.is_empty(),
            "{what}: {} SYNs of the exempt VM were lost, e.g. numbers {:?}",
            self.missing.len(),
            &self.missing[..self.missing.len().min(20)]
        );
        Ok(())
    }
}

pub(super) fn two_vm_policy() -> String {
    policy(&[("vm-blocked", Role::Blocked), ("vm-exempt", Role::Exempt)])
}

pub(super) fn load_setup() -> Result<Setup> {
    Setup::bare(routed(&["vm-blocked", "vm-exempt"])?)
}

/// Runs `test` alone, on [`load_setup`] with an agent on
/// [`two_vm_policy`]; a failure carries what the agent printed.
pub(super) fn under_load(test: impl FnOnce(&Setup, &mut Agent<'_>) -> Result<()>) -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = load_setup()?;
    let mut agent = s.start_agent(&two_vm_policy(), &[])?;
    let r = test(&s, &mut agent);
    with_agent_output(&agent, r)
}

/// Asserts that every SYN the blocked VM sent under load was held back by
/// our program and counted: vm-blocked's held-back packets grew by as many
/// from `held_before`.
pub(super) fn all_counted(agent: &Agent<'_>, held_before: u64, report: &LoadReport) -> Result<()> {
    let counted = held(agent)? - held_before;
    println!(
        "held back while under load: {counted} (sent {})",
        report.blocked.sent
    );
    ensure!(
        counted == report.blocked.sent,
        "every blocked SYN should have been held back by our program and counted: \
         {counted} counted, {} sent",
        report.blocked.sent
    );
    Ok(())
}

/// The held-back packets of vm-blocked in status.
pub(super) fn held(agent: &Agent<'_>) -> Result<u64> {
    let doc = agent.status_json()?;
    held_back_packets(&doc, "vm-blocked")
        .with_context(|| format!("no held_back for vm-blocked:\n{doc:#}"))
}

#[test]
fn kill_and_sigterm_restarts_under_load_let_no_syn_through_and_lose_nothing() -> Result<()> {
    under_load(|s, agent| {
        let hv = &s.topo.hv;
        let first = tcx_program(hv, "vm-blocked")?;
        let held_before = held(agent)?;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));

        // (a) kill -9, a moment with no agent, start again.
        agent.kill()?;
        thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        agent.restart(None)?;
        println!("restart after kill -9: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_secs(1));
        let after_kill = tcx_program(hv, "vm-blocked")?;

        // (b) SIGTERM (exit 0, enforcement stays), start again.
        let status = agent.stop()?;
        ensure!(status.code() == Some(0), "SIGTERM: {status}");
        thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        agent.restart(None)?;
        println!("restart after SIGTERM: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_secs(1));
        let after_term = tcx_program(hv, "vm-blocked")?;

        let report = load.finish()?;
        report.check("kill -9 and SIGTERM restarts")?;
        for (what, p) in [("kill -9", &after_kill), ("SIGTERM", &after_term)] {
            println!(
                "program on vm-blocked after {what} and restart: id {} tag {} (was id {} tag {})",
                p.id,
                p.tag_hex(),
                first.id,
                first.tag_hex()
            );
            ensure!(
                p.tag == first.tag && p.name == first.name,
                "a restart of the same binary should run the same program: {p:?} vs {first:?}"
            );
        }
        ensure!(
            first.id != after_kill.id && after_kill.id != after_term.id,
            "each restart loads its own program and moves the link to it: ids {} {} {}",
            first.id,
            after_kill.id,
            after_term.id
        );
        // The same map set throughout: every blocked SYN was counted.
        all_counted(agent, held_before, &report)
    })
}
