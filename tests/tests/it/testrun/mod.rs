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
//!
//! - [`corpus`]: the crafted cases; [`verdicts`]: the corpus, audit mode and
//!   verdict changes; [`replies`]: the `reset` and `icmp` replies and their
//!   rate limit; [`fuzz`]: the programs against the host parser.

mod cases;
mod corpus;
mod fuzz;
mod replies;
mod verdicts;

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
use cases::*;
use corpus::corpus;

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
