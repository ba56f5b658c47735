//! The `reset` and `icmp` replies, every field and checksum read back
//! with etherparse, and their per-VM rate limit.

#[allow(
    clippy::wildcard_imports,
    reason = "the TestRun vocabulary, shared by its modules"
)]
use super::*;

/// The reply, parsed by etherparse, with the checks every reply shares: it
/// goes back to the sender (MACs swapped, VLAN tags kept), from the address
/// the VM wrote to, with valid IP checksums.
struct Reply<'a> {
    headers: PacketHeaders<'a>,
}

impl<'a> Reply<'a> {
    fn parse(reply: &'a [u8], request: &[u8], tags: &[u16]) -> Self {
        let headers = PacketHeaders::from_ethernet_slice(reply).expect("the reply parses");
        let eth = headers.link.clone().unwrap().ethernet2().unwrap();
        assert_eq!(eth.destination, request[6..12], "to the sender's MAC");
        assert_eq!(eth.source, request[0..6], "from the MAC it was sent to");
        let vids: Vec<u16> = headers
            .link_exts
            .iter()
            .map(|e| match e {
                LinkExtHeader::Vlan(v) => v.vlan_id.value(),
                LinkExtHeader::Macsec(_) => panic!("MACsec?"),
            })
            .collect();
        assert_eq!(vids, tags, "the VLAN tags stay");
        Self { headers }
    }

    fn ipv4(&self, request_src: [u8; 4], request_dst: [u8; 4], proto: u8, tos: u8) {
        let Some(NetHeaders::Ipv4(ip, ext)) = &self.headers.net else {
            panic!("not IPv4: {:?}", self.headers.net);
        };
        assert!(ext.is_empty());
        assert_eq!(ip.source, request_dst, "from the address the VM wrote to");
        assert_eq!(ip.destination, request_src, "to the VM");
        assert_eq!(ip.protocol.0, proto);
        assert_eq!(ip.time_to_live, 64);
        assert_eq!(ip.dscp.value() << 2 | ip.ecn.value(), tos);
        assert!(ip.options.is_empty());
        assert!(!ip.more_fragments);
        assert_eq!(ip.fragment_offset.value(), 0);
        assert_eq!(
            ip.header_checksum,
            ip.calc_header_checksum(),
            "IPv4 header checksum"
        );
    }

    fn ipv6(&self, request_src: [u8; 16], request_dst: [u8; 16], next: u8) {
        let Some(NetHeaders::Ipv6(ip, ext)) = &self.headers.net else {
            panic!("not IPv6: {:?}", self.headers.net);
        };
        assert!(ext.is_empty());
        assert_eq!(ip.source, request_dst, "from the address the VM wrote to");
        assert_eq!(ip.destination, request_src, "to the VM");
        assert_eq!(ip.next_header.0, next);
        assert_eq!(ip.hop_limit, 64);
        assert_eq!(ip.traffic_class, 0);
        assert_eq!(ip.flow_label.value(), 0);
    }

    fn payload(&self) -> &[u8] {
        self.headers.payload.slice()
    }

    fn tcp(&self) -> &etherparse::TcpHeader {
        match &self.headers.transport {
            Some(TransportHeader::Tcp(t)) => t,
            other => panic!("not TCP: {other:?}"),
        }
    }
}

/// Runs `syn` through both hooks on the blocked interface of a `reset` bench
/// and checks the RST: ports swapped, `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>`
/// (RFC 9293 3.10.7.1), no data, a valid checksum.
fn check_reset(bench: &mut Bench, syn: &Frame, seg_len: u32, v6: bool, tags: &[u16]) {
    let request = syn.build();
    for hook in [Hook::Xdp, Hook::Tc] {
        let out = bench.run(hook, bench.blocked, &request);
        assert_eq!(out.verdict, Verdict::Reply, "{hook:?}");
        let reply = Reply::parse(&out.frame, &request, tags);
        if v6 {
            reply.ipv6(VM6, INTERNET6, 6);
        } else {
            reply.ipv4(VM4, INTERNET4, 6, 0);
        }
        let tcp = reply.tcp();
        assert_eq!((tcp.source_port, tcp.destination_port), (25, 40000));
        assert_eq!(tcp.sequence_number, 0);
        assert_eq!(
            tcp.acknowledgment_number,
            egress_guard_common::craft::DEFAULT_SEQ.wrapping_add(seg_len)
        );
        assert!(tcp.rst && tcp.ack, "RST and ACK");
        assert!(!tcp.syn && !tcp.fin && !tcp.psh && !tcp.urg);
        assert_eq!(tcp.window_size, 0);
        assert_eq!(tcp.urgent_pointer, 0);
        assert!(tcp.options.is_empty());
        assert!(reply.payload().is_empty(), "a RST carries no data");
        let expected = match &reply.headers.net {
            Some(NetHeaders::Ipv4(ip, _)) => tcp.calc_checksum_ipv4(ip, &[]).unwrap(),
            Some(NetHeaders::Ipv6(ip, _)) => tcp.calc_checksum_ipv6(ip, &[]).unwrap(),
            _ => unreachable!(),
        };
        assert_eq!(tcp.checksum, expected, "{hook:?}: TCP checksum");
    }
}

#[test]
fn reset_answers_a_syn_with_an_rst_that_acknowledges_it() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_RESET);
    check_reset(
        &mut bench,
        &Frame::tcp4(VM4, INTERNET4, 40000, 25),
        1,
        false,
        &[],
    );
    check_reset(
        &mut bench,
        &Frame::tcp6(VM6, INTERNET6, 40000, 25),
        1,
        true,
        &[],
    );
    // TCP Fast Open: the SYN's data counts (and its options do not).
    check_reset(
        &mut bench,
        &Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .tcp_options(3)
            .payload(&[b'x'; 100]),
        101,
        false,
        &[],
    );
    check_reset(
        &mut bench,
        &Frame::tcp6(VM6, INTERNET6, 40000, 25).payload(&[b'y'; 33]),
        34,
        true,
        &[],
    );
    // A SYN+FIN: both count.
    check_reset(
        &mut bench,
        &Frame::tcp4(VM4, INTERNET4, 40000, 25).flags(TCP_SYN | TCP_FIN),
        2,
        false,
        &[],
    );
    // Tagged: the reply keeps the tags.
    check_reset(
        &mut bench,
        &Frame::tcp4(VM4, INTERNET4, 40000, 25).dot1ad(10).dot1q(20),
        1,
        false,
        &[10, 20],
    );
    let sent = bench.counters(BLOCKED_KEY);
    assert_eq!(sent.packets[reason::RESET_SENT], 12);
    assert_eq!(sent.packets[reason::POLICY], 12, "each is held back too");
}

#[test]
fn reset_drops_what_is_not_a_connection_request() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_RESET);
    let blocked = bench.blocked;
    let not_syns = [
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .flags(TCP_ACK)
            .payload(b"DATA")
            .build(),
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .flags(TCP_RST)
            .build(),
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .flags(TCP_SYN | TCP_ACK)
            .build(),
        // A SYN in a first fragment: its segment length is not known.
        first4(50, INTERNET4, 25),
        // IPv4 options: not rewritten into a reply.
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .ipv4_options(2)
            .build(),
        // A broadcast source MAC, a multicast source address.
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .macs([0xff; 6], HOST_MAC)
            .build(),
        Frame::tcp4([224, 0, 0, 5], INTERNET4, 40000, 25).build(),
    ];
    for hook in [Hook::Xdp, Hook::Tc] {
        bench.forget_fragments();
        for frame in &not_syns {
            assert_eq!(
                bench.run(hook, blocked, frame).verdict,
                Verdict::Drop,
                "{hook:?}"
            );
        }
    }
    let c = bench.counters(BLOCKED_KEY);
    assert_eq!(c.packets[reason::POLICY], 2 * not_syns.len() as u64);
    assert_eq!(c.packets[reason::RESET_SENT], 0);
}

/// Runs `request` through both hooks on the blocked interface of an `icmp`
/// bench and checks the ICMP error: type and code, the quote (the
/// datagram from its IP header on, as much as fits), and the checksums.
fn check_icmp(bench: &mut Bench, request: &[u8], l3: usize, v6: bool, tags: &[u16]) {
    let datagram = &request[l3..];
    let quote_max = if v6 { 1280 - 48 } else { 576 - 28 };
    let quote = &datagram[..datagram.len().min(quote_max)];
    for hook in [Hook::Xdp, Hook::Tc] {
        let out = bench.run(hook, bench.blocked, request);
        assert_eq!(out.verdict, Verdict::Reply, "{hook:?}");
        let reply = Reply::parse(&out.frame, request, tags);
        assert_eq!(reply.payload(), quote, "{hook:?}: the quote");
        match &reply.headers.transport {
            Some(TransportHeader::Icmpv4(icmp)) => {
                assert!(!v6);
                reply.ipv4(VM4, INTERNET4, 1, 0xc0);
                assert_eq!(
                    icmp.icmp_type,
                    Icmpv4Type::DestinationUnreachable(DestUnreachableHeader::FilterProhibited),
                    "type 3 code 13"
                );
                assert_eq!(icmp.to_bytes()[4..8], [0; 4], "unused");
                assert_eq!(
                    icmp.checksum,
                    icmp.icmp_type.calc_checksum(reply.payload()),
                    "{hook:?}: ICMP checksum"
                );
            }
            Some(TransportHeader::Icmpv6(icmp)) => {
                assert!(v6);
                reply.ipv6(VM6, INTERNET6, 58);
                assert_eq!(
                    icmp.icmp_type,
                    Icmpv6Type::DestinationUnreachable(DestUnreachableCode::Prohibited),
                    "type 1 code 1"
                );
                assert_eq!(icmp.to_bytes()[4..8], [0; 4], "unused");
                let Some(NetHeaders::Ipv6(ip, _)) = &reply.headers.net else {
                    unreachable!()
                };
                assert_eq!(
                    icmp.checksum,
                    icmp.icmp_type
                        .calc_checksum(ip.source, ip.destination, reply.payload())
                        .unwrap(),
                    "{hook:?}: ICMPv6 checksum"
                );
            }
            other => panic!("{hook:?}: not ICMP: {other:?}"),
        }
    }
}

#[test]
fn icmp_answers_with_administratively_prohibited_quoting_the_packet() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_ICMP);
    let syn4 = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    check_icmp(&mut bench, &syn4, 14, false, &[]);
    let syn6 = Frame::tcp6(VM6, INTERNET6, 40000, 25).build();
    check_icmp(&mut bench, &syn6, 14, true, &[]);
    // Any segment to a held port, with data of odd length.
    let data4 = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .flags(TCP_ACK)
        .payload(&[b'z'; 333])
        .build();
    check_icmp(&mut bench, &data4, 14, false, &[]);
    // Longer than a quote may be: cut at 576 (IPv4) / 1280 (IPv6) bytes.
    let big4 = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .flags(TCP_ACK)
        .payload(&[b'b'; 1400])
        .build();
    check_icmp(&mut bench, &big4, 14, false, &[]);
    let big6 = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .flags(TCP_ACK)
        .payload(&[b'b'; 1401])
        .build();
    check_icmp(&mut bench, &big6, 14, true, &[]);
    // IPv4 options and IPv6 extension headers are quoted as they are.
    let opts4 = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .ipv4_options(3)
        .build();
    check_icmp(&mut bench, &opts4, 14, false, &[]);
    let ext6 = Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .ipv6_ext(0, 8)
        .ipv6_ext(60, 16)
        .build();
    check_icmp(&mut bench, &ext6, 14, true, &[]);
    // Tagged.
    let tagged = Frame::tcp6(VM6, INTERNET6, 40000, 25).dot1q(30).build();
    check_icmp(&mut bench, &tagged, 18, true, &[30]);
    let sent = bench.counters(BLOCKED_KEY);
    assert_eq!(sent.packets[reason::ICMP_SENT], 16);
    assert_eq!(sent.packets[reason::POLICY], 16);
}

#[test]
fn replies_are_rate_limited_per_vm() {
    let _serial = serial::shared(module_path!());
    // A burst of 3, then one every 1000 s: the 4th and later are dropped.
    for action in [ACTION_RESET, ACTION_ICMP] {
        let mut bench = Bench::new(
            Config {
                mode: MODE_ENFORCE,
                action,
                generation: 1,
                ..Config::default()
            }
            .with_reply_rate(0, 3),
        );
        // Rate 0 sends no replies at all.
        let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
        assert_eq!(
            bench.run(Hook::Xdp, bench.blocked, &syn).verdict,
            Verdict::Drop
        );

        let mut config = Config {
            mode: MODE_ENFORCE,
            action,
            generation: 2,
            ..Config::default()
        }
        .with_reply_rate(1, 3);
        config.reply_interval_ns = 1_000_000_000_000;
        bench.datapath.maps.config.set(0, config, 0).unwrap();
        let mut verdicts = Vec::new();
        for hook in [Hook::Xdp, Hook::Tc, Hook::Xdp, Hook::Tc, Hook::Xdp] {
            verdicts.push(bench.run(hook, bench.blocked, &syn).verdict);
        }
        let (reply, drop) = (Verdict::Reply, Verdict::Drop);
        assert_eq!(
            verdicts,
            [reply, reply, reply, drop, drop],
            "action {action}"
        );
        // Another VM (the unlisted interface) has its own budget.
        assert_eq!(
            bench.run(Hook::Tc, bench.unlisted, &syn).verdict,
            Verdict::Reply
        );
        let c = bench.counters(BLOCKED_KEY);
        let sent = if action == ACTION_RESET {
            reason::RESET_SENT
        } else {
            reason::ICMP_SENT
        };
        assert_eq!(c.packets[sent], 3);
        // The two beyond the burst, and the one under rate 0.
        assert_eq!(c.packets[reason::RATE_LIMITED], 3);
        assert_eq!(c.packets[reason::POLICY], 6);
    }
}
