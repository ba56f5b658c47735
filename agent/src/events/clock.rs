//! The kernel's clock and the wall clock: events are stamped by
//! `bpf_ktime_get_ns` (`CLOCK_MONOTONIC`), the operator reads wall-clock
//! times.
//!
//! Invariant: a [`Clock`] converts with the offset between the two clocks
//! when it was made; make a new one to follow a change of the wall clock.

use chrono::{DateTime, Utc};

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
    pub(super) offset_ns: i128,
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
