//! The replies of the `reset` and `icmp` actions as a guest gets them: read
//! back from its own device's file (what the VMM would hand the guest), and
//! recognised with etherparse: a TCP RST from the address and port the SYN
//! went to, or an ICMP/ICMPv6 "administratively prohibited" to the guest.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use anyhow::Result;
use egress_guard_tests::netns::{VmDevice, vmframe::Segment};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// Whether `frame` (Ethernet, or bare IP when `l3`) is the `action` reply
/// to `syn`.
fn is_reply(frame: &[u8], l3: bool, action: &str, syn: &Segment) -> bool {
    let parsed = if l3 {
        SlicedPacket::from_ip(frame)
    } else {
        SlicedPacket::from_ethernet(frame)
    };
    let Ok(p) = parsed else {
        return false;
    };
    let (src, dst): (IpAddr, IpAddr) = match &p.net {
        Some(NetSlice::Ipv4(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        Some(NetSlice::Ipv6(ip)) => (
            ip.header().source_addr().into(),
            ip.header().destination_addr().into(),
        ),
        _ => return false,
    };
    // From the address the guest wrote to, as if it refused the connection.
    if dst != syn.src || src != syn.dst {
        return false;
    }
    match (action, &p.transport) {
        ("reset", Some(TransportSlice::Tcp(tcp))) => {
            tcp.rst() && tcp.source_port() == syn.dport && tcp.destination_port() == syn.sport
        }
        ("icmp", Some(TransportSlice::Icmpv4(icmp))) => icmp.type_u8() == 3 && icmp.code_u8() == 13,
        ("icmp", Some(TransportSlice::Icmpv6(icmp))) => icmp.type_u8() == 1 && icmp.code_u8() == 1,
        _ => false,
    }
}

/// Reads what the host sends to the guest on `dev` until the `action`
/// reply to `syn` comes; how long it took, or `None` after `timeout`.
pub fn await_reply(
    dev: &VmDevice,
    action: &str,
    syn: &Segment,
    timeout: Duration,
) -> Result<Option<Duration>> {
    let l3 = dev.mac().is_none();
    let started = Instant::now();
    loop {
        let left = timeout.saturating_sub(started.elapsed());
        let Some(frame) = dev.read(left)? else {
            return Ok(None);
        };
        if is_reply(&frame, l3, action, syn) {
            return Ok(Some(started.elapsed()));
        }
    }
}
