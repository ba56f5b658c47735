//! The attempt log and the decoding of events, without a kernel.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use chrono::Utc;
use egress_guard_common::maps::{AttemptEvent, EVENT_AUDIT, FAMILY_V4, FAMILY_V6};

use super::{Attempt, AttemptLog, Clock, MAX_OPEN_WINDOWS, Who, monotonic_ns};
use crate::state::{RECENT_PER_VM, RecentAttempts};

fn event(ts_ns: u64, dst_last: u8, flags: u8) -> AttemptEvent {
    let mut src = [0u8; 16];
    src[..4].copy_from_slice(&[10, 0, 0, 4]);
    let mut dst = [0u8; 16];
    dst[..4].copy_from_slice(&[198, 51, 100, dst_last]);
    AttemptEvent {
        ts_ns,
        vm_key: 7,
        ifindex: 3,
        src_port: 40000u16.to_be_bytes(),
        dst_port: 25u16.to_be_bytes(),
        src,
        dst,
        family: FAMILY_V4,
        flags,
        pad: [0; 6],
    }
}

fn who() -> Who {
    Who {
        vm: "web-1".into(),
        subscription: "contoso".into(),
        interface: "tap1".into(),
    }
}

#[test]
fn events_decode_from_their_kernel_layout() {
    let e = event(123, 2, EVENT_AUDIT);
    let bytes = e.to_bytes();
    assert_eq!(AttemptEvent::from_bytes(&bytes), Some(e));

    let clock = Clock { offset_ns: 1_000 };
    let a = Attempt::from_event(&e, &clock).unwrap();
    assert_eq!(a.src, "10.0.0.4".parse::<IpAddr>().unwrap());
    assert_eq!(a.dst, "198.51.100.2".parse::<IpAddr>().unwrap());
    assert_eq!((a.src_port, a.dst_port), (40000, 25));
    assert!(a.audit);
    assert_eq!(a.at.timestamp_nanos_opt(), Some(1_123));

    let mut v6 = e;
    v6.family = FAMILY_V6;
    v6.dst = "2001:db8::25".parse::<Ipv6Addr>().unwrap().octets();
    let a = Attempt::from_event(&v6, &clock).unwrap();
    assert_eq!(a.dst, "2001:db8::25".parse::<IpAddr>().unwrap());
    let mut bad = e;
    bad.family = 9;
    assert_eq!(Attempt::from_event(&bad, &clock), None);
}

#[test]
fn the_clock_maps_monotonic_time_to_now() {
    let clock = Clock::now();
    let wall = clock.wall(monotonic_ns());
    let drift = (Utc::now() - wall).num_milliseconds().abs();
    assert!(drift < 1000, "{drift} ms");
}

#[test]
fn repeats_within_the_window_share_one_recent_entry() {
    let clock = Clock { offset_ns: 0 };
    let mut log = AttemptLog::new(Duration::from_secs(10), RecentAttempts::default());
    let second = 1_000_000_000;
    for i in 0..5 {
        let a = Attempt::from_event(&event(i * second, 2, 0), &clock).unwrap();
        log.record(&a, &who());
    }
    assert_eq!(log.open.len(), 1);
    assert_eq!(log.open.values().next().unwrap().count, 5);
    // Another destination opens its own window and its own entry.
    let a = Attempt::from_event(&event(5 * second, 3, 0), &clock).unwrap();
    log.record(&a, &who());
    assert_eq!(log.open.len(), 2);
    let recent = log.take_changed().unwrap().vms["web-1"].clone();
    assert_eq!(recent.len(), 2);
    assert_eq!(recent[0].dst, "198.51.100.3".parse::<IpAddr>().unwrap());
    assert_eq!(recent[1].count, 5);
    assert!(log.take_changed().is_none());

    // The windows end: both close.
    log.flush(5 * second);
    assert_eq!(log.open.len(), 2);
    log.flush(20 * second);
    assert!(log.open.is_empty());
    // After the window, the same destination is a new entry.
    let a = Attempt::from_event(&event(30 * second, 2, 0), &clock).unwrap();
    log.record(&a, &who());
    assert_eq!(log.recent().vms["web-1"].len(), 3);

    log.retain_vms(|vm| vm != "web-1");
    assert!(log.recent().vms.is_empty());
    assert!(log.take_changed().is_some());
}

#[test]
fn recent_attempts_keep_the_newest_few() {
    let clock = Clock { offset_ns: 0 };
    let mut log = AttemptLog::new(Duration::from_secs(1), RecentAttempts::default());
    for i in 0..(RECENT_PER_VM as u8 + 5) {
        let a = Attempt::from_event(&event(u64::from(i), i, 0), &clock).unwrap();
        log.record(&a, &who());
    }
    let list = &log.recent().vms["web-1"];
    assert_eq!(list.len(), RECENT_PER_VM);
    assert_eq!(
        list[0].dst,
        IpAddr::V4(Ipv4Addr::new(198, 51, 100, RECENT_PER_VM as u8 + 4))
    );
}

#[test]
fn open_windows_are_bounded() {
    let clock = Clock { offset_ns: 0 };
    let mut log = AttemptLog::new(Duration::from_hours(1), RecentAttempts::default());
    for i in 0..(MAX_OPEN_WINDOWS as u64 + 10) {
        let mut e = event(i, 0, 0);
        e.dst[..4].copy_from_slice(&(i as u32).to_be_bytes());
        let a = Attempt::from_event(&e, &clock).unwrap();
        log.record(&a, &who());
    }
    assert_eq!(log.open.len(), MAX_OPEN_WINDOWS);
}
