//! Unique names for everything the fixtures create, temporary directories, and
//! the sweep that removes what a crashed run left behind.
//!
//! Every name starts with `egt-<pid>-<n>`: `egt-` marks it as ours, `<pid>` is
//! the process that created it (so a sweep can tell whether its owner is gone)
//! and `<n>` a counter, so that tests running in parallel threads of one
//! process never share a name.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{
    cmd::{self, process_exists},
    error::{Error, Result},
};

/// The prefix of every name the fixtures create.
pub const PREFIX: &str = "egt-";

/// Where the agents' pin directories go (bpffs).
pub const BPFFS: &str = "/sys/fs/bpf";

/// Where the agent keeps its state by default (named after the pin directory).
pub const AGENT_STATE_ROOT: &str = "/run/egress-guard";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A new name `egt-<pid>-<n>`, unique on this machine while this process lives.
pub fn unique_tag() -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{PREFIX}{}-{n}", std::process::id())
}

/// The pid in a name that contains `egt-<pid>-`, if any. The agent names its
/// state directory after the pin directory with `-` turned into `_`, so `_`
/// counts as `-` here.
fn owner_pid(name: &str) -> Option<u32> {
    let name = name.replace('_', "-");
    let at = name.find(PREFIX)?;
    let rest = &name[at + PREFIX.len()..];
    let digits: &str = rest.split('-').next()?;
    if digits.is_empty() || !rest[digits.len()..].starts_with('-') {
        return None;
    }
    digits.parse().ok()
}

/// Whether `name` is one of ours whose creating process has gone.
fn is_stale(name: &str) -> bool {
    owner_pid(name).is_some_and(|pid| !process_exists(pid))
}

/// A directory under the system's temporary directory, removed on drop.
#[derive(Debug)]
pub struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// Creates `<tmp>/egt-<pid>-<n>-<what>`.
    pub fn new(what: &str) -> Result<Self> {
        let path = std::env::temp_dir().join(format!("{}-{what}", unique_tag()));
        fs::create_dir_all(&path)
            .map_err(|e| Error::io(format!("creating {}", path.display()), e))?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `contents` to `name` in this directory and returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> Result<PathBuf> {
        let path = self.path.join(name);
        fs::write(&path, contents)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("warning: could not remove {}: {e}", self.path.display());
        }
    }
}

/// What [`sweep`] removed.
#[derive(Debug, Default)]
pub struct Swept {
    pub namespaces: Vec<String>,
    pub killed: Vec<u32>,
    pub paths: Vec<PathBuf>,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty() && self.killed.is_empty() && self.paths.is_empty()
    }
}

/// The network namespaces that exist (`ip netns list`).
pub fn list_namespaces() -> Result<Vec<String>> {
    let out = cmd::run(Command::new("ip").args(["netns", "list"]))?;
    Ok(out
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// The pids of the processes in network namespace `name`.
pub fn namespace_pids(name: &str) -> Result<Vec<u32>> {
    let out = cmd::run(Command::new("ip").args(["netns", "pids", name]))?;
    Ok(out
        .stdout
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect())
}

/// Removes what an earlier run of ours left behind when it crashed or was
/// killed: network namespaces (after killing the processes in them), bpffs pin
/// directories, agent state directories and temporary directories, but only
/// those whose name starts with `egt-<pid>-` where process `<pid>` is gone.
/// Whatever a live process owns is left alone, so this is safe to run while
/// other tests run.
pub fn sweep() -> Result<Swept> {
    let mut swept = Swept::default();
    for ns in list_namespaces()? {
        if !ns.starts_with(PREFIX) || !is_stale(&ns) {
            continue;
        }
        for pid in namespace_pids(&ns).unwrap_or_default() {
            if cmd::signal(pid, libc::SIGKILL) {
                swept.killed.push(pid);
            }
        }
        cmd::run(Command::new("ip").args(["netns", "delete", &ns]))?;
        swept.namespaces.push(ns);
    }
    let dirs = [
        PathBuf::from(BPFFS),
        PathBuf::from(AGENT_STATE_ROOT),
        std::env::temp_dir(),
    ];
    for dir in dirs {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            // The agent names its state directory after the pin directory's
            // path (`sys-fs-bpf-egt-...`), so look for the prefix anywhere.
            let ours = if dir == Path::new(AGENT_STATE_ROOT) {
                name.replace('_', "-").contains(PREFIX)
            } else {
                name.starts_with(PREFIX)
            };
            if !ours || !is_stale(&name) {
                continue;
            }
            let path = entry.path();
            let removed = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            removed.map_err(|e| Error::io(format!("removing {}", path.display()), e))?;
            swept.paths.push(path);
        }
    }
    Ok(swept)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids_are_read_from_our_names_only() {
        assert_eq!(owner_pid("egt-123-4-hv"), Some(123));
        assert_eq!(owner_pid("egt-123-4"), Some(123));
        assert_eq!(owner_pid("sys-fs-bpf-egt-77-0"), Some(77));
        assert_eq!(owner_pid("sys-fs-bpf-egt_77_0"), Some(77));
        assert_eq!(owner_pid("egt-123"), None);
        assert_eq!(owner_pid("egt--1"), None);
        assert_eq!(owner_pid("egress-guard"), None);
        assert_eq!(owner_pid("egt-abc-1"), None);
    }

    #[test]
    fn tags_are_unique_and_name_this_process() {
        let a = unique_tag();
        let b = unique_tag();
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id()));
        assert!(!is_stale(&a));
    }
}
