//! The replies of the `reset` and `icmp` actions, as bytes: their headers,
//! their sequence numbers and their checksums. The kernel programs write these
//! into the frame they answer (in place, keeping its Ethernet header and VLAN
//! tags, with the MAC addresses swapped) and send it back to the VM; the host
//! tests check the same functions against an independent parser.
//!
//! - `reset`: a TCP RST for a SYN, with sequence and acknowledgment numbers as
//!   RFC 9293 3.10.7.1 has a closed port answer a segment without ACK:
//!   `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`, where SEG.LEN counts the
//!   SYN, a FIN and the data (TCP Fast Open puts data on a SYN).
//! - `icmp`: destination unreachable, administratively prohibited: ICMP type
//!   3 code 13 (RFC 1812 5.2.7.1) quoting the IP header and as much of the
//!   datagram as fits in 576 bytes (RFC 1812 4.3.2.3; RFC 792 requires at
//!   least the first 8 bytes of data), or ICMPv6 type 1 code 1 quoting as
//!   much of the packet as fits in the IPv6 minimum MTU of 1280 bytes
//!   (RFC 4443 2.4 (c), a MUST).
//!
//! The reply comes from the address the VM wrote to, as if the destination
//! itself had refused the connection: the programs have no address of their
//! own on a VM's network.

use crate::parse::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPV4_HLEN, IPV6_HLEN, PacketBytes, TCP_ACK, TCP_FIN,
    TCP_HLEN, TCP_RST, TCP_SYN, TcpHeader,
};

/// Hop limit / TTL of the replies.
pub const REPLY_TTL: u8 = 64;
/// Length of an ICMP or ICMPv6 error header.
pub const ICMP_HLEN: usize = 8;
/// Bytes of the offending datagram an ICMP error quotes at most (RFC 1812).
pub const ICMP4_QUOTE_MAX: usize = 576 - IPV4_HLEN - ICMP_HLEN;
/// Bytes of the offending packet an ICMPv6 error quotes at most (RFC 4443).
pub const ICMP6_QUOTE_MAX: usize = 1280 - IPV6_HLEN - ICMP_HLEN;
/// The longest range [`sum_range`] sums: a whole ICMPv6 quote.
pub use crate::bytes::SUM_MAX;
const _: () = assert!(SUM_MAX == ICMP6_QUOTE_MAX);

/// ICMP destination unreachable.
pub const ICMP4_DEST_UNREACH: u8 = 3;
/// ... communication administratively prohibited.
pub const ICMP4_ADMIN_PROHIBITED: u8 = 13;
/// ICMPv6 destination unreachable.
pub const ICMP6_DEST_UNREACH: u8 = 1;
/// ... communication with destination administratively prohibited.
pub const ICMP6_ADMIN_PROHIBITED: u8 = 1;

/// Folds a sum of 16-bit (or 32-bit) big-endian words into its 16-bit
/// ones'-complement sum (not complemented).
#[inline(always)]
pub fn fold(mut sum: u64) -> u16 {
    // Four rounds bring any sum of fewer than 2^32 words below 2^16.
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    sum as u16
}

/// `a + b` in ones'-complement arithmetic.
#[inline(always)]
pub fn ones_add(a: u16, b: u16) -> u16 {
    fold(a as u64 + b as u64)
}

/// `a - b` in ones'-complement arithmetic.
#[inline(always)]
pub fn ones_sub(a: u16, b: u16) -> u16 {
    fold(a as u64 + (!b) as u64)
}

/// `x`, through memory: the compiler knows nothing of the result.
#[inline(always)]
fn opaque(x: usize) -> usize {
    // SAFETY: a read of a local.
    unsafe { core::ptr::read_volatile(&raw const x) }
}

/// The sum of the packet's bytes in `start..end` as 16-bit words (relative to
/// `start`), or `None` if they cannot all be read. At most [`SUM_MAX`] bytes.
#[inline(always)]
pub fn sum_range<P: PacketBytes + ?Sized>(pkt: &P, start: usize, end: usize) -> Option<u64> {
    if end < start || end - start > SUM_MAX {
        return None;
    }
    let words = (end - start) & !3;
    let mut sum = pkt.sum_words(start, words)?;
    // Where the whole words end, computed afresh rather than taken from the
    // loop: then nothing after the loop depends on the iteration it left at,
    // and the verifier checks what follows once, not once per iteration.
    let mut tail = opaque(start + words);
    if tail + 2 <= end {
        sum += u16::from_be_bytes(pkt.bytes::<2>(tail)?) as u64;
        tail += 2;
    }
    if tail < end {
        // The last, odd byte, read with the one before it: a 1-byte read at
        // a variable offset compiles to a bounds check the verifier cannot
        // use (`start >= end`). The byte before lies in the packet: the range
        // starts after an Ethernet header. (The offset goes through memory so
        // that the compiler does not rewrite `data + (tail - 1)` as
        // `(data + tail) - 1`, a negative offset the verifier refuses.)
        let last = match tail.checked_sub(1) {
            Some(before) => pkt.bytes::<2>(opaque(before))?[1],
            None => pkt.bytes::<2>(tail)?[0],
        };
        sum += (last as u64) << 8;
    }
    Some(sum)
}

/// The first 16-bit word of the replies' IPv4 header: version 4, IHL 5, and
/// the TOS byte.
#[inline(always)]
pub const fn ipv4_word0(tos: u8) -> u16 {
    0x4500 | tos as u16
}

/// The flags and fragment offset word: DF or nothing.
#[inline(always)]
pub const fn ipv4_frag_word(dont_fragment: bool) -> u16 {
    if dont_fragment { 0x4000 } else { 0 }
}

/// The TTL and protocol word.
#[inline(always)]
pub const fn ipv4_ttl_proto(proto: u8) -> u16 {
    (REPLY_TTL as u16) << 8 | proto as u16
}

/// The header checksum of a reply's IPv4 header: no options, identification
/// 0, the addresses summing (as 16-bit words, in either order) to
/// `addr_sum`.
#[inline(always)]
pub fn ipv4_header_checksum(
    tos: u8,
    total_len: u16,
    dont_fragment: bool,
    proto: u8,
    addr_sum: u64,
) -> u16 {
    !fold(
        ipv4_word0(tos) as u64
            + total_len as u64
            + ipv4_frag_word(dont_fragment) as u64
            + ipv4_ttl_proto(proto) as u64
            + addr_sum,
    )
}

/// The first 32-bit word of the replies' IPv6 header: version 6, traffic
/// class and flow label 0.
pub const IPV6_WORD0: u32 = 0x6000_0000;

/// The next-header and hop-limit word of a reply's IPv6 header.
#[inline(always)]
pub const fn ipv6_next_hop(next: u8) -> u16 {
    (next as u16) << 8 | REPLY_TTL as u16
}

/// The sum of a pseudo-header (IPv4 or IPv6) whose addresses sum to
/// `addr_sum`, for `len` bytes of protocol `proto`.
#[inline(always)]
pub fn pseudo_sum(addr_sum: u64, proto: u8, len: u32) -> u64 {
    addr_sum + proto as u64 + (len >> 16) as u64 + (len & 0xffff) as u64
}

/// The sequence number, acknowledgment number and flags of a reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rst {
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
}

impl Rst {
    /// No reset (flags 0).
    pub const NONE: Self = Self {
        seq: 0,
        ack: 0,
        flags: 0,
    };

    /// Whether this is a reset to send.
    #[inline(always)]
    pub fn is_reset(&self) -> bool {
        self.flags & TCP_RST != 0
    }
}

/// The reset answering `syn`, a segment carrying `payload_len` bytes of data,
/// if it is a connection request: SYN set, ACK and RST clear. Any other
/// segment gets no reset ([`Rst::NONE`]: the action drops it).
#[inline(always)]
pub fn rst_for(syn: &TcpHeader, payload_len: u32) -> Rst {
    if syn.flags & (TCP_SYN | TCP_ACK | TCP_RST) != TCP_SYN {
        return Rst::NONE;
    }
    // SEG.LEN: the data, and one each for SYN and FIN.
    let seg_len = payload_len + 1 + u32::from(syn.flags & TCP_FIN != 0);
    Rst {
        seq: 0,
        ack: syn.seq.wrapping_add(seg_len),
        flags: TCP_RST | TCP_ACK,
    }
}

/// The data-offset and flags word of the RST's 20-byte header.
#[inline(always)]
pub const fn rst_offset_flags(rst: &Rst) -> u16 {
    ((TCP_HLEN as u16 / 4) << 12) | rst.flags as u16
}

/// The sum of the RST's TCP header (window, checksum and urgent pointer 0),
/// from `src_port` to `dst_port`.
#[inline(always)]
pub fn rst_header_sum(src_port: u16, dst_port: u16, rst: &Rst) -> u64 {
    src_port as u64
        + dst_port as u64
        + rst.seq as u64
        + rst.ack as u64
        + rst_offset_flags(rst) as u64
}

/// The checksum of a transport header (and data) summing to `sum`, with the
/// pseudo-header summing to `pseudo`: the value to write when nothing else
/// completes it.
#[inline(always)]
pub fn transport_checksum(pseudo: u64, sum: u64) -> u16 {
    !fold(pseudo + sum)
}

/// The value a transport checksum field holds while the checksum is left
/// for the device to complete (Linux's `CHECKSUM_PARTIAL`): the
/// pseudo-header's sum, not complemented.
#[inline(always)]
pub fn partial_checksum(pseudo: u64) -> u16 {
    fold(pseudo)
}

/// The type and code word of an ICMP (`v6: false`) or ICMPv6
/// administratively-prohibited error.
#[inline(always)]
pub const fn icmp_type_code(v6: bool) -> u16 {
    if v6 {
        (ICMP6_DEST_UNREACH as u16) << 8 | ICMP6_ADMIN_PROHIBITED as u16
    } else {
        (ICMP4_DEST_UNREACH as u16) << 8 | ICMP4_ADMIN_PROHIBITED as u16
    }
}

/// IP protocol numbers of the replies.
pub const RST_PROTO: u8 = IPPROTO_TCP;
pub const ICMP4_PROTO: u8 = IPPROTO_ICMP;
pub const ICMP6_PROTO: u8 = IPPROTO_ICMPV6;

/// Whether a reply may be sent to the IPv4 source `src` (as a big-endian
/// word) at all: never to an unspecified, broadcast or multicast source
/// (RFC 1122 3.2.2, RFC 1812 4.3.2.7, RFC 9293 3.10.7.1).
#[inline(always)]
pub fn may_answer_v4(src: u32) -> bool {
    src != 0 && src != u32::MAX && src >> 28 != 0xe
}

/// Whether a reply may be sent to the IPv6 source `src` (four big-endian
/// words): not unspecified, not multicast (RFC 4443 2.4 (e)).
#[inline(always)]
pub fn may_answer_v6(src: [u32; 4]) -> bool {
    src != [0; 4] && src[0] >> 24 != 0xff
}

/// Whether a reply may be sent to a MAC address starting with `first`: not
/// a group address.
#[inline(always)]
pub fn may_answer_mac(first: u8) -> bool {
    first & 1 == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::checksum;

    #[test]
    fn ones_complement_arithmetic() {
        assert_eq!(fold(0x1_fffe), 0xffff);
        assert_eq!(fold(0xffff_ffff_ffff), 0xffff);
        assert_eq!(ones_add(0xfffe, 0x0002), 0x0001);
        assert_eq!(ones_sub(0x0001, 0x0002), 0xfffe);
        // 0 and 0xffff are both zero in ones' complement.
        for (a, b) in [(0x1234u16, 0xabcdu16), (0xffff, 1), (0, 0x8000)] {
            assert_eq!(ones_add(ones_sub(a, b), b) % 0xffff, a % 0xffff);
        }
    }

    fn words(bytes: &[u8]) -> u64 {
        bytes
            .chunks(2)
            .map(|c| u64::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum()
    }

    #[test]
    fn the_ipv4_header_checksum_is_the_reference_one() {
        let (src, dst) = ([10u8, 0, 0, 1], [192u8, 0, 2, 7]);
        let csum = ipv4_header_checksum(0xc0, 56, false, 1, words(&src) + words(&dst));
        let mut h = std::vec::Vec::new();
        h.extend_from_slice(&ipv4_word0(0xc0).to_be_bytes());
        h.extend_from_slice(&56u16.to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&ipv4_frag_word(false).to_be_bytes());
        h.extend_from_slice(&ipv4_ttl_proto(1).to_be_bytes());
        h.extend_from_slice(&[0, 0]);
        h.extend_from_slice(&src);
        h.extend_from_slice(&dst);
        assert_eq!(checksum(&h), csum);
        h[10..12].copy_from_slice(&csum.to_be_bytes());
        assert_eq!(checksum(&h), 0, "a header with its checksum sums to zero");
    }

    #[test]
    fn the_rst_checksum_is_the_reference_one() {
        let (src, dst) = ([198u8, 51, 100, 10], [10u8, 77, 1, 2]);
        let rst = Rst {
            seq: 0,
            ack: 0x1000_0001,
            flags: TCP_RST | TCP_ACK,
        };
        let pseudo = pseudo_sum(words(&src) + words(&dst), RST_PROTO, 20);
        let full = transport_checksum(pseudo, rst_header_sum(25, 40000, &rst));
        let mut seg = std::vec::Vec::new();
        seg.extend_from_slice(&src);
        seg.extend_from_slice(&dst);
        seg.extend_from_slice(&[0, 6, 0, 20]);
        seg.extend_from_slice(&25u16.to_be_bytes());
        seg.extend_from_slice(&40000u16.to_be_bytes());
        seg.extend_from_slice(&rst.seq.to_be_bytes());
        seg.extend_from_slice(&rst.ack.to_be_bytes());
        seg.extend_from_slice(&rst_offset_flags(&rst).to_be_bytes());
        seg.extend_from_slice(&[0; 6]);
        assert_eq!(checksum(&seg), full);
        // The partial value completed over the header gives the full one.
        let partial = partial_checksum(pseudo);
        let mut header = seg[12..].to_vec();
        header[16..18].copy_from_slice(&partial.to_be_bytes());
        assert_eq!(checksum(&header), full);
    }

    #[test]
    fn sums_of_ranges_match_sums_of_bytes() {
        let data: std::vec::Vec<u8> = (0..1300u32).map(|i| (i * 7 + 3) as u8).collect();
        for (start, end) in [(0, 0), (0, 1), (3, 10), (5, 1237), (100, 101), (2, 6)] {
            let sum = sum_range(&data[..], start, end).unwrap();
            let expect = checksum(&data[start..end]);
            assert_eq!(!fold(sum), expect, "{start}..{end}");
        }
        assert_eq!(sum_range(&data[..], 0, SUM_MAX + 1), None);
        assert_eq!(sum_range(&data[..], 10, 5), None);
    }

    fn syn(flags: u8, seq: u32) -> TcpHeader {
        TcpHeader {
            src_port: 40000,
            dst_port: 25,
            seq,
            ack: 0,
            header_len: 20,
            flags,
            why: None,
        }
    }

    #[test]
    fn a_reset_acknowledges_the_syn_and_its_data() {
        let rst = rst_for(&syn(TCP_SYN, 1000), 0);
        assert_eq!(
            rst,
            Rst {
                seq: 0,
                ack: 1001,
                flags: TCP_RST | TCP_ACK
            }
        );
        assert!(rst.is_reset());
        // TCP Fast Open: the data counts.
        assert_eq!(rst_for(&syn(TCP_SYN, 1000), 100).ack, 1101);
        // SYN+FIN: both count.
        assert_eq!(rst_for(&syn(TCP_SYN | TCP_FIN, 1000), 0).ack, 1002);
        // Wrapping around the sequence space.
        assert_eq!(rst_for(&syn(TCP_SYN, u32::MAX), 0).ack, 0);
    }

    #[test]
    fn only_connection_requests_get_a_reset() {
        for flags in [TCP_ACK, TCP_SYN | TCP_ACK, TCP_SYN | TCP_RST, 0] {
            assert_eq!(rst_for(&syn(flags, 1), 0), Rst::NONE);
            assert!(!Rst::NONE.is_reset());
        }
    }

    #[test]
    fn group_and_unspecified_sources_get_no_reply() {
        assert!(may_answer_v4(u32::from_be_bytes([10, 1, 2, 3])));
        assert!(!may_answer_v4(0));
        assert!(!may_answer_v4(u32::MAX));
        assert!(!may_answer_v4(u32::from_be_bytes([224, 0, 0, 1])));
        assert!(!may_answer_v4(u32::from_be_bytes([239, 1, 2, 3])));
        assert!(may_answer_v6([0xfd77_0001, 0, 0, 2]));
        assert!(!may_answer_v6([0; 4]));
        assert!(!may_answer_v6([0xff02_0000, 0, 0, 1]));
        assert!(may_answer_mac(0x02));
        assert!(!may_answer_mac(0x01));
    }
}
