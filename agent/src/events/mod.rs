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
//!
//! Layers, each importing only those below it: [`clock`], [`attempt`],
//! [`window`] (the log lines), [`log`]; [`ring`] on its own.

mod attempt;
mod clock;
mod log;
mod ring;
mod window;

#[cfg(test)]
mod tests;

pub use attempt::{Attempt, Who};
pub use clock::{Clock, monotonic_ns};
pub use log::{AttemptLog, DEFAULT_REPEAT_WINDOW, MAX_OPEN_WINDOWS};
pub use ring::{BATCH, EventReader};
pub use window::LOG_TARGET;
