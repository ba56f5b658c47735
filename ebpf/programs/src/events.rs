//! Blocked connection attempts: a TCP SYN (without ACK) to a held port from
//! a blocked VM is counted per VM (in its `VmStats`) and, within the VM's
//! event rate, written to a ring buffer for the agent to log. What is not
//! written (over the rate, or the ring full) is counted, per VM.
//!
//! Called from the slow stage only, for a packet that the policy holds back
//! (or would, in audit mode), before anything rewrites it into a reply.
//! Everything the event needs is read from the packet before the ring-buffer
//! record is reserved, so that the record is submitted on the one path that
//! follows the reservation (the verifier wants every reserved record
//! submitted or discarded).

use aya_ebpf::{
    macros::map,
    maps::{LruHashMap, RingBuf},
};
use egress_guard_common::{
    maps::{
        AttemptEvent, EVENT_AUDIT, EVENT_BURST, EVENT_INTERVAL_NS, EVENT_RATE_CAPACITY,
        EVENTS_BYTES, FAMILY_V4, FAMILY_V6,
    },
    parse::{PacketBytes, TCP_ACK, TCP_SYN},
};

use crate::{hook::Hook, pending::Pending, stats::Stats};

/// The events, for the agent.
#[map(name = "EG_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per VM: the earliest time (ns) the next event is due, for the event rate
/// limit (a GCRA, behind a per-CPU filter: `stats::Stats::event_due`).
#[map(name = "EG_EVENT_RATE")]
pub static EVENT_RATE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(EVENT_RATE_CAPACITY, 0);

/// Counts a held-back segment of `p` if it is a connection attempt (SYN
/// without ACK), and sends the event about it if the VM's rate allows.
#[inline(always)]
pub fn attempt<H: Hook>(hook: &H, p: &Pending, audit: bool, stats: &Stats, now: u64) {
    let pkt = hook.packet();
    let l4 = p.l4_off as usize;
    // The data offset and flags word: 2 bytes at a variable offset (see
    // `PacketBytes::bytes`); the flags are its low byte (byte 13).
    let Some(offset_flags) = pkt.be16(l4 + 12) else {
        return;
    };
    let Some(ports) = pkt.bytes::<4>(l4) else {
        return;
    };
    if offset_flags as u8 & (TCP_SYN | TCP_ACK) != TCP_SYN {
        return;
    }
    // One is due every EVENT_INTERVAL_NS, and up to EVENT_BURST may come
    // early.
    if stats.event_due(&EVENT_RATE, p.vm_key, now, EVENT_INTERVAL_NS, EVENT_BURST) {
        stats.attempt(send(&pkt, p, audit, now, ports), false);
    } else {
        stats.attempt(false, true);
    }
}

/// Writes the event about the SYN of `p` to the ring buffer; false when it
/// had no room.
#[inline(always)]
fn send<P: PacketBytes>(pkt: &P, p: &Pending, audit: bool, now: u64, ports: [u8; 4]) -> bool {
    let l3 = p.l3_off as usize;
    // The addresses, as four words each (IPv4: one, the rest zero). Every
    // word is set on every path.
    let v6 = p.is_v6();
    let (src_at, dst_at) = if v6 {
        (l3 + 8, l3 + 24)
    } else {
        (l3 + 12, l3 + 16)
    };
    let word = |off: usize| pkt.bytes::<4>(off).map_or(0, u32::from_ne_bytes);
    let src0 = word(src_at);
    let dst0 = word(dst_at);
    let (mut src1, mut src2, mut src3, mut dst1, mut dst2, mut dst3) = (0, 0, 0, 0, 0, 0);
    if v6 {
        src1 = word(src_at + 4);
        src2 = word(src_at + 8);
        src3 = word(src_at + 12);
        dst1 = word(dst_at + 4);
        dst2 = word(dst_at + 8);
        dst3 = word(dst_at + 12);
    }

    let Some(mut entry) = EVENTS.reserve::<AttemptEvent>(0) else {
        return false;
    };
    let ev = entry.as_mut_ptr();
    // SAFETY: `ev` points to a reserved record of `size_of::<AttemptEvent>()`
    // bytes, ours until it is submitted; every field is written (plain
    // integers: no drop, no read of the uninitialised memory).
    unsafe {
        (&raw mut (*ev).ts_ns).write(now);
        (&raw mut (*ev).vm_key).write(p.vm_key);
        (&raw mut (*ev).ifindex).write(p.ifindex);
        (&raw mut (*ev).src_port).write([ports[0], ports[1]]);
        (&raw mut (*ev).dst_port).write([ports[2], ports[3]]);
        let src = (&raw mut (*ev).src).cast::<u32>();
        src.write_unaligned(src0);
        src.add(1).write_unaligned(src1);
        src.add(2).write_unaligned(src2);
        src.add(3).write_unaligned(src3);
        let dst = (&raw mut (*ev).dst).cast::<u32>();
        dst.write_unaligned(dst0);
        dst.add(1).write_unaligned(dst1);
        dst.add(2).write_unaligned(dst2);
        dst.add(3).write_unaligned(dst3);
        (&raw mut (*ev).family).write(if v6 { FAMILY_V6 } else { FAMILY_V4 });
        (&raw mut (*ev).flags).write(if audit { EVENT_AUDIT } else { 0 });
        (&raw mut (*ev).pad).write([0; 6]);
    }
    entry.submit(0);
    true
}
