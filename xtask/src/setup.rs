//! `cargo xtask setup`: installs what is missing, one line per item.
//!
//! Everything is looked up first and installed only when missing, so a second
//! run takes a second or two. Items:
//!
//! - root, and bpffs mounted at /sys/fs/bpf (mounted if not);
//! - the eBPF nightly with `rust-src` (`agent/build.rs` builds the kernel
//!   programs with it), and rustfmt and clippy on the stable toolchain;
//! - Debian packages: iproute2, util-linux (nsenter), iputils-ping, swaks (with
//!   IO::Socket::INET6, for IPv6), aiosmtpd for python (Debian's
//!   python3-aiosmtpd, else pip), iperf3, nftables and netsniff-ng (trafgen)
//!   for the benchmarks, qemu-system-x86 for the guest tests, and LLVM 22
//!   when bpf-linker must be built;
//! - bpf-linker 0.13: on PATH, else in `$CARGO_HOME/bin` (then that directory
//!   goes on PATH for every later command), else `cargo install`ed there;
//! - cargo-fuzz 0.13, the same way.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, Result, bail};

use crate::ctx::{Ctx, is_executable, is_root, uid};

/// The nightly the kernel programs build with (keep in step with
/// `agent/build.rs`): newer nightlies use LLVM 23, which bpf-linker 0.13
/// cannot read.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";
/// The bpf-linker release that matches the nightly's LLVM (22).
const BPF_LINKER_VERSION: &str = "0.13.0";
/// cargo-fuzz, for the parser's fuzzer (`cargo xtask fuzz`, and the short
/// run in `cargo xtask test`).
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_BIN: &str = "/usr/lib/llvm-22/bin";
/// Debian packages the tests, the demo and the benchmarks use.
const PACKAGES: &[&str] = &[
    "iproute2",
    "util-linux",
    "iputils-ping",
    "swaks",
    // swaks speaks IPv6 only through IO::Socket::INET6 (a Recommends).
    "libio-socket-inet6-perl",
    // The benchmarks (`cargo xtask bench`, whose smoke run `cargo xtask
    // test` ends with): allowed-traffic throughput, the nftables rules the
    // drop capacity is compared with, and the SYN flood's sender (trafgen).
    "iperf3",
    "nftables",
    "netsniff-ng",
    // The guest tests and `demo --vm`: QEMU boots the guest `cargo xtask
    // guest` makes from Debian packages (fetched with apt-get download and
    // dpkg-deb, never installed); the benchmarks' attach window of a tap
    // QEMU creates (`-netdev tap`, no guest booted).
    "qemu-system-x86",
];
/// Debian packages needed only to build bpf-linker.
const LLVM_PACKAGES: &[&str] = &["llvm-22-dev", "libpolly-22-dev"];
/// The python the fixtures prefer (pyenv shims may shadow `python3`).
const DEBIAN_PYTHON: &str = "/usr/bin/python3";

#[derive(clap::Args, Debug, Default)]
pub struct Args {
    /// Only say what is found and what would be installed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also require this Debian package (to try the detection, e.g. with --dry-run).
    #[arg(long, value_name = "PACKAGE", hide = true)]
    pub extra_package: Vec<String>,
}

fn line(state: &str, item: &str) {
    println!("setup: {state:<10} {item}");
}

/// Runs the set-up and returns the environment later commands need.
/// What a task that needs root starts with: the set-up (unless `no_setup`:
/// everything is known to be installed), root checked (`what` needs it for
/// `needs`; `command` is how to run it with sudo), and what killed earlier
/// runs left swept away.
pub fn for_root_task(no_setup: bool, what: &str, needs: &str, command: &str) -> Result<Ctx> {
    let ctx = if no_setup {
        Ctx::new()
    } else {
        run(&Args::default())?
    };
    if !is_root() {
        bail!("{what}: root is needed ({needs}): run `sudo -E cargo xtask {command}`");
    }
    crate::sweep()?;
    Ok(ctx)
}

pub fn run(args: &Args) -> Result<Ctx> {
    let mut ctx = Ctx::new();
    let root = is_root();
    if root {
        line(
            "found",
            "root (needed for apt-get, bpffs, namespaces, the agent)",
        );
    } else {
        line(
            "NOT ROOT",
            &format!(
                "running as uid {}: installing packages, mounting bpffs, the namespace tests and the demo need root; run as root (e.g. `sudo -E cargo xtask ...`)",
                uid()
            ),
        );
    }
    bpffs(args, root)?;
    if ctx.which("cargo").is_none() {
        // rustup's proxies put $CARGO_HOME/bin on PATH when `cargo xtask`
        // runs through them; run any other way, do the same.
        let bin = cargo_home().join("bin");
        if is_executable(&bin.join("cargo")) {
            ctx.prepend_path(&bin);
            line(
                "found",
                &format!(
                    "cargo in {} (not on PATH: put on PATH for the builds)",
                    bin.display()
                ),
            );
        } else {
            bail!(
                "cargo is neither on PATH nor in {}: install Rust with rustup",
                bin.display()
            );
        }
    }
    nightly(args, &ctx)?;
    stable_components(args, &ctx)?;

    let linker = find_bpf_linker(&ctx);
    let mut packages: Vec<String> = PACKAGES.iter().map(|p| (*p).to_owned()).collect();
    packages.extend(args.extra_package.iter().cloned());
    if matches!(linker, Linker::Missing) {
        packages.extend(LLVM_PACKAGES.iter().map(|p| (*p).to_owned()));
    }
    debian(args, root, &packages)?;

    match linker {
        Linker::OnPath(path) => line(
            "found",
            &format!("bpf-linker {BPF_LINKER_VERSION} ({})", path.display()),
        ),
        Linker::InCargoHome(path) => {
            let dir = path.parent().unwrap_or(Path::new("/")).to_owned();
            ctx.prepend_path(&dir);
            line(
                "found",
                &format!(
                    "bpf-linker {BPF_LINKER_VERSION} ({}; not on PATH, so {} goes on PATH for the builds)",
                    path.display(),
                    dir.display()
                ),
            );
        }
        Linker::Missing => install_bpf_linker(args, &mut ctx)?,
    }
    cargo_fuzz(args, &mut ctx)?;
    Ok(ctx)
}

/// cargo-fuzz: on PATH or in `$CARGO_HOME/bin`, else `cargo install`ed there.
fn cargo_fuzz(args: &Args, ctx: &mut Ctx) -> Result<()> {
    let item = format!("cargo-fuzz {CARGO_FUZZ_VERSION} (fuzzes the packet parser)");
    let version_ok = |p: &Path| {
        Command::new(p).arg("--version").output().is_ok_and(|o| {
            o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains(&format!(" {CARGO_FUZZ_VERSION}"))
        })
    };
    let bin_dir = cargo_home().join("bin");
    if let Some(p) = ctx.which("cargo-fuzz").filter(|p| version_ok(p)) {
        line("found", &format!("{item} ({})", p.display()));
        return Ok(());
    }
    if version_ok(&bin_dir.join("cargo-fuzz")) {
        ctx.prepend_path(&bin_dir);
        line("found", &format!("{item} (in {})", bin_dir.display()));
        return Ok(());
    }
    let mut cmd = ctx.cargo();
    cmd.args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
        "--root",
    ])
    .arg(cargo_home());
    if !run_unless_dry(args, &item, &mut cmd)? {
        return Ok(());
    }
    ctx.prepend_path(&bin_dir);
    line("installed", &format!("{item} in {}", bin_dir.display()));
    Ok(())
}

fn bpffs(args: &Args, root: bool) -> Result<()> {
    let mounts =
        std::fs::read_to_string("/proc/self/mounts").context("reading /proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 2 && f[1] == "/sys/fs/bpf" && f[2] == "bpf"
    });
    if mounted {
        line("found", "bpffs mounted at /sys/fs/bpf");
        return Ok(());
    }
    if args.dry_run {
        line(
            "missing",
            "bpffs at /sys/fs/bpf: would run `mount -t bpf bpf /sys/fs/bpf`",
        );
        return Ok(());
    }
    if !root {
        bail!("bpffs is not mounted at /sys/fs/bpf, and mounting it needs root");
    }
    std::fs::create_dir_all("/sys/fs/bpf").context("creating /sys/fs/bpf")?;
    quiet(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))?;
    line("installed", "bpffs mounted at /sys/fs/bpf");
    Ok(())
}

fn nightly(args: &Args, ctx: &Ctx) -> Result<()> {
    let rustup = tool(ctx, "rustup").context(
        "rustup is not installed (neither on PATH nor in $CARGO_HOME/bin): the project needs rustup to fetch its eBPF nightly",
    )?;
    let toolchains = quiet(ctx.command(&rustup).args(["toolchain", "list"]))?;
    let have_toolchain = toolchains.lines().any(|l| l.starts_with(EBPF_TOOLCHAIN));
    let have_src = have_toolchain
        && quiet(ctx.command(&rustup).args([
            "component",
            "list",
            "--installed",
            "--toolchain",
            EBPF_TOOLCHAIN,
        ]))?
        .lines()
        .any(|l| l.starts_with("rust-src"));
    let item =
        format!("rust toolchain {EBPF_TOOLCHAIN} with rust-src (builds the kernel programs)");
    if have_src {
        line("found", &item);
        return Ok(());
    }
    let mut install = ctx.command(&rustup);
    install.args([
        "toolchain",
        "install",
        EBPF_TOOLCHAIN,
        "--profile",
        "minimal",
        "--component",
        "rust-src",
    ]);
    if !run_unless_dry(args, &item, &mut install)? {
        return Ok(());
    }
    line("installed", &item);
    Ok(())
}

fn stable_components(args: &Args, ctx: &Ctx) -> Result<()> {
    let mut missing = Vec::new();
    for (component, sub) in [("rustfmt", "fmt"), ("clippy", "clippy")] {
        let ok = ctx
            .cargo()
            .args([sub, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            missing.push(component);
        }
    }
    let item = "rustfmt and clippy (cargo fmt, cargo clippy)";
    if missing.is_empty() {
        line("found", item);
        return Ok(());
    }
    let rustup = tool(ctx, "rustup").context("rustup is not installed")?;
    let mut install = ctx.command(rustup);
    install.args(["component", "add"]).args(&missing);
    if !run_unless_dry(args, item, &mut install)? {
        return Ok(());
    }
    line("installed", item);
    Ok(())
}

fn dpkg_installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${db:Status-Status}", package])
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout == b"installed")
}

fn python_has_aiosmtpd(python: &str) -> bool {
    Command::new(python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Whether Debian offers `package` (`apt-cache policy` has a candidate).
fn apt_has(package: &str) -> bool {
    Command::new("apt-cache")
        .args(["policy", package])
        .output()
        .is_ok_and(|o| {
            let out = String::from_utf8_lossy(&o.stdout);
            out.lines().any(|l| {
                l.trim()
                    .strip_prefix("Candidate:")
                    .is_some_and(|c| c.trim() != "(none)")
            })
        })
}

fn debian(args: &Args, root: bool, packages: &[String]) -> Result<()> {
    let mut missing = Vec::new();
    for package in packages {
        if dpkg_installed(package) {
            line("found", &format!("{package} (Debian)"));
        } else {
            missing.push(package.clone());
        }
    }
    let python_ok = python_has_aiosmtpd(DEBIAN_PYTHON);
    if python_ok {
        line(
            "found",
            &format!("aiosmtpd for {DEBIAN_PYTHON} (the SMTP sink of the tests)"),
        );
    }
    if missing.is_empty() && python_ok {
        return Ok(());
    }
    if args.dry_run {
        say_missing(&missing, python_ok);
        return Ok(());
    }
    if !apt_available() {
        bail!(
            "missing {}, and there is no apt-get here: install them by hand",
            if missing.is_empty() {
                "aiosmtpd".to_owned()
            } else {
                missing.join(", ")
            }
        );
    }
    if !root {
        bail!("missing Debian packages {missing:?} or aiosmtpd, and installing them needs root");
    }
    println!("==> apt-get update");
    quiet(Command::new("apt-get").args(["-q", "update"]))?;
    let mut install = missing.clone();
    let mut pip = false;
    if !python_ok {
        if apt_has("python3-aiosmtpd") {
            install.push("python3-aiosmtpd".to_owned());
        } else {
            pip = true;
        }
    }
    if !install.is_empty() {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args([
                "-q",
                "-y",
                "-o",
                "DPkg::Lock::Timeout=300",
                "install",
                "--no-install-recommends",
            ])
            .args(&install);
        println!("==> {}", describe(&cmd));
        quiet(&mut cmd)?;
    }
    for package in &install {
        if !dpkg_installed(package) {
            bail!("apt-get said it installed {package}, but dpkg does not list it as installed");
        }
        line("installed", &format!("{package} (Debian)"));
    }
    if pip {
        let mut cmd = Command::new("python3");
        cmd.args(["-m", "pip", "install", "--quiet", "aiosmtpd"]);
        println!("==> {}", describe(&cmd));
        quiet(&mut cmd)?;
        if !python_has_aiosmtpd("python3") {
            bail!("pip installed aiosmtpd, but `python3 -c 'import aiosmtpd'` still fails");
        }
        line(
            "installed",
            "aiosmtpd for python3 (pip; Debian has no python3-aiosmtpd here)",
        );
    } else if !python_ok && !python_has_aiosmtpd(DEBIAN_PYTHON) {
        bail!("python3-aiosmtpd is installed, but `{DEBIAN_PYTHON} -c 'import aiosmtpd'` fails");
    }
    Ok(())
}

fn say_missing(missing: &[String], python_ok: bool) {
    if !missing.is_empty() {
        line(
            "missing",
            &format!(
                "{}: would run `apt-get update` and `apt-get install -y --no-install-recommends {}`",
                missing.join(", "),
                missing.join(" ")
            ),
        );
    }
    if !python_ok {
        line(
            "missing",
            &format!(
                "aiosmtpd for {DEBIAN_PYTHON}: would install python3-aiosmtpd (Debian) if apt-cache has it, else `python3 -m pip install aiosmtpd`"
            ),
        );
    }
}

fn apt_available() -> bool {
    Path::new("/usr/bin/apt-get").exists()
}

enum Linker {
    OnPath(PathBuf),
    InCargoHome(PathBuf),
    Missing,
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .filter(|h| !h.is_empty())
        .map_or_else(
            || {
                PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/root".into()))
                    .join(".cargo")
            },
            PathBuf::from,
        )
}

/// `program` on PATH, else in `$CARGO_HOME/bin`.
fn tool(ctx: &Ctx, program: &str) -> Option<PathBuf> {
    ctx.which(program).or_else(|| {
        let p = cargo_home().join("bin").join(program);
        is_executable(&p).then_some(p)
    })
}

fn linker_version_ok(path: &Path) -> bool {
    let want = format!(
        " {}.",
        BPF_LINKER_VERSION
            .rsplit_once('.')
            .map_or(BPF_LINKER_VERSION, |(mm, _)| mm)
    );
    Command::new(path)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).contains(&want))
}

fn find_bpf_linker(ctx: &Ctx) -> Linker {
    if let Some(p) = ctx.which("bpf-linker")
        && linker_version_ok(&p)
    {
        return Linker::OnPath(p);
    }
    let p = cargo_home().join("bin").join("bpf-linker");
    if is_executable(&p) && linker_version_ok(&p) {
        return Linker::InCargoHome(p);
    }
    Linker::Missing
}

fn install_bpf_linker(args: &Args, ctx: &mut Ctx) -> Result<()> {
    let bin_dir = cargo_home().join("bin");
    let mut path_with_llvm = ctx.clone();
    path_with_llvm.prepend_path(Path::new(LLVM_BIN));
    let mut cmd = path_with_llvm.cargo();
    cmd.args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--locked",
        "--no-default-features",
        "--features",
        "llvm-22",
        "--root",
    ])
    .arg(cargo_home());
    let item = format!(
        "bpf-linker {BPF_LINKER_VERSION} (links the kernel programs; built against LLVM 22)"
    );
    if args.dry_run {
        line(
            "missing",
            &format!(
                "{item}: would run `PATH={LLVM_BIN}:$PATH {}`",
                describe(&cmd)
            ),
        );
        return Ok(());
    }
    println!(
        "==> PATH={LLVM_BIN}:$PATH {} (takes a few minutes)",
        describe(&cmd)
    );
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .context("could not start cargo install")?;
    if !status.success() {
        bail!("`cargo install bpf-linker` failed ({status})");
    }
    let installed = bin_dir.join("bpf-linker");
    if !linker_version_ok(&installed) {
        bail!(
            "{} was installed but does not say it is {BPF_LINKER_VERSION}",
            installed.display()
        );
    }
    ctx.prepend_path(&bin_dir);
    line("installed", &format!("{item} in {}", bin_dir.display()));
    Ok(())
}

fn describe(cmd: &Command) -> String {
    egress_guard_netns::cmd::describe(cmd)
}

/// Runs `cmd` capturing its output; an error showing that output unless it
/// exits 0. Returns stdout.
fn quiet(cmd: &mut Command) -> Result<String> {
    let line = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("could not start `{line}`"))?;
    if !out.status.success() {
        bail!(
            "`{line}` failed ({})\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with its output on the terminal; an error unless it exits 0.
fn loud(cmd: &mut Command) -> Result<()> {
    crate::ctx::run_visible(cmd).map(|_| ())
}

/// Runs `cmd`, which installs `item`, unless this is a dry run, which
/// only says what it would run. Whether it ran.
fn run_unless_dry(args: &Args, item: &str, cmd: &mut Command) -> Result<bool> {
    if args.dry_run {
        line("missing", &format!("{item}: would run `{}`", describe(cmd)));
        return Ok(false);
    }
    loud(cmd)?;
    Ok(true)
}
