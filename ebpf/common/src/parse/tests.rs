//! The parser compiled for the host, on crafted frames; every well-formed
//! shape is also checked against etherparse, an independent parser.

use super::*;
use crate::craft::{Frame, addr::*};

fn ip(frame: &[u8]) -> IpPacket {
    let parsed = parse(frame);
    *parsed
        .datagram()
        .unwrap_or_else(|| panic!("expected an IP packet, got {parsed:?}"))
}

fn ports(frame: &[u8]) -> Ports {
    ip(frame)
        .tcp_ports()
        .unwrap_or_else(|| panic!("expected TCP in {:?}", parse(frame)))
}

fn malformed(frame: &[u8]) -> Malformed {
    let parsed = parse(frame);
    assert_eq!(parsed.kind, ParsedKind::Malformed, "{parsed:?}");
    parsed.why.unwrap()
}

fn unfollowable(frame: &[u8]) -> Malformed {
    let ip = ip(frame);
    assert_eq!(ip.transport, TransportKind::Unfollowable, "{ip:?}");
    ip.why.unwrap()
}

/// etherparse's reading of the destination port, for TCP that is not a
/// fragment.
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
    assert_eq!(p.ip_end as usize, f.len());
    assert_eq!(p.fragment, FragKind::None);
    assert!(p.plain());
    assert_eq!(
        p.tcp_ports(),
        Some(Ports {
            src: 40000,
            dst: 25
        })
    );
    assert_eq!(ipv4_dst(f.as_slice(), &p), Some(INTERNET4));
    assert_eq!(ipv4_src(f.as_slice(), &p), Some(VM4));
    assert_eq!(etherparse_tcp_port(&f), Some(25));
    let h = TcpHeader::read(f.as_slice(), &p);
    assert!(h.is_whole());
    assert_eq!(h.seq, crate::craft::DEFAULT_SEQ);
    assert_eq!(h.flags, TCP_SYN);
    assert_eq!(h.header_len, 20);
}

#[test]
fn ipv6_tcp_syn() {
    let f = Frame::tcp6(VM6, INTERNET6, 40000, 25).build();
    let p = ip(&f);
    assert_eq!(p.version, IpVersion::V6);
    assert_eq!(p.l4_off, 54);
    assert!(p.plain());
    assert_eq!(ports(&f).dst, 25);
    assert_eq!(ipv6_dst(f.as_slice(), &p), Some(INTERNET6));
    assert_eq!(ipv6_src(f.as_slice(), &p), Some(VM6));
    assert_eq!(etherparse_tcp_port(&f), Some(25));
}

#[test]
fn every_ihl_from_5_to_15_moves_the_tcp_header() {
    for words in 0..=10u8 {
        let f = Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .ipv4_options(words)
            .build();
        let p = ip(&f);
        assert_eq!(p.l4_off as usize, 34 + 4 * words as usize);
        assert_eq!(p.plain(), words == 0);
        assert_eq!(ports(&f).dst, 25, "IHL {}", 5 + words);
        assert_eq!(etherparse_tcp_port(&f), Some(25));
    }
}

#[test]
fn vlan_tags_are_walked_to_the_limit() {
    let one = Frame::tcp4(VM4, INTERNET4, 40000, 25).dot1q(100).build();
    assert_eq!(ip(&one).l3_off, 18);
    assert_eq!(ports(&one).dst, 25);
    assert_eq!(etherparse_tcp_port(&one), Some(25));

    let qinq = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .dot1ad(10)
        .dot1q(20)
        .build();
    assert_eq!(ip(&qinq).l3_off, 22);
    assert_eq!(ports(&qinq).dst, 25);
    assert_eq!(etherparse_tcp_port(&qinq), Some(25));

    let old_qinq = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .vlan(ETH_P_QINQ_9100, 3)
        .dot1q(4)
        .build();
    assert_eq!(ports(&old_qinq).dst, 25);

    for depth in 1..=MAX_VLAN_TAGS as u16 {
        let mut deep = Frame::tcp4(VM4, INTERNET4, 40000, 25);
        for vid in 0..depth {
            deep = if vid % 2 == 0 {
                deep.dot1ad(vid)
            } else {
                deep.dot1q(vid)
            };
        }
        let f = deep.build();
        assert_eq!(ip(&f).l3_off as usize, 14 + 4 * depth as usize);
        assert_eq!(ports(&f).dst, 25, "{depth} tags");
    }
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
    assert!(!p.plain());
    assert_eq!(ports(&f).dst, 25);
    assert_eq!(etherparse_tcp_port(&f), Some(25));

    let ah = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(51, 24)
        .build();
    assert_eq!(ip(&ah).l4_off as usize, 54 + 24);
    assert_eq!(ports(&ah).dst, 25);
    assert_eq!(etherparse_tcp_port(&ah), Some(25));

    for kind in [135, 139, 140, 253, 254] {
        let f = Frame::tcp6(VM6, INTERNET6, 40000, 25)
            .ipv6_ext(kind, 8)
            .build();
        assert_eq!(ports(&f).dst, 25, "behind extension header {kind}");
    }
}

#[test]
fn a_routing_header_with_segments_left_is_routed() {
    // The craft builder leaves segments left at 0: not routed.
    let f = Frame::tcp6(VM6, RELAY6, 40000, 25).ipv6_ext(43, 24).build();
    assert!(!ip(&f).routed);
    let mut routed = f.clone();
    routed[54 + 3] = 1;
    assert!(ip(&routed).routed);
}

#[test]
fn ipv4_source_routes_are_found_in_the_options() {
    let mut f = Frame::tcp4(VM4, RELAY4, 40000, 25).ipv4_options(3).build();
    assert!(!ipv4_source_routed(f.as_slice(), &ip(&f)));
    // A loose source route after one NOP: type, length 7, pointer, one address.
    f[35..42].copy_from_slice(&[0x83, 7, 4, 198, 51, 100, 10]);
    assert!(ipv4_source_routed(f.as_slice(), &ip(&f)));
    f[35] = 0x89;
    assert!(ipv4_source_routed(f.as_slice(), &ip(&f)));
    // Another option (a timestamp) is no source route.
    f[34..46].copy_from_slice(&[0x44, 12, 5, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert!(!ipv4_source_routed(f.as_slice(), &ip(&f)));
}

#[test]
fn an_ipv4_authentication_header_is_walked() {
    let f = Frame::tcp4(VM4, INTERNET4, 40000, 25).ipv4_auth(6).build();
    let p = ip(&f);
    assert_eq!(p.key_proto, IPPROTO_AH);
    assert_eq!(p.proto, IPPROTO_TCP);
    assert_eq!(p.l4_off, 34 + 24);
    assert_eq!(ports(&f).dst, 25);
    assert_eq!(etherparse_tcp_port(&f), Some(25));

    let mut zero_len = f.clone();
    zero_len[35] = 0;
    assert_eq!(unfollowable(&zero_len), Malformed::AuthBad);
}

#[test]
fn an_ipv6_chain_at_the_limit_is_followed_and_beyond_it_is_unfollowable() {
    let mut at_limit = Frame::tcp6(VM6, INTERNET6, 40000, 25);
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        at_limit = at_limit.ipv6_ext(60, 8);
    }
    assert_eq!(ports(&at_limit.build()).dst, 25);
    assert_eq!(etherparse_tcp_port(&at_limit.build()), Some(25));

    let beyond = at_limit.ipv6_ext(60, 8).build();
    assert_eq!(unfollowable(&beyond), Malformed::Ipv6ChainTooLong);
}

#[test]
fn an_ipv6_chain_cut_short_is_unfollowable() {
    let full = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(0, 16)
        .build();
    // The payload length says the datagram ends inside the hop-by-hop header.
    let mut cut = full.clone();
    cut[18..20].copy_from_slice(&8u16.to_be_bytes());
    cut.truncate(54 + 8);
    assert_eq!(unfollowable(&cut), Malformed::TcpTruncated);
    cut[18..20].copy_from_slice(&2u16.to_be_bytes());
    cut.truncate(54 + 2);
    assert_eq!(unfollowable(&cut), Malformed::ExtTruncated);
    // A frame shorter than its payload length says is malformed.
    assert_eq!(malformed(&full[..=54]), Malformed::IpBadLength);
}

#[test]
fn ipv4_headers_that_contradict_the_frame_are_malformed() {
    let mut bad_ihl = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    bad_ihl[14] = 0x44; // IHL 4
    assert_eq!(malformed(&bad_ihl), Malformed::Ipv4BadIhl);

    let mut long_ihl = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    long_ihl[14] = 0x4f; // IHL 15: 60 bytes, more than the total length of 40
    assert_eq!(malformed(&long_ihl), Malformed::IpBadLength);

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
fn ethernet_padding_is_not_a_contradiction_nor_a_header() {
    let mut f = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    f.extend_from_slice(&[0; 6]);
    assert_eq!(ports(&f).dst, 25);
    assert_eq!(ip(&f).ip_end as usize, f.len() - 6);

    // A total length that ends the datagram before the ports: the ports in
    // the padding are not the datagram's.
    let mut short = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    short[16..18].copy_from_slice(&22u16.to_be_bytes());
    assert_eq!(unfollowable(&short), Malformed::TcpTruncated);
    assert_eq!(etherparse_tcp_port(&short), None);
}

#[test]
fn the_tcp_header_is_read_whole_or_not_at_all() {
    // The IP total length is kept honest so that only the TCP header is short.
    let mut cut = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    cut.truncate(34 + 3);
    cut[16..18].copy_from_slice(&23u16.to_be_bytes());
    assert_eq!(unfollowable(&cut), Malformed::TcpTruncated);

    let mut ports_only = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    ports_only.truncate(34 + 4);
    ports_only[16..18].copy_from_slice(&24u16.to_be_bytes());
    let p = ip(&ports_only);
    assert_eq!(
        p.tcp_ports(),
        Some(Ports {
            src: 40000,
            dst: 25
        })
    );
    assert_eq!(
        TcpHeader::read(ports_only.as_slice(), &p).why,
        Some(Malformed::TcpTruncated)
    );

    let with_options = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .tcp_options(10)
        .build();
    let p = ip(&with_options);
    assert_eq!(TcpHeader::read(with_options.as_slice(), &p).header_len, 60);
    let mut options_cut = with_options.clone();
    options_cut.truncate(34 + 40);
    options_cut[16..18].copy_from_slice(&60u16.to_be_bytes());
    assert_eq!(
        TcpHeader::read(options_cut.as_slice(), &ip(&options_cut)).why,
        Some(Malformed::TcpTruncated)
    );

    let mut bad_offset = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    bad_offset[34 + 12] = 4 << 4;
    assert_eq!(
        TcpHeader::read(bad_offset.as_slice(), &ip(&bad_offset)).why,
        Some(Malformed::TcpBadOffset)
    );
}

#[test]
fn fragments_are_told_apart() {
    let first = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .fragment(77, 0, true)
        .build();
    let p = ip(&first);
    assert_eq!((p.fragment, p.frag_id), (FragKind::First, 77));
    assert_eq!(p.frag_start, 34);
    assert_eq!(ports(&first).dst, 25);

    let later = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .fragment(77, 3, false)
        .payload(&[0xab; 16])
        .build();
    let p = ip(&later);
    assert_eq!(
        (p.fragment, p.frag_id, p.frag_offset),
        (FragKind::Later, 77, 24)
    );
    assert_eq!(p.key_proto, IPPROTO_TCP);
    assert_eq!(p.transport, TransportKind::Payload);

    let first6 = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(0xdead_beef, 0, true)
        .build();
    let p = ip(&first6);
    assert_eq!((p.fragment, p.frag_id), (FragKind::First, 0xdead_beef));
    assert_eq!(p.frag_start, 54 + 8);
    assert_eq!(p.key_proto, 0);
    assert_eq!(ports(&first6).dst, 25);

    let later6 = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(0xdead_beef, 2, true)
        .payload(&[0; 8])
        .build();
    let p = ip(&later6);
    assert_eq!(
        (p.fragment, p.frag_id, p.frag_offset),
        (FragKind::Later, 0xdead_beef, 16)
    );
    assert_eq!(p.proto, IPPROTO_TCP);
    assert_eq!(p.transport, TransportKind::Payload);

    // An atomic fragment (offset 0, no more fragments) is a whole packet.
    let atomic = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(5, 0, false)
        .build();
    assert_eq!(ip(&atomic).fragment, FragKind::None);
    assert_eq!(ports(&atomic).dst, 25);
    assert_eq!(etherparse_tcp_port(&atomic), Some(25));
}

#[test]
fn an_ipv6_first_fragment_follows_the_chain_past_the_fragment_header() {
    let f = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(1, 0, true)
        .ipv6_ext_after_fragment(60, 16)
        .build();
    let p = ip(&f);
    assert_eq!(p.frag_start, 62);
    assert_eq!(p.l4_off, 62 + 16);
    assert_eq!(ports(&f).dst, 25);

    // RFC 7112: the chain ends outside the first fragment.
    let mut cut = f.clone();
    cut.truncate(62 + 8);
    cut[18..20].copy_from_slice(&16u16.to_be_bytes());
    assert_eq!(unfollowable(&cut), Malformed::TcpTruncated);
    assert_eq!((ip(&cut).fragment, ip(&cut).frag_id), (FragKind::First, 1));
}

#[test]
fn a_second_fragment_header_is_unfollowable() {
    let f = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(1, 0, true)
        .ipv6_ext_after_fragment(44, 8)
        .build();
    assert_eq!(unfollowable(&f), Malformed::NestedFragment);
}

#[test]
fn not_ip_and_not_tcp() {
    assert_eq!(parse(Frame::arp().as_slice()), Parsed::NOT_IP);
    assert_eq!(parse(&[0u8; 10][..]), Parsed::NOT_IP);
    let udp = Frame::udp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(ip(&udp).transport, TransportKind::Other);
    assert_eq!(ip(&udp).proto, IPPROTO_UDP);
    let udp6 = Frame::udp6(VM6, INTERNET6, 40000, 25).build();
    assert_eq!(ip(&udp6).transport, TransportKind::Other);
    // An EtherType that is not IP, even carrying IP-looking bytes.
    let mpls = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .ethertype(0x8847)
        .build();
    assert_eq!(parse(mpls.as_slice()), Parsed::NOT_IP);
}

#[test]
fn headers_beyond_the_offset_limit_are_too_long() {
    let mut f = Frame::tcp6(VM6, INTERNET6, 40000, 25);
    for _ in 0..3 {
        f = f.ipv6_ext(60, 2048);
    }
    assert_eq!(unfollowable(&f.build()), Malformed::TooLong);
}

#[test]
fn ipv6_payload_length_zero_takes_the_frame() {
    let mut f = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(0, 8)
        .build();
    f[18..20].copy_from_slice(&[0, 0]);
    let p = ip(&f);
    assert_eq!(p.ip_end as usize, f.len());
    assert_eq!(ports(&f).dst, 25);
    assert_eq!(etherparse_tcp_port(&f), Some(25));
}

#[test]
fn every_truncation_of_a_tcp_frame_is_held_or_not_ip() {
    // Cutting a frame anywhere (length fields kept) never turns it into a
    // TCP segment to another port, nor into something else that passes.
    for base in [
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .dot1q(7)
            .ipv4_options(2),
        Frame::tcp6(VM6, INTERNET6, 40000, 25)
            .dot1ad(1)
            .ipv6_ext(0, 8),
        Frame::tcp4(VM4, INTERNET4, 40000, 25).ipv4_auth(4),
    ] {
        let full = base.build();
        for len in 0..full.len() {
            let parsed = parse(&full[..len]);
            match parsed.kind {
                ParsedKind::NotIp => assert!(len < 14, "prefix {len} parsed as not IP"),
                ParsedKind::Malformed => {}
                ParsedKind::Ip => match parsed.ip.transport {
                    TransportKind::Tcp => assert_eq!(parsed.ip.ports.dst, 25),
                    TransportKind::Unfollowable => {}
                    other => panic!("prefix {len} lost its TCP header: {other:?}"),
                },
            }
        }
    }
}
