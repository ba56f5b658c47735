//! `cargo xtask fuzz`: the packet parser against etherparse, with cargo fuzz
//! on the eBPF nightly (`ebpf/common/fuzz`, target `parse`; the check is
//! `egress_guard_common::oracle`).
//!
//! The fuzzer works on a scratch copy of its corpus (`fuzz/corpus-tmp`, not
//! committed) and reads the named seeds and regressions
//! (`fuzz/regressions/parse`); `--update-corpus` merges what it found that
//! adds coverage into the committed, minimized corpus (`fuzz/corpus/parse`).
//! A disagreement fails the run and leaves the frame in `fuzz/artifacts/`:
//! fix the parser (or, if the difference is deliberate, say why in
//! `oracle::DELIBERATELY_HELD`), then rebuild the frame as a named
//! regression in `ebpf/common/examples/fuzz_seeds.rs`.

use std::path::Path;

use anyhow::{Context as _, Result};

use crate::{
    ctx::{Ctx, run_visible},
    setup::EBPF_TOOLCHAIN,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// How long to fuzz.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Merge the new inputs that add coverage into fuzz/corpus/parse.
    #[arg(long)]
    pub update_corpus: bool,
}

/// Runs the fuzzer for `args.seconds`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let dir = ctx.root.join("ebpf/common/fuzz");
    let scratch = dir.join("corpus-tmp/parse");
    if scratch.exists() {
        std::fs::remove_dir_all(&scratch)
            .with_context(|| format!("removing {}", scratch.display()))?;
    }
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    let mut cmd = fuzz_command(ctx, &dir);
    cmd.args([
        "run",
        "parse",
        "corpus-tmp/parse",
        "corpus/parse",
        "regressions/parse",
        "--",
    ])
    .arg(format!("-max_total_time={}", args.seconds))
    .arg("-print_final_stats=1");
    run_visible(&mut cmd).context(
        "the fuzzer found a disagreement (the frame is in ebpf/common/fuzz/artifacts/parse)",
    )?;
    if args.update_corpus {
        let mut merge = fuzz_command(ctx, &dir);
        merge.args([
            "run",
            "parse",
            "--",
            "-merge=1",
            "corpus/parse",
            "corpus-tmp/parse",
        ]);
        run_visible(&mut merge)?;
    }
    Ok(())
}

/// `cargo +<eBPF nightly> fuzz` in the fuzz crate's directory.
fn fuzz_command(ctx: &Ctx, dir: &Path) -> std::process::Command {
    let mut cmd = ctx.cargo();
    cmd.current_dir(dir)
        .arg(format!("+{EBPF_TOOLCHAIN}"))
        .arg("fuzz");
    cmd
}
