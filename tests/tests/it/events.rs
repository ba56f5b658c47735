//! The kernel side of blocked-attempt events, with BPF_PROG_TEST_RUN on
//! crafted frames: which segments are attempts, what an event says, the
//! per-VM event rate, and that what is not sent is counted. Every frame
//! goes through both programs (XDP and TC).
//!
//! Without a context, a test run's packet comes in on ifindex 1 (the
//! loopback of the caller's namespace), so the blocked VM's entry is put
//! there: the maps are this test's own (not pinned), nothing else sees them.
//! Needs root (CAP_BPF).

use aya::maps::RingBuf;
use egress_guard::{
    datapath::Datapath,
    events::{Attempt, Clock, monotonic_ns},
};
use egress_guard_common::{
    craft::{Frame, addr::*},
    maps::{
        ACTION_DROP, AttemptEvent, Attempts, Config, EVENT_BURST, IfaceEntry, MODE_AUDIT,
        MODE_ENFORCE, VERDICT_ALLOW, VERDICT_BLOCK, reason,
    },
    parse::{TCP_ACK, TCP_SYN},
};
use egress_guard_tests::testrun::{self, Hook, Verdict};

use crate::fixtures::serial;

const VM_KEY: u64 = 0xB10C;
/// The ifindex of a test run without a context.
const IFINDEX: u32 = 1;

struct Bench {
    datapath: Datapath,
    ring: RingBuf<aya::maps::MapData>,
}

impl Bench {
    fn new(mode: u32, verdict: u32) -> Self {
        let config = Config {
            mode,
            action: ACTION_DROP,
            generation: 1,
            ..Config::default()
        };
        let mut datapath = testrun::load(config, &[25], &[], &[(IFINDEX, VM_KEY, verdict)]);
        let ring = datapath.take_events().expect("the ring buffer");
        Self { datapath, ring }
    }

    /// Runs `frame` through XDP, then TC; returns whether each dropped it.
    fn run(&mut self, frame: &[u8]) -> (bool, bool) {
        let mut dropped = |hook| match testrun::run(&mut self.datapath, hook, None, frame).verdict {
            Verdict::Drop => true,
            Verdict::Pass => false,
            Verdict::Reply => panic!("{hook:?} replied under action drop"),
        };
        let xdp = dropped(Hook::Xdp);
        (xdp, dropped(Hook::Tc))
    }

    fn attempts(&self) -> Attempts {
        self.datapath
            .maps
            .attempts_by_key()
            .unwrap()
            .remove(&VM_KEY)
            .unwrap_or_default()
    }

    fn policy_packets(&self) -> u64 {
        self.datapath
            .maps
            .counters_by_key()
            .unwrap()
            .get(&VM_KEY)
            .map_or(0, |c| c.packets[reason::POLICY])
    }

    /// Every event in the ring now.
    fn events(&mut self) -> Vec<AttemptEvent> {
        let mut out = Vec::new();
        while let Some(item) = self.ring.next() {
            out.push(AttemptEvent::from_bytes(&item).expect("an AttemptEvent record"));
        }
        out
    }
}

fn v4(a: [u8; 4]) -> [u8; 16] {
    let mut out = [0; 16];
    out[..4].copy_from_slice(&a);
    out
}

#[test]
fn a_syn_to_a_held_port_is_an_attempt_and_its_event_says_who_where_and_when() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::new(MODE_ENFORCE, VERDICT_BLOCK);
    let before = monotonic_ns();

    // Not attempts: held back all the same, but not SYNs without ACK.
    let not_attempts = [
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .flags(TCP_ACK)
            .payload(b"EHLO x\r\n")
            .build(),
        Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .flags(TCP_SYN | TCP_ACK)
            .build(),
    ];
    for frame in &not_attempts {
        assert_eq!(bench.run(frame), (true, true));
    }
    // Passes: not to a held port.
    assert_eq!(
        bench.run(&Frame::tcp4(VM4, INTERNET4, 40000, 587).build()),
        (false, false)
    );
    // Malformed: held back, but nothing says it is a SYN.
    let mut bad_ihl = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    bad_ihl[14] = 0x43;
    assert_eq!(bench.run(&bad_ihl), (true, true));
    assert_eq!(bench.attempts(), Attempts::default());
    assert!(bench.events().is_empty());
    assert_eq!(bench.policy_packets(), 4);

    // Two SYNs, one of each family, each through both programs.
    let syn4 = Frame::tcp4(VM4, INTERNET4, 40001, 25).build();
    let syn6 = Frame::tcp6(VM6, INTERNET6, 40002, 25).build();
    assert_eq!(bench.run(&syn4), (true, true));
    assert_eq!(bench.run(&syn6), (true, true));
    let after = monotonic_ns();
    assert_eq!(
        bench.attempts(),
        Attempts {
            attempts: 4,
            events: 4,
            rate_limited: 0,
            ring_full: 0,
        }
    );
    let events = bench.events();
    assert_eq!(events.len(), 4, "{events:?}");
    for (i, e) in events.iter().enumerate() {
        let v6 = i >= 2;
        assert_eq!(e.vm_key, VM_KEY);
        assert_eq!(e.ifindex, IFINDEX);
        assert_eq!(e.family, if v6 { 6 } else { 4 });
        assert_eq!(e.flags, 0, "not audit");
        assert_eq!(e.src, if v6 { VM6 } else { v4(VM4) });
        assert_eq!(e.dst, if v6 { INTERNET6 } else { v4(INTERNET4) });
        assert_eq!(
            u16::from_be_bytes(e.src_port),
            if v6 { 40002 } else { 40001 }
        );
        assert_eq!(u16::from_be_bytes(e.dst_port), 25);
        // The programs read the coarse clock: up to a tick (at most 10 ms)
        // behind.
        let coarse = before.saturating_sub(10_000_000);
        assert!(
            (coarse..=after).contains(&e.ts_ns),
            "timestamp {} not within {coarse}..={after}",
            e.ts_ns
        );
        // The agent's reading of it: wall time now, addresses as given.
        let a = Attempt::from_event(e, &Clock::now()).unwrap();
        let lag = chrono::Utc::now() - a.at;
        assert!(lag.num_seconds().abs() < 5, "{a:?}");
        assert_eq!(a.dst_port, 25);
    }
    assert_eq!(bench.policy_packets(), 8);
}

#[test]
fn events_beyond_the_vms_rate_are_counted_as_lost_and_every_attempt_is_counted() {
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::new(MODE_ENFORCE, VERDICT_BLOCK);
    let sent = 40u64;
    for i in 0..sent / 2 {
        let frame = Frame::tcp4(VM4, INTERNET4, 41000 + i as u16, 25).build();
        assert_eq!(bench.run(&frame), (true, true));
    }
    let a = bench.attempts();
    let events = bench.events();
    println!("{sent} SYNs: {a:?}");
    assert_eq!(a.attempts, sent, "every SYN counted");
    assert_eq!(a.events + a.rate_limited + a.ring_full, sent);
    assert_eq!(a.events, events.len() as u64);
    // A burst, plus what the rate (one every 500 ms) allows while the test
    // runs, plus one per CPU racing at the limit.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
    assert!(
        a.events >= EVENT_BURST && a.events <= EVENT_BURST + 2 + cpus,
        "{} events sent: expected the burst of {EVENT_BURST} and little more",
        a.events
    );
    assert_eq!(a.ring_full, 0);
    assert!(a.rate_limited >= sent - EVENT_BURST - 2 - cpus);
    // The first ones are sent, in order.
    let ports: Vec<u16> = events
        .iter()
        .map(|e| u16::from_be_bytes(e.src_port))
        .collect();
    assert_eq!(ports[0], 41000);
}

#[test]
fn audit_mode_reports_attempts_that_pass_and_allowed_vms_have_none() {
    let _serial = serial::shared(module_path!());
    let mut audit = Bench::new(MODE_AUDIT, VERDICT_BLOCK);
    let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    assert_eq!(audit.run(&syn), (false, false), "audit holds nothing back");
    assert_eq!(audit.attempts().attempts, 2);
    let events = audit.events();
    assert_eq!(events.len(), 2);
    assert!(
        events.iter().all(|e| e.flags == 1),
        "audit flag: {events:?}"
    );
    assert!(
        Attempt::from_event(&events[0], &Clock::now())
            .unwrap()
            .audit
    );

    let mut allowed = Bench::new(MODE_ENFORCE, VERDICT_ALLOW);
    assert_eq!(allowed.run(&syn), (false, false));
    assert_eq!(allowed.attempts(), Attempts::default());
    assert!(allowed.events().is_empty());
}

#[test]
fn events_that_find_the_ring_full_are_counted_as_ring_full() {
    // More VMs than the ring holds bursts of: each VM's first 10 SYNs are
    // within its rate, and the ring (256 KiB, 72 bytes a record) fills.
    const VMS: u64 = 400;
    let _serial = serial::shared(module_path!());
    let mut bench = Bench::new(MODE_ENFORCE, VERDICT_BLOCK);
    let frame = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
    for vm in 0..VMS {
        bench
            .datapath
            .maps
            .set_interface(
                IFINDEX,
                IfaceEntry {
                    vm_key: 0x1000 + vm,
                    verdict: VERDICT_BLOCK,
                    flags: 0,
                },
            )
            .unwrap();
        for _ in 0..EVENT_BURST / 2 {
            assert_eq!(bench.run(&frame), (true, true));
        }
    }
    let by_key = bench.datapath.maps.attempts_by_key().unwrap();
    let total = by_key.values().fold(Attempts::default(), |mut sum, a| {
        sum.add(a);
        sum
    });
    println!("{VMS} VMs x {EVENT_BURST} SYNs: {total:?}");
    assert_eq!(by_key.len() as u64, VMS);
    assert_eq!(total.attempts, VMS * EVENT_BURST);
    assert_eq!(
        total.events + total.rate_limited + total.ring_full,
        total.attempts
    );
    assert!(
        total.ring_full > 0,
        "the ring should have filled: {total:?}"
    );
    let records = 256 * 1024 / (std::mem::size_of::<AttemptEvent>() as u64 + 8);
    assert!(
        total.events <= records && total.events + 10 >= records,
        "{} events in a ring of {records} records",
        total.events
    );
    // What was sent is what the ring holds, and reading it makes room.
    assert_eq!(bench.events().len() as u64, total.events);
    assert_eq!(bench.run(&frame), (true, true));
    let after = bench.datapath.maps.attempts_by_key().unwrap()[&(0x1000 + VMS - 1)];
    assert_eq!(after.attempts, EVENT_BURST + 2);
}
