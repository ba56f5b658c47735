//! Policy files as the agent opens them: only a regular file (a FIFO, a
//! device, a directory or a socket is refused by its type, also behind a
//! symlink, before a byte is read), and only up to the size cap; each
//! refused at once, in bounded memory.

use std::{path::Path, time::Duration};

use super::alloc::{Cost, check_cost, measure};
use crate::policy::{self, Limits, PolicyError};

/// A scratch directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "egress-guard-hostile-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

fn read_error(path: &Path, limits: Limits) -> (String, Cost) {
    let (result, cost) = measure(|| policy::load(path, limits));
    match result {
        Ok(_) => panic!("{} was read", path.display()),
        Err(e) => (e.to_string(), cost),
    }
}

#[test]
fn only_regular_files_are_read() {
    let dir = scratch("kinds");
    let fifo = dir.join("fifo.yaml");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
    let zero = dir.join("zero.yaml");
    std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
    let to_fifo = dir.join("to-fifo.yaml");
    std::os::unix::fs::symlink(&fifo, &to_fifo).expect("symlink");
    let socket = dir.join("socket.yaml");
    let _listener = std::os::unix::net::UnixListener::bind(&socket).expect("socket");
    let sub = dir.join("dir.yaml");
    std::fs::create_dir(&sub).expect("dir");
    for (path, what) in [
        (&fifo, "a FIFO"),
        (&to_fifo, "a FIFO"),
        (&zero, "a character device"),
        (&sub, "a directory"),
    ] {
        let (e, cost) = read_error(path, Limits::default());
        check_cost(0, cost, Duration::from_secs(1), 1 << 20);
        assert_eq!(
            e,
            format!(
                "{}:1:1: the policy is {what}; egress-guard reads a policy only from a regular file",
                path.display()
            )
        );
    }
    // A socket cannot be opened at all: an I/O error, at once.
    let (result, cost) = measure(|| policy::load(&socket, Limits::default()));
    check_cost(0, cost, Duration::from_secs(1), 1 << 20);
    assert!(matches!(result, Err(PolicyError::Io { .. })), "{result:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_are_read_up_to_the_size_cap() {
    let dir = scratch("size");
    let path = dir.join("big.yaml");
    let text = format!("version: 1\n#{}\n", "x".repeat(10_000));
    std::fs::write(&path, &text).expect("write");
    let limits = Limits { max_bytes: 4096 };
    let (e, cost) = read_error(&path, limits);
    check_cost(text.len(), cost, Duration::from_secs(1), 1 << 20);
    assert_eq!(
        e,
        format!(
            "{}:1:1: the policy file is {} bytes or more; the limit is 4096 bytes (--max-policy-bytes)",
            path.display(),
            text.len()
        )
    );
    // At the cap, it is read.
    let limits = Limits {
        max_bytes: text.len() as u64,
    };
    assert!(policy::load(&path, limits).is_ok());
    let _ = std::fs::remove_dir_all(&dir);
}
