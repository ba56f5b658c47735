//! The `EG_EVENTS` ring buffer, read as it becomes readable.
//!
//! Invariants: at most [`BATCH`] events are taken in one go, so the run
//! loop attends to its other work between batches; events are taken from
//! the ring only in the poll that returns them (cancel-safe); a record
//! that does not decode is skipped.

use aya::maps::{MapData, RingBuf};
use egress_guard_common::maps::AttemptEvent;
use tokio::io::{Interest, unix::AsyncFd};

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
