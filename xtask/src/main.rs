//! `cargo xtask`: the project's tasks.
//!
//! - `setup`: installs what building and testing need, idempotently.
//! - `build`: set-up, then the agent's release build.
//! - `test`: set-up, `cargo fmt --check`, clippy, the agent's build, then every
//!   test of the default workspace members (the end-to-end tests included),
//!   then the benchmarks' smoke run.
//! - `demo`: set-up, a release build, and the agent at work in network
//!   namespaces, narrated (`--vm`: with real QEMU guests).
//! - `fuzz`: set-up, then the packet parser's fuzzer against etherparse.
//! - `bench`: set-up, release builds, and the benchmarks, written to
//!   `BENCHMARKS.md` (`--smoke`: a short run that only checks the figures
//!   are sane; `test` runs it last).
//! - `guest`: builds (once; then finds in the cache) the test guest's image
//!   that the guest tests and `demo --vm` boot with QEMU.
//! - `sweep`: removes what a crashed run of the tests or the demo left behind.
//!
//! It builds with plain stable Rust: it must run before the eBPF toolchain is
//! there, since installing that toolchain is its first job.

mod bench;
mod build;
mod ctx;
mod demo;
mod fuzz;
mod guest;
mod setup;
mod signals;
mod test;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", about = "egress-guard's developer tasks", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install what is missing: the eBPF nightly, bpf-linker, Debian packages (idempotent).
    Setup(setup::Args),
    /// Set-up, then build the agent (release) and print where the binary is.
    Build {
        /// Build with the dev profile instead of release.
        #[arg(long)]
        debug: bool,
    },
    /// Set-up, format check, clippy, build the agent, and run every test.
    Test(test::Args),
    /// Set-up, build the agent, and show it holding back mail in network namespaces (--vm: QEMU guests).
    Demo(demo::Args),
    /// Set-up, then fuzz the packet parser against etherparse (cargo fuzz).
    Fuzz(fuzz::Args),
    /// Set-up, release builds, and the benchmarks; writes BENCHMARKS.md (--smoke: a short sanity run).
    Bench(bench::Args),
    /// Build (or find cached) the test guest's kernel and initramfs; prints their directory.
    Guest,
    /// Remove network namespaces, pins and temporary files a crashed run of ours left.
    Sweep,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Setup(args) => setup::run(&args).map(|_| ()),
        Command::Build { debug } => build(!debug),
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Fuzz(args) => {
            setup::run(&setup::Args::default()).and_then(|ctx| fuzz::run(&ctx, &args))
        }
        Command::Bench(args) => bench::run(&args),
        Command::Guest => guest::ensure(&ctx::Ctx::new()).map(|dir| {
            println!(
                "{}={}",
                egress_guard_netns::guest::GUEST_DIR_ENV,
                dir.display()
            );
        }),
        Command::Sweep => sweep(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `cargo xtask build`: set-up, then the agent.
fn build(release: bool) -> anyhow::Result<()> {
    let ctx = setup::run(&setup::Args::default())?;
    let bin = build::build_agent(&ctx, release)?;
    println!("built: {}", bin.display());
    Ok(())
}

/// Runs the sweep of leftovers and says what it removed.
pub fn sweep() -> anyhow::Result<()> {
    let swept = egress_guard_netns::sweep()?;
    if swept.is_empty() {
        println!("sweep: nothing left over by earlier runs");
    }
    for ns in &swept.namespaces {
        println!("sweep: removed network namespace {ns}");
    }
    for pid in &swept.killed {
        println!("sweep: killed leftover process {pid}");
    }
    for path in &swept.paths {
        println!("sweep: removed {}", path.display());
    }
    Ok(())
}
