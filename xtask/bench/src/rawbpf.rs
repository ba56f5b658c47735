//! The two bpf(2) calls the datapath benchmark makes itself: loading an
//! empty program (the baseline), and BPF_PROG_TEST_RUN, which it runs the
//! same way on the empty programs and on egress-guard's, so that the two
//! differ only by the program.

use std::{
    io,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;

/// `enum bpf_prog_type`.
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
pub const BPF_PROG_TYPE_XDP: u32 = 6;

/// XDP return codes.
pub const XDP_PASS: u32 = 2;
/// TC return codes (as u32).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_UNSPEC: u32 = u32::MAX;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> io::Result<i64> {
    // SAFETY: bpf(2) with a zero-padded attr of 128 bytes; every pointer in
    // it points to memory that outlives the call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(rc)
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(attr: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&attr[at..at + 4]);
    u32::from_ne_bytes(b)
}

/// Loads `r0 = ret; exit`, the emptiest program of a type: what the kernel's
/// test-run loop costs with nothing in it.
pub fn load_empty(prog_type: u32, ret: i32, name: &str) -> io::Result<OwnedFd> {
    // struct bpf_insn: code, dst_reg:4|src_reg:4, off (i16), imm (i32).
    let mut insns = [0u8; 16];
    insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    insns[4..8].copy_from_slice(&ret.to_ne_bytes());
    insns[8] = 0x95; // BPF_JMP | BPF_EXIT
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, 2);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    let name = name.as_bytes();
    let len = name.len().min(15);
    attr[48..48 + len].copy_from_slice(&name[..len]);
    let fd = bpf(BPF_PROG_LOAD, &mut attr)?;
    let fd =
        i32::try_from(fd).map_err(|_| io::Error::other("bpf(BPF_PROG_LOAD) fd out of range"))?;
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
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
/// `xdp_md` or `__sk_buff` image).
pub fn test_run(prog: BorrowedFd<'_>, data: &[u8], ctx: &[u8], repeat: u32) -> io::Result<Run> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, u32::try_from(prog.as_raw_fd()).unwrap_or(0));
    put_u32(&mut attr, 8, u32::try_from(data.len()).unwrap_or(u32::MAX));
    put_u64(&mut attr, 16, data.as_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    put_u32(&mut attr, 40, u32::try_from(ctx.len()).unwrap_or(u32::MAX));
    put_u64(&mut attr, 48, ctx.as_ptr() as u64);
    let before = thread_cpu_ns();
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    let after = thread_cpu_ns();
    Ok(Run {
        retval: get_u32(&attr, 4),
        kernel_ns: f64::from(get_u32(&attr, 36)),
        cpu_ns: (after - before) / f64::from(repeat.max(1)),
    })
}
