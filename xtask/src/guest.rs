//! `cargo xtask guest`: builds the test guest's image once and caches it; the
//! guest tests (`tests/tests/it/guests/`) and `cargo xtask demo --vm` boot it
//! with QEMU (harness: `tests/netns/src/guest`).
//!
//! Everything comes from Debian's packages, fetched with `apt-get download`
//! and unpacked with `dpkg-deb -x` into a scratch directory (nothing is
//! installed on the host, no kernel goes into /boot):
//!
//! - the kernel of `linux-image-amd64` (the versioned package it depends on);
//! - an initramfs (cpio newc, uncompressed, written here) with
//!   `busybox-static`, the virtio-net modules in load order (those listed in
//!   the kernel's `modules.builtin` are left out; compressed ones are
//!   unpacked), and the init of `tests/fixtures/guest_init.sh`.
//!
//! The cache is `<target>/guest/<key>/`, the key made of both packages'
//! versions and a hash of the init and the module list. Finding it takes two
//! `apt-cache show` call (about half a second); an image is complete when
//! its `complete` file exists (it is written last, after an atomic rename).
//! Images of other keys are removed.

use std::{
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail, ensure};
use egress_guard_netns::guest::{
    INIT_FILE, INIT_SCRIPT, INITRAMFS_FILE, KERNEL_FILE, VIRTIO_NET_MODULES,
};

use crate::ctx::Ctx;

mod cpio;

/// The meta-package whose kernel the guest boots.
const KERNEL_META: &str = "linux-image-amd64";
const BUSYBOX: &str = "busybox-static";
/// Bumped when the image's layout changes.
const FORMAT: u32 = 1;

/// Returns the image directory, building the image if it is not cached.
pub fn ensure(ctx: &Ctx) -> Result<PathBuf> {
    let started = std::time::Instant::now();
    let stanzas = candidates(&[KERNEL_META, BUSYBOX])?;
    let (kernel_pkg, kernel_ver) = kernel_package(&stanzas)?;
    let busybox_ver = field(&stanzas, BUSYBOX, "Version")?;
    let key = format!(
        "{kernel_pkg}_{kernel_ver}+{BUSYBOX}_{busybox_ver}+{:016x}",
        content_hash()
    )
    .replace([':', '/', ' '], "_");
    let root = target_dir(ctx).join("guest");
    let dir = root.join(&key);
    if dir.join("complete").is_file() {
        println!(
            "guest: cached image {} ({:.2} s)",
            dir.display(),
            started.elapsed().as_secs_f64()
        );
        return Ok(dir);
    }
    println!("guest: building the image {key}");
    fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
    let work = root.join(format!(".build-{}", std::process::id()));
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work)?;
    let built = build(&work, &kernel_pkg, &kernel_ver, &busybox_ver);
    let result = built.and_then(|staged| {
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&staged, &dir)
            .with_context(|| format!("moving the image to {}", dir.display()))?;
        fs::write(dir.join("complete"), "")?;
        Ok(())
    });
    let _ = fs::remove_dir_all(&work);
    result?;
    // Older images are of no use any more, nor scratch directories of
    // builds whose process is gone (killed half-way).
    for entry in fs::read_dir(&root)?.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let stale = match name.strip_prefix(".build-") {
            Some(pid) => !Path::new("/proc").join(pid).exists(),
            None => name != key,
        };
        if stale {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
    println!(
        "guest: built {} in {:.1} s",
        dir.display(),
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

fn target_dir(ctx: &Ctx) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| ctx.root.join("target"), PathBuf::from)
}

/// A hash (FNV-1a) of what goes into the image from this repository.
fn content_hash() -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let text = format!("{FORMAT}\n{}\n{INIT_SCRIPT}", VIRTIO_NET_MODULES.join(","));
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// A package's name and its fields, as `apt-cache show` prints them.
type Stanza = (String, Vec<(String, String)>);

/// The fields of the candidate versions of `packages` (`apt-cache show
/// --no-all-versions`, one call), by package; runs `apt-get update` once
/// when apt knows one of them not yet.
fn candidates(packages: &[&str]) -> Result<Vec<Stanza>> {
    let show = || -> Result<Vec<Stanza>> {
        let out = Command::new("apt-cache")
            .args(["show", "--no-all-versions"])
            .args(packages)
            .output()
            .context("running apt-cache (the guest image is made of Debian packages)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut stanzas = Vec::new();
        for stanza in text.split("\n\n").filter(|s| !s.trim().is_empty()) {
            let fields: Vec<(String, String)> = stanza
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_owned(), v.trim().to_owned()))
                .collect();
            if let Some((_, name)) = fields.iter().find(|(k, _)| k == "Package") {
                stanzas.push((name.clone(), fields));
            }
        }
        Ok(stanzas)
    };
    let complete = |s: &[Stanza]| packages.iter().all(|p| s.iter().any(|(n, _)| n == p));
    let mut stanzas = show()?;
    if !complete(&stanzas) {
        println!("==> apt-get update (apt does not know {packages:?} yet)");
        let status = Command::new("apt-get").args(["-q", "update"]).status()?;
        ensure!(status.success(), "apt-get update failed");
        stanzas = show()?;
        ensure!(complete(&stanzas), "apt knows none of {packages:?}");
    }
    Ok(stanzas)
}

/// Field `field` of `package` in [`candidates`]' answer.
fn field(stanzas: &[Stanza], package: &str, field: &str) -> Result<String> {
    stanzas
        .iter()
        .find(|(n, _)| n == package)
        .and_then(|(_, fields)| fields.iter().find(|(k, _)| k == field))
        .map(|(_, v)| v.clone())
        .with_context(|| format!("apt-cache show {package} has no {field}"))
}

/// The versioned kernel package `linux-image-amd64` depends on, and its
/// version (`linux-image-6.1.0-57-amd64`, `6.1.192-3`).
fn kernel_package(stanzas: &[Stanza]) -> Result<(String, String)> {
    let depends = field(stanzas, KERNEL_META, "Depends")?;
    let first = depends.split(',').next().unwrap_or_default().trim();
    let (name, rest) = first
        .split_once(" (= ")
        .with_context(|| format!("{KERNEL_META} depends on {depends:?}: no exact version"))?;
    Ok((name.to_owned(), rest.trim_end_matches(')').to_owned()))
}

/// Downloads, unpacks and assembles the image in `work`; returns the staged
/// image directory.
fn build(work: &Path, kernel_pkg: &str, kernel_ver: &str, busybox_ver: &str) -> Result<PathBuf> {
    let mut download = Command::new("apt-get");
    download
        .current_dir(work)
        .args(["-q", "download"])
        .arg(format!("{kernel_pkg}={kernel_ver}"))
        .arg(format!("{BUSYBOX}={busybox_ver}"));
    crate::ctx::run_visible(&mut download)?;
    let unpacked = work.join("unpacked");
    for deb in fs::read_dir(work)?.flatten() {
        if deb.path().extension().is_some_and(|e| e == "deb") {
            crate::ctx::run_visible(
                Command::new("dpkg-deb")
                    .arg("-x")
                    .arg(deb.path())
                    .arg(&unpacked),
            )?;
        }
    }
    let stage = work.join("image");
    fs::create_dir_all(&stage)?;

    let boot = unpacked.join("boot");
    let vmlinuz = fs::read_dir(&boot)
        .with_context(|| format!("{kernel_pkg} has no /boot"))?
        .flatten()
        .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        .with_context(|| format!("{kernel_pkg} has no /boot/vmlinuz-*"))?;
    let release = vmlinuz
        .file_name()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_owned();
    fs::copy(vmlinuz.path(), stage.join(KERNEL_FILE))?;

    let modules_dir = unpacked.join("lib/modules").join(&release);
    let modules = virtio_modules(&modules_dir)?;
    let busybox = fs::read(unpacked.join("bin/busybox"))
        .with_context(|| format!("{BUSYBOX} has no /bin/busybox"))?;

    let mut archive = cpio::Writer::default();
    for d in [
        "bin",
        "dev",
        "etc",
        "lib",
        "lib/modules",
        "proc",
        "root",
        "sbin",
        "sys",
        "tmp",
    ] {
        archive.dir(d);
    }
    archive.char_device("dev/console", 5, 1);
    archive.file("bin/busybox", 0o755, &busybox);
    archive.symlink("bin/sh", "busybox");
    archive.file("init", 0o755, INIT_SCRIPT.as_bytes());
    let mut list = String::new();
    let mut manifest = format!(
        "kernel: {kernel_pkg} {kernel_ver} ({release})\n{BUSYBOX}: {busybox_ver}\nmodules (load order):\n"
    );
    for m in &modules {
        match &m.data {
            Some(data) => {
                let file = format!("{}.ko", m.name);
                archive.file(&format!("lib/modules/{file}"), 0o644, data);
                let _ = writeln!(list, "{file}");
                let _ = writeln!(manifest, "  {} ({})", m.name, m.source);
            }
            None => {
                let _ = writeln!(manifest, "  {} (built into the kernel)", m.name);
            }
        }
    }
    archive.file("etc/egt-modules", 0o644, list.as_bytes());
    fs::write(stage.join(INITRAMFS_FILE), archive.finish())?;
    fs::write(stage.join(INIT_FILE), INIT_SCRIPT)?;
    fs::write(stage.join("manifest.txt"), &manifest)?;
    print!("{manifest}");
    Ok(stage)
}

/// One virtio-net module: its bytes (uncompressed), or `None` when built in.
struct Module {
    name: &'static str,
    source: String,
    data: Option<Vec<u8>>,
}

/// The module name of a path in modules.dep / modules.builtin.
fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    stem.replace('-', "_")
}

fn virtio_modules(dir: &Path) -> Result<Vec<Module>> {
    let builtin = fs::read_to_string(dir.join("modules.builtin")).unwrap_or_default();
    let builtin: Vec<String> = builtin.lines().map(module_name).collect();
    // The package ships no modules.dep (depmod makes it on install): look
    // the files up in the tree.
    let mut files = Vec::new();
    walk(&dir.join("kernel"), &mut files)?;
    let mut out = Vec::new();
    for name in VIRTIO_NET_MODULES {
        if builtin.iter().any(|b| b == name) {
            out.push(Module {
                name,
                source: "built in".to_owned(),
                data: None,
            });
            continue;
        }
        let path = files
            .iter()
            .find(|p| module_name(&p.to_string_lossy()) == name)
            .with_context(|| {
                format!(
                    "module {name} is neither under {}/kernel nor in modules.builtin",
                    dir.display()
                )
            })?;
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned();
        let data = if path.extension().is_some_and(|e| e == "ko") {
            fs::read(path).with_context(|| format!("reading {}", path.display()))?
        } else {
            decompress(path)?
        };
        out.push(Module {
            name,
            source: rel,
            data: Some(data),
        });
    }
    Ok(out)
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            walk(&entry.path(), out)?;
        } else {
            out.push(entry.path());
        }
    }
    Ok(())
}

/// A compressed module (`.ko.xz`, `.ko.zst`, `.ko.gz`), unpacked with the
/// matching tool: busybox's insmod cannot read every compression.
fn decompress(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        "xz"
    } else if name.ends_with(".zst") {
        "zstd"
    } else if name.ends_with(".gz") {
        "gzip"
    } else {
        bail!("{name}: unknown module compression");
    };
    let out = Command::new(tool)
        .arg("-dc")
        .arg(path)
        .output()
        .with_context(|| format!("running {tool} to unpack {name} (install Debian's {tool})"))?;
    ensure!(out.status.success(), "{tool} -dc {name} failed");
    Ok(out.stdout)
}

#[cfg(test)]
mod tests {
    #[test]
    fn module_names_come_from_paths_whatever_the_compression() {
        assert_eq!(
            super::module_name("kernel/drivers/net/virtio_net.ko"),
            "virtio_net"
        );
        assert_eq!(
            super::module_name("kernel/drivers/virtio/virtio-ring.ko.xz"),
            "virtio_ring"
        );
        assert_eq!(
            super::module_name("kernel/net/core/failover.ko.zst"),
            "failover"
        );
    }
}
