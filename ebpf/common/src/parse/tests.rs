//! The parser compiled for the host, on crafted frames; every well-formed
//! shape is also checked against etherparse, an independent parser.

use super::*;
use crate::craft::{Frame, addr::*};

fn ip(frame: &[u8]) -> IpPacket {
    match parse(frame) {
        Parsed::Ip(ip) => ip,
        other => panic!("expected an IP packet, got {other:?}"),
    }
}

fn tcp(frame: &[u8]) -> Tcp {
    ip(frame)
        .tcp()
        .unwrap_or_else(|| panic!("expected TCP in {:?}", parse(frame)))
}

fn malformed(frame: &[u8]) -> Malformed {
    match parse(frame) {
        Parsed::Malformed(m) => m,
        other => panic!("expected a malformed frame, got {other:?}"),
    }
}

/// etherparse's reading of the destination port, for TCP that is not a
/// later fragment.
fn etherparse_tcp_port(frame: &[u8]) -> Option<u16> {
    let sliced = etherparse::SlicedPacket::from_ethernet(frame).ok()?;
    match sliced.transport? {
        etherparse::TransportSlice::Tcp(t) => Some(t.destination_port()),
        _ => None,
    }
}

#[test]
fn ipv4_tcp_syn() {
    let f = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    let p = ip(&f);
    assert_eq!(p.version, IpVersion::V4);
    assert_eq!(p.l3_off, 14);
    assert_eq!(p.l4_off, 34);
    assert_eq!(p.fragment, Fragment::None);
    assert_eq!(
        p.transport,
        Transport::Tcp(Tcp {
            src_port: 40000,
            dst_port: 25,
            flags: Some(TCP_SYN),
            complete: true
        })
    );
    assert_eq!(ipv4_dst(f.as_slice(), &p), Some(INTERNET4));
    assert_eq!(ipv4_src(f.as_slice(), &p), Some(VM4));
    assert_eq!(etherparse_tcp_port(&f), Some(25));
}

#[test]
fn ipv6_tcp_syn() {
    let f = Frame::tcp6(VM6, INTERNET6, 40000, 25).build();
    let p = ip(&f);
    assert_eq!(p.version, IpVersion::V6);
    assert_eq!(p.l4_off, 54);
    assert_eq!(tcp(&f).dst_port, 25);
    assert_eq!(ipv6_dst(f.as_slice(), &p), Some(INTERNET6));
    assert_eq!(ipv6_src(f.as_slice(), &p), Some(VM6));
    assert_eq!(etherparse_tcp_port(&f), Some(25));
}

#[test]
fn ipv4_options_move_the_tcp_header() {
    for words in 1..=10u8 {
        let f = Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .ipv4_options(words)
            .build();
        let p = ip(&f);
        assert_eq!(p.l4_off as usize, 34 + 4 * words as usize);
        assert_eq!(tcp(&f).dst_port, 25, "IHL {}", 5 + words);
        assert_eq!(etherparse_tcp_port(&f), Some(25));
    }
}

#[test]
fn vlan_tags_are_walked() {
    let one = Frame::tcp4(VM4, INTERNET4, 40000, 25).dot1q(100).build();
    assert_eq!(ip(&one).l3_off, 18);
    assert_eq!(tcp(&one).dst_port, 25);
    assert_eq!(etherparse_tcp_port(&one), Some(25));

    let qinq = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .dot1ad(10)
        .dot1q(20)
        .build();
    assert_eq!(ip(&qinq).l3_off, 22);
    assert_eq!(tcp(&qinq).dst_port, 25);
    assert_eq!(etherparse_tcp_port(&qinq), Some(25));

    let mut deep = Frame::tcp4(VM4, INTERNET4, 40000, 25);
    for vid in 0..MAX_VLAN_TAGS as u16 {
        deep = deep.dot1q(vid);
    }
    assert_eq!(tcp(&deep.build()).dst_port, 25);
}

#[test]
fn a_vlan_stack_too_deep_is_malformed() {
    let mut deep = Frame::tcp4(VM4, INTERNET4, 40000, 25);
    for vid in 0..=MAX_VLAN_TAGS as u16 {
        deep = deep.dot1ad(vid);
    }
    assert_eq!(malformed(&deep.build()), Malformed::VlanTooDeep);
}

#[test]
fn a_frame_cut_inside_a_vlan_tag_is_malformed() {
    let f = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .dot1q(5)
        .truncate(16)
        .build();
    assert_eq!(malformed(&f), Malformed::VlanTruncated);
}

#[test]
fn ipv6_extension_headers_are_walked() {
    let f = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(0, 8)
        .ipv6_ext(43, 24)
        .ipv6_ext(60, 16)
        .build();
    let p = ip(&f);
    assert_eq!(p.proto, IPPROTO_TCP);
    assert_eq!(p.l4_off as usize, 54 + 8 + 24 + 16);
    assert_eq!(tcp(&f).dst_port, 25);
    assert_eq!(etherparse_tcp_port(&f), Some(25));

    let ah = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(51, 24)
        .build();
    assert_eq!(ip(&ah).l4_off as usize, 54 + 24);
    assert_eq!(tcp(&ah).dst_port, 25);
}

#[test]
fn an_ipv6_chain_at_the_limit_is_followed_and_beyond_it_is_malformed() {
    let mut at_limit = Frame::tcp6(VM6, INTERNET6, 40000, 25);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        at_limit = at_limit.ipv6_ext(60, 8);
    }
    assert_eq!(tcp(&at_limit.build()).dst_port, 25);

    let beyond = at_limit.ipv6_ext(60, 8).build();
    assert_eq!(malformed(&beyond), Malformed::Ipv6ChainTooLong);
}

#[test]
fn an_ipv6_chain_cut_short_is_malformed() {
    let full = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(0, 8)
        .build();
    // Cut inside the hop-by-hop header's first two bytes.
    let cut = &full[..=54];
    assert_eq!(malformed(cut), Malformed::IpBadLength);
}

#[test]
fn ipv4_headers_that_contradict_the_frame_are_malformed() {
    let mut bad_ihl = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    bad_ihl[14] = 0x44; // IHL 4
    assert_eq!(malformed(&bad_ihl), Malformed::Ipv4BadIhl);

    let mut long_ihl = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    long_ihl[14] = 0x4f; // IHL 15: 60 bytes, more than the frame has before TCP ends
    long_ihl.truncate(14 + 40);
    assert_eq!(malformed(&long_ihl), Malformed::IpTruncated);

    let mut long_total = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    long_total[16..18].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(malformed(&long_total), Malformed::IpBadLength);

    let mut short_total = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    short_total[16..18].copy_from_slice(&19u16.to_be_bytes());
    assert_eq!(malformed(&short_total), Malformed::IpBadLength);

    let mut version = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    version[14] = 0x65;
    assert_eq!(malformed(&version), Malformed::IpBadVersion);

    let cut = Frame::tcp4(VM4, INTERNET4, 40000, 25).truncate(20).build();
    assert_eq!(malformed(&cut), Malformed::IpTruncated);
}

#[test]
fn ethernet_padding_is_not_a_contradiction() {
    let mut f = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    f.extend_from_slice(&[0; 6]);
    assert_eq!(tcp(&f).dst_port, 25);
}

#[test]
fn tcp_cut_before_the_ports_is_truncated_and_after_them_is_readable() {
    // The IP total length is kept honest so that only the TCP header is short.
    let mut cut = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    cut.truncate(34 + 3);
    cut[16..18].copy_from_slice(&23u16.to_be_bytes());
    assert_eq!(ip(&cut).transport, Transport::TcpTruncated);

    let mut ports_only = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    ports_only.truncate(34 + 4);
    ports_only[16..18].copy_from_slice(&24u16.to_be_bytes());
    assert_eq!(
        ip(&ports_only).transport,
        Transport::Tcp(Tcp {
            src_port: 40000,
            dst_port: 25,
            flags: None,
            complete: false
        })
    );
}

#[test]
fn fragments_are_told_apart() {
    let first = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .fragment(77, 0, true)
        .build();
    let p = ip(&first);
    assert_eq!(p.fragment, Fragment::First { id: 77 });
    assert_eq!(tcp(&first).dst_port, 25);

    let later = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .fragment(77, 3, false)
        .payload(&[0xab; 16])
        .build();
    let p = ip(&later);
    assert_eq!(p.fragment, Fragment::Later { id: 77 });
    assert_eq!(p.proto, IPPROTO_TCP);
    assert_eq!(p.transport, Transport::Other);

    let first6 = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(0xdead_beef, 0, true)
        .build();
    assert_eq!(ip(&first6).fragment, Fragment::First { id: 0xdead_beef });
    assert_eq!(tcp(&first6).dst_port, 25);

    let later6 = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(0xdead_beef, 2, true)
        .payload(&[0; 8])
        .build();
    let p = ip(&later6);
    assert_eq!(p.fragment, Fragment::Later { id: 0xdead_beef });
    assert_eq!(p.proto, IPPROTO_TCP);

    // An atomic fragment (offset 0, no more fragments) is a whole packet.
    let atomic = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(5, 0, false)
        .build();
    assert_eq!(ip(&atomic).fragment, Fragment::None);
    assert_eq!(tcp(&atomic).dst_port, 25);
}

#[test]
fn not_ip_and_not_tcp() {
    assert_eq!(parse(Frame::arp().as_slice()), Parsed::NotIp);
    assert_eq!(parse(&[0u8; 10][..]), Parsed::NotIp);
    let udp = Frame::udp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(ip(&udp).transport, Transport::Other);
    assert_eq!(ip(&udp).proto, IPPROTO_UDP);
    let udp6 = Frame::udp6(VM6, INTERNET6, 40000, 25).build();
    assert_eq!(ip(&udp6).transport, Transport::Other);
    // An EtherType that is not IP, even carrying IP-looking bytes.
    let mpls = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .ethertype(0x8847)
        .build();
    assert_eq!(parse(mpls.as_slice()), Parsed::NotIp);
}

#[test]
fn headers_beyond_the_offset_limit_are_too_long() {
    // Eight 2 KiB-ish extension headers go past MAX_HEADER_OFFSET.
    let mut f = Frame::tcp6(VM6, INTERNET6, 40000, 25);
    for _ in 0..3 {
        f = f.ipv6_ext(60, 2048);
    }
    assert_eq!(malformed(&f.build()), Malformed::TooLong);
}

#[test]
fn every_truncation_of_a_tcp_frame_is_either_malformed_or_not_ip() {
    // Cutting a frame anywhere never turns it into a TCP segment to another
    // port: each prefix is malformed, not IP (too short for Ethernet), or
    // (once the ports are in) TCP to the same port.
    for base in [
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .dot1q(7)
            .ipv4_options(2),
        Frame::tcp6(VM6, INTERNET6, 40000, 25)
            .dot1ad(1)
            .ipv6_ext(0, 8),
    ] {
        let full = base.build();
        for len in 0..full.len() {
            match parse(&full[..len]) {
                Parsed::NotIp => assert!(len < 14, "prefix {len} parsed as not IP"),
                Parsed::Malformed(_) => {}
                Parsed::Ip(p) => match p.transport {
                    Transport::Tcp(t) => assert_eq!(t.dst_port, 25),
                    Transport::TcpTruncated => {}
                    Transport::Other => panic!("prefix {len} lost its TCP header: {p:?}"),
                },
            }
        }
    }
}
