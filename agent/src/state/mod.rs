//! What the agent remembers besides the maps: the policy in force (and a
//! copy of its file), when its verdicts were evaluated, the interface
//! creations it saw (rule 3 of the verdict rules counts a new interface as a
//! VM restart), and which process is the agent. It lives in a state
//! directory under /run (a tmpfs, like bpffs: both go at reboot), one per pin
//! directory, so two agents never share one.
//!
//! `status` reads it, with the pinned maps, whether or not an agent runs:
//! the VMs' verdicts and reasons are those of the copy of the policy in
//! force, evaluated at the time the agent evaluated it, with the interface
//! creations it had seen (the rules are pure: the same facts give the same
//! verdicts). The state file itself stays small (no record per VM), and is
//! written only when it changes.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::Serialize;
use thiserror::Error;

/// Where state directories go unless `--state-dir` says otherwise.
pub const STATE_ROOT: &str = "/run/egress-guard";

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "agent.lock";
/// The copies of the policies in force, as the agent read them, each named
/// after its sha256: `policy-<sha256>.yaml`. The state names the one in
/// force by its hash, so a reader reads exactly that copy.
const POLICY_PREFIX: &str = "policy-";
const POLICY_SUFFIX: &str = ".yaml";
/// The last blocked connection attempts of each VM (see
/// [`RecentAttempts`]), for `status --vm`.
const ATTEMPTS_FILE: &str = "attempts.json";
/// 2: the copy of the policy in force is `policy.yaml`; 3: it is named
/// after its sha256 (a state of version 2 reads, and its copy is written
/// again by the next agent).
pub const STATE_VERSION: u32 = 3;

#[derive(Debug, Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a state file of this egress-guard: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: not read: {source}")]
    Refused {
        path: PathBuf,
        #[source]
        source: crate::policy::limits::ReadError,
    },
    #[error(
        "another egress-guard agent (pid {pid}) is running with this pin directory ({lock}); stop it first"
    )]
    Locked { pid: String, lock: PathBuf },
}

/// The largest state or attempts file read.
pub const MAX_STATE_BYTES: u64 = 256 << 20;
/// The largest copy of the policy read (a policy the agent took is at most
/// `--max-policy-bytes`, whose default is a quarter of this).
pub const MAX_POLICY_COPY_BYTES: u64 = 1 << 30;

/// The bytes of `path`, a regular file of at most `max` bytes, or `None`
/// when there is no such file. Never blocks on a FIFO, never reads past
/// the cap.
fn read_bounded(path: &Path, max: u64) -> Result<Option<Vec<u8>>, StateError> {
    use crate::policy::limits::{ReadError, read_regular};
    match read_regular(path, max) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(ReadError::Io(source)) => Err(StateError::Io {
            path: path.to_owned(),
            source,
        }),
        Err(source) => Err(StateError::Refused {
            path: path.to_owned(),
            source,
        }),
    }
}

/// A sha256 in hex, as the state names a policy: also what keeps a copy's
/// name inside the state directory.
fn is_sha256_hex(hash: &str) -> bool {
    hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_owned(),
        source,
    }
}

/// The state directory of one pin directory.
#[derive(Clone, Debug)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The default state directory of `pin_dir`: its path, escaped the way
    /// systemd escapes paths, under [`STATE_ROOT`].
    pub fn for_pin_dir(pin_dir: &Path) -> Self {
        let escaped: String = pin_dir
            .to_string_lossy()
            .trim_matches('/')
            .chars()
            .map(|c| match c {
                '/' => '-',
                c if c.is_ascii_alphanumeric() || c == '_' || c == '.' => c,
                _ => '_',
            })
            .collect();
        Self::new(Path::new(STATE_ROOT).join(escaped))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn state_file(&self) -> PathBuf {
        self.path.join(STATE_FILE)
    }

    fn lock_file(&self) -> PathBuf {
        self.path.join(LOCK_FILE)
    }

    /// The saved state, if any.
    pub fn load(&self) -> Result<Option<AgentState>, StateError> {
        let path = self.state_file();
        let Some(bytes) = read_bounded(&path, MAX_STATE_BYTES)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Saves `state` atomically (a reader sees the old file or the new one).
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        self.write_json(STATE_FILE, state)
    }

    /// Saves `state` unless it is what `last` says was saved last; `last`
    /// is then what was saved. Returns whether it wrote.
    pub fn save_if_changed(
        &self,
        state: &AgentState,
        last: &mut Vec<u8>,
    ) -> Result<bool, StateError> {
        let path = self.state_file();
        let text = serde_json::to_vec(state).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        if text == *last {
            return Ok(false);
        }
        self.write_bytes(STATE_FILE, &text, true)?;
        *last = text;
        Ok(true)
    }

    /// The path of the copy of the policy whose sha256 is `hash`.
    pub fn policy_file(&self, hash: &str) -> PathBuf {
        self.path
            .join(format!("{POLICY_PREFIX}{hash}{POLICY_SUFFIX}"))
    }

    /// Keeps a copy of the policy file in force, named after its sha256
    /// `hash` (atomically), and removes the copies of other policies. Not
    /// synced to disk: like the state, it does not outlive a reboot (bpffs
    /// does not either). Written before the state that names it.
    pub fn save_policy(&self, hash: &str, text: &[u8]) -> Result<(), StateError> {
        if !is_sha256_hex(hash) {
            return Err(StateError::Io {
                path: self.policy_file(hash),
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a sha256"),
            });
        }
        let name = format!("{POLICY_PREFIX}{hash}{POLICY_SUFFIX}");
        self.write_bytes(&name, text, false)?;
        let entries = std::fs::read_dir(&self.path).map_err(io_err(&self.path))?;
        for entry in entries.flatten() {
            let other = entry.file_name();
            let other = other.to_string_lossy();
            let is_copy = other.starts_with(POLICY_PREFIX) && other.ends_with(POLICY_SUFFIX);
            // The copy of version 2 goes too.
            if (is_copy && other != name) || other == "policy.yaml" {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(())
    }

    /// The copy of the policy whose sha256 is `hash`, if it is there;
    /// checked against the hash (a copy that does not match is an error,
    /// never a policy).
    pub fn load_policy(&self, hash: &str) -> Result<Option<Vec<u8>>, StateError> {
        if !is_sha256_hex(hash) {
            return Ok(None);
        }
        let path = self.policy_file(hash);
        let Some(bytes) = read_bounded(&path, MAX_POLICY_COPY_BYTES)? else {
            return Ok(None);
        };
        if crate::policy::sha256_hex(&bytes) != hash {
            return Err(StateError::Io {
                path,
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "the copy does not match the sha256 it is named after",
                ),
            });
        }
        Ok(Some(bytes))
    }

    /// The last blocked connection attempts saved, if any.
    pub fn load_attempts(&self) -> Result<Option<RecentAttempts>, StateError> {
        let path = self.path.join(ATTEMPTS_FILE);
        let Some(bytes) = read_bounded(&path, MAX_STATE_BYTES)? else {
            return Ok(None);
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Saves the last blocked connection attempts, atomically.
    pub fn save_attempts(&self, attempts: &RecentAttempts) -> Result<(), StateError> {
        self.write_json(ATTEMPTS_FILE, attempts)
    }

    /// Writes `value` as JSON to `name` in the state directory: to a
    /// temporary file, synced, then renamed over the old one, so that a
    /// reader sees the old file or the new one, never a part.
    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> Result<(), StateError> {
        let text = serde_json::to_vec(value).map_err(|source| StateError::Corrupt {
            path: self.path.join(name),
            source,
        })?;
        self.write_bytes(name, &text, true)
    }

    /// Writes `bytes` to `name` in the state directory, by way of a
    /// temporary file renamed over the old one (synced first with `sync`).
    fn write_bytes(&self, name: &str, bytes: &[u8], sync: bool) -> Result<(), StateError> {
        std::fs::create_dir_all(&self.path).map_err(io_err(&self.path))?;
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(bytes).map_err(io_err(&tmp))?;
        if sync {
            file.sync_all().map_err(io_err(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io_err(&path))
    }

    /// Becomes the one agent of this pin directory, until the lock drops.
    pub fn lock(&self) -> Result<AgentLock, StateError> {
        std::fs::create_dir_all(&self.path).map_err(io_err(&self.path))?;
        let path = self.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(io_err(&path))?;
        if !try_flock(&file, libc::LOCK_EX) {
            let mut pid = String::new();
            let _ = (&mut file).take(32).read_to_string(&mut pid);
            return Err(StateError::Locked {
                pid: pid.trim().to_owned(),
                lock: path,
            });
        }
        file.set_len(0).map_err(io_err(&path))?;
        write!(file, "{}", std::process::id()).map_err(io_err(&path))?;
        Ok(AgentLock { _file: file })
    }

    /// The pid of the agent running with this state directory, if one is.
    pub fn running_agent(&self) -> Option<u32> {
        let path = self.lock_file();
        // Non-blocking, and a few bytes at most: whatever is there.
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .ok()?;
        if !file.metadata().ok()?.is_file() || try_flock(&file, libc::LOCK_SH) {
            // Nobody holds it: no agent. (Our shared lock drops with `file`.)
            return None;
        }
        let mut pid = String::new();
        file.take(32).read_to_string(&mut pid).ok()?;
        pid.trim().parse().ok()
    }

    /// Removes the state directory (after `detach`).
    pub fn remove(&self) -> Result<(), StateError> {
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StateError::Io {
                path: self.path.clone(),
                source,
            }),
        }
    }
}

fn try_flock(file: &File, kind: libc::c_int) -> bool {
    // SAFETY: flock(2) on an fd we own.
    unsafe { libc::flock(file.as_raw_fd(), kind | libc::LOCK_NB) == 0 }
}

/// Held while an agent runs; the kernel releases it when the process dies,
/// however it dies.
#[derive(Debug)]
pub struct AgentLock {
    _file: File,
}

mod records;

pub use records::{
    AgentState, EnforcedInterface, PolicyInForce, RECENT_PER_VM, RecentAttempt, RecentAttempts,
    RejectedPolicy, plausible_creation, unknown_identity,
};

#[cfg(test)]
mod tests;
