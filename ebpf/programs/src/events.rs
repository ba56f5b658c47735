//! Blocked connection attempts: a TCP SYN (without ACK) to a held port from
//! a blocked VM is counted per VM and, within the VM's event rate, written
//! to a ring buffer for the agent to log. What is not written (over the
//! rate, or the ring full) is counted, per VM.
//!
//! Called from the slow stage only, for a packet that the policy holds back
//! (or would, in audit mode), before anything rewrites it into a reply.
//! Everything the event needs is read from the packet before the ring-buffer
//! record is reserved, so that the record is submitted on the one path that
//! follows the reservation (the verifier wants every reserved record
//! submitted or discarded).

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::bpf_ktime_get_ns,
    macros::map,
    maps::{LruHashMap, PerCpuHashMap, RingBuf},
};
use egress_guard_common::{
    maps::{
        AttemptEvent, Attempts, DEFAULT_COUNTERS_CAPACITY, EVENT_AUDIT, EVENT_BURST,
        EVENT_INTERVAL_NS, EVENT_RATE_CAPACITY, EVENTS_BYTES, FAMILY_V4, FAMILY_V6,
    },
    parse::{PacketBytes, TCP_ACK, TCP_SYN},
};

use crate::{guard::Pending, hook::Hook};

/// The events, for the agent.
#[map(name = "EG_EVENTS")]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

/// Per VM: attempts, and what became of their events. Entries are created
/// on a VM's first attempt; the agent sizes the map like `EG_COUNTERS` and
/// drops the entries of VMs that leave the policy.
#[map(name = "EG_ATTEMPTS")]
pub static ATTEMPTS: PerCpuHashMap<u64, Attempts> = PerCpuHashMap::with_max_entries(
    DEFAULT_COUNTERS_CAPACITY,
    aya_ebpf::bindings::BPF_F_NO_PREALLOC,
);

/// Per VM: the earliest time (ns) the next event is due, for the event rate
/// limit (a GCRA, as `reply::within_rate`).
#[map(name = "EG_EVENT_RATE")]
pub static EVENT_RATE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(EVENT_RATE_CAPACITY, 0);

/// Counts a held-back segment of `p` if it is a connection attempt (SYN
/// without ACK), and sends the event about it if the VM's rate allows.
#[inline(always)]
pub fn attempt<H: Hook>(hook: &H, p: &Pending, audit: bool) {
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
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let outcome = if within_rate(p.vm_key, now) {
        send(&pkt, p, audit, now, ports)
    } else {
        RATE_LIMITED
    };
    // Counted last, so that no map value pointer is held across the
    // helper calls above.
    count(p.vm_key, outcome);
}

/// What became of an attempt's event.
const SENT: u8 = 0;
const RATE_LIMITED: u8 = 1;
const RING_FULL: u8 = 2;

/// Writes the event about the SYN of `p` to the ring buffer: [`SENT`], or
/// [`RING_FULL`] when there was no room.
#[inline(always)]
fn send<P: PacketBytes>(pkt: &P, p: &Pending, audit: bool, now: u64, ports: [u8; 4]) -> u8 {
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
        return RING_FULL;
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
    SENT
}

/// Counts one attempt of the VM on this CPU, and what became of its event.
#[inline(always)]
fn count(vm_key: u64, outcome: u8) {
    let stats = match ATTEMPTS.get_ptr_mut(vm_key) {
        Some(s) => s,
        None => {
            // The VM's first attempt. A concurrent insert on another CPU
            // is fine.
            let _ = ATTEMPTS.insert(vm_key, Attempts::default(), BPF_NOEXIST.into());
            match ATTEMPTS.get_ptr_mut(vm_key) {
                Some(s) => s,
                None => return,
            }
        }
    };
    // SAFETY: a per-CPU value, written only from this CPU, with preemption
    // disabled while the program runs.
    unsafe {
        (*stats).attempts += 1;
        if outcome == SENT {
            (*stats).events += 1;
        } else if outcome == RATE_LIMITED {
            (*stats).rate_limited += 1;
        } else {
            (*stats).ring_full += 1;
        }
    }
}

/// Whether the VM may send one more event now (and takes it): one is due
/// every [`EVENT_INTERVAL_NS`], and up to [`EVENT_BURST`] may come early.
/// Concurrent CPUs can each let one through at the limit.
#[inline(always)]
fn within_rate(vm_key: u64, now: u64) -> bool {
    const TOLERANCE: u64 = EVENT_INTERVAL_NS * (EVENT_BURST - 1);
    let due = match EVENT_RATE.get_ptr(vm_key) {
        // SAFETY: a map value pointer, read at once.
        Some(v) => unsafe { core::ptr::read_volatile(v) },
        None => now,
    };
    let due = if due > now { due } else { now };
    if due - now > TOLERANCE {
        return false;
    }
    let _ = EVENT_RATE.insert(vm_key, due + EVENT_INTERVAL_NS, 0);
    true
}
