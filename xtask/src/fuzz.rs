//! `cargo xtask fuzz`: the packet parser against etherparse, with cargo fuzz
//! on the eBPF nightly (`ebpf/common/fuzz`; the check is
//! `egress_guard_common::oracle`), and the agent's three policy readers
//! against each other (`agent/fuzz`; the check is
//! `egress_guard::policy::agree`), a third of the time on each target:
//!
//! - `parse`: raw bytes. It works on a scratch corpus (`fuzz/corpus-tmp`, not
//!   committed) and reads the committed, minimized one (`fuzz/corpus/parse`)
//!   and the named seeds and regressions (`fuzz/regressions/parse`);
//!   `--update-corpus` merges what it found that adds coverage into
//!   `fuzz/corpus/parse`.
//! - `frames`: frames built from a grammar of the shapes the parser handles,
//!   then cut and corrupted (its inputs are not frames: its corpus is not
//!   kept).
//! - `policy` (in `agent/fuzz`): any text as a policy file, from the seeds
//!   (`agent/fuzz/seeds`) and the regressions (`agent/fuzz/regressions/policy`);
//!   a disagreement is left in `agent/fuzz/artifacts/policy/`: fix the
//!   reader, then add the input to the regressions.
//!
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
    /// How long to fuzz (a third on each target).
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Merge the new inputs that add coverage into fuzz/corpus/parse.
    #[arg(long)]
    pub update_corpus: bool,
}

/// Runs the fuzzer for `args.seconds`.
pub fn run(ctx: &Ctx, args: &Args) -> Result<()> {
    let dir = ctx.root.join("ebpf/common/fuzz");
    let policy_dir = ctx.root.join("agent/fuzz");
    for scratch in [dir.join("corpus-tmp"), policy_dir.join("corpus-tmp")] {
        if scratch.exists() {
            std::fs::remove_dir_all(&scratch)
                .with_context(|| format!("removing {}", scratch.display()))?;
        }
    }
    let seconds = (args.seconds / 3).max(1);
    for (dir, target, inputs) in [
        (&dir, "parse", &["corpus/parse", "regressions/parse"][..]),
        (&dir, "frames", &[][..]),
        (&policy_dir, "policy", &["seeds", "regressions/policy"][..]),
    ] {
        let scratch = format!("corpus-tmp/{target}");
        std::fs::create_dir_all(dir.join(&scratch))
            .with_context(|| format!("creating {scratch}"))?;
        let mut cmd = fuzz_command(ctx, dir);
        cmd.args(["run", target, &scratch])
            .args(inputs)
            .arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .arg("-print_final_stats=1");
        let artifacts = dir.join("artifacts").join(target);
        run_visible(&mut cmd).with_context(|| {
            // A failure with no input saved is not a finding: the target did
            // not build or run (its output is above).
            let found = std::fs::read_dir(&artifacts).is_ok_and(|mut d| d.next().is_some());
            if found {
                format!(
                    "the fuzzer found a disagreement (the input is in {})",
                    artifacts.display()
                )
            } else {
                format!("the fuzz target {target} did not build or run (see its output above)")
            }
        })?;
    }
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
