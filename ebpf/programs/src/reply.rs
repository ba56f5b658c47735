//! The `reset` and `icmp` actions: the held-back frame is rewritten, in place,
//! into the reply and sent back out of the interface it came in on, to the
//! VM. The Ethernet header and any VLAN tags in the frame stay (with the MAC
//! addresses swapped); in TC, a tag the kernel already took out of the frame
//! stays in the skb and goes back with it. On an L3 device (`Hook::L2`
//! false) there is no Ethernet header: the reply starts at its IP header.
//!
//! Headers are written field by field with 2- and 4-byte stores: a header
//! built as a byte array on the stack would cost a stack slot a byte.
//! The field values and checksums come from `egress_guard_common::reply`.

use egress_guard_common::{
    maps::{ACTION_ICMP, ACTION_RESET, Config, reason},
    parse::{IPV4_HLEN, IPV6_HLEN, PacketBytes, TCP_HLEN, TcpHeader},
    reply::{
        ICMP_HLEN, ICMP4_PROTO, ICMP4_QUOTE_MAX, ICMP6_PROTO, ICMP6_QUOTE_MAX, IPV6_WORD0,
        RST_PROTO, fold, icmp_type_code, ipv4_frag_word, ipv4_header_checksum, ipv4_ttl_proto,
        ipv4_word0, ipv6_next_hop, may_answer_mac, may_answer_v4, may_answer_v6, partial_checksum,
        pseudo_sum, rst_for, rst_header_sum, rst_offset_flags, sum_range, transport_checksum,
    },
};

use crate::{
    hook::Hook,
    maps::REPLY_RATE,
    pending::{Action, Pending},
    stats::Stats,
};

/// TOS of the ICMP errors: internetwork control, as Linux sends them.
const ICMP_TOS: u8 = 0xc0;

/// Answers a held-back TCP segment (a whole one or a first fragment) as the
/// policy's action says, within the VM's reply rate. Whatever cannot be
/// answered is dropped.
#[inline(always)]
pub fn answer<H: Hook>(hook: &H, p: &Pending, config: &Config, stats: &Stats, now: u64) -> Action {
    let rate = Rate { config, stats, now };
    // The reply's length, or 0 when none was made.
    let sent = match config.action {
        // A reset needs the whole segment's length: not for fragments.
        ACTION_RESET if !p.is_fragment() => reset(hook, p, &rate),
        ACTION_ICMP => icmp(hook, p, &rate),
        _ => 0,
    };
    if sent == 0 {
        return Action::Drop;
    }
    let why = if config.action == ACTION_RESET {
        reason::RESET_SENT
    } else {
        reason::ICMP_SENT
    };
    stats.count(why, sent as u64);
    Action::Reply
}

/// What the reply rate limit needs: the settings, the VM's record on this
/// CPU, the time.
struct Rate<'a> {
    config: &'a Config,
    stats: &'a Stats,
    now: u64,
}

/// Everything a reply needs before the frame changes: the sender may be
/// answered (a unicast MAC and IP source) and the rate allows it (a refusal
/// is counted). Sets `addr_sum` to the sum of the two IP addresses, for the
/// checksums.
#[inline(always)]
fn may_reply<H: Hook, P: PacketBytes>(
    pkt: &P,
    p: &Pending,
    rate: &Rate,
    addr_sum: &mut u64,
) -> bool {
    if H::L2 {
        let Some([src_mac, _]) = pkt.bytes::<2>(6) else {
            return false;
        };
        if !may_answer_mac(src_mac) {
            return false;
        }
    }
    let l3 = p.l3_off as usize;
    let mut sum = 0u64;
    if p.is_v6() {
        let mut src = [0u32; 4];
        for (i, word) in src.iter_mut().enumerate() {
            let Some(s) = pkt.be32(l3 + 8 + 4 * i) else {
                return false;
            };
            let Some(d) = pkt.be32(l3 + 24 + 4 * i) else {
                return false;
            };
            *word = s;
            sum += s as u64 + d as u64;
        }
        if !may_answer_v6(src) {
            return false;
        }
    } else {
        let Some(src) = pkt.be32(l3 + 12) else {
            return false;
        };
        let Some(dst) = pkt.be32(l3 + 16) else {
            return false;
        };
        if !may_answer_v4(src) {
            return false;
        }
        sum = src as u64 + dst as u64;
    }
    // A reply is due every `reply_interval_ns`, and up to `reply_burst` may
    // come early.
    let config = rate.config;
    if !rate.stats.reply_due(
        &REPLY_RATE,
        p.vm_key,
        rate.now,
        config.reply_interval_ns,
        config.reply_burst as u64,
    ) {
        rate.stats
            .count(reason::RATE_LIMITED, pkt.packet_len() as u64);
        return false;
    }
    *addr_sum = sum;
    true
}

/// Writes the MAC addresses found at `from` to the front of the frame,
/// swapped: the reply goes to the sender, from whom it was sent to.
#[inline(always)]
fn swap_macs<H: Hook>(hook: &H, from: usize) -> bool {
    let pkt = hook.packet();
    // One read at a time, each checked before the next (never a tuple of
    // reads matched at once: the compiler then tests the bounds again after
    // a longer check, which the verifier takes as passed, and walks on with a
    // stack slot never written for the failed read).
    let Some(dst_hi) = pkt.be32(from) else {
        return false;
    };
    let Some(dst_lo) = pkt.be16(from + 4) else {
        return false;
    };
    let Some(src_hi) = pkt.be32(from + 6) else {
        return false;
    };
    let Some(src_lo) = pkt.be16(from + 10) else {
        return false;
    };
    hook.store32(0, src_hi)
        && hook.store16(4, src_lo)
        && hook.store32(6, dst_hi)
        && hook.store16(10, dst_lo)
}

/// `reset`: a SYN without IPv4 options or IPv6 extension headers gets a RST.
/// The RST takes the SYN's place: same Ethernet header and tags, the IP
/// header where it was (addresses swapped), the TCP header where the SYN's
/// was (so that a checksum the kernel still has to complete lands on the
/// RST's). Returns the reply's length (0: none).
#[inline(always)]
fn reset<H: Hook>(hook: &H, p: &Pending, rate: &Rate) -> usize {
    let ip = p.ip();
    // Rewriting options or extension headers into a reply would mean
    // echoing (or rebuilding) source routes: such SYNs are only dropped.
    if !ip.plain() {
        return 0;
    }
    let l3 = p.l3_off as usize;
    let l4 = p.l4_off as usize;
    if !hook.linearize(l4 + TCP_HLEN) {
        return 0;
    }
    let pkt = hook.packet();
    let syn = TcpHeader::read(&pkt, &ip);
    let segment_end = l4 + syn.header_len as usize;
    if !syn.is_whole() || segment_end > p.ip_end as usize {
        return 0;
    }
    let payload = (p.ip_end as usize - segment_end) as u32;
    let rst = rst_for(&syn, payload);
    let mut addr_sum = 0;
    if !rst.is_reset() || !may_reply::<H, _>(&pkt, p, rate, &mut addr_sum) {
        return 0;
    }

    let len = l4 + TCP_HLEN;
    if !hook.set_len(len) || (H::L2 && !swap_macs(hook, 0)) {
        return 0;
    }
    let ok = if p.is_v6() {
        let mut ok = hook.store32(l3, IPV6_WORD0)
            && hook.store16(l3 + 4, TCP_HLEN as u16)
            && hook.store16(l3 + 6, ipv6_next_hop(RST_PROTO));
        for i in 0..4 {
            ok = ok && swap_words(hook, l3 + 8 + 4 * i, l3 + 24 + 4 * i);
        }
        ok
    } else {
        let total = (IPV4_HLEN + TCP_HLEN) as u16;
        hook.store16(l3, ipv4_word0(0))
            && hook.store16(l3 + 2, total)
            && hook.store32(l3 + 4, ipv4_frag_word(true) as u32)
            && hook.store16(l3 + 8, ipv4_ttl_proto(RST_PROTO))
            && hook.store16(
                l3 + 10,
                ipv4_header_checksum(0, total, true, RST_PROTO, addr_sum),
            )
            && swap_words(hook, l3 + 12, l3 + 16)
    };
    let pseudo = pseudo_sum(addr_sum, RST_PROTO, TCP_HLEN as u32);
    let ok = ok
        && hook.store16(l4, syn.dst_port)
        && hook.store16(l4 + 2, syn.src_port)
        && hook.store32(l4 + 4, rst.seq)
        && hook.store32(l4 + 8, rst.ack)
        && hook.store16(l4 + 12, rst_offset_flags(&rst))
        // Window 0, urgent pointer 0.
        && hook.store16(l4 + 14, 0)
        && hook.store16(l4 + 18, 0)
        && hook.store_checksum(
            l4 + 16,
            transport_checksum(pseudo, rst_header_sum(syn.dst_port, syn.src_port, &rst)),
            partial_checksum(pseudo),
        );
    if ok { len } else { 0 }
}

/// Swaps the 4-byte words at `a` and `b`.
#[inline(always)]
fn swap_words<H: Hook>(hook: &H, a: usize, b: usize) -> bool {
    let pkt = hook.packet();
    let Some(x) = pkt.be32(a) else {
        return false;
    };
    let Some(y) = pkt.be32(b) else {
        return false;
    };
    hook.store32(a, y) && hook.store32(b, x)
}

/// `icmp`: ICMP administratively prohibited (or ICMPv6's), quoting the
/// datagram from its IP header on. New IP and ICMP headers go in front of
/// the quote, between it and the frame's own Ethernet header and tags; the
/// quote stays where it is and the frame is cut at its end. Returns the
/// reply's length (0: none).
#[inline(always)]
fn icmp<H: Hook>(hook: &H, p: &Pending, rate: &Rate) -> usize {
    let l3 = p.l3_off as usize;
    let l4 = p.l4_off as usize;
    let v6 = p.is_v6();
    let (ip_hlen, quote_max) = if v6 {
        (IPV6_HLEN, ICMP6_QUOTE_MAX)
    } else {
        (IPV4_HLEN, ICMP4_QUOTE_MAX)
    };
    let ip_end = p.ip_end as usize;
    if ip_end < l3 {
        return 0;
    }
    let datagram = ip_end - l3;
    let quote = if datagram < quote_max {
        datagram
    } else {
        quote_max
    };
    // The quote must hold the offending TCP header: it is what tells the
    // VM's stack which connection failed.
    if l4 + TCP_HLEN > l3 + quote || !hook.linearize(l3 + quote) {
        return 0;
    }
    let pkt = hook.packet();
    let mut addr_sum = 0;
    if !may_reply::<H, _>(&pkt, p, rate, &mut addr_sum) {
        return 0;
    }

    // Checksums over the quote, taken before anything moves.
    let Some(quote_sum) = sum_range(&pkt, l3, l3 + quote) else {
        return 0;
    };
    // (A segment whose checksum is still to be completed, CHECKSUM_PARTIAL,
    // stays so in the quote: the skb goes back to the VM, whose stack takes
    // such a packet as verified and reads only the quoted ports and
    // sequence number. Nothing completes it after this sum is taken.)

    let push = ip_hlen + ICMP_HLEN;
    // The Ethernet header and tags move to the new front, before anything
    // is written where they were.
    if !hook.push_head(push)
        || !hook.set_len(l3 + push + quote)
        || (H::L2 && !move_l2(hook, l3, push))
    {
        return 0;
    }
    let q = l3 + push;
    let total = (push + quote) as u16;
    let ok = if v6 {
        let mut ok = hook.store32(l3, IPV6_WORD0)
            && hook.store16(l3 + 4, (ICMP_HLEN + quote) as u16)
            && hook.store16(l3 + 6, ipv6_next_hop(ICMP6_PROTO));
        for i in 0..4 {
            // Source: the quote's destination; destination: its source.
            ok = ok
                && copy_word(hook, q + 24 + 4 * i, l3 + 8 + 4 * i)
                && copy_word(hook, q + 8 + 4 * i, l3 + 24 + 4 * i);
        }
        ok
    } else {
        hook.store16(l3, ipv4_word0(ICMP_TOS))
            && hook.store16(l3 + 2, total)
            && hook.store32(l3 + 4, ipv4_frag_word(false) as u32)
            && hook.store16(l3 + 8, ipv4_ttl_proto(ICMP4_PROTO))
            && hook.store16(
                l3 + 10,
                ipv4_header_checksum(ICMP_TOS, total, false, ICMP4_PROTO, addr_sum),
            )
            && copy_word(hook, q + 16, l3 + 12)
            && copy_word(hook, q + 12, l3 + 16)
    };
    let at = l3 + ip_hlen;
    let type_code = icmp_type_code(v6);
    let mut sum = type_code as u64 + quote_sum;
    if v6 {
        sum += pseudo_sum(addr_sum, ICMP6_PROTO, (ICMP_HLEN + quote) as u32);
    }
    let ok = ok
        && hook.store16(at, type_code)
        && hook.store32(at + 4, 0)
        && hook.store16(at + 2, !fold(sum));
    if ok { l3 + push + quote } else { 0 }
}

/// Copies the 4-byte word at `from` to `to`.
#[inline(always)]
fn copy_word<H: Hook>(hook: &H, from: usize, to: usize) -> bool {
    hook.packet()
        .be32(from)
        .is_some_and(|word| hook.store32(to, word))
}

/// After `push` bytes were added in front: writes the frame's Ethernet
/// header (MACs swapped) and tags, `l3` bytes that now start at `push`, to
/// the front. Ascending 2-byte copies never overwrite what is still to be
/// read (the destination is ahead of the source).
#[inline(always)]
fn move_l2<H: Hook>(hook: &H, l3: usize, push: usize) -> bool {
    if !swap_macs(hook, push) {
        return false;
    }
    // The tags and the EtherType: at most 8 tags of 4 bytes, and 2 bytes.
    let mut off = 12;
    for _ in 0..17 {
        if off >= l3 {
            break;
        }
        let Some(half) = hook.packet().be16(push + off) else {
            return false;
        };
        if !hook.store16(off, half) {
            return false;
        }
        off += 2;
    }
    true
}
