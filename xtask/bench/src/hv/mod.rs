//! Benchmark 7: hypervisor devices, tap and macvtap, fed as a VMM feeds
//! them (issue 21, item 4). In one lab ([`lab::HvLab`]) and one run:
//!
//! 1. [`flow`]: an allowed VM's TCP throughput through its tap, written as
//!    vhost-net writes it, per hook, interleaved with no agent;
//! 2. [`drop`]: drop capacity on a tap and on a macvtap, egress-guard per
//!    hook against one nftables rule and against the drop-all floor at the
//!    same hook, per CPU-second of the sending CPU's kernel time;
//! 3. [`qemu`]: the attach window of a tap that QEMU creates;
//! 4. [`guest`]: a real guest's TCP throughput through its tap, with and
//!    without the agent (not in the smoke run);
//! 5. the datapath's TestRun ([`crate::datapath`]), briefly, so that the
//!    gap between a program and its floor on a device can be held against
//!    what the program itself costs, in the same run.
//!
//! While 1 and 2 run, this process (and everything it starts: the agent,
//! nft, ip) keeps off the sending CPU, which only the sender is pinned to;
//! the affinity is restored for the rest.

pub mod drop;
pub mod flow;
pub mod goals;
pub mod guest;
mod holder;
pub mod lab;
mod prose;
pub mod qemu;
pub mod report;
mod sender;
mod tables;

use std::path::Path;

use anyhow::{Context as _, Result};

pub use sender::SENDER_CPU;

#[derive(Debug, Clone)]
pub struct Params {
    pub flow: flow::Params,
    pub drop: drop::Params,
    pub qemu: qemu::Params,
    /// None in the smoke run: a guest's boot alone takes longer than the
    /// rest of this benchmark's smoke (the guest tests boot guests anyway).
    pub guest: Option<guest::Params>,
    pub testrun: crate::datapath::Params,
}

#[derive(Debug, Clone)]
pub struct HvResult {
    pub flow: flow::FlowResult,
    pub drop: drop::DropResult,
    pub qemu: qemu::QemuResult,
    pub guest: Option<guest::GuestResult>,
    pub testrun: crate::datapath::DatapathResult,
}

/// This process's CPU affinity, set to every CPU but `cpu` while in scope
/// (when there is another CPU).
struct AwayFrom {
    saved: libc::cpu_set_t,
}

impl AwayFrom {
    fn cpu(cpu: usize) -> Result<Self> {
        // SAFETY: a zeroed cpu_set_t is valid; sched_getaffinity(2) fills it.
        let mut saved: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let size = size_of::<libc::cpu_set_t>();
        // SAFETY: as above, on memory we own.
        if unsafe { libc::sched_getaffinity(0, size, &raw mut saved) } != 0 {
            return Err(std::io::Error::last_os_error()).context("reading the CPU affinity");
        }
        let mut away = saved;
        // SAFETY: CPU_CLR and CPU_COUNT on a set we own.
        unsafe { libc::CPU_CLR(cpu, &mut away) };
        if unsafe { libc::CPU_COUNT(&away) } > 0 {
            // SAFETY: sched_setaffinity(2) reads a set we own.
            if unsafe { libc::sched_setaffinity(0, size, &raw const away) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .context(format!("keeping off CPU {cpu}"));
            }
        }
        Ok(Self { saved })
    }
}

impl Drop for AwayFrom {
    fn drop(&mut self) {
        // SAFETY: sched_setaffinity(2) reads the set we saved.
        unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const self.saved) };
    }
}

pub fn run(bin: &Path, params: &Params) -> Result<HvResult> {
    let away = AwayFrom::cpu(SENDER_CPU)?;
    let lab = lab::HvLab::new(bin)?;
    let flow = flow::run(&lab, &params.flow).context("tap throughput")?;
    let holding =
        drop::run(&lab, params.drop.clone()).context("drop capacity on tap and macvtap")?;
    // QEMU and the agent may use every CPU again, as on a hypervisor: kept
    // to one, QEMU's start-up work would hold the agent back.
    drop(away);
    let qemu = qemu::run(&lab, params.qemu).context("attach window of QEMU's taps")?;
    let guest = params
        .guest
        .map(|p| guest::run(&lab, p).context("a real guest's throughput"))
        .transpose()?;
    drop(lab);
    let testrun = crate::datapath::run(params.testrun).context("the programs' TestRun")?;
    Ok(HvResult {
        flow,
        drop: holding,
        qemu,
        guest,
        testrun,
    })
}
