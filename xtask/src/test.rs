//! `cargo xtask test`: what CI runs (`.ci/run`): lints, the agent's build,
//! the guest image (`cargo xtask guest`, cached), every test, and last the
//! benchmarks' smoke run.

use std::{
    io::{BufRead, BufReader},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

use crate::{
    build::{build_agent, build_upgrade_agent},
    ctx::{Ctx, run_visible},
    setup,
};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Skip `cargo fmt --check` and clippy.
    #[arg(long)]
    no_lint: bool,
    /// Skip the set-up (when you know everything is installed).
    #[arg(long)]
    no_setup: bool,
    /// Skip the benchmarks' smoke run (`cargo xtask bench --smoke`) that ends the tests.
    #[arg(long)]
    no_bench_smoke: bool,
    /// Run only the tests whose name contains FILTER (passed to the test binaries).
    filter: Option<String>,
    /// More arguments for the test binaries, e.g. `-- --nocapture --test-threads 1`.
    #[arg(last = true, value_name = "TEST_ARGS")]
    passthrough: Vec<String>,
}

/// The short fuzz run of every `cargo xtask test` (a long one is `cargo
/// xtask fuzz --seconds N`).
const FUZZ_SECONDS: u64 = 60;

enum Outcome {
    Ok,
    Failed(String),
    Skipped(&'static str),
}

struct Step {
    name: &'static str,
    outcome: Outcome,
    took: Duration,
}

/// Counts from cargo test's `test result:` lines.
#[derive(Default, Debug, PartialEq, Eq)]
struct Counts {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Counts {
    /// Adds the counts of a line like
    /// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
    fn add_line(&mut self, line: &str) {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let started = Instant::now();
    let ctx = setup::for_root_task(
        args.no_setup,
        "the end-to-end tests",
        "network namespaces, bpffs, the agent",
        "test",
    )?;

    let mut steps = Vec::new();
    let mut step = |name: &'static str, f: &mut dyn FnMut() -> Result<()>| {
        let t = Instant::now();
        let outcome = match f() {
            Ok(()) => Outcome::Ok,
            Err(e) => {
                eprintln!("xtask: {name} failed: {e:#}");
                Outcome::Failed(format!("{e:#}"))
            }
        };
        let ok = matches!(outcome, Outcome::Ok);
        steps.push(Step {
            name,
            outcome,
            took: t.elapsed(),
        });
        ok
    };

    if !args.no_lint {
        step("format (cargo fmt --check)", &mut || {
            run_visible(ctx.cargo().args(["fmt", "--all", "--", "--check"])).map(|_| ())
        });
        step("clippy", &mut || clippy(&ctx));
    }
    let mut bin = None;
    let built = step("build the agent", &mut || {
        bin = Some(build_agent(&ctx, false)?);
        Ok(())
    });
    let mut upgrade = None;
    if built {
        step("build the upgrade agent", &mut || {
            upgrade = Some(build_upgrade_agent(&ctx)?);
            Ok(())
        });
    }
    // The guest tests' image (cached: a second run takes well under a
    // second). Without it they fail, saying so; they never skip.
    let mut guest_dir = None;
    step("guest image", &mut || {
        guest_dir = Some(crate::guest::ensure(&ctx)?);
        Ok(())
    });
    let mut counts = Counts::default();
    if built && let Some(bin) = &bin {
        step("tests", &mut || {
            run_tests(
                &ctx,
                bin,
                upgrade.as_deref(),
                guest_dir.as_deref(),
                args,
                &mut counts,
            )
        });
    }
    if args.filter.is_none() {
        step("fuzz the parser (short run)", &mut || {
            crate::fuzz::run(
                &ctx,
                &crate::fuzz::Args {
                    seconds: FUZZ_SECONDS,
                    update_corpus: false,
                },
            )
        });
    }
    // Last: the benchmarks run briefly, so that they cannot rot. It checks
    // that every figure exists and is sane, never a timing.
    if built && let Some(bin) = &bin {
        match smoke_skipped(args) {
            None => {
                step(SMOKE, &mut || crate::bench::smoke(&ctx, bin));
            }
            Some(why) => steps.push(Step {
                name: SMOKE,
                outcome: Outcome::Skipped(why),
                took: Duration::ZERO,
            }),
        }
    }
    note_skipped(&mut steps, args, built);

    let failed = summary(&steps, bin.as_deref(), &counts, started.elapsed());
    if failed > 0 {
        bail!("{failed} step(s) failed");
    }
    Ok(())
}

/// Adds the steps left out (lints, or the tests when the agent did not
/// build) to the summary.
fn note_skipped(steps: &mut Vec<Step>, args: &Args, built: bool) {
    if args.no_lint {
        steps.insert(
            0,
            Step {
                name: "format and clippy",
                outcome: Outcome::Skipped("--no-lint"),
                took: Duration::ZERO,
            },
        );
    }
    if !built {
        steps.push(Step {
            name: "tests",
            outcome: Outcome::Skipped("the agent did not build"),
            took: Duration::ZERO,
        });
    }
}

const SMOKE: &str = "benchmark smoke";

/// Why the benchmarks' smoke run is left out, if it is.
fn smoke_skipped(args: &Args) -> Option<&'static str> {
    if args.no_bench_smoke {
        Some("--no-bench-smoke")
    } else if args.filter.is_some() {
        Some("a test filter was given")
    } else {
        None
    }
}

/// Clippy on everything but the kernel programs (they build for BPF only),
/// warnings denied.
fn clippy(ctx: &Ctx) -> Result<()> {
    run_visible(ctx.cargo().args([
        "clippy",
        "--workspace",
        "--exclude",
        "egress-guard-ebpf",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))
    .map(|_| ())
}

/// Prints the summary; returns how many steps failed.
fn summary(
    steps: &[Step],
    bin: Option<&std::path::Path>,
    counts: &Counts,
    took: Duration,
) -> usize {
    println!();
    println!("xtask test summary ({:.0}s in all):", took.as_secs_f64());
    let mut failed = 0;
    for s in steps {
        let (word, note) = match &s.outcome {
            Outcome::Ok => ("ok", String::new()),
            Outcome::Failed(e) => {
                failed += 1;
                (
                    "FAILED",
                    format!(": {}", e.lines().next().unwrap_or_default()),
                )
            }
            Outcome::Skipped(why) => ("skipped", format!(" ({why})")),
        };
        println!(
            "  {word:<8} {:<28} {:>6.1}s{note}",
            s.name,
            s.took.as_secs_f64()
        );
    }
    if let Some(bin) = bin {
        println!("  agent binary: {}", bin.display());
    }
    println!(
        "tests: {} passed, {} failed, {} skipped",
        counts.passed, counts.failed, counts.ignored
    );
    failed
}

fn run_tests(
    ctx: &Ctx,
    bin: &std::path::Path,
    upgrade: Option<&std::path::Path>,
    guest_dir: Option<&std::path::Path>,
    args: &Args,
    counts: &mut Counts,
) -> Result<()> {
    let mut cmd = ctx.cargo();
    cmd.arg("test").env("EGRESS_GUARD_BIN", bin);
    if let Some(upgrade) = upgrade {
        cmd.env("EGRESS_GUARD_BIN_UPGRADE", upgrade);
    }
    if let Some(dir) = guest_dir {
        cmd.env(egress_guard_netns::guest::GUEST_DIR_ENV, dir);
        println!(
            "==> {}={}",
            egress_guard_netns::guest::GUEST_DIR_ENV,
            dir.display()
        );
    }
    if args.filter.is_some() || !args.passthrough.is_empty() {
        cmd.arg("--");
        cmd.args(&args.filter);
        cmd.args(&args.passthrough);
    }
    let line = egress_guard_netns::cmd::describe(&cmd);
    println!(
        "==> EGRESS_GUARD_BIN={}{} {line}",
        bin.display(),
        upgrade.map_or_else(String::new, |u| format!(
            " EGRESS_GUARD_BIN_UPGRADE={}",
            u.display()
        ))
    );
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            println!("{l}");
            counts.add_line(&l);
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    if counts.passed == 0 && counts.failed == 0 {
        bail!("`{line}` ran no test");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::Counts;

    #[test]
    fn counts_add_up_over_test_result_lines() {
        let mut c = Counts::default();
        c.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        c.add_line("test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 5 filtered out; finished in 3.20s");
        c.add_line("running 3 tests");
        assert_eq!(
            c,
            Counts {
                passed: 5,
                failed: 1,
                ignored: 1
            }
        );
    }
}
