//! `egress-guard-bench`: the benchmarks of `cargo xtask bench` (issue 6).
//!
//! 1. datapath: ns per packet of the kernel programs per packet class, with
//!    BPF_PROG_TEST_RUN, against empty XDP and TC programs;
//! 2. throughput: iperf3 across a VM's host-side veth under each hook,
//!    against no agent;
//! 3. drop capacity: a port-25 SYN flood held back by each hook and by
//!    nftables, per CPU-second, with an exempt VM's stream alongside;
//! 4. control plane: check, start, a one-VM change, peak RSS at 1,000,
//!    10,000 and 100,000 VMs;
//! 5. interface churn: creation to enforcement;
//! 6. idle CPU;
//! 7. hypervisor devices: tap throughput, drop capacity on tap and macvtap
//!    against nftables and the drop-all floors, QEMU's taps' attach window.
//!
//! `--smoke` runs each briefly and checks that every figure exists and is
//! sane (no timing is asserted); otherwise the figures go to `--out`
//! (BENCHMARKS.md). Needs root; everything it creates (namespaces, pins,
//! nftables tables, processes) is removed when it ends, also on failure or
//! Ctrl-C.

// Counts (packets, nanoseconds, bytes) become f64 for rates and ratios
// throughout; none comes near 2^52.
#![allow(
    clippy::cast_precision_loss,
    reason = "benchmark arithmetic on counts far below 2^52"
)]

mod churn;
mod control;
mod datapath;
mod figure;
#[cfg(test)]
mod fixture;
mod flood;
#[cfg(test)]
mod golden;
mod hv;
mod lab;
mod machine;
mod policy;
mod rawbpf;
mod report;
mod signals;
mod stats;
mod template;
mod throughput;

use std::{
    path::PathBuf,
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Bench {
    Datapath,
    Throughput,
    Drop,
    Control,
    Churn,
    /// Hypervisor devices: tap and macvtap.
    Taps,
}

const ALL: [Bench; 6] = [
    Bench::Datapath,
    Bench::Throughput,
    Bench::Drop,
    Bench::Control,
    Bench::Churn,
    Bench::Taps,
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Full,
    Quick,
    Smoke,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Quick => "quick",
            Mode::Smoke => "smoke",
        }
    }
}

#[derive(Parser)]
#[command(
    name = "egress-guard-bench",
    about = "egress-guard's benchmarks (run by `cargo xtask bench`)"
)]
struct Cli {
    /// A short run that checks every benchmark works and gives sane figures; writes nothing.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Fewer repeats and a 31 s idle window (the figures are noisier).
    #[arg(long)]
    quick: bool,
    /// Write the report here (BENCHMARKS.md); without it, only the summary is printed.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The agent binary [default: $EGRESS_GUARD_BIN].
    #[arg(long, value_name = "FILE")]
    agent: Option<PathBuf>,
    /// Run only these benchmarks (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Bench>,
    /// The workspace (for the commit measured).
    #[arg(long, value_name = "DIR", default_value = ".")]
    workspace: PathBuf,
    /// The scheduling niceness to run at; everything started inherits it
    /// (agent, iperf3, trafgen), so that other work on the machine disturbs
    /// every configuration less, and alike.
    #[arg(long, value_name = "N", default_value_t = -10, allow_hyphen_values = true)]
    nice: i32,
}

/// Sets this process's niceness (its children inherit it).
fn set_nice(nice: i32) -> Result<()> {
    // SAFETY: setpriority(2) takes plain integers and has no memory effects.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error()).context(format!("setting niceness {nice}"));
    }
    Ok(())
}

/// How much of each benchmark a mode runs.
struct Plan {
    datapath: datapath::Params,
    throughput: throughput::Params,
    flood: flood::Params,
    control: control::Params,
    churn: churn::Params,
    hv: hv::Params,
}

/// The hypervisor-device benchmark's plan: `seconds` a window, `warmup`
/// before it, `rounds` interleaved rounds, `creations` QEMU starts.
/// The smoke run (one QEMU start) runs egress-guard under `tc` only: the
/// other hooks take the same code paths, and each costs an agent start.
fn hv_plan(seconds: f64, warmup: f64, rounds: usize, creations: usize) -> hv::Params {
    let hooks = if creations > 1 {
        vec![lab::Hook::Tc, lab::Hook::XdpGeneric, lab::Hook::Xdp]
    } else {
        vec![lab::Hook::Tc]
    };
    hv::Params {
        flow: hv::flow::Params {
            seconds,
            warmup,
            rounds,
            hooks: hooks.clone(),
        },
        drop: hv::drop::Params {
            seconds,
            warmup,
            rounds,
            tap_hooks: hooks,
        },
        qemu: hv::qemu::Params { creations },
        guest: (creations > 1).then_some(hv::guest::Params { rounds: 4, mib: 32 }),
        testrun: datapath::Params {
            repeat: if creations > 1 { 200_000 } else { 10_000 },
            rounds: if creations > 1 { 7 } else { 1 },
        },
    }
}

impl Plan {
    fn for_mode(mode: Mode) -> Self {
        match mode {
            Mode::Full => Self {
                datapath: datapath::Params {
                    repeat: 1_000_000,
                    rounds: 21,
                },
                throughput: throughput::Params {
                    seconds: 3,
                    omit: 1,
                    rounds: 6,
                },
                flood: flood::Params {
                    seconds: 4.0,
                    warmup: 1.0,
                    rounds: 5,
                    exempt_rate: 500,
                },
                control: control::Params {
                    sizes: vec![1_000, 10_000, 100_000],
                    check_repeats: 3,
                    start_repeats: 3,
                    changes: 5,
                    idle_seconds: 60.0,
                },
                churn: churn::Params { creations: 200 },
                hv: hv_plan(3.0, 0.5, 5, 20),
            },
            Mode::Quick => Self {
                datapath: datapath::Params {
                    repeat: 500_000,
                    rounds: 7,
                },
                throughput: throughput::Params {
                    seconds: 2,
                    omit: 1,
                    rounds: 3,
                },
                flood: flood::Params {
                    seconds: 3.0,
                    warmup: 1.0,
                    rounds: 2,
                    exempt_rate: 500,
                },
                control: control::Params {
                    sizes: vec![1_000, 10_000, 100_000],
                    check_repeats: 2,
                    start_repeats: 2,
                    changes: 3,
                    // Just over the agent's 30 s reconcile period, so that
                    // the idle figure includes one.
                    idle_seconds: 31.0,
                },
                churn: churn::Params { creations: 200 },
                hv: hv_plan(2.0, 0.5, 2, 10),
            },
            Mode::Smoke => Self {
                datapath: datapath::Params {
                    repeat: 100_000,
                    rounds: 3,
                },
                throughput: throughput::Params {
                    seconds: 1,
                    omit: 0,
                    rounds: 1,
                },
                flood: flood::Params {
                    seconds: 1.0,
                    warmup: 0.5,
                    rounds: 1,
                    exempt_rate: 200,
                },
                control: control::Params {
                    sizes: vec![1_000],
                    check_repeats: 1,
                    start_repeats: 1,
                    changes: 1,
                    idle_seconds: 2.0,
                },
                churn: churn::Params { creations: 10 },
                hv: hv_plan(0.1, 0.05, 1, 1),
            },
        }
    }
}

/// Everything measured in one run.
pub struct Results {
    pub mode: Mode,
    pub nice: i32,
    /// The benchmarks asked for.
    pub requested: Vec<Bench>,
    pub machine: machine::Machine,
    pub started: chrono::DateTime<chrono::Utc>,
    pub took: Duration,
    /// The share of all CPU time over the run that the hypervisor gave to
    /// other guests (steal).
    pub steal_share: f64,
    pub datapath: Option<datapath::DatapathResult>,
    pub throughput: Option<throughput::ThroughputResult>,
    pub flood: Option<flood::FloodResult>,
    pub control: Option<Vec<control::SizeResult>>,
    pub control_params: control::Params,
    pub churn: Option<churn::ChurnResult>,
    pub hv: Option<hv::HvResult>,
    /// The workspace (where the report's templates are).
    pub workspace: PathBuf,
}

fn step<T>(name: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    signals::check()?;
    println!("==> benchmark: {name}");
    let t = Instant::now();
    let r = f().with_context(|| format!("benchmark {name}"))?;
    println!("    ({name}: {:.0} s)", t.elapsed().as_secs_f64());
    Ok(r)
}

fn run(cli: &Cli) -> Result<()> {
    signals::install();
    egress_guard_netns::require_root()?;
    let mode = if cli.smoke {
        Mode::Smoke
    } else if cli.quick {
        Mode::Quick
    } else {
        Mode::Full
    };
    if mode == Mode::Smoke && cli.out.is_some() {
        bail!("--smoke writes no report: leave out --out");
    }
    let bin = match &cli.agent {
        Some(p) => p.clone(),
        None => egress_guard_netns::agent_bin()?,
    };
    let bin =
        std::fs::canonicalize(&bin).with_context(|| format!("{} is missing", bin.display()))?;
    set_nice(cli.nice)?;
    let wants = |b: Bench| cli.only.is_empty() || cli.only.contains(&b);
    let plan = Plan::for_mode(mode);
    let started = chrono::Utc::now();
    let t = Instant::now();
    let machine = machine::Machine::read(&cli.workspace)?;
    let cpu_at_start = machine::CpuTimes::read()?;
    println!(
        "egress-guard benchmarks ({} run), agent {}, on {} ({} CPUs), kernel {}",
        mode.name(),
        bin.display(),
        machine.cpu_model,
        machine.cpus,
        machine.kernel
    );

    let datapath = if wants(Bench::Datapath) {
        Some(step(
            "datapath cost per packet (BPF_PROG_TEST_RUN)",
            || datapath::run(plan.datapath),
        )?)
    } else {
        None
    };
    let needs_lab = wants(Bench::Throughput) || wants(Bench::Drop) || wants(Bench::Control);
    let lab = if needs_lab {
        Some(lab::Lab::new(&bin)?)
    } else {
        None
    };
    let throughput = match &lab {
        Some(lab) if wants(Bench::Throughput) => Some(step("allowed traffic (iperf3)", || {
            throughput::run(lab, plan.throughput)
        })?),
        _ => None,
    };
    let flood = match &lab {
        Some(lab) if wants(Bench::Drop) => Some(step("drop capacity (SYN flood)", || {
            flood::run(lab, plan.flood)
        })?),
        _ => None,
    };
    let control = match &lab {
        Some(lab) if wants(Bench::Control) => Some(step("control plane and idle cost", || {
            control::run(lab, &plan.control)
        })?),
        _ => None,
    };
    drop(lab);
    let churn = if wants(Bench::Churn) {
        Some(step("interface churn", || churn::run(&bin, plan.churn))?)
    } else {
        None
    };
    let hv = wants(Bench::Taps)
        .then(|| {
            step("hypervisor devices: tap and macvtap", || {
                hv::run(&bin, &plan.hv)
            })
        })
        .transpose()?;
    let results = Results {
        mode,
        nice: cli.nice,
        requested: ALL.into_iter().filter(|b| wants(*b)).collect(),
        machine,
        started,
        took: t.elapsed(),
        steal_share: steal_since(&cpu_at_start)?,
        datapath,
        throughput,
        flood,
        control,
        control_params: plan.control,
        churn,
        hv,
        workspace: cli.workspace.clone(),
    };
    finish(cli, &results)
}

/// The share of all CPU time since `start` that the hypervisor gave to
/// other guests.
fn steal_since(start: &machine::CpuTimes) -> Result<f64> {
    let spent = machine::CpuTimes::read()?.since(start);
    Ok(if spent.total > 0.0 {
        spent.steal / spent.total
    } else {
        0.0
    })
}

/// Prints the summary; checks the figures (smoke) or writes the report.
fn finish(cli: &Cli, results: &Results) -> Result<()> {
    println!();
    print!("{}", report::summary(results));
    if results.mode == Mode::Smoke {
        let mut problems = report::sanity(results);
        // The report is rendered too (and thrown away), so that its code
        // cannot rot either.
        problems.extend(report::rendering_problems(results));
        if !problems.is_empty() {
            bail!(
                "the smoke run gave figures that are not sane:\n  {}",
                problems.join("\n  ")
            );
        }
        println!("smoke: every benchmark ran and gave sane figures");
    }
    if let Some(out) = &cli.out {
        // This benchmark alone replaces its own section of an existing
        // report, and leaves the rest as it was measured.
        let text = match &results.hv {
            Some(hv) if results.requested == [Bench::Taps] && hv::report::can_splice(out) => {
                let existing = std::fs::read_to_string(out)
                    .with_context(|| format!("reading {}", out.display()))?;
                hv::report::splice(&existing, results, hv)
            }
            _ => report::markdown(results),
        };
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        println!("wrote {}", out.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egress-guard-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
