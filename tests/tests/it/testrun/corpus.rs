//! The TestRun corpus: crafted packets, each with its exact verdict and
//! the reason it is counted under; fragment cases are sequences.

#[allow(
    clippy::wildcard_imports,
    reason = "the TestRun vocabulary, shared by its modules"
)]
use super::*;

#[allow(clippy::too_many_lines, reason = "one table, one row a case")]
pub(super) fn corpus() -> Vec<Case> {
    let tcp4 = |dport| Frame::tcp4(VM4, INTERNET4, 40000, dport);
    let tcp6 = |dport| Frame::tcp6(VM6, INTERNET6, 40000, dport);

    let mut bad_ihl = tcp4(25).build();
    bad_ihl[14] = 0x43;
    let mut short_tcp = tcp4(25).build();
    short_tcp.truncate(34 + 2);
    let short_tcp = with_total_len(short_tcp, 22);
    let mut lsrr_to_relay = Frame::tcp4(VM4, RELAY4, 40000, 25).ipv4_options(2).build();
    lsrr_to_relay[34..41].copy_from_slice(&[0x83, 7, 4, 198, 51, 100, 10]);
    let mut routed_to_relay = Frame::tcp6(VM6, RELAY6, 40000, 25).ipv6_ext(43, 24).build();
    // Routing header: next, length, type 0... segments left 1.
    routed_to_relay[54 + 3] = 1;
    let mut cut_vlan = tcp4(25).dot1q(5).build();
    cut_vlan.truncate(16);
    let mut cut_ext = tcp6(25).ipv6_ext(0, 8).ipv6_ext(60, 16).build();
    cut_ext.truncate(54 + 8 + 4);
    let cut_ext = {
        let mut f = cut_ext;
        f[18..20].copy_from_slice(&12u16.to_be_bytes());
        f
    };
    // A first fragment with only 8 bytes of the TCP header (RFC 1858).
    let mut tiny_first = first4(21, INTERNET4, 443);
    tiny_first.truncate(34 + 8);
    let tiny_first = with_total_len(tiny_first, 28);
    // An IPv6 first fragment whose chain goes on past its end (RFC 7112).
    let mut chain_cut6 = Frame::tcp6(VM6, INTERNET6, 40000, 443)
        .fragment(61, 0, true)
        .ipv6_ext_after_fragment(60, 16)
        .build();
    chain_cut6.truncate(62 + 8);
    chain_cut6[18..20].copy_from_slice(&16u16.to_be_bytes());
    // Another VM's (the exempt one's) MAC and address, sent from here.
    let forged = Frame::tcp4([10, 77, 1, 3], INTERNET4, 40000, 25)
        .macs([0x02, 0, 0, 0, 0, 0x03], HOST_MAC)
        .build();
    let lldp = Frame::tcp4(VM4, INTERNET4, 40000, 25)
        .ethertype(0x88cc)
        .build();

    vec![
        // --- held ports, whole segments -------------------------------
        one("v4 SYN to 25", drop(tcp4(25).build(), HELD)),
        one("v6 SYN to 25", drop(tcp6(25).build(), HELD)),
        one(
            "v4 SYN to 465 (a second held port)",
            drop(tcp4(465).build(), HELD),
        ),
        one(
            "v4 ACK with data to 25 (not only SYNs)",
            drop(tcp4(25).flags(TCP_ACK).payload(b"EHLO x\r\n").build(), HELD),
        ),
        one(
            "v4 FIN to 25",
            drop(tcp4(25).flags(TCP_FIN | TCP_ACK).build(), HELD),
        ),
        one("v4 RST to 25", drop(tcp4(25).flags(TCP_RST).build(), HELD)),
        one(
            "v4 SYN with data to 25 (TCP Fast Open)",
            drop(tcp4(25).tcp_options(3).payload(&[b'x'; 64]).build(), HELD),
        ),
        one(
            "v6 ACK to 25",
            drop(tcp6(25).flags(TCP_ACK).payload(b"DATA\r\n").build(), HELD),
        ),
        one(
            "v4 TCP data offset 3 to 25 (ports still tell)",
            drop(
                {
                    let mut f = tcp4(25).build();
                    f[46] = 3 << 4;
                    f
                },
                HELD,
            ),
        ),
        // --- what passes ----------------------------------------------
        one("v4 SYN to 587", pass(tcp4(587).build())),
        one("v6 SYN to 443", pass(tcp6(443).build())),
        one(
            "v4 SYN-ACK from port 25 (a reply)",
            pass(
                Frame::tcp4(VM4, INTERNET4, 25, 40000)
                    .flags(TCP_SYN | TCP_ACK)
                    .build(),
            ),
        ),
        one(
            "v6 ACK from port 25 (a reply)",
            pass(
                Frame::tcp6(VM6, INTERNET6, 25, 40000)
                    .flags(TCP_ACK)
                    .build(),
            ),
        ),
        one(
            "v4 UDP to 25",
            pass(Frame::udp4(VM4, INTERNET4, 40000, 25).build()),
        ),
        one(
            "v6 UDP to 25",
            pass(Frame::udp6(VM6, INTERNET6, 40000, 25).build()),
        ),
        one("ARP", pass(Frame::arp())),
        one("LLDP (not IP)", pass(lldp)),
        one(
            "v4 ICMP",
            pass(tcp4(25).raw_proto(1).payload(&[8, 0, 0, 0]).build()),
        ),
        one("v6 no next header", pass(tcp6(25).raw_proto(59).build())),
        one(
            "v4 shorter than its frame: padding is not a header",
            pass(with_total_len(tcp4(587).payload(&[0; 12]).build(), 40)),
        ),
        // --- allowed destinations ---------------------------------------
        one(
            "v4 SYN to 25 at the relay",
            pass(Frame::tcp4(VM4, RELAY4, 40000, 25).build()),
        ),
        one(
            "v6 SYN to 25 at the relay",
            pass(Frame::tcp6(VM6, RELAY6, 40000, 25).build()),
        ),
        one(
            "v4 SYN to the relay, source-routed on to the internet",
            drop(lsrr_to_relay, HELD),
        ),
        one(
            "v6 SYN to the relay with a routing header left to follow",
            drop(routed_to_relay, HELD),
        ),
        // --- identity is the interface --------------------------------
        one(
            "forged source: the relay's address",
            drop(Frame::tcp4(RELAY4, INTERNET4, 40000, 25).build(), HELD),
        ),
        one(
            "forged source: another VM's MAC and address",
            drop(forged, HELD),
        ),
        one(
            "to a broadcast MAC",
            drop(tcp4(25).macs(VM_MAC, [0xff; 6]).build(), HELD),
        ),
        // --- VLAN tags --------------------------------------------------
        one("802.1Q SYN to 25", drop(tcp4(25).dot1q(10).build(), HELD)),
        one(
            "QinQ (802.1ad, 802.1Q) v6 SYN to 25",
            drop(tcp6(25).dot1ad(10).dot1q(20).build(), HELD),
        ),
        one(
            "0x9100 outer tag SYN to 25",
            drop(tcp4(25).vlan(0x9100, 7).dot1q(8).build(), HELD),
        ),
        one(
            "QinQ SYN to 587",
            pass(tcp4(587).dot1ad(10).dot1q(20).build()),
        ),
        // Eight tags and eight extension headers are walked (README, "What
        // is held back"); one more is held back whatever follows.
        one(
            "the deepest VLAN stack walked, SYN to 25",
            drop(vlans(tcp4(25), 8).build(), HELD),
        ),
        one(
            "the deepest VLAN stack walked, v6 SYN to 443",
            pass(vlans(tcp6(443), 8).build()),
        ),
        one(
            "a VLAN stack too deep, even to 587",
            drop(vlans(tcp4(587), 9).build(), MALFORMED),
        ),
        one("a frame cut inside a VLAN tag", drop(cut_vlan, MALFORMED)),
        // --- IPv4 headers -----------------------------------------------
        one(
            "IPv4 options (IHL 15), SYN to 25",
            drop(tcp4(25).ipv4_options(10).build(), HELD),
        ),
        one(
            "IPv4 options (IHL 15), SYN to 587",
            pass(tcp4(587).ipv4_options(10).build()),
        ),
        one("IPv4 IHL 3", drop(bad_ihl, MALFORMED)),
        one(
            "IPv4 total length beyond the frame",
            drop(with_total_len(tcp4(587).build(), 1400), MALFORMED),
        ),
        one(
            "IPv4 total length shorter than IHL",
            drop(with_total_len(tcp4(587).build(), 12), MALFORMED),
        ),
        one("IPv4 cut before the TCP ports", drop(short_tcp, MALFORMED)),
        one(
            "IPv4 authentication header, then TCP to 25",
            drop(tcp4(25).ipv4_auth(6).build(), HELD),
        ),
        one(
            "IPv4 authentication header, then TCP to 587",
            pass(tcp4(587).ipv4_auth(6).build()),
        ),
        // --- IPv6 extension headers ---------------------------------------
        one(
            "v6 hop-by-hop, routing, destination options, SYN to 25",
            drop(
                tcp6(25)
                    .ipv6_ext(0, 8)
                    .ipv6_ext(43, 24)
                    .ipv6_ext(60, 16)
                    .build(),
                HELD,
            ),
        ),
        one(
            "v6 extension headers, SYN to 443",
            pass(tcp6(443).ipv6_ext(0, 8).ipv6_ext(60, 8).build()),
        ),
        one(
            "the longest IPv6 chain walked, SYN to 25",
            drop(ext6(tcp6(25), 8).build(), HELD),
        ),
        one(
            "the longest IPv6 chain walked, SYN to 443",
            pass(ext6(tcp6(443), 8).build()),
        ),
        one(
            "an IPv6 chain too long, even to 443",
            drop(ext6(tcp6(443), 9).build(), MALFORMED),
        ),
        one("an IPv6 chain cut short", drop(cut_ext, MALFORMED)),
        one(
            "v6 authentication header, then TCP to 25",
            drop(tcp6(25).ipv6_ext(51, 16).build(), HELD),
        ),
        one(
            "v6 two fragment headers",
            drop(
                tcp6(443)
                    .fragment(5, 0, true)
                    .ipv6_ext_after_fragment(44, 8)
                    .build(),
                MALFORMED,
            ),
        ),
        one(
            "v6 atomic fragment (offset 0, no more) to 25",
            drop(tcp6(25).fragment(7, 0, false).build(), HELD),
        ),
        one(
            "v6 atomic fragment to 443",
            pass(tcp6(443).fragment(8, 0, false).build()),
        ),
        // --- fragments ------------------------------------------------------
        seq(
            "v4 SYN to 25 in fragments: the first decides, the rest follow",
            vec![
                drop(first4(11, INTERNET4, 25), HELD),
                drop(later4(11, 25, 4, true), HELD),
                drop(later4(11, 25, 8, false), HELD),
            ],
        ),
        seq(
            "v4 fragments to 443 flow",
            vec![
                pass(first4(12, INTERNET4, 443)),
                pass(later4(12, 443, 4, true)),
                pass(later4(12, 443, 8, false)),
            ],
        ),
        seq(
            "v4 later fragment whose first is unknown",
            vec![drop(later4(13, 25, 4, false), ORPHAN)],
        ),
        seq(
            "v4 fragments out of order: a later one first holds the datagram",
            vec![
                drop(later4(14, 443, 4, false), ORPHAN),
                drop(first4(14, INTERNET4, 443), ORPHAN),
            ],
        ),
        seq(
            "v4 first fragment too short for the TCP header, and its rest",
            vec![
                drop(tiny_first, MALFORMED),
                drop(later4(21, 443, 1, false), MALFORMED),
            ],
        ),
        seq(
            "v4 later fragment overlapping a passing datagram's TCP header",
            vec![
                pass(first4(15, INTERNET4, 443)),
                drop(later4(15, 443, 1, true), MALFORMED),
                drop(later4(15, 443, 8, false), MALFORMED),
            ],
        ),
        seq(
            "v4 duplicate first fragment, to 25 this time",
            vec![
                pass(first4(16, INTERNET4, 443)),
                drop(first4(16, INTERNET4, 25), HELD),
                drop(later4(16, 443, 8, false), HELD),
                drop(first4(16, INTERNET4, 443), HELD),
            ],
        ),
        seq(
            "v4 duplicated later fragment of a passing datagram",
            vec![
                pass(first4(17, INTERNET4, 443)),
                pass(later4(17, 443, 8, false)),
                pass(later4(17, 443, 8, false)),
            ],
        ),
        seq(
            "v4 fragments of a SYN to 25 at the relay",
            vec![
                pass(first4(18, RELAY4, 25)),
                pass(
                    Frame::tcp4(VM4, RELAY4, 40000, 25)
                        .fragment(18, 4, false)
                        .payload(&[0; 16])
                        .build(),
                ),
            ],
        ),
        seq(
            "v4 orphan fragment to the relay",
            vec![pass(
                Frame::tcp4(VM4, RELAY4, 40000, 25)
                    .fragment(19, 4, false)
                    .payload(&[0; 16])
                    .build(),
            )],
        ),
        seq(
            "v4 later UDP fragment (IPv4 reassembles by protocol)",
            vec![pass(
                Frame::udp4(VM4, INTERNET4, 40000, 53)
                    .fragment(20, 4, false)
                    .payload(&[0; 24])
                    .build(),
            )],
        ),
        seq(
            "v6 SYN to 25 in fragments",
            vec![
                drop(first6(31, 25), HELD),
                drop(later6(31, 4, true), HELD),
                drop(later6(31, 8, false), HELD),
            ],
        ),
        seq(
            "v6 fragments to 443 flow",
            vec![pass(first6(32, 443)), pass(later6(32, 4, false))],
        ),
        seq(
            "v6 UDP fragments flow (remembered as passing)",
            vec![
                pass(
                    Frame::udp6(VM6, INTERNET6, 40000, 53)
                        .fragment(33, 0, true)
                        .payload(&[0; 24])
                        .build(),
                ),
                pass(later6(33, 4, false)),
            ],
        ),
        seq(
            "v6 later fragment whose first is unknown",
            vec![drop(later6(34, 4, false), ORPHAN)],
        ),
        seq(
            "v6 first fragment without the whole header chain (RFC 7112)",
            vec![
                drop(chain_cut6, MALFORMED),
                drop(later6(61, 2, false), MALFORMED),
            ],
        ),
        seq(
            "v6 fragments behind extension headers, to 25",
            vec![drop(
                tcp6(25)
                    .ipv6_ext(0, 8)
                    .fragment(35, 0, true)
                    .ipv6_ext_after_fragment(60, 8)
                    .payload(&[0; 16])
                    .build(),
                HELD,
            )],
        ),
    ]
}
