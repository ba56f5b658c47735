//! The body both programs run: who sent the packet, what it is, and what to
//! do with it.
//!
//! Two stages:
//!
//! 1. **Fast** (every packet): the interface's entry (an allowed VM's packet
//!    passes here, unparsed), the parse, the held-port bitmap. Everything that
//!    cannot be a TCP segment to a held port passes at the end of it.
//! 2. **Slow** (what may be held back, and fragments): allowed destinations,
//!    fragment tracking, counters, audit mode and the replies.
//!
//! Between them the packet's classification goes through a per-CPU map slot
//! ([`fence`]). It costs nothing that matters on this rare path, and it stops
//! the verifier from walking the slow stage once for every shape the fast
//! stage tells apart (each VLAN depth, each IPv6 header chain, ...): what it
//! reads back from a map is one unknown value, not a few hundred constants.

use aya_ebpf::maps::lpm_trie::Key;
use egress_guard_common::{
    classify::{ClassKind, later_fragment_may_be_tcp},
    frag::{self, FragOutcome, PASSES},
    maps::{
        FRAG_V4, FRAG_V6, FragEntry, FragKey, IFACE_SLOT_COUNT, MODE_AUDIT, VERDICT_ALLOW, reason,
    },
    parse::{PacketBytes, ipv4_dst, ipv4_source_routed, ipv4_src, ipv6_dst, ipv6_src},
};

use crate::{
    events,
    hook::Hook,
    maps::{ALLOW_V4, ALLOW_V6, CONFIG, FRAGS, IFACE_SLOTS, IFACES, SCRATCH},
    pending::{
        Action, FRAG_FIRST, FRAG_LATER, KIND_FIRST_FRAGMENT, KIND_HELD_PORT, KIND_LATER_FRAGMENT,
        Pending,
    },
    reply,
    stats::{self, Stats},
};

/// Decides on one packet.
#[inline(always)]
pub fn guard<H: Hook>(hook: &H) -> Action {
    let ifindex = hook.ifindex();
    // 1. Identity: the interface the packet came in on. An allowed VM's
    //    traffic passes here, unparsed. An interface with no entry is
    //    treated as blocked: the agent writes the entry before it attaches.
    let entry = if ifindex < IFACE_SLOT_COUNT {
        IFACE_SLOTS.get(ifindex)
    } else {
        // SAFETY: IFACES is not preallocated, so the entry is not recycled
        // while we read it.
        unsafe { IFACES.get(ifindex) }
    };
    let (verdict, vm_key) = match entry {
        Some(entry) => (entry.verdict, entry.vm_key),
        None => (0, 0),
    };
    if verdict == VERDICT_ALLOW {
        return Action::Pass;
    }

    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        // Cannot happen (a one-entry array); hold back rather than guess.
        return Action::Drop;
    };
    // SAFETY: a map value pointer, valid for this program run.
    let (slot, fence_word) = unsafe { (&raw mut (*scratch).pending, &raw mut (*scratch).fence) };

    // 2. What the packet is, as far as the held ports are concerned.
    let class = hook.classify(fence_word);
    if class.kind == ClassKind::Pass {
        return Action::Pass;
    }
    let pending = Pending::new(vm_key, ifindex, &class);

    // 3. The rest, for what may be held back.
    let p = fence(slot, pending);
    decide(hook, &p)
}

/// Hands `p` to the slow stage through this CPU's scratch slot. The volatile
/// write and read keep the compiler from forwarding the values around the
/// map; the verifier sees only what a map holds: any value.
#[inline(always)]
fn fence(slot: *mut Pending, p: Pending) -> Pending {
    // SAFETY: a per-CPU slot, used only within this program run (XDP and TC
    // programs do not nest on a CPU).
    let mut p = unsafe {
        core::ptr::write_volatile(slot, p);
        core::ptr::read_volatile(slot)
    };
    // The verifier now knows nothing of the offsets: bound them again, with
    // masks the compiler cannot drop (it knows nothing of them either). The
    // parser never produces larger ones: an IP header starts within 14 + 8
    // tags x 4 bytes, and no header beyond MAX_HEADER_OFFSET is followed.
    p.l3_off &= 0x3f;
    p.l4_off &= 0xfff;
    p.frag_start &= 0xfff;
    p
}

/// The slow stage: is the packet held back, counted as what, and answered?
#[inline(always)]
fn decide<H: Hook>(hook: &H, p: &Pending) -> Action {
    let why = held_reason(hook, p);
    if why == PASSES {
        return Action::Pass;
    }

    let config = CONFIG.get(0).copied().unwrap_or_default();
    let bytes = hook.len() as u64;
    let stats = Stats::of(p.vm_key);
    let now = stats::now();
    if why as usize == reason::POLICY && p.kind == KIND_HELD_PORT {
        // A connection attempt is counted and reported (audit mode too).
        events::attempt(hook, p, config.mode == MODE_AUDIT, &stats, now);
    }
    if config.mode == MODE_AUDIT {
        // Counted as it would have been held back; it passes.
        stats.count(reason::AUDIT, bytes);
        return Action::Pass;
    }
    stats.count(why as usize, bytes);
    // Replies answer what the policy holds back, segments that carry a TCP
    // header: not malformed packets, not later fragments, not the rest of a
    // datagram held for another reason.
    if why as usize == reason::POLICY && p.kind == KIND_HELD_PORT && p.frag != FRAG_LATER {
        return reply::answer(hook, p, &config, &stats, now);
    }
    Action::Drop
}

/// Why the packet is held back (a `reason::*`), or [`PASSES`].
#[inline(always)]
fn held_reason<H: Hook>(hook: &H, p: &Pending) -> u8 {
    let pkt = hook.packet();
    // The verdict on this packet alone.
    let (own, header_end) = match p.kind {
        KIND_HELD_PORT => {
            if destination_allowed(&pkt, p) {
                // Any segment to that destination passes; nothing in its
                // datagram can overlap anything that matters.
                (PASSES, 0)
            } else {
                (reason::POLICY as u8, 0)
            }
        }
        KIND_FIRST_FRAGMENT => (PASSES, p.frag_offset),
        KIND_LATER_FRAGMENT => return later_fragment(&pkt, p),
        _ => (reason::MALFORMED as u8, 0),
    };
    if p.frag != FRAG_FIRST {
        return own;
    }
    // A first fragment decides for its datagram.
    let mut key = FRAG_KEY_NONE;
    if !frag_key(&pkt, p, &mut key) {
        return reason::MALFORMED as u8;
    }
    let outcome = frag::first_fragment(frag_entry(&key), stats::now(), own, header_end);
    remember(&key, &outcome);
    outcome.held
}

/// A later fragment follows its datagram.
#[inline(always)]
fn later_fragment<P: PacketBytes>(pkt: &P, p: &Pending) -> u8 {
    let mut key = FRAG_KEY_NONE;
    if !frag_key(pkt, p, &mut key) {
        return reason::MALFORMED as u8;
    }
    let existing = frag_entry(&key);
    let orphan =
        if existing.is_none() && later_fragment_may_be_tcp(&p.ip()) && !destination_allowed(pkt, p)
        {
            reason::ORPHAN_FRAGMENT as u8
        } else {
            PASSES
        };
    let outcome = frag::later_fragment(
        existing,
        stats::now(),
        p.frag_offset,
        orphan,
        reason::MALFORMED as u8,
    );
    remember(&key, &outcome);
    outcome.held
}

const FRAG_KEY_NONE: FragKey = FragKey {
    ifindex: 0,
    id: 0,
    src: [0; 16],
    dst: [0; 16],
    version: 0,
    proto: 0,
    pad: [0; 2],
};

/// Fills `key` with the datagram `p` belongs to, as its receiver reassembles
/// it; false if its addresses cannot be read.
#[inline(always)]
fn frag_key<P: PacketBytes>(pkt: &P, p: &Pending, key: &mut FragKey) -> bool {
    let ip = p.ip();
    key.ifindex = p.ifindex;
    key.id = p.frag_id;
    key.proto = p.key_proto;
    if p.is_v6() {
        key.version = FRAG_V6;
        let Some(src) = ipv6_src(pkt, &ip) else {
            return false;
        };
        let Some(dst) = ipv6_dst(pkt, &ip) else {
            return false;
        };
        key.src = src;
        key.dst = dst;
    } else {
        key.version = FRAG_V4;
        let Some(src) = ipv4_src(pkt, &ip) else {
            return false;
        };
        let Some(dst) = ipv4_dst(pkt, &ip) else {
            return false;
        };
        key.src[..4].copy_from_slice(&src);
        key.dst[..4].copy_from_slice(&dst);
    }
    true
}

/// The datagram's entry, if any, read in place. (An LRU map recycles
/// entries; the worst a recycled one can do is give one fragment another
/// datagram's verdict.)
#[inline(always)]
fn frag_entry(key: &FragKey) -> Option<&'static FragEntry> {
    let entry = FRAGS.get_ptr(key)?;
    // SAFETY: a map value pointer, valid for this program run.
    Some(unsafe { &*entry })
}

#[inline(always)]
fn remember(key: &FragKey, outcome: &FragOutcome) {
    if outcome.store {
        // A full map evicts its least recently used entry: cannot fail for
        // room. Should it fail anyway, the datagram's later fragments are
        // orphans, held back: nothing gets through for it.
        let _ = FRAGS.insert(key, &outcome.entry, 0);
    }
}

/// Whether the packet's destination is in `allow_destinations` and is its
/// final destination (no source route). A destination that cannot be read
/// is not allowed.
#[inline(always)]
fn destination_allowed<P: PacketBytes>(pkt: &P, p: &Pending) -> bool {
    let ip = p.ip();
    if ip.routed {
        return false;
    }
    if p.is_v6() {
        return ipv6_dst(pkt, &ip).is_some_and(|dst| ALLOW_V6.get(Key::new(128, dst)).is_some());
    }
    let allowed = ipv4_dst(pkt, &ip).is_some_and(|dst| ALLOW_V4.get(Key::new(32, dst)).is_some());
    // A loose or strict source route makes the destination only the first
    // hop; options are rare, so they are looked at only here.
    allowed && (ip.plain() || !ipv4_source_routed(pkt, &ip))
}
