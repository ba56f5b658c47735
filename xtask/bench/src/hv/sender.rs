//! A VMM's writer, as the hypervisor-device benchmarks need it: one thread,
//! pinned to one CPU, writing prepared frames (each a `virtio_net_hdr`
//! followed by the frame, in one buffer) into a tap or a macvtap's
//! `/dev/tapN`, one write() a frame, as QEMU's tap backend does without
//! vhost-net, until it is stopped; and that CPU's kernel time.
//!
//! Invariants: the thread is pinned before its first write and writes the
//! frames in turn, round and round; [`Sender::written`] counts successful
//! writes and [`Sender::bytes`] their frame bytes (the 12-byte header left
//! out); a failed write is counted apart and never retried, so a rate is
//! never inflated by a retry. The kernel time of the CPU
//! ([`CpuKernel`]) is system + irq + softirq from that CPU's `/proc/stat`
//! line: the tap's whole receive path (hook, routing, the veth to the
//! receiver and the receiver's softirq) runs on the writing CPU, inside or
//! right after the write() call.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
};

use anyhow::{Context as _, Result, bail};
use egress_guard_netns::{VmDevice, vmframe::VNET_HDR_LEN};

use crate::machine::user_hz;

/// The CPU the writer is pinned to.
pub const SENDER_CPU: usize = 0;

/// Kernel time of one CPU, in seconds: system, irq and softirq.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuKernel {
    pub system: f64,
    pub irq: f64,
    pub softirq: f64,
    /// Every column (idle included), for the share the sender had.
    pub total: f64,
}

impl CpuKernel {
    /// From the `cpuN` line of /proc/stat.
    pub fn read(cpu: usize) -> Result<Self> {
        let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
        let prefix = format!("cpu{cpu} ");
        let line = stat
            .lines()
            .find(|l| l.starts_with(&prefix))
            .with_context(|| format!("/proc/stat has no `cpu{cpu}` line"))?;
        let f: Vec<f64> = line
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0.0))
            .collect();
        if f.len() < 8 {
            bail!("/proc/stat: short `cpu{cpu}` line: {line}");
        }
        let hz = user_hz();
        Ok(Self {
            system: f[2] / hz,
            irq: f[5] / hz,
            softirq: f[6] / hz,
            total: f.iter().take(8).sum::<f64>() / hz,
        })
    }

    pub fn kernel(&self) -> f64 {
        self.system + self.irq + self.softirq
    }

    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            system: self.system - earlier.system,
            irq: self.irq - earlier.irq,
            softirq: self.softirq - earlier.softirq,
            total: self.total - earlier.total,
        }
    }
}

/// Pins the calling thread to `cpu`.
fn pin(cpu: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is an empty set; CPU_SET writes inside it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: sched_setaffinity(2) reads the set we own; 0 is this thread.
    let rc = unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("pinning to CPU {cpu}"));
    }
    Ok(())
}

#[derive(Debug, Default)]
struct Counts {
    written: AtomicU64,
    bytes: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// The writing thread; stopped (and joined) by [`Sender::stop`] or on drop.
pub struct Sender<'s> {
    counts: Arc<Counts>,
    handle: Option<thread::ScopedJoinHandle<'s, Result<String>>>,
}

/// What a writer did between two readings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    pub written: u64,
    pub bytes: u64,
    pub failed: u64,
}

impl<'s> Sender<'s> {
    /// Starts writing `frames` (header and frame in each) into `dev` from a
    /// thread of `scope` pinned to [`SENDER_CPU`].
    pub fn start<'d: 's>(
        scope: &'s thread::Scope<'s, 'd>,
        dev: &'d VmDevice,
        frames: &'d [Vec<u8>],
    ) -> Self {
        let counts = Arc::new(Counts::default());
        let c = Arc::clone(&counts);
        let handle = scope.spawn(move || -> Result<String> {
            pin(SENDER_CPU)?;
            let mut first_error = String::new();
            while !c.stop.load(Ordering::Relaxed) {
                for f in frames {
                    match dev.write(f) {
                        Ok(()) => {
                            c.written.fetch_add(1, Ordering::Relaxed);
                            c.bytes
                                .fetch_add((f.len() - VNET_HDR_LEN) as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if first_error.is_empty() {
                                first_error = e.to_string();
                            }
                            c.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            }
            Ok(first_error)
        });
        Self {
            counts,
            handle: Some(handle),
        }
    }

    /// The counts so far.
    pub fn sent(&self) -> Sent {
        Sent {
            written: self.counts.written.load(Ordering::Relaxed),
            bytes: self.counts.bytes.load(Ordering::Relaxed),
            failed: self.counts.failed.load(Ordering::Relaxed),
        }
    }

    /// Stops the thread; the first write error it met, if any.
    pub fn stop(mut self) -> Result<Option<String>> {
        self.counts.stop.store(true, Ordering::Relaxed);
        let first = self
            .handle
            .take()
            .map(thread::ScopedJoinHandle::join)
            .transpose()
            .map_err(|_| anyhow::anyhow!("the sender thread panicked"))?
            .transpose()?
            .unwrap_or_default();
        Ok((!first.is_empty()).then_some(first))
    }
}

impl Drop for Sender<'_> {
    fn drop(&mut self) {
        self.counts.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Sent {
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            written: self.written - earlier.written,
            bytes: self.bytes - earlier.bytes,
            failed: self.failed - earlier.failed,
        }
    }
}
