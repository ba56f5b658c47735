//! Observability (issue 5), in network namespaces: per-VM counters by
//! reason, blocked-attempt events in the agent's log, `/metrics` parsed with
//! a real Prometheus text parser and checked exactly, `/healthz` and
//! `/readyz`, and `status` in both formats before and after a restart.
//!
//! The VMs send hand-made frames from their side of the veth with an
//! AF_PACKET socket (`egress_guard_netns::send_frames`): each is sent once,
//! never retransmitted, so counts are exact, and malformed frames and
//! fragments are possible. Every test builds its own topology and agent
//! (`$EGRESS_GUARD_BIN`, which `cargo xtask test` sets), removed when it
//! ends, also on failure. The tests run one at a time. Needs root.
//!
//! - [`metrics`]: `/metrics` parsed, and polled until it shows something;
//! - [`counts`]: every SYN and every reason counted exactly, and logged;
//! - [`status`]: a rejected policy, a VM leaving, `status` across restarts;
//! - [`flood`]: a flood of SYNs yields a bounded number of events.

mod counts;
mod flood;
mod metrics;
mod status;

use std::{net::Ipv4Addr, ops::Deref, time::Duration};

use anyhow::{Result, ensure};
use egress_guard_common::{craft::Frame, parse::TCP_ACK};
use egress_guard_tests::netns::{
    Agent, PolicyBuilder, Role, Vm,
    agent::READY_TIMEOUT,
    mac_address, require_root, send_frames,
    topology::{SINK_V4, SINK_V6},
};

use crate::fixtures::{Setup, routed, serial, with_agent_output};
use metrics::Metrics;

/// The repeat window the agents of these tests run with (seconds).
const REPEAT_WINDOW: u64 = 2;

/// How long anything the kernel or the agent does may take to show.
const SETTLE: Duration = Duration::from_secs(15);

const BLOCKED: &str = "vm-blocked";
const EXEMPT: &str = "vm-exempt";

/// A policy holding back port 25, with vm-blocked (blocked) and vm-exempt
/// (exempt, started since its grant), each named after its interface, less
/// those in `without`.
fn policy(hook: &str, mode: &str, action: &str, without: &[&str]) -> String {
    let mut p = PolicyBuilder::new().hook(hook).mode(mode).action(action);
    for (name, role) in [(BLOCKED, Role::Blocked), (EXEMPT, Role::Exempt)] {
        if !without.contains(&name) {
            p = p.vm(name, role);
        }
    }
    p.yaml()
}

fn enforce(hook: &str) -> String {
    policy(hook, "enforce", "drop", &[])
}

/// Runs `test` alone with a [`Lab`] and an agent on [`enforce`]`(hook)`; a
/// failure carries what the agent printed.
fn with_agent(hook: &str, test: impl FnOnce(&Lab, &mut Agent<'_>) -> Result<()>) -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Lab::new()?;
    let mut agent = s.start_agent(&enforce(hook))?;
    let r = test(&s, &mut agent);
    with_agent_output(&agent, r)
}

/// A [`Setup`] with the two VMs and no sink (the VMs send hand-made
/// frames), whose agents log JSON with a short repeat window.
struct Lab(Setup);

impl Deref for Lab {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.0
    }
}

impl Lab {
    fn new() -> Result<Self> {
        Ok(Self(Setup::bare(routed(&[BLOCKED, EXEMPT])?)?))
    }

    /// The agent, logging JSON, with a short repeat window.
    fn start_agent(&self, text: &str) -> Result<Agent<'_>> {
        let path = self.write_policy(text)?;
        let window = REPEAT_WINDOW.to_string();
        let mut agent = Agent::spawn(
            &self.topo.hv,
            &self.bin,
            &path,
            &["--log-format", "json", "--repeat-window", &window],
        )?;
        agent.wait_ready(READY_TIMEOUT)?;
        Ok(agent)
    }

    /// What frames from `vm` need: its MAC and its host side's.
    fn sender(&self, name: &str) -> Result<Sender<'_>> {
        let vm = self.vm(name);
        Ok(Sender {
            vm,
            mac: mac_address(&vm.ns, "eth0")?,
            host_mac: mac_address(&self.topo.hv, &vm.host_if)?,
        })
    }

    fn scrape(&self) -> Result<Metrics> {
        Metrics::scrape(&self.topo.hv)
    }
}

/// Sends frames from a VM's eth0.
struct Sender<'a> {
    vm: &'a Vm,
    mac: [u8; 6],
    host_mac: [u8; 6],
}

impl Sender<'_> {
    /// A TCP SYN from the VM to `dst:25` over IPv4, from `sport`.
    fn syn4(&self, dst: Ipv4Addr, sport: u16) -> Vec<u8> {
        Frame::tcp4(self.vm.ipv4.octets(), dst.octets(), sport, 25)
            .macs(self.mac, self.host_mac)
            .seq(u32::from(sport))
            .build()
    }

    /// A TCP SYN to the sink's IPv6 address, port 25.
    fn syn6(&self, sport: u16) -> Vec<u8> {
        Frame::tcp6(self.vm.ipv6.octets(), SINK_V6.octets(), sport, 25)
            .macs(self.mac, self.host_mac)
            .build()
    }

    /// A segment to the sink's port 25 that is not a SYN.
    fn ack4(&self, sport: u16) -> Vec<u8> {
        Frame::tcp4(self.vm.ipv4.octets(), SINK_V4.octets(), sport, 25)
            .macs(self.mac, self.host_mac)
            .flags(TCP_ACK)
            .payload(b"EHLO x\r\n")
            .build()
    }

    /// Frames that could be TCP to port 25 but cannot be parsed far enough
    /// to tell: an IPv4 header length of 12 bytes, and a TCP header cut
    /// after its source port.
    fn malformed(&self) -> Vec<Vec<u8>> {
        let syn = self.syn4(SINK_V4, 40100);
        let mut bad_ihl = syn.clone();
        bad_ihl[14] = 0x43;
        let mut short_tcp = syn;
        short_tcp.truncate(34 + 2);
        short_tcp[16..18].copy_from_slice(&22u16.to_be_bytes());
        vec![bad_ihl, short_tcp]
    }

    /// A later fragment of a TCP datagram whose first fragment was never
    /// sent.
    fn orphan_fragment(&self, id: u32) -> Vec<u8> {
        Frame::tcp4(self.vm.ipv4.octets(), SINK_V4.octets(), 40200, 25)
            .macs(self.mac, self.host_mac)
            .fragment(id, 4, false)
            .payload(&[0; 24])
            .build()
    }

    fn send(&self, frames: &[Vec<u8>]) -> Result<()> {
        let sent = send_frames(&self.vm.ns, "eth0", frames)?;
        ensure!(
            sent == frames.len(),
            "sent {sent} of {} frames",
            frames.len()
        );
        Ok(())
    }
}

fn bytes(frames: &[Vec<u8>]) -> u64 {
    frames.iter().map(|f| f.len() as u64).sum()
}
