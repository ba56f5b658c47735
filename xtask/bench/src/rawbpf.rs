//! The test runs the datapath benchmark makes itself: the emptiest programs
//! (the baseline, loaded with the fixtures' raw bpf(2) calls), and
//! BPF_PROG_TEST_RUN timed by this thread's CPU clock, run the same way on
//! the empty programs and on egress-guard's, so that the two differ only by
//! the program.

use std::os::fd::{BorrowedFd, OwnedFd};

use anyhow::Result;
use egress_guard_netns::bpf::{self, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP};

/// XDP return codes.
pub const XDP_PASS: u32 = 2;
/// TC return codes (as u32).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

/// `r0 = XDP_PASS; exit`.
pub fn empty_xdp() -> Result<OwnedFd> {
    Ok(bpf::load_trivial(
        BPF_PROG_TYPE_XDP,
        0,
        XDP_PASS.cast_signed(),
        "empty_xdp",
    )?)
}

/// `r0 = TC_ACT_OK; exit`.
pub fn empty_tc() -> Result<OwnedFd> {
    Ok(bpf::load_trivial(
        BPF_PROG_TYPE_SCHED_CLS,
        0,
        TC_ACT_OK.cast_signed(),
        "empty_tc",
    )?)
}

/// One BPF_PROG_TEST_RUN.
#[derive(Debug, Clone, Copy)]
pub struct Run {
    pub retval: u32,
    /// The kernel's own figure: its timer over the loop divided by the
    /// repeat count, in whole nanoseconds (the kernel truncates).
    pub kernel_ns: f64,
    /// This thread's CPU time over the call divided by the repeat count:
    /// the same loop, with sub-nanosecond resolution, without the time the
    /// thread was preempted.
    pub cpu_ns: f64,
}

fn thread_cpu_ns() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &raw mut ts) };
    ts.tv_sec as f64 * 1e9 + ts.tv_nsec as f64
}

/// Runs program `prog` `repeat` times on `data` with context `ctx` (an
/// `xdp_md` or `__sk_buff` image), timed.
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8], ctx: &[u8], repeat: u32) -> Result<Run> {
    let before = thread_cpu_ns();
    let run = bpf::prog_test_run(prog, data, ctx, repeat)?;
    let after = thread_cpu_ns();
    Ok(Run {
        retval: run.retval,
        kernel_ns: f64::from(run.duration_ns),
        cpu_ns: (after - before) / f64::from(repeat.max(1)),
    })
}
