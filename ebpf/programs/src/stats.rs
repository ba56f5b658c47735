//! A VM's record on this CPU (`VmStats` in `EG_COUNTERS`): its counters,
//! its blocked attempts, and this CPU's filters in front of its shared rate
//! limits. The slow stage looks it up once per packet and hands it to
//! whatever counts or rate-limits: one hash lookup for all of it.

use aya_ebpf::{bindings::BPF_NOEXIST, helpers::bpf_ktime_get_coarse_ns, maps::LruHashMap};
use egress_guard_common::{
    maps::{VmStats, reason},
    rate::gcra,
};

use crate::maps::COUNTERS;

/// The coarse monotonic clock (ns): a tick's resolution (a few ms), which
/// the rate limits and fragment lifetimes need, without reading the
/// clocksource.
#[inline(always)]
pub fn now() -> u64 {
    // SAFETY: a helper without arguments.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A VM's record on this CPU, or none when the map has no room for it
/// (then nothing is counted, and the rate limits use their shared state
/// alone).
pub struct Stats(*mut VmStats);

impl Stats {
    /// The record of `vm_key` on this CPU, created on its first use.
    #[inline(always)]
    pub fn of(vm_key: u64) -> Self {
        if let Some(s) = COUNTERS.get_ptr_mut(vm_key) {
            return Self(s);
        }
        // The VM's first counted packet since the agent last reset its
        // counters. A concurrent insert on another CPU is fine.
        let _ = COUNTERS.insert(vm_key, VmStats::default(), BPF_NOEXIST.into());
        Self(
            COUNTERS
                .get_ptr_mut(vm_key)
                .unwrap_or(core::ptr::null_mut()),
        )
    }

    /// Adds one packet of `bytes` under `why`.
    #[inline(always)]
    pub fn count(&self, why: usize, bytes: u64) {
        if self.0.is_null() || why >= reason::COUNT {
            return;
        }
        // SAFETY: a per-CPU value, written only from this CPU, with
        // preemption disabled while the program runs.
        unsafe {
            let c = &raw mut (*self.0).counters;
            (*c).packets[why] += 1;
            (*c).bytes[why] += bytes;
            #[cfg(feature = "upgrade-canary")]
            {
                (*c).packets[reason::COUNT - 1] += 1;
            }
        }
    }

    /// Counts a blocked attempt and what became of its event: `sent`, else
    /// `rate_limited` (over the VM's rate), else the ring buffer was full.
    #[inline(always)]
    pub fn attempt(&self, sent: bool, rate_limited: bool) {
        if self.0.is_null() {
            return;
        }
        // SAFETY: as in `count`.
        unsafe {
            let a = &raw mut (*self.0).attempts;
            (*a).attempts += 1;
            if sent {
                (*a).events += 1;
            } else if rate_limited {
                (*a).rate_limited += 1;
            } else {
                (*a).ring_full += 1;
            }
        }
    }

    /// Whether the VM may get one more event now (and takes it).
    #[inline(always)]
    pub fn event_due(
        &self,
        shared: &LruHashMap<u64, u64>,
        vm_key: u64,
        now: u64,
        interval: u64,
        burst: u64,
    ) -> bool {
        // SAFETY: a field of a per-CPU value (see `count`), or none.
        let local = (!self.0.is_null()).then(|| unsafe { &raw mut (*self.0).event_due_ns });
        within_rate(local, shared, vm_key, now, interval, burst)
    }

    /// Whether the VM may get one more reply now (and takes it).
    #[inline(always)]
    pub fn reply_due(
        &self,
        shared: &LruHashMap<u64, u64>,
        vm_key: u64,
        now: u64,
        interval: u64,
        burst: u64,
    ) -> bool {
        // SAFETY: as in `event_due`.
        let local = (!self.0.is_null()).then(|| unsafe { &raw mut (*self.0).reply_due_ns });
        within_rate(local, shared, vm_key, now, interval, burst)
    }
}

/// The VM's rate limit, kept in `shared` (one entry per VM for all CPUs),
/// behind this CPU's filter at `local` (the same rate, this CPU's share of
/// the VM's traffic only). What the filter turns away would be over the
/// rate anyway, had this CPU's traffic been all there was: a flood on one
/// CPU costs no lookup of the shared state. What passes both is within the
/// VM's rate, however its traffic spreads over CPUs (concurrent CPUs can
/// each let one through at the limit).
#[inline(always)]
fn within_rate(
    local: Option<*mut u64>,
    shared: &LruHashMap<u64, u64>,
    vm_key: u64,
    now: u64,
    interval: u64,
    burst: u64,
) -> bool {
    if interval == 0 {
        return false;
    }
    if let Some(local) = local {
        // SAFETY: a field of this CPU's value (see `Stats::count`).
        let Some(next) = gcra(unsafe { *local }, now, interval, burst) else {
            return false;
        };
        // SAFETY: as above.
        unsafe { *local = next };
    }
    let due = match shared.get_ptr(vm_key) {
        // SAFETY: a map value pointer, read at once.
        Some(v) => unsafe { core::ptr::read_volatile(v) },
        None => now,
    };
    let Some(next) = gcra(due, now, interval, burst) else {
        return false;
    };
    let _ = shared.insert(vm_key, next, 0);
    true
}
