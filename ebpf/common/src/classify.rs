//! The pure part of the verdict on a packet from a blocked interface: from a
//! [`Parsed`] frame and the set of held ports, what kind of packet this is.
//! The kernel programs add what needs maps (allowed destinations, the
//! verdicts of fragmented datagrams, counters, the action); the host tests and
//! the fuzzer use this as the reference.

use crate::parse::{
    FragKind, IPPROTO_AH, IPPROTO_TCP, IpPacket, IpVersion, Malformed, PacketBytes, Parsed,
    ParsedKind, TcpHeader, TransportKind, is_ipv6_extension,
};

/// What a packet from a blocked interface is, with respect to the held ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ClassKind {
    /// Cannot be a TCP segment to a held port: it passes.
    Pass,
    /// A TCP segment (or the first fragment of one, with its whole TCP
    /// header) to a held port. Held back unless its destination is allowed.
    HeldPort,
    /// The first fragment of a datagram that is not to a held port (TCP to
    /// another port, or, in IPv6, anything). It passes, and its datagram's
    /// verdict is remembered for the later fragments.
    FirstFragment,
    /// A later fragment that may belong to a TCP datagram: it follows the
    /// verdict of its first fragment.
    LaterFragment,
    /// Could be a TCP segment to a held port, but cannot be followed far
    /// enough to tell. Held back; when the datagram was identified and is a
    /// fragment, its later fragments are held back too.
    Unparseable,
}

/// A packet's class, and what the rest of the verdict needs to know. A plain
/// struct, every field set on every path (see [`Parsed`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Class {
    pub kind: ClassKind,
    /// The datagram was identified ([`Class::ip`] is it): always, but for an
    /// [`ClassKind::Unparseable`] packet whose IP header is not to be trusted.
    pub identified: bool,
    /// For [`ClassKind::FirstFragment`]: bytes of the fragmentable part taken
    /// by headers (a later fragment starting inside them overlaps them).
    pub header_end: u16,
    /// For [`ClassKind::Unparseable`]: why.
    pub why: Option<Malformed>,
    pub ip: IpPacket,
}

impl Class {
    pub const PASS: Self = Self {
        kind: ClassKind::Pass,
        identified: false,
        header_end: 0,
        why: None,
        ip: IpPacket::EMPTY,
    };

    #[inline(always)]
    const fn of(kind: ClassKind, ip: &IpPacket) -> Self {
        Self {
            kind,
            identified: true,
            header_end: 0,
            why: None,
            ip: *ip,
        }
    }

    #[inline(always)]
    const fn unparseable(ip: &IpPacket, identified: bool, why: Malformed) -> Self {
        Self {
            kind: ClassKind::Unparseable,
            identified,
            header_end: 0,
            why: Some(why),
            ip: *ip,
        }
    }
}

/// Classifies a parsed frame. `is_held` says whether a TCP destination port
/// is held.
#[inline(always)]
pub fn classify<P: PacketBytes + ?Sized>(
    pkt: &P,
    parsed: &Parsed,
    is_held: impl Fn(u16) -> bool,
) -> Class {
    match parsed.kind {
        ParsedKind::NotIp => return Class::PASS,
        ParsedKind::Malformed => {
            let why = match parsed.why {
                Some(why) => why,
                None => Malformed::IpTruncated,
            };
            return Class::unparseable(&IpPacket::EMPTY, false, why);
        }
        ParsedKind::Ip => {}
    }
    let ip = &parsed.ip;
    match ip.transport {
        TransportKind::Unfollowable => {
            let why = match ip.why {
                Some(why) => why,
                None => Malformed::TooLong,
            };
            Class::unparseable(ip, true, why)
        }
        TransportKind::Payload => {
            // A later fragment. IPv4 reassembles by protocol too, so one of a
            // datagram that is neither TCP nor AH (which may wrap TCP) cannot
            // belong to a TCP datagram. IPv6 reassembles by addresses and
            // identification only: any later fragment may belong to a
            // datagram whose first fragment is remembered (every IPv6 first
            // fragment is).
            if ip.version == IpVersion::V4 && !later_fragment_may_be_tcp(ip) {
                Class::PASS
            } else {
                Class::of(ClassKind::LaterFragment, ip)
            }
        }
        TransportKind::Other => {
            if ip.fragment == FragKind::First && ip.version == IpVersion::V6 {
                let mut class = Class::of(ClassKind::FirstFragment, ip);
                class.header_end = ip.l4_off - ip.frag_start;
                class
            } else {
                Class::PASS
            }
        }
        TransportKind::Tcp => {
            let held = is_held(ip.ports.dst);
            if ip.fragment != FragKind::First {
                return if held {
                    Class::of(ClassKind::HeldPort, ip)
                } else {
                    Class::PASS
                };
            }
            // The first fragment must hold the whole TCP header (RFC 1858,
            // and RFC 7112 for IPv6's whole header chain): otherwise a later
            // fragment supplies part of it.
            let header = TcpHeader::read(pkt, ip);
            if let Some(why) = header.why {
                return Class::unparseable(ip, true, why);
            }
            if held {
                Class::of(ClassKind::HeldPort, ip)
            } else {
                let mut class = Class::of(ClassKind::FirstFragment, ip);
                class.header_end = ip.l4_off - ip.frag_start + header.header_len;
                class
            }
        }
    }
}

/// Whether a later fragment whose first fragment is unknown may belong to a
/// TCP datagram: IPv4's protocol is TCP or AH; the IPv6 fragment header's next
/// header is TCP or an extension header (that a TCP header may follow).
#[inline(always)]
pub fn later_fragment_may_be_tcp(ip: &IpPacket) -> bool {
    match ip.version {
        IpVersion::V4 => ip.key_proto == IPPROTO_TCP || ip.key_proto == IPPROTO_AH,
        IpVersion::V6 => ip.proto == IPPROTO_TCP || is_ipv6_extension(ip.proto),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::craft::{Frame, addr::*};
    use crate::parse::parse;

    const HELD: fn(u16) -> bool = |p| p == 25 || p == 465;

    fn class(frame: &[u8]) -> Class {
        classify(frame, &parse(frame), HELD)
    }

    fn kind(frame: &[u8]) -> ClassKind {
        class(frame).kind
    }

    #[test]
    fn tcp_to_a_held_port_is_held() {
        assert_eq!(
            kind(&Frame::tcp4(VM4, INTERNET4, 40000, 25).build()),
            ClassKind::HeldPort
        );
        assert_eq!(
            kind(
                &Frame::tcp6(VM6, INTERNET6, 40000, 465)
                    .fragment(7, 0, true)
                    .build()
            ),
            ClassKind::HeldPort
        );
    }

    #[test]
    fn tcp_to_another_port_and_replies_pass() {
        assert_eq!(
            class(&Frame::tcp4(VM4, INTERNET4, 40000, 587).build()),
            Class::PASS
        );
        assert_eq!(
            class(&Frame::tcp4(VM4, INTERNET4, 25, 40000).flags(0x12).build()),
            Class::PASS
        );
    }

    #[test]
    fn non_ip_and_non_tcp_pass() {
        assert_eq!(class(&Frame::arp()), Class::PASS);
        assert_eq!(
            class(&Frame::udp4(VM4, INTERNET4, 40000, 25).build()),
            Class::PASS
        );
        // A later IPv4 UDP fragment cannot belong to a TCP datagram.
        assert_eq!(
            class(
                &Frame::udp4(VM4, INTERNET4, 40000, 25)
                    .fragment(1, 8, false)
                    .payload(&[0; 16])
                    .build()
            ),
            Class::PASS
        );
    }

    #[test]
    fn what_cannot_be_followed_is_unparseable() {
        let mut deep = Frame::tcp4(VM4, INTERNET4, 40000, 25);
        for vid in 0..=crate::parse::MAX_VLAN_TAGS as u16 {
            deep = deep.dot1q(vid);
        }
        let c = class(&deep.build());
        assert_eq!(c.kind, ClassKind::Unparseable);
        assert!(!c.identified);
        assert_eq!(c.why, Some(Malformed::VlanTooDeep));

        let mut short = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
        short.truncate(34 + 2);
        short[16..18].copy_from_slice(&22u16.to_be_bytes());
        let c = class(&short);
        assert_eq!(c.kind, ClassKind::Unparseable);
        assert!(c.identified);
        assert_eq!(c.why, Some(Malformed::TcpTruncated));
    }

    #[test]
    fn first_fragments_need_the_whole_tcp_header() {
        // 8 bytes of TCP header in the first fragment: ports, no flags.
        let f = Frame::tcp4(VM4, INTERNET4, 40000, 443)
            .fragment(3, 0, true)
            .build();
        let mut tiny = f.clone();
        tiny.truncate(34 + 8);
        tiny[16..18].copy_from_slice(&28u16.to_be_bytes());
        let c = class(&tiny);
        assert_eq!(c.kind, ClassKind::Unparseable);
        assert_eq!(c.why, Some(Malformed::TcpTruncated));
        // The whole header: a first fragment to another port, remembered.
        let c = class(&f);
        assert_eq!(c.kind, ClassKind::FirstFragment);
        assert_eq!(c.header_end, 20);
    }

    #[test]
    fn later_fragments_that_may_be_tcp_follow_their_first() {
        let v4 = Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .fragment(9, 8, false)
            .payload(&[0; 8])
            .build();
        assert_eq!(kind(&v4), ClassKind::LaterFragment);
        // IPv6: whatever the fragment header says comes next.
        let v6 = Frame::udp6(VM6, INTERNET6, 40000, 53)
            .fragment(9, 8, false)
            .payload(&[0; 8])
            .build();
        assert_eq!(kind(&v6), ClassKind::LaterFragment);
        // An IPv6 UDP first fragment is remembered (as passing).
        let first6 = Frame::udp6(VM6, INTERNET6, 40000, 53)
            .fragment(9, 0, true)
            .payload(&[0; 8])
            .build();
        assert_eq!(kind(&first6), ClassKind::FirstFragment);
    }
}
