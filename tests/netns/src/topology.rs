//! A hypervisor in a namespace: VM namespaces routed (some through a Linux
//! bridge) to an "internet" namespace.
//!
//! ```text
//!   VM ns "vm-a"            hv ns (forwarding v4+v6)             internet ns
//!   eth0 10.77.1.2 ---veth--- vm-a 10.77.1.1
//!   eth0 10.77.2.2 ---veth--- vm-b 10.77.2.1
//!                             br-vms 10.77.200.1
//!   eth0 10.77.200.10 -veth-- vm-c (port of br-vms)
//!                             uplink 198.51.100.1 ---veth--- eth0 198.51.100.2 (sink)
//!                                                                 198.51.100.25 (relay)
//! ```
//!
//! IPv6 follows the same plan: routed VM `k` in `fd77:0:k::/64`, the bridge in
//! `fd77:0:200::/64`, the internet in `2001:db8:100::/64` (sink `::2`, relay
//! `::25`). Every VM has default routes via hv. DAD is off, so every address is
//! usable at once, and [`TopologyBuilder::build`] returns only when every VM
//! reaches the sink over both families.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use crate::{
    error::{Error, Result},
    names,
    netns::Netns,
};

/// The sink's address in the internet namespace.
pub const SINK_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// The sink's IPv6 address in the internet namespace.
pub const SINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 2);
/// A second address in the internet namespace: the "relay" of tests of
/// `allow_destinations`.
pub const RELAY_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 25);
/// The relay's IPv6 address.
pub const RELAY_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x25);
/// hv's address towards the internet.
pub const UPLINK_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
/// hv's IPv6 address towards the internet.
pub const UPLINK_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
/// hv's interface towards the internet namespace.
pub const UPLINK_IF: &str = "uplink";
/// The bridge in hv that bridged VMs are ports of.
pub const BRIDGE_IF: &str = "br-vms";
/// The bridge's IPv4 gateway address.
pub const BRIDGE_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 200, 1);
/// The bridge's IPv6 gateway address.
pub const BRIDGE_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0x200, 0, 0, 0, 0, 1);

/// How a VM is connected to hv.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Its own veth, routed by hv.
    Routed,
    /// A veth that is a port of hv's bridge [`BRIDGE_IF`].
    Bridged,
}

/// One VM: a namespace whose `eth0` is the VM's NIC.
#[derive(Debug)]
pub struct Vm {
    /// The VM's namespace (`egt-<pid>-<n>-<host_if>`).
    pub ns: Netns,
    /// The host-side interface in hv, what a policy names as `interface`.
    pub host_if: String,
    pub link: Link,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    pub gateway4: Ipv4Addr,
    pub gateway6: Ipv6Addr,
}

impl Vm {
    /// The VM's address in the given family.
    pub fn addr(&self, v6: bool) -> IpAddr {
        if v6 {
            self.ipv6.into()
        } else {
            self.ipv4.into()
        }
    }
}

/// Describes the VMs of a [`Topology`].
#[derive(Debug, Default)]
#[must_use]
pub struct TopologyBuilder {
    vms: Vec<VmSpec>,
    bridge: Option<(Ipv4Addr, Ipv6Addr)>,
    wait: Option<Duration>,
}

#[derive(Debug)]
struct VmSpec {
    host_if: String,
    link: Link,
    addrs: Option<(Ipv4Addr, Ipv6Addr)>,
}

impl TopologyBuilder {
    /// A VM on its own routed veth whose host side in hv is `host_if`.
    pub fn routed_vm(mut self, host_if: &str) -> Self {
        self.vms.push(VmSpec {
            host_if: host_if.to_owned(),
            link: Link::Routed,
            addrs: None,
        });
        self
    }

    /// A VM whose host-side veth `host_if` is a port of hv's bridge.
    pub fn bridged_vm(mut self, host_if: &str) -> Self {
        self.vms.push(VmSpec {
            host_if: host_if.to_owned(),
            link: Link::Bridged,
            addrs: None,
        });
        self
    }

    /// A bridged VM with the given addresses, which must lie in the bridge's
    /// /24 and /64 (see [`TopologyBuilder::bridge_gateways`]).
    pub fn bridged_vm_at(mut self, host_if: &str, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Self {
        self.vms.push(VmSpec {
            host_if: host_if.to_owned(),
            link: Link::Bridged,
            addrs: Some((ipv4, ipv6)),
        });
        self
    }

    /// The bridge's own addresses, the bridged VMs' gateways, with a /24 and
    /// a /64 (default [`BRIDGE_V4`] and [`BRIDGE_V6`]).
    pub fn bridge_gateways(mut self, ipv4: Ipv4Addr, ipv6: Ipv6Addr) -> Self {
        self.bridge = Some((ipv4, ipv6));
        self
    }

    /// How long to wait for every VM to reach the internet (default 20 s).
    pub fn wait(mut self, timeout: Duration) -> Self {
        self.wait = Some(timeout);
        self
    }

    /// Creates the namespaces, links, addresses and routes, and waits until
    /// every VM reaches the sink over IPv4 and IPv6. On error, whatever was
    /// created is removed again.
    pub fn build(self) -> Result<Topology> {
        for (i, name) in self.vms.iter().map(|vm| &vm.host_if).enumerate() {
            if name.is_empty() || name.len() > 15 || name.contains(['/', ' ', ':']) {
                return Err(Error::Other(format!(
                    "VM interface name {name:?} is not a valid interface name (1 to 15 characters)"
                )));
            }
            if [UPLINK_IF, BRIDGE_IF, "lo"].contains(&name.as_str())
                || self.vms[..i].iter().any(|vm| vm.host_if == *name)
            {
                return Err(Error::Other(format!(
                    "VM interface name {name:?} is reserved or used twice"
                )));
            }
        }
        let tag = names::unique_tag();
        let hv = Netns::create(&format!("{tag}-hv"))?;
        let internet = Netns::create(&format!("{tag}-inet"))?;
        for ns in [&hv, &internet] {
            no_dad(ns)?;
        }
        hv.sysctl("net.ipv4.ip_forward", "1")?;
        hv.sysctl("net.ipv6.conf.all.forwarding", "1")?;

        // hv <-> internet
        hv.veth_to(UPLINK_IF, &internet, "eth0")?;
        hv.add_addrs(UPLINK_IF, UPLINK_V4, UPLINK_V6)?;
        internet.add_addrs("eth0", SINK_V4, SINK_V6)?;
        internet.add_addrs("eth0", RELAY_V4, RELAY_V6)?;
        hv.ip(["link", "set", UPLINK_IF, "up"])?;
        internet.ip(["link", "set", "eth0", "up"])?;
        default_routes(&internet, UPLINK_V4, UPLINK_V6)?;

        let (bridge4, bridge6) = self.bridge.unwrap_or((BRIDGE_V4, BRIDGE_V6));
        if self.vms.iter().any(|vm| vm.link == Link::Bridged) {
            hv.ip([
                "link",
                "add",
                BRIDGE_IF,
                "type",
                "bridge",
                "stp_state",
                "0",
                "mcast_snooping",
                "0",
            ])?;
            hv.add_addrs(BRIDGE_IF, bridge4, bridge6)?;
            hv.ip(["link", "set", BRIDGE_IF, "up"])?;
        }

        let mut vms = Vec::new();
        let mut plan = AddressPlan {
            routed: 0,
            bridged: 0,
            bridge: (bridge4, bridge6),
        };
        for VmSpec {
            host_if,
            link,
            addrs,
        } in self.vms
        {
            let (mut ipv4, mut ipv6, gateway4, gateway6) = plan.next(link)?;
            if let Some((v4, v6)) = addrs {
                (ipv4, ipv6) = (v4, v6);
            }
            let vm = Vm {
                ns: Netns::create(&format!("{tag}-{host_if}"))?,
                host_if,
                link,
                ipv4,
                ipv6,
                gateway4,
                gateway6,
            };
            plug_vm(&hv, &vm)?;
            vms.push(vm);
        }

        let wait = self.wait.unwrap_or(Duration::from_secs(20));
        for vm in &vms {
            vm.ns.wait_reachable(SINK_V4.into(), wait)?;
            vm.ns.wait_reachable(SINK_V6.into(), wait)?;
        }
        Ok(Topology {
            tag,
            late: std::sync::atomic::AtomicU8::new(0),
            vms,
            hv,
            internet,
        })
    }
}

/// Hands out the VMs' addresses in the order they are added.
struct AddressPlan {
    routed: u16,
    bridged: u8,
    bridge: (Ipv4Addr, Ipv6Addr),
}

impl AddressPlan {
    /// The next VM's (IPv4, IPv6, IPv4 gateway, IPv6 gateway).
    fn next(&mut self, link: Link) -> Result<(Ipv4Addr, Ipv6Addr, Ipv4Addr, Ipv6Addr)> {
        match link {
            Link::Routed => {
                self.routed += 1;
                let k = self.routed;
                let octet = u8::try_from(k).ok().filter(|o| *o < 200).ok_or_else(|| {
                    Error::Other("at most 199 routed VMs in one topology".to_owned())
                })?;
                Ok((
                    Ipv4Addr::new(10, 77, octet, 2),
                    Ipv6Addr::new(0xfd77, 0, k, 0, 0, 0, 0, 2),
                    Ipv4Addr::new(10, 77, octet, 1),
                    Ipv6Addr::new(0xfd77, 0, k, 0, 0, 0, 0, 1),
                ))
            }
            Link::Bridged => {
                self.bridged = self
                    .bridged
                    .checked_add(1)
                    .filter(|b| *b < 240)
                    .ok_or_else(|| {
                        Error::Other("at most 239 bridged VMs in one topology".to_owned())
                    })?;
                let b = self.bridged;
                let (gw4, gw6) = self.bridge;
                let [a, b4, c, _] = gw4.octets();
                let mut v6 = gw6.segments();
                v6[7] = 9 + u16::from(b);
                Ok((Ipv4Addr::new(a, b4, c, 9 + b), v6.into(), gw4, gw6))
            }
        }
    }
}

/// Creates the VM's veth pair (`host_if` in hv, `eth0` in the VM), its
/// addresses and its default routes.
fn plug_vm(hv: &Netns, vm: &Vm) -> Result<()> {
    let host_if = vm.host_if.as_str();
    no_dad(&vm.ns)?;
    hv.veth_to(host_if, &vm.ns, "eth0")?;
    match vm.link {
        Link::Routed => hv.add_addrs(host_if, vm.gateway4, vm.gateway6)?,
        Link::Bridged => {
            hv.ip(["link", "set", host_if, "master", BRIDGE_IF])?;
        }
    }
    hv.ip(["link", "set", host_if, "up"])?;
    vm.ns.add_addrs("eth0", vm.ipv4, vm.ipv6)?;
    vm.ns.ip(["link", "set", "eth0", "up"])?;
    default_routes(&vm.ns, vm.gateway4, vm.gateway6)
}

fn no_dad(ns: &Netns) -> Result<()> {
    ns.sysctl("net.ipv6.conf.all.accept_dad", "0")?;
    ns.sysctl("net.ipv6.conf.default.accept_dad", "0")?;
    Ok(())
}

fn default_routes(ns: &Netns, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
    ns.ip(["route", "add", "default", "via", &v4.to_string()])?;
    ns.ip(["-6", "route", "add", "default", "via", &v6.to_string()])?;
    Ok(())
}

/// The namespaces of a built topology. Dropping it deletes them all.
#[derive(Debug)]
pub struct Topology {
    tag: String,
    /// How many VMs [`Topology::plug_vm`] added: the n-th gets
    /// 10.77.(150 + n).0/24 and fd77:0:(150 + n)::/64.
    late: std::sync::atomic::AtomicU8,
    // Dropped in this order: the VMs, then hv, then the internet.
    vms: Vec<Vm>,
    /// The hypervisor: routes, holds the VMs' host-side interfaces, runs the agent.
    pub hv: Netns,
    /// The "internet": the SMTP sink's and the relay's addresses.
    pub internet: Netns,
}

impl Topology {
    pub fn builder() -> TopologyBuilder {
        TopologyBuilder::default()
    }

    /// The `egt-<pid>-<n>` prefix of this topology's namespaces.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// The VM whose host-side interface is `host_if`.
    ///
    /// # Panics
    /// When there is none: a mistake in the test, said with the names there are.
    pub fn vm(&self, host_if: &str) -> &Vm {
        self.vms
            .iter()
            .find(|vm| vm.host_if == host_if)
            .unwrap_or_else(|| {
                let names: Vec<&str> = self.vms.iter().map(|v| v.host_if.as_str()).collect();
                panic!("this topology has no VM {host_if:?}; it has {names:?}")
            })
    }

    /// Adds a routed VM to the running topology (a VM that starts while the
    /// agent runs) and waits until it reaches the sink. The caller owns it:
    /// dropping it unplugs it (its veth pair goes with its namespace).
    pub fn plug_vm(&self, host_if: &str) -> Result<Vm> {
        let n = self.late.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let k = 150 + u16::from(n);
        let octet = u8::try_from(k)
            .ok()
            .filter(|o| *o < 200)
            .ok_or_else(|| Error::Other("at most 50 VMs can be plugged later".to_owned()))?;
        let vm = Vm {
            ns: Netns::create(&format!("{}-{host_if}", self.tag))?,
            host_if: host_if.to_owned(),
            link: Link::Routed,
            ipv4: Ipv4Addr::new(10, 77, octet, 2),
            ipv6: Ipv6Addr::new(0xfd77, 0, k, 0, 0, 0, 0, 2),
            gateway4: Ipv4Addr::new(10, 77, octet, 1),
            gateway6: Ipv6Addr::new(0xfd77, 0, k, 0, 0, 0, 0, 1),
        };
        plug_vm(&self.hv, &vm)?;
        vm.ns
            .wait_reachable(SINK_V4.into(), Duration::from_secs(20))?;
        Ok(vm)
    }

    /// Takes `vm`'s NIC away, as a hypervisor does when the VM stops: its
    /// host-side interface is deleted, and with it the VM's end of the veth.
    pub fn unplug(&self, vm: &Vm) -> Result<()> {
        self.hv.ip(["link", "del", &vm.host_if])?;
        Ok(())
    }

    /// Gives `vm` its NIC again after [`Topology::unplug`], as a hypervisor
    /// does when the VM starts: the host-side interface is created anew
    /// (same name, a new ifindex), with the same addresses and routes. Waits
    /// until the VM reaches the sink.
    pub fn replug(&self, vm: &Vm) -> Result<()> {
        plug_vm(&self.hv, vm)?;
        vm.ns
            .wait_reachable(SINK_V4.into(), Duration::from_secs(20))
    }

    /// The namespaces of this topology, for checks that they are gone.
    pub fn namespace_names(&self) -> Vec<String> {
        let mut out = vec![self.hv.name().to_owned(), self.internet.name().to_owned()];
        out.extend(self.vms.iter().map(|vm| vm.ns.name().to_owned()));
        out
    }
}
