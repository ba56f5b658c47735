//! What the agent remembers besides the maps: the policy in force and the
//! verdicts it led to, the interface creations it saw (rule 3 of the verdict
//! rules counts a new interface as a VM restart), and which process is the
//! agent. It lives in a state directory under /run (a tmpfs, like bpffs: both
//! go at reboot), one per pin directory, so two agents never share one.
//!
//! `status` reads it, with the pinned maps, whether or not an agent runs.

use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where state directories go unless `--state-dir` says otherwise.
pub const STATE_ROOT: &str = "/run/egress-guard";

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "agent.lock";
/// The last blocked connection attempts of each VM (see
/// [`RecentAttempts`]), for `status --vm`.
const ATTEMPTS_FILE: &str = "attempts.json";
const STATE_VERSION: u32 = 1;

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
    #[error(
        "another egress-guard agent (pid {pid}) is running with this pin directory ({lock}); stop it first"
    )]
    Locked { pid: String, lock: PathBuf },
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
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StateError::Corrupt { path, source })
    }

    /// Saves `state` atomically (a reader sees the old file or the new one).
    pub fn save(&self, state: &AgentState) -> Result<(), StateError> {
        self.write_json(STATE_FILE, state)
    }

    /// The last blocked connection attempts saved, if any.
    pub fn load_attempts(&self) -> Result<Option<RecentAttempts>, StateError> {
        let path = self.path.join(ATTEMPTS_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(StateError::Io { path, source }),
        };
        serde_json::from_str(&text)
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
        std::fs::create_dir_all(&self.path).map_err(io_err(&self.path))?;
        let path = self.path.join(name);
        let tmp = self.path.join(format!(".{name}.tmp"));
        let text = serde_json::to_vec(value).map_err(|source| StateError::Corrupt {
            path: path.clone(),
            source,
        })?;
        let mut file = File::create(&tmp).map_err(io_err(&tmp))?;
        file.write_all(&text).map_err(io_err(&tmp))?;
        file.sync_all().map_err(io_err(&tmp))?;
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
            .open(&path)
            .map_err(io_err(&path))?;
        if !try_flock(&file, libc::LOCK_EX) {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
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
        let mut file = File::open(&path).ok()?;
        if try_flock(&file, libc::LOCK_SH) {
            // Nobody holds it: no agent. (Our shared lock drops with `file`.)
            return None;
        }
        let mut pid = String::new();
        file.read_to_string(&mut pid).ok()?;
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

/// Everything the agent saves.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    pub version: u32,
    /// The policy whose verdicts the maps hold.
    pub policy: Option<PolicyInForce>,
    /// The last policy that was rejected, while the one in force stays.
    #[serde(default)]
    pub rejected: Option<RejectedPolicy>,
    /// The latest creation the agent observed of each interface name.
    #[serde(default)]
    pub interface_created: BTreeMap<String, DateTime<Utc>>,
    /// The enforced interfaces, by ifindex.
    #[serde(default)]
    pub interfaces: BTreeMap<u32, EnforcedInterface>,
    /// The verdict of each VM in the policy in force, as enforced.
    #[serde(default)]
    pub vms: Vec<VmRecord>,
}

impl AgentState {
    pub fn new() -> Self {
        Self {
            version: STATE_VERSION,
            ..Self::default()
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInForce {
    pub path: PathBuf,
    /// sha256 of the file's bytes.
    pub hash: String,
    /// Counts the policies this agent state has applied, from 1.
    pub generation: u64,
    pub applied_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RejectedPolicy {
    pub path: PathBuf,
    /// sha256 of the rejected file's bytes.
    #[serde(default)]
    pub hash: String,
    pub at: DateTime<Utc>,
    /// One `file:line:col: message` a line.
    pub errors: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnforcedInterface {
    pub name: String,
    pub hook: String,
    /// The VM it belongs to, or none (an `attach` glob matched it).
    pub vm: Option<String>,
    pub verdict: String,
    pub key: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub subscription: String,
    pub offer: String,
    pub interface: String,
    pub verdict: String,
    pub reason: String,
    pub reason_code: String,
    pub key: u64,
}

/// How many attempts [`RecentAttempts`] keeps per VM.
pub const RECENT_PER_VM: usize = 10;

/// The last blocked connection attempts of each VM, newest first, at most
/// [`RECENT_PER_VM`] each. Repeats of one attempt (same source address,
/// destination and port, within the agent's repeat window) share one entry.
/// The agent writes it (at most once a second, and when it stops); `status
/// --vm` reads it, whether or not an agent runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentAttempts {
    pub version: u32,
    /// By VM name (`unknown:<interface>` for an interface of no VM).
    pub vms: BTreeMap<String, Vec<RecentAttempt>>,
}

/// One blocked connection attempt (or a run of repeats of it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecentAttempt {
    /// When the (first) SYN arrived.
    pub at: DateTime<Utc>,
    /// When the last repeat arrived (`at` when there was none).
    pub last: DateTime<Utc>,
    /// SYNs this entry stands for (1 and its repeats) whose events reached
    /// the agent.
    pub count: u64,
    pub interface: String,
    /// `ipv4` or `ipv6`.
    pub family: String,
    pub src: std::net::IpAddr,
    pub src_port: u16,
    pub dst: std::net::IpAddr,
    pub dst_port: u16,
    /// The policy was in audit mode: the SYN was let through.
    #[serde(default)]
    pub audit: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_dirs_follow_the_pin_dir() {
        assert_eq!(
            StateDir::for_pin_dir(Path::new("/sys/fs/bpf/egress-guard")).path(),
            Path::new("/run/egress-guard/sys-fs-bpf-egress_guard")
        );
        assert_ne!(
            StateDir::for_pin_dir(Path::new("/sys/fs/bpf/a")).path(),
            StateDir::for_pin_dir(Path::new("/sys/fs/bpf/b")).path()
        );
    }

    #[test]
    fn state_round_trips_and_the_lock_is_exclusive() {
        let dir = std::env::temp_dir().join(format!("egt-state-{}", std::process::id()));
        let states = StateDir::new(&dir);
        assert_eq!(states.load().unwrap(), None);
        let mut state = AgentState::new();
        state
            .interface_created
            .insert("tap1".into(), "2026-01-02T03:04:05Z".parse().unwrap());
        states.save(&state).unwrap();
        assert_eq!(states.load().unwrap(), Some(state));

        assert_eq!(states.running_agent(), None);
        let lock = states.lock().unwrap();
        assert_eq!(states.running_agent(), Some(std::process::id()));
        assert!(matches!(states.lock(), Err(StateError::Locked { .. })));
        drop(lock);
        assert_eq!(states.running_agent(), None);
        states.remove().unwrap();
        assert!(!dir.exists());
    }

    #[test]
    fn recent_attempts_round_trip() {
        let dir = std::env::temp_dir().join(format!("egt-attempts-{}", std::process::id()));
        let states = StateDir::new(&dir);
        assert_eq!(states.load_attempts().unwrap(), None);
        let at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
        let mut recent = RecentAttempts::default();
        recent.vms.insert(
            "web-1".into(),
            vec![RecentAttempt {
                at,
                last: at,
                count: 3,
                interface: "tap1".into(),
                family: "ipv4".into(),
                src: "10.0.0.4".parse().unwrap(),
                src_port: 40000,
                dst: "198.51.100.2".parse().unwrap(),
                dst_port: 25,
                audit: false,
            }],
        );
        states.save_attempts(&recent).unwrap();
        assert_eq!(states.load_attempts().unwrap(), Some(recent));
        states.remove().unwrap();
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_not_a_reset() {
        let dir = std::env::temp_dir().join(format!("egt-corrupt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
        let err = StateDir::new(&dir).load().unwrap_err();
        assert!(err.to_string().contains("state.json"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
