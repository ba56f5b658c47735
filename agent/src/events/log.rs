//! The attempt log: each attempt logged or counted in its window, the
//! windows closed as they end, and each VM's last attempts kept for
//! `status --vm`.
//!
//! Invariants: at most [`MAX_OPEN_WINDOWS`] windows are open (past it the
//! oldest is closed early, with its summary), so a flood of attempts to
//! many destinations cannot grow the agent's memory; at most
//! `RECENT_PER_VM` last attempts are kept a VM, the newest first.

use std::{
    collections::{HashMap, hash_map::Entry},
    time::Duration,
};

use crate::state::{RECENT_PER_VM, RecentAttempt, RecentAttempts};

use super::{
    attempt::{Attempt, Who},
    window::{Window, WindowKey, log_first, summarise},
};

/// The default `--repeat-window`.
pub const DEFAULT_REPEAT_WINDOW: Duration = Duration::from_mins(1);

/// Windows of repeats open at once at most; past it the oldest is closed
/// (and summarised) early. Bounds the agent's memory under a flood of
/// attempts to many destinations.
pub const MAX_OPEN_WINDOWS: usize = 16_384;

/// Logs attempts, summarises repeats, and keeps each VM's last attempts.
#[derive(Debug)]
pub struct AttemptLog {
    window: Duration,
    pub(super) open: HashMap<WindowKey, Window>,
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
