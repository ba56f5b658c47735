//! Building the binaries the other tasks run: the agent (also with the
//! upgrade tests' kernel programs), the benchmark binary. Each build prints
//! its command and returns the absolute path of the binary cargo reports.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::Stdio,
};

use anyhow::{Context as _, Result, bail};

use crate::ctx::Ctx;

/// Builds the agent and returns the absolute path of its binary.
pub fn build_agent(ctx: &Ctx, release: bool) -> Result<PathBuf> {
    build_bin(ctx.cargo(), AGENT, release)
}

/// The agent: its package and its binary.
const AGENT: &str = "egress-guard";

/// The feature of the kernel programs that makes the upgrade tests' build
/// (its programs also count held-back packets in the spare counter slot, so
/// their bytecode differs from the default build's).
const UPGRADE_FEATURES: &str = "upgrade-canary";

/// Builds the agent a second time, with the kernel programs of
/// [`UPGRADE_FEATURES`], into a target directory of its own
/// (`<target>/upgrade`, so that the normal build's cache is left alone), and
/// returns its binary: what the upgrade test replaces the running agent
/// with (`EGRESS_GUARD_BIN_UPGRADE`).
pub fn build_upgrade_agent(ctx: &Ctx) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| ctx.root.join("target"), PathBuf::from)
        .join("upgrade");
    let mut cmd = ctx.cargo();
    cmd.env("CARGO_TARGET_DIR", &target)
        .env("EGRESS_GUARD_EBPF_FEATURES", UPGRADE_FEATURES);
    println!(
        "==> (upgrade build: EGRESS_GUARD_EBPF_FEATURES={UPGRADE_FEATURES} CARGO_TARGET_DIR={})",
        target.display()
    );
    build_bin(cmd, AGENT, false)
}

/// Runs `cargo build -p NAME` (with `cmd`, a cargo command) and returns
/// the absolute path of the binary NAME it built: the package and its
/// binary have the same name.
pub fn build_bin(mut cmd: std::process::Command, name: &str, release: bool) -> Result<PathBuf> {
    cmd.args([
        "build",
        "-p",
        name,
        "--message-format=json-render-diagnostics",
    ]);
    if release {
        cmd.arg("--release");
    }
    let line = egress_guard_netns::cmd::describe(&cmd);
    println!("==> {line}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{line}`"))?;
    let mut exe = None;
    if let Some(out) = child.stdout.take() {
        for l in BufReader::new(out)
            .lines()
            .map_while(std::result::Result::ok)
        {
            let Ok(msg) = serde_json::from_str::<serde_json::Value>(&l) else {
                println!("{l}");
                continue;
            };
            let is_the_bin = msg["reason"] == "compiler-artifact"
                && msg["target"]["name"] == name
                && msg["target"]["kind"]
                    .as_array()
                    .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if is_the_bin && let Some(path) = msg["executable"].as_str() {
                exe = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().context("waiting for cargo build")?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    let exe = exe.with_context(|| format!("cargo build did not report the {name} binary"))?;
    let exe =
        std::fs::canonicalize(&exe).with_context(|| format!("{} is missing", exe.display()))?;
    Ok(exe)
}
