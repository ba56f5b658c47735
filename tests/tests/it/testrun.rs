//! The loaded kernel programs, run with BPF_PROG_TEST_RUN on crafted frames,
//! with the ingress ifindex given in the context so that per-VM verdicts are
//! exercised. Every case runs through both programs (XDP and TC), on three
//! interfaces: an exempt VM's (everything passes, unparsed), a blocked VM's,
//! and an enforced interface with no entry (treated as blocked).
//!
//! - [`corpus`]: crafted packets, each with its exact verdict and the reason
//!   it is counted under; fragment cases are sequences, run in order.
//! - the `reset` and `icmp` actions: every field and checksum of each reply,
//!   read back with etherparse (an independent parser), and the per-VM reply
//!   rate limit;
//! - audit mode, and verdict changes taking effect on the next packet.
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for a network namespace).

use std::collections::BTreeSet;

use egress_guard::datapath::Datapath;
use egress_guard_common::{
    craft::{Frame, HOST_MAC, VM_MAC, addr::*},
    maps::{
        ACTION_DROP, ACTION_ICMP, ACTION_RESET, Config, Counters, IFACE_SLOT_COUNT, IfaceEntry,
        MODE_AUDIT, MODE_ENFORCE, VERDICT_ALLOW, VERDICT_BLOCK, reason,
    },
    parse::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN},
};
use egress_guard_tests::testrun::{self, Hook, Outcome, ThreadNetns, Verdict};
use etherparse::{
    Icmpv4Type, Icmpv6Type, LinkExtHeader, NetHeaders, PacketHeaders, TransportHeader,
    icmpv4::DestUnreachableHeader, icmpv6::DestUnreachableCode,
};

use crate::fixtures::serial;

const EXEMPT_KEY: u64 = 0xE;
const BLOCKED_KEY: u64 = 0xB;
/// Interfaces with no entry are counted under key 0.
const UNLISTED_KEY: u64 = 0;

/// A namespace with three interfaces besides lo (an exempt VM's, a blocked
/// VM's, one enforced but with no map entry) and the programs loaded with
/// the given global settings.
struct Bench {
    netns: ThreadNetns,
    datapath: Datapath,
    exempt: u32,
    blocked: u32,
    unlisted: u32,
    /// The same three with an ifindex beyond `EG_IFACE_SLOTS`, whose entries
    /// are in the `EG_IFACES` hash.
    exempt_high: u32,
    blocked_high: u32,
    unlisted_high: u32,
}

impl Bench {
    fn new(config: Config) -> Self {
        let netns = ThreadNetns::new("testrun");
        let exempt = netns.veth("exempt0", "exempt1");
        let blocked = netns.veth("blocked0", "blocked1");
        let unlisted = netns.veth("other0", "other1");
        let high = IFACE_SLOT_COUNT + 1000;
        let exempt_high = netns.veth_at("exempth0", "exempth1", high);
        let blocked_high = netns.veth_at("blockedh0", "blockedh1", high + 1);
        let unlisted_high = netns.veth_at("otherh0", "otherh1", high + 2);
        let datapath = testrun::load(
            config,
            &[25, 465],
            &["198.51.100.25/32", "2001:db8:100::25/128"],
            &[
                (exempt, EXEMPT_KEY, VERDICT_ALLOW),
                (blocked, BLOCKED_KEY, VERDICT_BLOCK),
                (exempt_high, EXEMPT_KEY, VERDICT_ALLOW),
                (blocked_high, BLOCKED_KEY, VERDICT_BLOCK),
            ],
        );
        Self {
            netns,
            datapath,
            exempt,
            blocked,
            unlisted,
            exempt_high,
            blocked_high,
            unlisted_high,
        }
    }

    fn enforce(action: u32) -> Self {
        Self::new(
            Config {
                mode: MODE_ENFORCE,
                action,
                generation: 1,
                ..Config::default()
            }
            .with_reply_rate(1000, 1000),
        )
    }

    /// Runs `frame` as if received on `ifindex`.
    fn run(&mut self, hook: Hook, ifindex: u32, frame: &[u8]) -> Outcome {
        let _inside = self.netns.enter();
        testrun::run(&mut self.datapath, hook, Some(ifindex), frame)
    }

    fn counters(&self, key: u64) -> Counters {
        self.datapath
            .maps
            .counters_by_key()
            .unwrap()
            .remove(&key)
            .unwrap_or_default()
    }

    /// Forgets every fragmented datagram (between runs of a sequence through
    /// one hook and through the other).
    fn forget_fragments(&mut self) {
        let keys: Vec<_> = self
            .datapath
            .maps
            .frags
            .keys()
            .collect::<Result<_, _>>()
            .unwrap();
        for key in keys {
            self.datapath.maps.frags.remove(&key).unwrap();
        }
    }
}

/// One packet of a case, what the programs must do with it on a blocked
/// interface, and the reason it is counted under.
struct Step {
    frame: Vec<u8>,
    verdict: Verdict,
    counted: Option<usize>,
}

/// A packet, or a sequence of fragments run in order.
struct Case {
    name: &'static str,
    steps: Vec<Step>,
}

const HELD: Option<usize> = Some(reason::POLICY);
const MALFORMED: Option<usize> = Some(reason::MALFORMED);
const ORPHAN: Option<usize> = Some(reason::ORPHAN_FRAGMENT);

fn pass(frame: Vec<u8>) -> Step {
    Step {
        frame,
        verdict: Verdict::Pass,
        counted: None,
    }
}

fn drop(frame: Vec<u8>, why: Option<usize>) -> Step {
    Step {
        frame,
        verdict: Verdict::Drop,
        counted: why,
    }
}

fn one(name: &'static str, step: Step) -> Case {
    Case {
        name,
        steps: vec![step],
    }
}

fn seq(name: &'static str, steps: Vec<Step>) -> Case {
    Case { name, steps }
}

/// Sets the IPv4 total length (at its usual offset in an untagged frame).
fn with_total_len(mut f: Vec<u8>, len: u16) -> Vec<u8> {
    f[16..18].copy_from_slice(&len.to_be_bytes());
    f
}

/// A later fragment: `offset` in 8-byte units, `len` bytes of payload.
fn later4(id: u32, dport: u16, offset: u16, more: bool) -> Vec<u8> {
    Frame::tcp4(VM4, INTERNET4, 40000, dport)
        .fragment(id, offset, more)
        .payload(&[0x5a; 32])
        .build()
}

fn later6(id: u32, offset: u16, more: bool) -> Vec<u8> {
    Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(id, offset, more)
        .payload(&[0x5a; 32])
        .build()
}

/// A first fragment carrying a whole TCP header and 16 bytes of data.
fn first4(id: u32, dst: [u8; 4], dport: u16) -> Vec<u8> {
    Frame::tcp4(VM4, dst, 40000, dport)
        .fragment(id, 0, true)
        .payload(&[0x5a; 16])
        .build()
}

fn first6(id: u32, dport: u16) -> Vec<u8> {
    Frame::tcp6(VM6, INTERNET6, 40000, dport)
        .fragment(id, 0, true)
        .payload(&[0x5a; 16])
        .build()
}

fn vlans(mut f: Frame, n: usize) -> Frame {
    for i in 0..n {
        f = if i % 2 == 0 {
            f.dot1ad(100 + i as u16)
        } else {
            f.dot1q(200 + i as u16)
        };
    }
    f
}

fn ext6(mut f: Frame, n: usize) -> Frame {
    // Destination options, 8 bytes each (the walk treats every kind alike).
    for _ in 0..n {
        f = f.ipv6_ext(60, 8);
    }
    f
}

#[allow(clippy::too_many_lines, reason = "one table, one row a case")]
fn corpus() -> Vec<Case> {
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

#[test]
fn the_corpus_gets_its_exact_verdicts_on_each_interface_and_hook() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_DROP);
    // Each role twice: an ifindex in `EG_IFACE_SLOTS`, one in `EG_IFACES`.
    let exempt = [bench.exempt, bench.exempt_high];
    let blocked = [bench.blocked, bench.blocked_high];
    let unlisted = [bench.unlisted, bench.unlisted_high];
    let corpus = corpus();
    let packets: usize = corpus.iter().map(|c| c.steps.len()).sum();
    assert!(packets >= 45, "the corpus has {packets} packets");
    let mut expected = Counters::default();
    for case in &corpus {
        for hook in [Hook::Xdp, Hook::Tc] {
            bench.forget_fragments();
            for (i, step) in case.steps.iter().enumerate() {
                let what = format!("{} (packet {}, {hook:?})", case.name, i + 1);
                // The exempt VM's traffic passes unparsed, whatever it is.
                for ifindex in exempt {
                    assert_eq!(
                        bench.run(hook, ifindex, &step.frame).verdict,
                        Verdict::Pass,
                        "exempt {ifindex}: {what}"
                    );
                }
                for ifindex in blocked.into_iter().chain(unlisted) {
                    let out = bench.run(hook, ifindex, &step.frame);
                    assert_eq!(out.verdict, step.verdict, "{ifindex}: {what}");
                    if out.verdict == Verdict::Pass {
                        assert_eq!(
                            out.frame, step.frame,
                            "a passing frame is untouched: {what}"
                        );
                    }
                }
                if let Some(why) = step.counted {
                    assert_eq!(step.verdict, Verdict::Drop, "{what}");
                    // Once on each of the two interfaces of each role.
                    expected.packets[why] += 2;
                    expected.bytes[why] += 2 * step.frame.len() as u64;
                }
                assert_eq!(
                    bench.counters(BLOCKED_KEY),
                    expected,
                    "counters after {what}"
                );
                assert_eq!(
                    bench.counters(UNLISTED_KEY),
                    expected,
                    "counters after {what}"
                );
            }
        }
    }
    assert_eq!(
        bench.counters(EXEMPT_KEY),
        Counters::default(),
        "an exempt VM is never counted"
    );
}

#[test]
fn audit_mode_counts_what_would_be_held_and_holds_nothing_back() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::new(Config {
        mode: MODE_AUDIT,
        action: ACTION_RESET,
        generation: 1,
        ..Config::default()
    });
    let blocked = bench.blocked;
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    let orphan = later4(40, 25, 4, false);
    let mut bad_ihl = syn.clone();
    bad_ihl[14] = 0x43;
    for hook in [Hook::Xdp, Hook::Tc] {
        bench.forget_fragments();
        for frame in [&syn, &orphan, &bad_ihl] {
            let out = bench.run(hook, blocked, frame);
            assert_eq!(out.verdict, Verdict::Pass, "{hook:?}");
            assert_eq!(&out.frame, frame, "{hook:?}: audit changes nothing");
        }
    }
    let counters = bench.counters(BLOCKED_KEY);
    assert_eq!(counters.packets[reason::AUDIT], 6);
    for why in [
        reason::POLICY,
        reason::MALFORMED,
        reason::ORPHAN_FRAGMENT,
        reason::RESET_SENT,
    ] {
        assert_eq!(counters.packets[why], 0, "{}", reason::NAMES[why]);
    }
}

#[test]
fn a_verdict_change_takes_effect_on_the_next_packet() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::enforce(ACTION_DROP);
    let blocked = bench.blocked;
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(bench.run(Hook::Xdp, blocked, &syn).verdict, Verdict::Drop);
    bench
        .datapath
        .maps
        .set_interface(
            blocked,
            IfaceEntry {
                vm_key: BLOCKED_KEY,
                verdict: VERDICT_ALLOW,
                flags: 0,
            },
        )
        .unwrap();
    assert_eq!(bench.run(Hook::Xdp, blocked, &syn).verdict, Verdict::Pass);

    // Ports and allowed destinations follow the maps too.
    let mut state = bench.datapath.maps.read_state().unwrap();
    assert_eq!(state.ports, BTreeSet::from([25, 465]));
    state.ifaces.get_mut(&blocked).unwrap().verdict = VERDICT_BLOCK;
    state.ports = BTreeSet::from([2525]);
    let actual = bench.datapath.maps.read_state().unwrap();
    let report = bench.datapath.maps.apply(&actual, &state).unwrap();
    // One interface entry and three bitmap words (25, 465 and 2525 sit in
    // words 0, 7 and 39).
    assert_eq!(report.written, 4, "{report:?}");
    assert_eq!(bench.run(Hook::Tc, blocked, &syn).verdict, Verdict::Pass);
    let syn_2525 = Frame::tcp4(VM4, INTERNET4, 40000, 2525).build();
    assert_eq!(
        bench.run(Hook::Tc, blocked, &syn_2525).verdict,
        Verdict::Drop
    );
}

// --- replies ------------------------------------------------------------

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

/// Whether BPF_PROG_TEST_RUN takes `frame` for `hook`: an Ethernet header,
/// and for an skb with an IPv4 or IPv6 EtherType the whole fixed IP header
/// (it refuses shorter ones with EINVAL; the XDP run, which takes them,
/// covers their parse).
fn test_run_takes(hook: Hook, frame: &[u8]) -> bool {
    match (hook, frame.get(12..14)) {
        (_, None) => false,
        (Hook::Tc, Some([0x08, 0x00])) => frame.len() >= 14 + 20,
        (Hook::Tc, Some([0x86, 0xdd])) => frame.len() >= 14 + 40,
        _ => true,
    }
}

/// The kernel programs against the host-compiled parser, on every frame of
/// the fuzzer's corpus and regressions (`ebpf/common/fuzz`): the fuzzer
/// checks the parser on the host; this checks that the programs, built for
/// BPF with their own packet access, fences and masks, decide as it does.
#[test]
fn the_programs_decide_as_the_host_parser_on_the_fuzz_corpus() {
    use egress_guard_common::{
        classify::{ClassKind, classify, later_fragment_may_be_tcp},
        parse::parse,
    };
    let _serial = serial::shared(module_path!());
    let netns = ThreadNetns::new("testrun");
    let blocked = netns.veth("blocked0", "blocked1");
    let mut datapath = testrun::load(
        Config {
            mode: MODE_ENFORCE,
            action: ACTION_DROP,
            generation: 1,
            ..Config::default()
        },
        &[25],
        &[],
        &[(blocked, BLOCKED_KEY, VERDICT_BLOCK)],
    );
    let fuzz = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../ebpf/common/fuzz");
    let mut files = Vec::new();
    for dir in ["corpus/parse", "regressions/parse"] {
        for entry in std::fs::read_dir(fuzz.join(dir)).expect("the fuzz corpus") {
            files.push(entry.unwrap().path());
        }
    }
    assert!(files.len() > 200, "{} files", files.len());
    let _inside = netns.enter();
    for file in &files {
        let frame = std::fs::read(file).unwrap();
        let class = classify(frame.as_slice(), &parse(frame.as_slice()), |p| p == 25);
        let expected = match class.kind {
            ClassKind::HeldPort | ClassKind::Unparseable => Verdict::Drop,
            // An orphan, which is held if it may belong to TCP.
            ClassKind::LaterFragment if later_fragment_may_be_tcp(&class.ip) => Verdict::Drop,
            ClassKind::Pass | ClassKind::FirstFragment | ClassKind::LaterFragment => Verdict::Pass,
        };
        for hook in [Hook::Xdp, Hook::Tc] {
            if !test_run_takes(hook, &frame) {
                continue;
            }
            // Each frame on its own: no fragment state from the one before.
            let keys: Vec<_> = datapath.maps.frags.keys().map(Result::unwrap).collect();
            for key in keys {
                datapath.maps.frags.remove(&key).unwrap();
            }
            let out = testrun::run(&mut datapath, hook, Some(blocked), &frame);
            assert_eq!(
                out.verdict,
                expected,
                "{hook:?} on {} ({:?})",
                file.display(),
                class.kind
            );
        }
    }
}
