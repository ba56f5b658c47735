//! A window of repeats: the first attempt from a VM to a destination is
//! logged on its own, the repeats within the window only counted, and one
//! line with the count ends the window. The log lines are written here
//! (their fields are listed in [`super`]).
//!
//! Invariants: a window counts its first attempt; it is summarised only
//! when it had repeats (a count of 2 or more); attempts in audit mode are
//! a window of their own, never repeats of held-back ones.

use std::{net::IpAddr, time::Duration};

use chrono::{DateTime, SecondsFormat, Utc};
use tracing::info;

use super::attempt::{Attempt, Who};

/// The `tracing` target of the attempt log lines.
pub const LOG_TARGET: &str = "egress_guard::attempts";

/// The repeats of one attempt within a window.
#[derive(Clone, Debug)]
pub(super) struct Window {
    pub(super) first_mono: u64,
    pub(super) first: DateTime<Utc>,
    pub(super) last: DateTime<Utc>,
    /// Attempts in the window, the first (logged on its own) included.
    pub(super) count: u64,
    pub(super) who: Who,
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) dst_port: u16,
    pub(super) family: &'static str,
    pub(super) audit: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct WindowKey {
    pub(super) vm_key: u64,
    pub(super) dst: IpAddr,
    pub(super) dst_port: u16,
    /// Attempts in audit mode are not repeats of held-back ones.
    pub(super) audit: bool,
}

impl Window {
    pub(super) fn starting(attempt: &Attempt, who: &Who) -> Self {
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

pub(super) fn log_first(a: &Attempt, who: &Who) {
    let message = if a.audit {
        "connection attempt let through (audit mode)"
    } else {
        "blocked connection attempt"
    };
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
        at = %rfc3339(a.at),
        "{message}"
    );
}

pub(super) fn summarise(w: &Window, window: Duration) {
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
