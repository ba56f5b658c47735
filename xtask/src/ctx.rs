//! Where the workspace is, and the environment every child process gets (the
//! PATH that has bpf-linker on it).

use std::{
    ffi::{OsStr, OsString},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};

/// The environment set-up prepared for every later command.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The workspace root.
    pub root: PathBuf,
    /// PATH for children: the caller's, with whatever set-up had to add.
    pub path: OsString,
}

impl Ctx {
    pub fn new() -> Self {
        Self {
            root: workspace_root(),
            path: std::env::var_os("PATH").unwrap_or_default(),
        }
    }

    /// Puts `dir` in front of PATH (once).
    pub fn prepend_path(&mut self, dir: &Path) {
        let mut dirs: Vec<PathBuf> = std::env::split_paths(&self.path).collect();
        if dirs.first().map(PathBuf::as_path) == Some(dir) {
            return;
        }
        dirs.retain(|d| d != dir);
        dirs.insert(0, dir.to_owned());
        if let Ok(joined) = std::env::join_paths(dirs) {
            self.path = joined;
        }
    }

    /// `program` as found on this PATH.
    pub fn which(&self, program: &str) -> Option<PathBuf> {
        std::env::split_paths(&self.path)
            .map(|d| d.join(program))
            .find(|p| is_executable(p))
    }

    /// A command run in the workspace root with this PATH.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir(&self.root).env("PATH", &self.path);
        cmd
    }

    /// `cargo` with this PATH.
    pub fn cargo(&self) -> Command {
        self.command("cargo")
    }
}

/// Runs `cmd` with the terminal as its stdout and stderr, after printing
/// its command line. An error unless it exits 0.
pub fn run_visible(cmd: &mut Command) -> Result<Duration> {
    let line = egress_guard_netns::cmd::describe(cmd);
    println!("==> {line}");
    let started = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("could not start `{line}`"))?;
    if !status.success() {
        bail!("`{line}` failed ({status})");
    }
    Ok(started.elapsed())
}

/// The workspace root: the parent of this crate's directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_owned()
}

/// Whether `path` is an executable file.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid(2) cannot fail and has no memory effects.
    unsafe { libc::geteuid() == 0 }
}

/// The effective uid, for messages.
pub fn uid() -> u32 {
    // SAFETY: as above.
    unsafe { libc::geteuid() }
}
