//! Blocked connection attempts, from the kernel to the operator.
//!
//! The kernel programs count every SYN (without ACK) to a held port from a
//! blocked VM in `EG_ATTEMPTS`, and write an [`AttemptEvent`] about it to the
//! `EG_EVENTS` ring buffer when the VM is within its event rate (2 a second,
//! bursts of 10: `maps::EVENT_INTERVAL_NS`, `maps::EVENT_BURST`); an event
//! not written (over the rate, or the ring full) is counted there as lost.
//!
//! Here the agent reads the ring ([`EventReader`]), turns each event into a
//! log line that names the VM and its subscription ([`AttemptLog`]), and
//! summarises repeats: the first attempt from a VM to a destination (address
//! and port) is logged, the ones that follow within the repeat window
//! (`--repeat-window`, 60 s by default) are only counted, and one line with
//! the count ends the window. It also keeps each VM's last attempts
//! ([`RecentAttempts`], in the state directory) for `status --vm`.
//!
//! Log lines (`--log-format json` puts every field at the top level):
//!
//! - `blocked connection attempt`: `vm`, `subscription`, `interface`,
//!   `ifindex`, `family`, `src`, `src_port`, `dst`, `dst_port`, `at` (when
//!   the SYN arrived);
//! - `connection attempt let through (audit mode)`: the same, when the
//!   policy is in `mode: audit`;
//! - `repeated blocked connection attempts`: `vm`, `subscription`,
//!   `interface`, `family`, `src`, `dst`, `dst_port`, `count` (the
//!   attempts of the window, the first included), `first`, `last`,
//!   `window_seconds`, `audit` (the attempts were let through in audit
//!   mode: an attempt in audit mode never repeats a held-back one).

use std::{
    collections::{HashMap, hash_map::Entry},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use aya::maps::{MapData, RingBuf};
use chrono::{DateTime, SecondsFormat, Utc};
use egress_guard_common::maps::{AttemptEvent, FAMILY_V4, FAMILY_V6};
use tokio::io::{Interest, unix::AsyncFd};
use tracing::info;

use crate::state::{RECENT_PER_VM, RecentAttempt, RecentAttempts};

/// The default `--repeat-window`.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_mins(1);

/// Windows of repeats open at once at most; past it the oldest is closed
/// (and summarised) early. Bounds the agent's memory under a flood of
/// attempts to many destinations.
pub const MAX_OPEN_WINDOWS: usize = 16_384;

/// The `tracing` target of the attempt log lines.
pub const LOG_TARGET: &str = "egress_guard::attempts";

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec we own; the clocks
    // used here always exist.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// `CLOCK_MONOTONIC` now, in nanoseconds: the clock of
/// `bpf_ktime_get_ns`, which stamps the events.
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

/// Turns the kernel's monotonic timestamps into wall-clock time, by the
/// offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC` when it was made.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        Self {
            offset_ns: clock_ns(libc::CLOCK_REALTIME) - clock_ns(libc::CLOCK_MONOTONIC),
        }
    }

    /// The wall-clock time of monotonic time `mono_ns`.
    pub fn wall(&self, mono_ns: u64) -> DateTime<Utc> {
        let ns = i128::from(mono_ns) + self.offset_ns;
        let ns = i64::try_from(ns).unwrap_or(0);
        DateTime::from_timestamp_nanos(ns)
    }
}

/// One blocked connection attempt, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When the SYN arrived: the kernel's monotonic time, and the wall time.
    pub mono_ns: u64,
    pub at: DateTime<Utc>,
    pub vm_key: u64,
    pub ifindex: u32,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// The policy was in audit mode: the SYN passed.
    pub audit: bool,
}

impl Attempt {
    /// The attempt an event tells of; `None` for an event of an unknown
    /// family.
    pub fn from_event(event: &AttemptEvent, clock: &Clock) -> Option<Self> {
        let (src, dst) = match event.family {
            FAMILY_V4 => {
                let four = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                (four(&event.src), four(&event.dst))
            }
            FAMILY_V6 => (
                IpAddr::V6(Ipv6Addr::from(event.src)),
                IpAddr::V6(Ipv6Addr::from(event.dst)),
            ),
            _ => return None,
        };
        Some(Self {
            mono_ns: event.ts_ns,
            at: clock.wall(event.ts_ns),
            vm_key: event.vm_key,
            ifindex: event.ifindex,
            src,
            src_port: u16::from_be_bytes(event.src_port),
            dst,
            dst_port: u16::from_be_bytes(event.dst_port),
            audit: event.is_audit(),
        })
    }

    fn family(&self) -> &'static str {
        if self.src.is_ipv6() { "ipv6" } else { "ipv4" }
    }
}

/// Whose attempt it is, from the policy in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    /// The VM's name; `unknown:<interface>` for an interface that belongs to
    /// no VM.
    pub vm: String,
    /// Its subscription (empty for an unknown interface).
    pub subscription: String,
    /// The host-side interface the SYN came in on.
    pub interface: String,
}

/// The repeats of one attempt within a window.
#[derive(Clone, Debug)]
struct Window {
    first_mono: u64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    /// Attempts in the window, the first (logged on its own) included.
    count: u64,
    who: Who,
    src: IpAddr,
    dst: IpAddr,
    dst_port: u16,
    family: &'static str,
    audit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct WindowKey {
    vm_key: u64,
    dst: IpAddr,
    dst_port: u16,
    /// Attempts in audit mode are not repeats of held-back ones.
    audit: bool,
}

/// Logs attempts, summarises repeats, and keeps each VM's last attempts.
#[derive(Debug)]
pub struct AttemptLog {
    window: Duration,
    open: HashMap<WindowKey, Window>,
    recent: RecentAttempts,
    /// `recent` changed since it was last taken for saving.
    dirty: bool,
}

impl AttemptLog {
    /// A log whose repeat window is `window`, going on from the last
    /// attempts saved before.
    pub fn new(window: Duration, recent: RecentAttempts) -> Self {
        Self {
            window: window.max(Duration::from_millis(1)),
            open: HashMap::new(),
            recent,
            dirty: false,
        }
    }

    fn window_ns(&self) -> u64 {
        u64::try_from(self.window.as_nanos()).unwrap_or(u64::MAX)
    }

    /// One attempt: logged if it opens a window, counted if it repeats one,
    /// and remembered.
    pub fn record(&mut self, attempt: &Attempt, who: &Who) {
        let key = WindowKey {
            vm_key: attempt.vm_key,
            dst: attempt.dst,
            dst_port: attempt.dst_port,
            audit: attempt.audit,
        };
        let window_ns = self.window_ns();
        if !self.open.contains_key(&key) && self.open.len() >= MAX_OPEN_WINDOWS {
            self.close_oldest();
        }
        match self.open.entry(key) {
            Entry::Occupied(mut open) => {
                let w = open.get_mut();
                if attempt.mono_ns.saturating_sub(w.first_mono) < window_ns {
                    w.count += 1;
                    if attempt.at > w.last {
                        w.last = attempt.at;
                    }
                } else {
                    summarise(w, self.window);
                    log_first(attempt, who);
                    *w = Window::starting(attempt, who);
                }
            }
            Entry::Vacant(slot) => {
                log_first(attempt, who);
                slot.insert(Window::starting(attempt, who));
            }
        }
        self.remember(attempt, who);
    }

    /// Closes the windows that ended by monotonic time `now_ns`, with a
    /// summary line for each that had repeats.
    pub fn flush(&mut self, now_ns: u64) {
        let window_ns = self.window_ns();
        let window = self.window;
        self.open.retain(|_, w| {
            if now_ns.saturating_sub(w.first_mono) < window_ns {
                return true;
            }
            summarise(w, window);
            false
        });
    }

    /// Closes every window (the agent is stopping).
    pub fn flush_all(&mut self) {
        for w in self.open.values() {
            summarise(w, self.window);
        }
        self.open.clear();
    }

    fn close_oldest(&mut self) {
        let Some(key) = self
            .open
            .iter()
            .min_by_key(|(_, w)| w.first_mono)
            .map(|(k, _)| k.clone())
        else {
            return;
        };
        if let Some(w) = self.open.remove(&key) {
            summarise(&w, self.window);
        }
    }

    fn remember(&mut self, attempt: &Attempt, who: &Who) {
        let list = self.recent.vms.entry(who.vm.clone()).or_default();
        let window = chrono::TimeDelta::from_std(self.window).unwrap_or(chrono::TimeDelta::MAX);
        if let Some(newest) = list.first_mut()
            && newest.src == attempt.src
            && newest.dst == attempt.dst
            && newest.dst_port == attempt.dst_port
            && newest.audit == attempt.audit
            && attempt.at >= newest.at
            && attempt.at - newest.at < window
        {
            newest.count += 1;
            newest.last = newest.last.max(attempt.at);
            newest.src_port = attempt.src_port;
        } else {
            list.insert(
                0,
                RecentAttempt {
                    at: attempt.at,
                    last: attempt.at,
                    count: 1,
                    interface: who.interface.clone(),
                    family: attempt.family().to_owned(),
                    src: attempt.src,
                    src_port: attempt.src_port,
                    dst: attempt.dst,
                    dst_port: attempt.dst_port,
                    audit: attempt.audit,
                },
            );
            list.truncate(RECENT_PER_VM);
        }
        self.dirty = true;
    }

    /// Forgets the last attempts of the VMs for which `keep` is false (they
    /// left the policy).
    pub fn retain_vms(&mut self, keep: impl Fn(&str) -> bool) {
        let before = self.recent.vms.len();
        self.recent.vms.retain(|vm, _| keep(vm));
        if self.recent.vms.len() != before {
            self.dirty = true;
        }
    }

    /// The last attempts, if they changed since the last call (to be saved).
    pub fn take_changed(&mut self) -> Option<&RecentAttempts> {
        if !self.dirty {
            return None;
        }
        self.dirty = false;
        Some(&self.recent)
    }

    pub fn recent(&self) -> &RecentAttempts {
        &self.recent
    }
}

impl Window {
    fn starting(attempt: &Attempt, who: &Who) -> Self {
        Self {
            first_mono: attempt.mono_ns,
            first: attempt.at,
            last: attempt.at,
            count: 1,
            who: who.clone(),
            src: attempt.src,
            dst: attempt.dst,
            dst_port: attempt.dst_port,
            family: attempt.family(),
            audit: attempt.audit,
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn log_first(a: &Attempt, who: &Who) {
    let at = rfc3339(a.at);
    if a.audit {
        info!(
            target: LOG_TARGET,
            vm = %who.vm,
            subscription = %who.subscription,
            interface = %who.interface,
            ifindex = a.ifindex,
            family = %a.family(),
            src = %a.src,
            src_port = a.src_port,
            dst = %a.dst,
            dst_port = a.dst_port,
            at = %at,
            "connection attempt let through (audit mode)"
        );
    } else {
        info!(
            target: LOG_TARGET,
            vm = %who.vm,
            subscription = %who.subscription,
            interface = %who.interface,
            ifindex = a.ifindex,
            family = %a.family(),
            src = %a.src,
            src_port = a.src_port,
            dst = %a.dst,
            dst_port = a.dst_port,
            at = %at,
            "blocked connection attempt"
        );
    }
}

fn summarise(w: &Window, window: Duration) {
    if w.count < 2 {
        return;
    }
    info!(
        target: LOG_TARGET,
        vm = %w.who.vm,
        subscription = %w.who.subscription,
        interface = %w.who.interface,
        family = %w.family,
        src = %w.src,
        dst = %w.dst,
        dst_port = w.dst_port,
        count = w.count,
        first = %rfc3339(w.first),
        last = %rfc3339(w.last),
        window_seconds = window.as_secs_f64(),
        audit = w.audit,
        "repeated blocked connection attempts"
    );
}

/// The ring buffer of events, read as it becomes readable.
pub struct EventReader {
    fd: AsyncFd<RingBuf<MapData>>,
}

/// At most this many events are handled in one go (the run loop then
/// attends to its other work before reading on).
pub const BATCH: usize = 1024;

impl EventReader {
    pub fn new(ring: RingBuf<MapData>) -> std::io::Result<Self> {
        // SAFETY: the ring buffer owns its map fd until it is dropped, which
        // is when the AsyncFd drops it, and `as_raw_fd` always returns that
        // fd.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(Self { fd })
    }

    /// Waits for events and returns up to [`BATCH`] of them. Cancel-safe:
    /// events are taken from the ring only in the poll that returns them.
    pub async fn next_batch(&mut self) -> std::io::Result<Vec<AttemptEvent>> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            let batch = take(guard.get_inner_mut());
            if batch.len() < BATCH {
                // Drained: wait for the kernel's next wake-up.
                guard.clear_ready();
            }
            if !batch.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Whatever is in the ring now, without waiting.
    pub fn drain(&mut self) -> Vec<AttemptEvent> {
        let mut all = Vec::new();
        loop {
            let batch = take(self.fd.get_mut());
            let done = batch.len() < BATCH;
            all.extend(batch);
            if done {
                return all;
            }
        }
    }
}

fn take(ring: &mut RingBuf<MapData>) -> Vec<AttemptEvent> {
    let mut batch = Vec::new();
    while batch.len() < BATCH {
        let Some(item) = ring.next() else { break };
        if let Some(event) = AttemptEvent::from_bytes(&item) {
            batch.push(event);
        }
    }
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_guard_common::maps::EVENT_AUDIT;

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
}
