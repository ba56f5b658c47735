//! The state directory: round trips, the lock, the policy copies, and
//! hostile files refused.

use std::path::Path;

use chrono::{DateTime, Utc};

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
    let text = b"version: 1\n";
    let hash = crate::policy::sha256_hex(text);
    assert_eq!(states.load_policy(&hash).unwrap(), None);
    states.save_policy(&hash, text).unwrap();
    assert_eq!(
        states.load_policy(&hash).unwrap().as_deref(),
        Some(&text[..])
    );
    // A new policy's copy replaces the old one.
    let next = b"version: 1\nvms: []\n";
    let next_hash = crate::policy::sha256_hex(next);
    states.save_policy(&next_hash, next).unwrap();
    assert_eq!(states.load_policy(&hash).unwrap(), None);
    assert_eq!(
        states.load_policy(&next_hash).unwrap().as_deref(),
        Some(&next[..])
    );
    // A copy that does not match its name is an error, never a policy.
    std::fs::write(states.policy_file(&next_hash), b"version: 1\nvms: [x]\n").unwrap();
    assert!(states.load_policy(&next_hash).is_err());
    // Names that are not a sha256 never make a path.
    assert_eq!(states.load_policy("../../etc/passwd").unwrap(), None);
    assert!(states.save_policy("../x", text).is_err());
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
    let hash = "ab".repeat(32);
    fifo(&format!("policy-{hash}.yaml"));
    fifo(LOCK_FILE);
    std::os::unix::fs::symlink("/dev/zero", dir.join(ATTEMPTS_FILE)).unwrap();
    let e = states.load().unwrap_err().to_string();
    assert!(
        e.ends_with("state.json: not read: it is a FIFO, not a regular file"),
        "{e}"
    );
    let e = states.load_policy(&hash).unwrap_err().to_string();
    assert!(
        e.ends_with(".yaml: not read: it is a FIFO, not a regular file"),
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

#[test]
fn a_corrupt_state_file_is_an_error_not_a_reset() {
    let dir = std::env::temp_dir().join(format!("egt-corrupt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(STATE_FILE), b"{not json").unwrap();
    let err = StateDir::new(&dir).load().unwrap_err();
    assert!(err.to_string().contains("state.json"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
