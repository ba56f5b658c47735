//! The body both programs run: who sent the packet, what it is, and what to
//! do with it.

use aya_ebpf::{bindings::BPF_NOEXIST, maps::lpm_trie::Key};
use egress_guard_common::{
    classify::{Class, classify},
    maps::{Counters, MODE_AUDIT, VERDICT_ALLOW, port_slot, reason},
    parse::{IpPacket, IpVersion, PacketBytes, ipv4_dst, ipv6_dst, parse},
};

use crate::maps::{ALLOW_V4, ALLOW_V6, CONFIG, COUNTERS, IFACES, PORTS};

/// What the hook does with the packet.
pub enum Action {
    Pass,
    Drop,
}

/// Decides on one packet that arrived on `ifindex`.
#[inline(always)]
pub fn guard<P: PacketBytes>(pkt: &P, ifindex: u32) -> Action {
    // 1. Identity: the interface the packet came in on. An allowed VM's
    //    traffic passes here, unparsed. An interface with no entry is
    //    treated as blocked: the agent writes the entry before it attaches.
    // SAFETY: IFACES is not preallocated, so the entry is not recycled while
    // we read it.
    let (verdict, vm_key) = match unsafe { IFACES.get(ifindex) } {
        Some(entry) => (entry.verdict, entry.vm_key),
        None => (0, 0),
    };
    if verdict == VERDICT_ALLOW {
        return Action::Pass;
    }

    // 2. What the packet is, as far as the held ports are concerned.
    let why = match classify(&parse(pkt), is_held_port) {
        Class::Pass => return Action::Pass,
        Class::HeldPort(ip) => {
            if destination_allowed(pkt, &ip) {
                return Action::Pass;
            }
            reason::POLICY
        }
        Class::TcpLaterFragment(ip) => {
            if destination_allowed(pkt, &ip) {
                return Action::Pass;
            }
            reason::ORPHAN_FRAGMENT
        }
        Class::Unparseable => reason::MALFORMED,
    };

    // 3. Held back (or, in audit mode, counted as if it were).
    let bytes = pkt.packet_len() as u64;
    let audit = CONFIG.get(0).is_some_and(|c| c.mode == MODE_AUDIT);
    if audit {
        count(vm_key, reason::AUDIT, bytes);
        return Action::Pass;
    }
    count(vm_key, why, bytes);
    Action::Drop
}

#[inline(always)]
fn is_held_port(port: u16) -> bool {
    let (word, bit) = port_slot(port);
    PORTS.get(word).is_some_and(|w| *w & bit != 0)
}

/// Whether the packet's destination is in `allow_destinations`. A
/// destination that cannot be read is not allowed.
#[inline(always)]
fn destination_allowed<P: PacketBytes>(pkt: &P, ip: &IpPacket) -> bool {
    match ip.version {
        IpVersion::V4 => {
            ipv4_dst(pkt, ip).is_some_and(|dst| ALLOW_V4.get(Key::new(32, dst)).is_some())
        }
        IpVersion::V6 => {
            ipv6_dst(pkt, ip).is_some_and(|dst| ALLOW_V6.get(Key::new(128, dst)).is_some())
        }
    }
}

/// Adds one packet of `bytes` to the VM's counter for `why` on this CPU.
#[inline(always)]
fn count(vm_key: u64, why: usize, bytes: u64) {
    let counters = match COUNTERS.get_ptr_mut(vm_key) {
        Some(c) => c,
        None => {
            // First held-back packet of this VM since the agent last reset
            // its counters. A concurrent insert on another CPU is fine.
            let _ = COUNTERS.insert(vm_key, Counters::default(), BPF_NOEXIST.into());
            match COUNTERS.get_ptr_mut(vm_key) {
                Some(c) => c,
                None => return,
            }
        }
    };
    if why < reason::COUNT {
        // SAFETY: a per-CPU value, written only from this CPU, with
        // preemption disabled while the program runs.
        unsafe {
            (*counters).packets[why] += 1;
            (*counters).bytes[why] += bytes;
            #[cfg(feature = "upgrade-canary")]
            {
                (*counters).packets[reason::COUNT - 1] += 1;
            }
        }
    }
}
