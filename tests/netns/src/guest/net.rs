//! A guest's NIC on the host side, as a real VMM and libvirt make it, in the
//! hypervisor namespace of a [`Topology`](crate::Topology).
//!
//! ```text
//!   guest (QEMU)          hv ns                                internet ns
//!   tap slot n:
//!   eth0 10.77.(220+n).2 == tap NAME 10.77.(220+n).1 -- routed -- uplink ... sink, relay
//!   macvtap slot n:
//!   eth0 10.78.n.2 ======= macvtap NAME (bridge mode)
//!                            over veth mvl<n> ------------ veth mvg<n> 10.78.n.1
//!                                                          (sink and relay are local here)
//! ```
//!
//! - **Tap**: QEMU creates the tap itself (`-netdev tap,ifname=NAME,...`)
//!   while it runs in hv, as a VMM does; it goes when QEMU exits. hv routes
//!   to the guest like a routed VM: when the tap appears, it is set up and
//!   given the guest's gateway addresses (what a VMM's `script=` would do).
//! - **Macvtap**: as libvirt's `<interface type='direct'>` in bridge mode:
//!   `ip link add link LOWER name NAME address MAC type macvtap mode bridge`,
//!   the guest's MAC on the macvtap, its character device opened and handed
//!   to QEMU (`-netdev tap,fd=3`); deleted when the guest stops. The lower
//!   device is a veth whose other end is in the internet namespace, so the
//!   guest sits on a subnet of its own there, one hop from the sink and the
//!   relay, and nothing of hv's routing is on its path: what leaves the
//!   guest passes only the macvtap's transmit path and the veth.
//!
//! IPv6 follows the same plan: `fd77:0:X::/64` with X the third IPv4 octet
//! (so `fd77:0:dc::/64` for slot 0, hex), `fd78:0:n::/64`, gateway `::1`,
//! guest `::2`. DAD is off in the guest and on these links.
//!
//! Why a macvtap's lower device leads straight into the internet namespace
//! rather than through hv's routing: a macvtap in bridge mode hands its
//! guest's frames to the lower device's transmit path, so a lower device in
//! hv would have to be bridged or routed onward anyway; a veth into the
//! internet namespace is the shortest path to the sink, and hv sees the
//! guest's frames only where a real host does, on the macvtap.

use std::{
    fs::File,
    net::{Ipv4Addr, Ipv6Addr},
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    error::{Error, Result},
    netns::Netns,
    topology::Topology,
};

/// How the guest's NIC is attached to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NicKind {
    /// A tap QEMU creates in hv, routed by hv.
    Tap,
    /// A macvtap in bridge mode over a veth into the internet namespace.
    Macvtap,
}

impl std::fmt::Display for NicKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tap => "tap",
            Self::Macvtap => "macvtap",
        })
    }
}

/// A guest's NIC: its kind, the host-side interface's name (what a policy
/// names), and a slot (0 to 29) that picks its addresses. A guest that
/// stops and starts again keeps its `Nic`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub kind: NicKind,
    pub ifname: String,
    pub slot: u8,
}

impl Nic {
    /// A tap named `ifname` in slot `slot`.
    pub fn tap(ifname: &str, slot: u8) -> Self {
        Self {
            kind: NicKind::Tap,
            ifname: ifname.to_owned(),
            slot,
        }
    }

    /// A macvtap named `ifname` in slot `slot`.
    pub fn macvtap(ifname: &str, slot: u8) -> Self {
        Self {
            kind: NicKind::Macvtap,
            ifname: ifname.to_owned(),
            slot,
        }
    }

    pub(crate) fn check(&self) -> Result<()> {
        let name = &self.ifname;
        if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
            return Err(Error::Other(format!(
                "guest interface name {name:?} is not a valid interface name (1 to 15 characters)"
            )));
        }
        if self.slot >= 30 {
            return Err(Error::Other(format!(
                "guest slot {} out of range (0 to 29)",
                self.slot
            )));
        }
        Ok(())
    }

    fn octet(&self) -> u8 {
        match self.kind {
            NicKind::Tap => 220 + self.slot,
            NicKind::Macvtap => self.slot,
        }
    }

    /// The guest's IPv4 address.
    pub fn ipv4(&self) -> Ipv4Addr {
        match self.kind {
            NicKind::Tap => Ipv4Addr::new(10, 77, self.octet(), 2),
            NicKind::Macvtap => Ipv4Addr::new(10, 78, self.octet(), 2),
        }
    }

    /// The guest's IPv4 gateway (on the tap, or in the internet namespace).
    pub fn gateway4(&self) -> Ipv4Addr {
        let [a, b, c, _] = self.ipv4().octets();
        Ipv4Addr::new(a, b, c, 1)
    }

    /// The guest's IPv6 address.
    pub fn ipv6(&self) -> Ipv6Addr {
        let net = match self.kind {
            NicKind::Tap => 0xfd77,
            NicKind::Macvtap => 0xfd78,
        };
        Ipv6Addr::new(net, 0, u16::from(self.octet()), 0, 0, 0, 0, 2)
    }

    /// The guest's IPv6 gateway.
    pub fn gateway6(&self) -> Ipv6Addr {
        let mut s = self.ipv6().segments();
        s[7] = 1;
        s.into()
    }

    /// The guest NIC's MAC (also the macvtap's, as libvirt sets it).
    pub fn mac(&self) -> String {
        let kind = match self.kind {
            NicKind::Tap => 0x77,
            NicKind::Macvtap => 0x78,
        };
        format!("52:54:00:{kind:02x}:01:{:02x}", self.slot)
    }

    /// The guest's part of the kernel command line (read by its init).
    pub(crate) fn cmdline(&self) -> String {
        format!(
            "egt.ip4={}/24 egt.gw4={} egt.ip6={}/64 egt.gw6={}",
            self.ipv4(),
            self.gateway4(),
            self.ipv6(),
            self.gateway6()
        )
    }

    fn lower(&self) -> (String, String) {
        (format!("mvl{}", self.slot), format!("mvg{}", self.slot))
    }
}

/// Creates the macvtap of `nic` (and, the first time, its lower veth into
/// the internet namespace) and opens its character device, through a node
/// made in `dir` (no udev here). Returns the open device.
pub(crate) fn create_macvtap(topo: &Topology, nic: &Nic, dir: &Path) -> Result<File> {
    let hv = &topo.hv;
    let (lower, peer) = nic.lower();
    if !hv.links()?.contains(&lower) {
        hv.ip([
            "link",
            "add",
            &lower,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            topo.internet.name(),
        ])?;
        hv.ip(["link", "set", &lower, "up"])?;
        let inet = &topo.internet;
        inet.ip([
            "addr",
            "add",
            &format!("{}/24", nic.gateway4()),
            "dev",
            &peer,
        ])?;
        inet.ip([
            "-6",
            "addr",
            "add",
            &format!("{}/64", nic.gateway6()),
            "dev",
            &peer,
            "nodad",
        ])?;
        inet.ip(["link", "set", &peer, "up"])?;
    }
    hv.ip([
        "link",
        "add",
        "link",
        &lower,
        "name",
        &nic.ifname,
        "address",
        &nic.mac(),
        "type",
        "macvtap",
        "mode",
        "bridge",
    ])?;
    hv.ip(["link", "set", &nic.ifname, "up"])?;
    let index = hv
        .run("cat", [format!("/sys/class/net/{}/ifindex", nic.ifname)])?
        .stdout
        .trim()
        .to_owned();
    // `ip netns exec` mounts hv's /sys, where the macvtap's device is.
    let dev = hv
        .run(
            "cat",
            [format!(
                "/sys/class/net/{}/macvtap/tap{index}/dev",
                nic.ifname
            )],
        )?
        .stdout
        .trim()
        .to_owned();
    let node = dir.join(format!("tap{index}"));
    let (major, minor) = dev.split_once(':').ok_or_else(|| {
        Error::Other(format!("macvtap {}: odd device number {dev:?}", nic.ifname))
    })?;
    crate::cmd::run_args(
        "mknod",
        &[
            node.as_os_str(),
            "c".as_ref(),
            major.as_ref(),
            minor.as_ref(),
        ],
    )?;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&node)
        .map_err(|e| {
            Error::io(
                format!("opening {} (macvtap {})", node.display(), nic.ifname),
                e,
            )
        })
}

/// Waits for the tap QEMU creates, then sets it up and gives it the guest's
/// gateway addresses, so that hv routes to the guest.
pub(crate) fn plumb_tap(hv: &Netns, nic: &Nic, timeout: Duration) -> Result<()> {
    wait_link(hv, &nic.ifname, true, timeout)?;
    hv.ip(["link", "set", &nic.ifname, "up"])?;
    hv.ip([
        "addr",
        "add",
        &format!("{}/24", nic.gateway4()),
        "dev",
        &nic.ifname,
    ])?;
    hv.ip([
        "-6",
        "addr",
        "add",
        &format!("{}/64", nic.gateway6()),
        "dev",
        &nic.ifname,
        "nodad",
    ])?;
    Ok(())
}

/// Waits until interface `name` exists in `ns` (`present`) or is gone.
pub(crate) fn wait_link(ns: &Netns, name: &str, present: bool, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let exists = ns.ip(["link", "show", "dev", name]).is_ok();
        if exists == present {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: format!(
                    "interface {name} to {} in namespace {}",
                    if present { "appear" } else { "go" },
                    ns.name()
                ),
                timeout,
                details: ns.ip(["-br", "link"]).map(|o| o.stdout).unwrap_or_default(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
