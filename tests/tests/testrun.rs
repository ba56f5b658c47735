//! The loaded kernel programs, run with BPF_PROG_TEST_RUN on crafted frames,
//! with the ingress ifindex given in the context so that per-VM verdicts are
//! exercised. Every case runs through both programs (XDP and TC).
//!
//! Needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN for a network namespace).

use std::collections::BTreeSet;

use aya::{TestRun as _, TestRunOptions};
use egress_guard::datapath::{Capacities, Datapath, KernelState};
use egress_guard_common::{
    craft::{Frame, addr::*},
    maps::{
        ACTION_DROP, Config, Counters, IfaceEntry, MODE_AUDIT, MODE_ENFORCE, VERDICT_ALLOW,
        VERDICT_BLOCK, reason,
    },
};
use thread_netns::ThreadNetns;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;
const TC_ACT_SHOT: u32 = 2;
/// TC_ACT_UNSPEC (-1): under tcx, "next program" (we pass, others decide).
const TC_NEXT: u32 = u32::MAX;

const EXEMPT_KEY: u64 = 0xE;
const BLOCKED_KEY: u64 = 0xB;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Pass,
    Drop,
}

/// A namespace with three interfaces besides lo: one of an exempt VM, one
/// of a blocked VM, one enforced but with no map entry.
struct Bench {
    netns: ThreadNetns,
    datapath: Datapath,
    exempt: u32,
    blocked: u32,
    unlisted: u32,
}

impl Bench {
    fn new(mode: u32) -> Self {
        let netns = ThreadNetns::new("testrun");
        netns.run(&[
            "ip", "link", "add", "exempt0", "type", "veth", "peer", "exempt1",
        ]);
        netns.run(&[
            "ip", "link", "add", "blocked0", "type", "veth", "peer", "blocked1",
        ]);
        netns.run(&[
            "ip", "link", "add", "other0", "type", "veth", "peer", "other1",
        ]);
        let exempt = netns.ifindex("exempt0");
        let blocked = netns.ifindex("blocked0");
        let unlisted = netns.ifindex("other0");

        let mut datapath =
            Datapath::load_unpinned(Capacities::default()).expect("loading the programs");
        let mut desired = KernelState {
            config: Config {
                mode,
                action: ACTION_DROP,
                generation: 1,
                ..Config::default()
            },
            ports: BTreeSet::from([25, 465]),
            ..KernelState::default()
        };
        desired.set_allowed(&[
            "198.51.100.25/32".parse().unwrap(),
            "2001:db8:100::25/128".parse().unwrap(),
        ]);
        desired.ifaces.insert(
            exempt,
            IfaceEntry {
                vm_key: EXEMPT_KEY,
                verdict: VERDICT_ALLOW,
                flags: 0,
            },
        );
        desired.ifaces.insert(
            blocked,
            IfaceEntry {
                vm_key: BLOCKED_KEY,
                verdict: VERDICT_BLOCK,
                flags: 0,
            },
        );
        let actual = datapath.maps.read_state().expect("reading the maps");
        datapath
            .maps
            .apply(&actual, &desired)
            .expect("writing the maps");
        Self {
            netns,
            datapath,
            exempt,
            blocked,
            unlisted,
        }
    }

    /// Runs `frame` as if received on `ifindex`, through XDP and through TC,
    /// and checks both agree.
    fn run(&mut self, ifindex: u32, frame: &[u8]) -> Verdict {
        let _inside = self.netns.enter();
        // struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex
        let mut xdp_md = [0u8; 24];
        xdp_md[4..8].copy_from_slice(&(frame.len() as u32).to_ne_bytes());
        xdp_md[12..16].copy_from_slice(&ifindex.to_ne_bytes());
        let xdp = self
            .datapath
            .xdp()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&xdp_md),
                ..TestRunOptions::default()
            })
            .expect("XDP test run")
            .return_value;

        // struct __sk_buff (192 bytes), ifindex at offset 40.
        let mut skb = [0u8; 192];
        skb[40..44].copy_from_slice(&ifindex.to_ne_bytes());
        let tc = self
            .datapath
            .tc()
            .unwrap()
            .test_run(TestRunOptions {
                data_in: Some(frame),
                ctx_in: Some(&skb),
                ..TestRunOptions::default()
            })
            .expect("TC test run")
            .return_value;

        let xdp = match xdp {
            XDP_PASS => Verdict::Pass,
            XDP_DROP => Verdict::Drop,
            other => panic!("XDP returned {other}"),
        };
        let tc = match tc {
            TC_NEXT => Verdict::Pass,
            TC_ACT_SHOT => Verdict::Drop,
            other => panic!("TC returned {other}"),
        };
        assert_eq!(xdp, tc, "XDP and TC disagree");
        xdp
    }

    fn counters(&self, key: u64) -> Counters {
        self.datapath
            .maps
            .counters_by_key()
            .unwrap()
            .remove(&key)
            .unwrap_or_default()
    }
}

/// One crafted frame and what both programs must do with it on each interface.
struct Case {
    name: &'static str,
    frame: Vec<u8>,
    blocked: Verdict,
    /// The counter reason a held-back frame is counted under.
    reason: Option<usize>,
}

fn case(name: &'static str, frame: Vec<u8>, blocked: Verdict, reason: Option<usize>) -> Case {
    Case {
        name,
        frame,
        blocked,
        reason,
    }
}

#[allow(clippy::too_many_lines, reason = "one table, one row a case")]
fn cases() -> Vec<Case> {
    use Verdict::{Drop, Pass};
    let held = Some(reason::POLICY);
    let malformed = Some(reason::MALFORMED);
    let mut bad_ihl = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    bad_ihl[14] = 0x43;
    let mut short_tcp = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    short_tcp.truncate(34 + 2);
    short_tcp[16..18].copy_from_slice(&22u16.to_be_bytes());
    let mut deep = Frame::tcp4(VM4, INTERNET4, 40000, 25);
    for vid in 0..=egress_guard_common::parse::MAX_VLAN_TAGS as u16 {
        deep = deep.dot1q(vid);
    }
    vec![
        case(
            "v4 SYN to 25",
            Frame::tcp4(VM4, INTERNET4, 40000, 25).build(),
            Drop,
            held,
        ),
        case(
            "v6 SYN to 25",
            Frame::tcp6(VM6, INTERNET6, 40000, 25).build(),
            Drop,
            held,
        ),
        case(
            "v4 SYN to 465 (held too)",
            Frame::tcp4(VM4, INTERNET4, 40000, 465).build(),
            Drop,
            held,
        ),
        case(
            "v4 ACK to 25 (not only SYNs)",
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .flags(0x10)
                .payload(b"EHLO x\r\n")
                .build(),
            Drop,
            held,
        ),
        case(
            "v4 SYN to 587",
            Frame::tcp4(VM4, INTERNET4, 40000, 587).build(),
            Pass,
            None,
        ),
        case(
            "v6 SYN to 443",
            Frame::tcp6(VM6, INTERNET6, 40000, 443).build(),
            Pass,
            None,
        ),
        case(
            "v4 UDP to 25",
            Frame::udp4(VM4, INTERNET4, 40000, 25).build(),
            Pass,
            None,
        ),
        case(
            "v6 UDP to 25",
            Frame::udp6(VM6, INTERNET6, 40000, 25).build(),
            Pass,
            None,
        ),
        case("ARP", Frame::arp(), Pass, None),
        case(
            "v4 reply from port 25",
            Frame::tcp4(VM4, INTERNET4, 25, 40000).flags(0x12).build(),
            Pass,
            None,
        ),
        case(
            "v4 SYN to 25 at the relay",
            Frame::tcp4(VM4, RELAY4, 40000, 25).build(),
            Pass,
            None,
        ),
        case(
            "v6 SYN to 25 at the relay",
            Frame::tcp6(VM6, RELAY6, 40000, 25).build(),
            Pass,
            None,
        ),
        case(
            "forged source: the relay's address as source",
            Frame::tcp4(RELAY4, INTERNET4, 40000, 25).build(),
            Drop,
            held,
        ),
        case(
            "802.1Q tagged SYN to 25",
            Frame::tcp4(VM4, INTERNET4, 40000, 25).dot1q(10).build(),
            Drop,
            held,
        ),
        case(
            "QinQ tagged v6 SYN to 25",
            Frame::tcp6(VM6, INTERNET6, 40000, 25)
                .dot1ad(10)
                .dot1q(20)
                .build(),
            Drop,
            held,
        ),
        case(
            "QinQ tagged SYN to 587",
            Frame::tcp4(VM4, INTERNET4, 40000, 587)
                .dot1ad(10)
                .dot1q(20)
                .build(),
            Pass,
            None,
        ),
        case("VLAN stack too deep", deep.build(), Drop, malformed),
        case(
            "IPv4 options (IHL 15) SYN to 25",
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .ipv4_options(10)
                .build(),
            Drop,
            held,
        ),
        case(
            "IPv4 options (IHL 15) SYN to 587",
            Frame::tcp4(VM4, INTERNET4, 40000, 587)
                .ipv4_options(10)
                .build(),
            Pass,
            None,
        ),
        case("IPv4 IHL 3", bad_ihl, Drop, malformed),
        case("TCP cut before the ports", short_tcp, Drop, malformed),
        case(
            "v6 hop-by-hop + routing + dest-opts, SYN to 25",
            Frame::tcp6(VM6, INTERNET6, 40000, 25)
                .ipv6_ext(0, 8)
                .ipv6_ext(43, 24)
                .ipv6_ext(60, 16)
                .build(),
            Drop,
            held,
        ),
        case(
            "v6 extension headers, SYN to 443",
            Frame::tcp6(VM6, INTERNET6, 40000, 443)
                .ipv6_ext(0, 8)
                .ipv6_ext(60, 8)
                .build(),
            Pass,
            None,
        ),
        case(
            "v4 first fragment of a SYN to 25",
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .fragment(9, 0, true)
                .build(),
            Drop,
            held,
        ),
        case(
            "v4 later TCP fragment",
            Frame::tcp4(VM4, INTERNET4, 40000, 25)
                .fragment(9, 4, false)
                .payload(&[0; 24])
                .build(),
            Drop,
            Some(reason::ORPHAN_FRAGMENT),
        ),
        case(
            "v4 later UDP fragment",
            Frame::udp4(VM4, INTERNET4, 40000, 53)
                .fragment(9, 4, false)
                .payload(&[0; 24])
                .build(),
            Pass,
            None,
        ),
    ]
}

#[test]
fn each_frame_gets_its_verdict_on_each_interface() {
    let mut bench = Bench::new(MODE_ENFORCE);
    let (exempt, blocked, unlisted) = (bench.exempt, bench.blocked, bench.unlisted);
    let mut expected_blocked = Counters::default();
    for case in cases() {
        // The exempt VM's traffic all passes, whatever it is.
        assert_eq!(
            bench.run(exempt, &case.frame),
            Verdict::Pass,
            "exempt: {}",
            case.name
        );
        assert_eq!(
            bench.run(blocked, &case.frame),
            case.blocked,
            "blocked: {}",
            case.name
        );
        // An enforced interface without an entry is treated as blocked.
        assert_eq!(
            bench.run(unlisted, &case.frame),
            case.blocked,
            "unlisted: {}",
            case.name
        );
        if let Some(why) = case.reason {
            assert_eq!(case.blocked, Verdict::Drop, "{}", case.name);
            // Both programs ran it once each.
            expected_blocked.packets[why] += 2;
            expected_blocked.bytes[why] += 2 * case.frame.len() as u64;
        }
        assert_eq!(
            bench.counters(BLOCKED_KEY),
            expected_blocked,
            "counters after {}",
            case.name
        );
    }
    assert_eq!(
        bench.counters(EXEMPT_KEY),
        Counters::default(),
        "an exempt VM is never counted"
    );
    // Unlisted interfaces are counted under key 0.
    assert_eq!(bench.counters(0), expected_blocked);
}

#[test]
fn audit_mode_counts_and_holds_nothing_back() {
    let mut bench = Bench::new(MODE_AUDIT);
    let blocked = bench.blocked;
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(bench.run(blocked, &syn), Verdict::Pass);
    let counters = bench.counters(BLOCKED_KEY);
    assert_eq!(counters.packets[reason::AUDIT], 2);
    assert_eq!(counters.packets[reason::POLICY], 0);
}

#[test]
fn a_verdict_change_takes_effect_on_the_next_packet() {
    let mut bench = Bench::new(MODE_ENFORCE);
    let blocked = bench.blocked;
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(bench.run(blocked, &syn), Verdict::Drop);
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
    assert_eq!(bench.run(blocked, &syn), Verdict::Pass);

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
    assert_eq!(bench.run(blocked, &syn), Verdict::Pass);
    let syn_2525 = Frame::tcp4(VM4, INTERNET4, 40000, 2525).build();
    assert_eq!(bench.run(blocked, &syn_2525), Verdict::Drop);
}

mod thread_netns {
    //! A network namespace the test thread can step into for a test run
    //! (TestRun resolves the context's ifindex in the caller's namespace).

    use std::{
        fs::File,
        os::fd::AsRawFd as _,
        process::Command,
        sync::atomic::{AtomicU32, Ordering},
    };

    pub struct ThreadNetns {
        name: String,
    }

    pub struct Inside {
        previous: File,
    }

    impl Drop for Inside {
        fn drop(&mut self) {
            // SAFETY: plain setns(2) on an fd we own.
            let rc = unsafe { libc::setns(self.previous.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "returning to the original network namespace");
        }
    }

    impl ThreadNetns {
        pub fn new(tag: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let name = format!(
                "egt-{}-{}-{tag}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            );
            let ns = Self { name };
            Self::host(&["ip", "netns", "add", &ns.name]);
            ns
        }

        fn host(args: &[&str]) -> String {
            let out = Command::new(args[0])
                .args(&args[1..])
                .output()
                .unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        }

        /// Runs a command inside the namespace.
        pub fn run(&self, args: &[&str]) -> String {
            let mut full = vec!["ip", "netns", "exec", &self.name];
            full.extend_from_slice(args);
            Self::host(&full)
        }

        pub fn ifindex(&self, ifname: &str) -> u32 {
            let out = self.run(&["cat", &format!("/sys/class/net/{ifname}/ifindex")]);
            out.trim().parse().expect("ifindex")
        }

        /// Moves the current thread into the namespace until the guard drops.
        pub fn enter(&self) -> Inside {
            let previous = File::open("/proc/thread-self/ns/net").expect("current netns");
            let target = File::open(format!("/var/run/netns/{}", self.name)).expect("test netns");
            // SAFETY: plain setns(2) on an fd we own.
            let rc = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "entering {}", self.name);
            Inside { previous }
        }
    }

    impl Drop for ThreadNetns {
        fn drop(&mut self) {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}
