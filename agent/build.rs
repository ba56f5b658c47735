//! Builds the kernel programs (`ebpf/programs`) for the BPF target with the
//! pinned nightly toolchain and bpf-linker, and leaves the object in OUT_DIR,
//! where `src/datapath` embeds it.
//!
//! `cargo xtask` installs what this needs (the toolchain, rust-src, LLVM 22,
//! bpf-linker) before it builds anything; see `xtask/src/setup.rs`.

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

/// The nightly the kernel programs are built with. Newer nightlies use LLVM 23,
/// whose bitcode bpf-linker 0.13 (LLVM 22) cannot read. Keep in step with
/// `xtask/src/setup.rs`.
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = metadata
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "egress-guard-ebpf")
        .ok_or_else(|| anyhow!("package egress-guard-ebpf not found in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent of {}", ebpf.manifest_path))?;
    // The shared crate is compiled into the programs: rebuild when it changes.
    println!("cargo:rerun-if-changed={}", root_dir.join("../common/src"));
    println!("cargo:rerun-if-env-changed=EGRESS_GUARD_EBPF_TOOLCHAIN");
    let toolchain =
        std::env::var("EGRESS_GUARD_EBPF_TOOLCHAIN").unwrap_or_else(|_| EBPF_TOOLCHAIN.to_owned());
    // Features of the kernel programs, e.g. `upgrade-canary` for the upgrade
    // tests (a build whose programs differ from the default's).
    println!("cargo:rerun-if-env-changed=EGRESS_GUARD_EBPF_FEATURES");
    let features_env = std::env::var("EGRESS_GUARD_EBPF_FEATURES").unwrap_or_default();
    let features: Vec<&str> = features_env
        .split([',', ' '])
        .filter(|f| !f.is_empty())
        .collect();
    let package = Package {
        name: ebpf.name.as_str(),
        root_dir: root_dir.as_str(),
        features: &features,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom(&toolchain))?;

    // With AYA_BUILD_SKIP=1 (clippy, or work on the policy engine alone)
    // aya-build builds nothing; leave an empty object so the agent compiles.
    // Loading it fails at run time with a clear error.
    let out_dir = std::path::PathBuf::from(std::env::var("OUT_DIR").context("OUT_DIR")?);
    let object = out_dir.join("egress-guard");
    if !object.exists() {
        std::fs::write(&object, b"").with_context(|| format!("writing {}", object.display()))?;
    }
    Ok(())
}
