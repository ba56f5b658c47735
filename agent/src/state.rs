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
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{self, Read as _, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Where state directories go unless `--state-dir` says otherwise.
pub const STATE_ROOT: &str = "/run/egress-guard";

const STATE_FILE: &str = "state.json";
const LOCK_FILE: &str = "agent.lock";
/// The file of the policy in force, as the agent read it.
const POLICY_FILE: &str = "policy.yaml";
/// The last blocked connection attempts of each VM (see
/// [`RecentAttempts`]), for `status --vm`.
const ATTEMPTS_FILE: &str = "attempts.json";
/// 1: every VM's verdict and reason recorded in the state file; 2: none,
/// the policy file kept beside it instead ([`POLICY_FILE`]).
pub const STATE_VERSION: u32 = 2;

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

    /// The path of the copy of the policy in force.
    pub fn policy_file(&self) -> PathBuf {
        self.path.join(POLICY_FILE)
    }

    /// Keeps a copy of the policy file in force (atomically). Not synced to
    /// disk: like the state, it does not outlive a reboot (bpffs does not
    /// either), and a reader sees the old file or the new one.
    pub fn save_policy(&self, text: &[u8]) -> Result<(), StateError> {
        self.write_bytes(POLICY_FILE, text, false)
    }

    /// The copy of the policy in force, if there is one.
    pub fn load_policy(&self) -> Result<Option<Vec<u8>>, StateError> {
        read_bounded(&self.policy_file(), MAX_POLICY_COPY_BYTES)
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
    /// The time the verdicts the maps hold were evaluated at: `status`
    /// evaluates the copy of the policy at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Version 1: the verdict of each VM in the policy in force, as
    /// enforced. Read (for `status`), never written.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<VmRecord>,
}

impl AgentState {
    pub fn new() -> Self {
        Self {
            version: STATE_VERSION,
            ..Self::default()
        }
    }

    /// Drops what no agent could have recorded, so that a tampered state
    /// cannot open an exemption: interface creations in the future (after
    /// `now`) or of names Linux never gives. Returns how many were dropped.
    pub fn sanitize(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.interface_created.len();
        self.interface_created
            .retain(|name, at| plausible_creation(name, *at, now));
        before - self.interface_created.len()
    }
}

/// Whether an agent could have seen interface `name` created at `at`,
/// by `now`.
pub fn plausible_creation(name: &str, at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
    at <= now && crate::policy::check_ifname(name).is_ok()
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
    /// The kind of device (`veth`, `tap`, `tun`, `macvtap`, ...).
    #[serde(default)]
    pub kind: String,
    /// How far its placement is proven (`verified`, `reasoned`,
    /// `unverified`): see `placement::Coverage`.
    #[serde(default)]
    pub coverage: String,
    /// The VM it belongs to, or none (an `attach` glob matched it).
    pub vm: Option<String>,
    pub verdict: String,
    pub key: u64,
}

/// One VM's verdict, as a state file of version 1 recorded it.
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
    fn saves_are_skipped_when_nothing_changed_and_the_policy_is_kept() {
        let dir = std::env::temp_dir().join(format!("egt-skip-{}", std::process::id()));
        let states = StateDir::new(&dir);
        let mut state = AgentState::new();
        let mut last = Vec::new();
        assert!(states.save_if_changed(&state, &mut last).unwrap());
        assert!(!states.save_if_changed(&state, &mut last).unwrap());
        state.evaluated_at = Some("2026-01-02T03:04:05Z".parse().unwrap());
        assert!(states.save_if_changed(&state, &mut last).unwrap());
        assert_eq!(states.load().unwrap(), Some(state));
        assert_eq!(states.load_policy().unwrap(), None);
        states.save_policy(b"version: 1\n").unwrap();
        assert_eq!(
            states.load_policy().unwrap().as_deref(),
            Some(&b"version: 1\n"[..])
        );
        states.remove().unwrap();
    }

    /// A state directory that was tampered with: a FIFO, a device, a
    /// truncated file. Each is refused at once with an error naming it
    /// (never read past the cap, never waited on), and the lock's pid file
    /// as a FIFO does not hang `status`.
    #[test]
    fn hostile_state_files_are_refused_at_once() {
        let dir = std::env::temp_dir().join(format!("egt-hostile-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let states = StateDir::new(&dir);
        let fifo = |name: &str| {
            let c = std::ffi::CString::new(dir.join(name).as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        };
        let t = std::time::Instant::now();
        fifo(STATE_FILE);
        fifo(POLICY_FILE);
        fifo(LOCK_FILE);
        std::os::unix::fs::symlink("/dev/zero", dir.join(ATTEMPTS_FILE)).unwrap();
        let e = states.load().unwrap_err().to_string();
        assert!(
            e.ends_with("state.json: not read: it is a FIFO, not a regular file"),
            "{e}"
        );
        let e = states.load_policy().unwrap_err().to_string();
        assert!(
            e.ends_with("policy.yaml: not read: it is a FIFO, not a regular file"),
            "{e}"
        );
        let e = states.load_attempts().unwrap_err().to_string();
        assert!(e.contains("a character device"), "{e}");
        assert_eq!(states.running_agent(), None);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(2),
            "{:?}",
            t.elapsed()
        );

        // Truncated: corrupt, said so.
        std::fs::remove_file(dir.join(STATE_FILE)).unwrap();
        let mut state = AgentState::new();
        state
            .interface_created
            .insert("tap1".into(), "2026-01-02T03:04:05Z".parse().unwrap());
        states.save(&state).unwrap();
        let text = std::fs::read(dir.join(STATE_FILE)).unwrap();
        std::fs::write(dir.join(STATE_FILE), &text[..text.len() / 2]).unwrap();
        let e = states.load().unwrap_err().to_string();
        assert!(
            e.contains("state.json: not a state file of this egress-guard: EOF"),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Interface creations no agent could have seen are dropped: they
    /// could open an exemption (rule 3).
    #[test]
    fn sanitize_drops_impossible_creations() {
        let now: DateTime<Utc> = "2026-01-02T00:00:00Z".parse().unwrap();
        let mut state = AgentState::new();
        for (name, at) in [
            ("tap1", "2026-01-01T00:00:00Z"),
            ("tap2", "2030-01-01T00:00:00Z"),
            ("tap:3", "2026-01-01T00:00:00Z"),
            ("a-name-far-too-long", "2026-01-01T00:00:00Z"),
        ] {
            state
                .interface_created
                .insert(name.into(), at.parse().unwrap());
        }
        assert_eq!(state.sanitize(now), 3);
        assert_eq!(state.interface_created.keys().collect::<Vec<_>>(), ["tap1"]);
    }

    /// A state file written by the agent before version 2 (every VM's
    /// record in it) still reads, records and all.
    #[test]
    fn a_version_1_state_file_reads() {
        let text = r#"{"version":1,"policy":{"path":"/etc/egress-guard/policy.yaml","hash":"ab","generation":3,"applied_at":"2026-01-02T03:04:05Z"},"rejected":null,"interface_created":{"tap1":"2026-01-02T03:04:05Z"},"interfaces":{"7":{"name":"tap1","hook":"tc","vm":"web-1","verdict":"block","key":42}},"vms":[{"name":"web-1","subscription":"s","offer":"msdn","interface":"tap1","verdict":"block","reason":"r","reason_code":"not-exemptable","key":42}]}"#;
        let state: AgentState = serde_json::from_str(text).unwrap();
        assert_eq!(state.version, 1);
        assert_eq!(state.vms.len(), 1);
        assert_eq!(state.evaluated_at, None);
        assert_eq!(state.interfaces[&7].vm.as_deref(), Some("web-1"));
        // Written again, it has no records.
        let mut state = state;
        state.vms.clear();
        assert!(!serde_json::to_string(&state).unwrap().contains("\"vms\""));
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
