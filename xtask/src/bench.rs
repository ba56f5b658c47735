//! `cargo xtask bench`: set-up, release builds of the agent and of the
//! benchmark binary (`xtask/bench`, which loads the kernel programs and so
//! cannot live in xtask itself), then the benchmarks, whose figures go to
//! `BENCHMARKS.md` at the root of the workspace.
//!
//! The guest image (`cargo xtask guest`, cached) is made first: benchmark 7
//! boots a real guest on a tap.
//!
//! `--smoke` runs each benchmark briefly and only checks that every figure
//! exists and is sane; `cargo xtask test` runs it as its last step.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::{
    build::{build_agent, build_bin},
    ctx::{Ctx, run_visible},
    setup, signals,
};

/// The benchmark binary's package (and binary) name.
const BENCH: &str = "egress-guard-bench";

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Each benchmark briefly (a minute or so): checks that every figure exists and is sane; writes no report.
    #[arg(long, conflicts_with = "quick")]
    smoke: bool,
    /// Fewer repeats and a shorter idle window.
    #[arg(long)]
    quick: bool,
    /// Only these benchmarks (comma-separated: datapath, throughput, drop, control, churn, taps); the report is written only with --out (`--only taps --out BENCHMARKS.md` replaces just its section).
    #[arg(long, value_name = "LIST")]
    only: Option<String>,
    /// Where the report goes [default: BENCHMARKS.md at the workspace root].
    #[arg(long, value_name = "FILE", conflicts_with = "smoke")]
    out: Option<PathBuf>,
    /// Skip the set-up (when you know everything is installed).
    #[arg(long)]
    no_setup: bool,
}

pub fn run(args: &Args) -> Result<()> {
    // A Ctrl-C reaches the benchmark binary too, which then removes what it
    // made; this process waits for it (a second Ctrl-C ends both at once).
    signals::install();
    let ctx = setup::for_root_task(
        args.no_setup,
        "the benchmarks",
        "network namespaces, bpffs, the agent, nftables",
        "bench",
    )?;
    let agent = build_agent(&ctx, true)?;
    let bench = build_bin(ctx.cargo(), BENCH, true)?;
    let out = if args.smoke {
        None
    } else if let Some(out) = &args.out {
        Some(if out.is_absolute() {
            out.clone()
        } else {
            std::env::current_dir()?.join(out)
        })
    } else if args.only.is_some() {
        // Part of the benchmarks would make a partial BENCHMARKS.md.
        None
    } else {
        Some(ctx.root.join("BENCHMARKS.md"))
    };
    let mode = if args.smoke {
        Some("--smoke")
    } else if args.quick {
        Some("--quick")
    } else {
        None
    };
    run_bench(
        &ctx,
        &bench,
        &agent,
        mode,
        args.only.as_deref(),
        out.as_deref(),
    )
}

/// The smoke run of `cargo xtask test`: the benchmark binary built with the
/// dev profile (what the tests built is reused), with the agent the tests
/// used.
pub fn smoke(ctx: &Ctx, agent: &Path) -> Result<()> {
    let bench = build_bin(ctx.cargo(), BENCH, false)?;
    run_bench(ctx, &bench, agent, Some("--smoke"), None, None)
}

fn run_bench(
    ctx: &Ctx,
    bench: &Path,
    agent: &Path,
    mode: Option<&str>,
    only: Option<&str>,
    out: Option<&Path>,
) -> Result<()> {
    // The hypervisor-device benchmark boots a real guest (cached image: a
    // second call takes well under a second).
    let guest_dir = crate::guest::ensure(ctx)?;
    let mut cmd = ctx.command(bench);
    cmd.env(egress_guard_netns::guest::GUEST_DIR_ENV, &guest_dir)
        .arg("--agent")
        .arg(agent)
        .arg("--workspace")
        .arg(&ctx.root)
        .args(mode);
    if let Some(only) = only {
        cmd.args(["--only", only]);
    }
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    run_visible(&mut cmd)?;
    Ok(())
}
