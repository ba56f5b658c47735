//! [`parse_l3`]: an L3 device's packet (a frame without its Ethernet header)
//! reads as the same datagram as the frame it came from, at offsets 14 bytes
//! lower, whatever its shape; a family that is not the skb's protocol is not
//! taken for another.

use super::*;
use crate::craft::{Frame, addr::*};

/// Every IP shape of the parser's own tests that an L3 device can carry
/// (no VLAN tags: those are Ethernet's).
fn shapes() -> Vec<(&'static str, u16, Vec<u8>)> {
    vec![
        (
            "v4 syn to 25",
            ETH_P_IPV4,
            Frame::tcp4(VM4, INTERNET4, 40000, 25).build(),
        ),
        (
            "v4 data to 587",
            ETH_P_IPV4,
            Frame::tcp4(VM4, INTERNET4, 40000, 587)
                .flags(0x18)
                .payload(&[7; 300])
                .build(),
        ),
        (
            "v4 options",
            ETH_P_IPV4,
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .ipv4_options(10)
                .build(),
        ),
        (
            "v4 first fragment",
            ETH_P_IPV4,
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .fragment(7, 0, true)
                .build(),
        ),
        (
            "v4 later fragment",
            ETH_P_IPV4,
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .fragment(7, 64, false)
                .build(),
        ),
        (
            "v4 udp",
            ETH_P_IPV4,
            Frame::udp4(VM4, INTERNET4, 5353, 25).build(),
        ),
        (
            "v6 syn to 25",
            ETH_P_IPV6,
            Frame::tcp6(VM6, INTERNET6, 40000, 25).build(),
        ),
        (
            "v6 extension headers",
            ETH_P_IPV6,
            Frame::tcp6(VM6, INTERNET6, 40000, 25)
                .ipv6_ext(IPV6_HOP_BY_HOP, 8)
                .ipv6_ext(IPV6_DEST_OPTS, 16)
                .build(),
        ),
        (
            "v6 fragment",
            ETH_P_IPV6,
            Frame::tcp6(VM6, INTERNET6, 40000, 25)
                .fragment(9, 0, true)
                .build(),
        ),
        (
            "v6 truncated",
            ETH_P_IPV6,
            Frame::tcp6(VM6, INTERNET6, 40000, 25)
                .truncate(14 + 30)
                .build(),
        ),
    ]
}

#[test]
fn an_l3_packet_reads_as_the_frame_it_came_from() {
    for (name, ethertype, frame) in shapes() {
        let framed = parse(frame.as_slice());
        let bare = parse_l3(&frame[ETH_HLEN..], ethertype);
        assert_eq!(bare.kind, framed.kind, "{name}");
        assert_eq!(bare.why, framed.why, "{name}");
        if framed.kind != ParsedKind::Ip {
            continue;
        }
        let (a, b) = (framed.ip, bare.ip);
        assert_eq!(b.l3_off, 0, "{name}");
        assert_eq!(b.l4_off + ETH_HLEN as u16, a.l4_off, "{name}");
        assert_eq!(b.ip_end + ETH_HLEN as u32, a.ip_end, "{name}");
        assert_eq!(
            (b.version, b.proto, b.fragment, b.transport, b.ports),
            (a.version, a.proto, a.fragment, a.transport, a.ports),
            "{name}"
        );
    }
}

#[test]
fn the_family_is_the_skbs_protocol_not_a_guess() {
    let v4 = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    let v6 = Frame::tcp6(VM6, INTERNET6, 40000, 25).build();
    // A packet whose version contradicts its protocol is malformed (held
    // back on a blocked interface), never passed as something else.
    let crossed = parse_l3(&v6[ETH_HLEN..], ETH_P_IPV4);
    assert_eq!(crossed.kind, ParsedKind::Malformed);
    assert_eq!(crossed.why, Some(Malformed::IpBadVersion));
    let crossed = parse_l3(&v4[ETH_HLEN..], ETH_P_IPV6);
    assert_eq!(crossed.kind, ParsedKind::Malformed);
    // What the stack does not route as IP is not IP here either.
    assert_eq!(parse_l3(&v4[ETH_HLEN..], 0x0806).kind, ParsedKind::NotIp);
    let empty: &[u8] = &[];
    assert_eq!(parse_l3(empty, ETH_P_IPV4).kind, ParsedKind::Malformed);
}
