//! The hypervisor-device lab: a hypervisor namespace routing to an
//! "internet" namespace (the fixtures' topology, without VM namespaces),
//! and in the hypervisor namespace the devices a VMM gives its VMs, opened
//! as the VMM opens them ([`VmDevice`]): a blocked VM's tap, an allowed
//! VM's tap, and a blocked VM's macvtap in bridge mode over a veth whose
//! peer is in the internet namespace.
//!
//! Invariants:
//! - What the VMs send goes to [`SINK_ADDR`], which the internet namespace
//!   drops silently (a blackhole route) once its interface has counted it:
//!   [`HvLab::received`] reads that count, the receiver's figure, and no
//!   reply (RST, ICMP) ever comes back to load the sending CPU.
//! - The hypervisor's neighbours are fixed, so nothing waits for ARP.
//! - The devices are deleted before the namespaces (field order), also on
//!   failure.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use egress_guard_netns::{
    Agent, Netns, TempDir, Topology, VmDevice,
    agent::READY_TIMEOUT,
    mac_address,
    topology::{SINK_V4, UPLINK_IF},
};

use crate::policy::{Role, policy};

/// The blocked VM's tap (the SYN flood).
pub const TAP_BLOCKED: &str = "tap-blk";
/// The allowed VM's tap (the throughput).
pub const TAP_ALLOWED: &str = "tap-ok";
/// The blocked VM's macvtap (the SYN flood).
pub const MACVTAP: &str = "mvt-blk";
/// The real guest's tap (an allowed VM; QEMU creates it).
pub const GUEST_TAP: &str = "gtap0";
/// The macvtap's lower device in hv, and its peer in the internet namespace.
const LOWER: &str = "mv-low";
const LOWER_PEER: &str = "mv-peer";
/// The taps QEMU creates for the attach window match this `attach` glob.
pub const QEMU_GLOB: &str = "qtap*";
/// Where every VM's traffic goes: an address of the benchmarking range
/// (RFC 2544) that the internet namespace blackholes.
pub const SINK_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 9);

/// A VM's addresses on its device.
#[derive(Debug, Clone, Copy)]
pub struct Guest {
    pub ip: Ipv4Addr,
    /// The guest's MAC (a tap) or the macvtap's own (a macvtap guest sends
    /// from it).
    pub mac: [u8; 6],
    /// Where its frames go: the tap's MAC (the host routes them) or the
    /// macvtap peer's.
    pub next_hop_mac: [u8; 6],
}

pub struct HvLab {
    pub tap_blocked: VmDevice,
    pub tap_allowed: VmDevice,
    pub macvtap: VmDevice,
    pub blocked_guest: Guest,
    pub allowed_guest: Guest,
    pub macvtap_guest: Guest,
    pub topo: Topology,
    /// The policy and the nftables rules.
    pub dir: TempDir,
    /// What programs started in the background print (QEMU): not beside
    /// the policy, whose directory the agent watches (a file written there
    /// makes it wait for the directory to be quiet before it reads the
    /// policy again, and link events wait meanwhile).
    pub logs: TempDir,
    pub bin: PathBuf,
}

impl HvLab {
    pub fn new(bin: &Path) -> Result<Self> {
        let topo = Topology::builder()
            .build()
            .context("building the namespace topology")?;
        let (hv, inet) = (&topo.hv, &topo.internet);
        let sink_net = "198.18.0.0/24";
        hv.ip(["route", "add", sink_net, "via", &SINK_V4.to_string()])?;
        inet.ip(["route", "add", "blackhole", sink_net])?;
        let inet_mac = mac_address(inet, "eth0")?;
        hv.ip([
            "neigh",
            "replace",
            &SINK_V4.to_string(),
            "lladdr",
            &mac_text(inet_mac),
            "dev",
            UPLINK_IF,
            "nud",
            "permanent",
        ])?;
        let tap_blocked = VmDevice::tap(hv, TAP_BLOCKED, 0)?;
        let tap_allowed = VmDevice::tap(hv, TAP_ALLOWED, 0)?;
        let mut guests = Vec::new();
        for (dev, k) in [(&tap_blocked, 210u8), (&tap_allowed, 212)] {
            dev.gateway(
                hv,
                Ipv4Addr::new(10, 77, k, 1),
                format!("fd77:0:{k}::1").parse()?,
            )?;
            guests.push(Guest {
                ip: Ipv4Addr::new(10, 77, k, 2),
                mac: [0x52, 0x54, 0, 0x12, 0x34, k],
                next_hop_mac: dev.mac().context("a tap without a MAC")?,
            });
        }
        hv.ip([
            "link",
            "add",
            LOWER,
            "type",
            "veth",
            "peer",
            "name",
            LOWER_PEER,
            "netns",
            inet.name(),
        ])?;
        hv.ip(["link", "set", LOWER, "up"])?;
        inet.ip(["addr", "add", "10.77.230.1/24", "dev", LOWER_PEER])?;
        inet.ip(["link", "set", LOWER_PEER, "up"])?;
        let macvtap = VmDevice::macvtap(hv, LOWER, MACVTAP)?;
        let macvtap_guest = Guest {
            ip: Ipv4Addr::new(10, 77, 230, 10),
            mac: macvtap.mac().context("a macvtap without a MAC")?,
            next_hop_mac: mac_address(inet, LOWER_PEER)?,
        };
        Ok(Self {
            tap_blocked,
            tap_allowed,
            macvtap,
            blocked_guest: guests[0],
            allowed_guest: guests[1],
            macvtap_guest,
            topo,
            dir: TempDir::new("bench-hv")?,
            logs: TempDir::new("bench-hv-logs")?,
            bin: bin.to_owned(),
        })
    }

    pub fn hv(&self) -> &Netns {
        &self.topo.hv
    }

    /// The policy: the two taps' VMs (blocked, allowed), the macvtap's
    /// (blocked), the real guest's tap (allowed), and QEMU's taps by the `attach` glob (unknown: blocked),
    /// with `hook`.
    pub fn policy(hook: &str) -> String {
        policy(
            hook,
            &[QEMU_GLOB],
            &[
                (TAP_BLOCKED, Role::Blocked),
                (TAP_ALLOWED, Role::Allowed),
                (MACVTAP, Role::Blocked),
                (GUEST_TAP, Role::Allowed),
            ],
            0,
        )
    }

    /// Starts the agent with `hook`, waits for `ready`; returns it with the
    /// hook `status` shows on each interface.
    pub fn agent(&self, hook: &str) -> Result<(Agent<'_>, BTreeMap<String, String>)> {
        let path = self.dir.write("policy.yaml", Self::policy(hook))?;
        let mut agent = Agent::spawn(self.hv(), &self.bin, &path, &["--log-format", "json"])?;
        agent.wait_ready(READY_TIMEOUT)?;
        let status = agent.status_json()?;
        let hooks = status["interfaces"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|i| {
                        Some((
                            i["name"].as_str()?.to_owned(),
                            i["hook"].as_str()?.to_owned(),
                        ))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((agent, hooks))
    }

    /// Packets and bytes the receiving interface has counted: the internet
    /// namespace's `eth0` for the taps, the macvtap lower's peer for the
    /// macvtap.
    pub fn received(&self, macvtap: bool) -> Result<(u64, u64)> {
        let dev = if macvtap { LOWER_PEER } else { "eth0" };
        let out = self
            .topo
            .internet
            .ip(["-s", "-j", "link", "show", "dev", dev])?;
        let doc: serde_json::Value = serde_json::from_str(&out.stdout)
            .with_context(|| format!("`{}` printed {}", out.command, out.stdout))?;
        let rx = &doc[0]["stats64"]["rx"];
        Ok((
            rx["packets"].as_u64().context("no rx packet counter")?,
            rx["bytes"].as_u64().context("no rx byte counter")?,
        ))
    }
}

pub fn mac_text(mac: [u8; 6]) -> String {
    mac.map(|b| format!("{b:02x}")).join(":")
}

/// The destination of every VM's traffic.
pub fn sink() -> IpAddr {
    IpAddr::V4(SINK_ADDR)
}
