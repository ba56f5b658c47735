//! `cargo xtask demo`: the agent at work on a small hypervisor, narrated
//! for a newcomer.
//!
//! Two VMs, `vm-blocked` and `vm-exempt` (the interface names
//! `deploy/policy.example.yaml` uses), an "internet" with a real SMTP
//! server, and the agent with the example policy. The VMs are network
//! namespaces on a bridge (`ns`) or, with `--vm`, real QEMU guests on taps
//! (`vm`). Everything a story creates is removed at the end, also on
//! failure or Ctrl-C.
//!
//! Layers: this module picks the story; `ns` and `vm` tell one each;
//! `story` holds what both share and imports neither.

mod ns;
mod story;
mod vm;

use std::{path::PathBuf, time::Duration};

use anyhow::{Result, bail};

use crate::{build::build_agent, setup, signals};
use story::Demo;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The policy to run with (its VMs with interfaces vm-blocked and vm-exempt are shown).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "deploy/policy.example.yaml"
    )]
    pub(crate) policy: PathBuf,
    /// How long a mail client waits for an answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    timeout: u64,
    /// Skip the set-up (when you know everything is installed).
    #[arg(long)]
    no_setup: bool,
    /// Tell the story with real QEMU guests on taps instead of namespaces.
    #[arg(long)]
    vm: bool,
}

pub fn run(args: &Args) -> Result<()> {
    signals::install();
    let ctx = setup::for_root_task(
        args.no_setup,
        "the demo",
        "network namespaces, bpffs, the agent",
        "demo",
    )?;
    signals::check()?;
    let bin = build_agent(&ctx, true)?;
    signals::check()?;
    let policy = if args.policy.is_absolute() {
        args.policy.clone()
    } else {
        ctx.root.join(&args.policy)
    };
    if !policy.is_file() {
        bail!("no policy file at {}", policy.display());
    }
    let demo = Demo::new(
        bin,
        policy,
        Duration::from_secs(args.timeout.max(1)),
        if args.vm { vm::STEPS } else { ns::STEPS },
    );
    println!(
        "egress-guard demo: two VMs on a hypervisor, one whose mail on port 25 is held back\n\
         and one whose mail goes through, decided by the policy {}.",
        demo.shown_policy()
    );
    // Everything the demo creates lives in the story's run and is removed
    // (agent killed and detached, pins and namespaces deleted) when it
    // returns, whether it succeeded, failed or was interrupted.
    let result = if args.vm {
        vm::run(&ctx, &demo)
    } else {
        ns::run(&demo)
    };
    println!();
    if let Err(e) = &result {
        println!("The demo stopped: {e:#}");
    }
    println!("{}", leftovers());
    result
}

/// Says whether anything the demo made is left (there should be nothing).
fn leftovers() -> String {
    let mine = format!(
        "{}{}-",
        egress_guard_netns::names::PREFIX,
        std::process::id()
    );
    let mut left: Vec<String> = egress_guard_netns::names::list_namespaces()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect();
    if let Ok(entries) = std::fs::read_dir(egress_guard_netns::names::BPFFS) {
        left.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&mine)),
        );
    }
    if left.is_empty() {
        "Cleaned up: the namespaces, the agent and its pins are gone.".to_owned()
    } else {
        format!("warning: left behind: {left:?} (`cargo xtask sweep` removes them)")
    }
}
