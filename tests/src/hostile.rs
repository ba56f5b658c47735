//! Hostile policy files (issue 13), shared by the tests of the running
//! agent (`tests/hostile.rs`) and of `check` (`tests/check_hostile.rs`):
//! each [`Case`] says how to put the file in place of the policy, and what
//! the agent and `check` say of it.

use std::{fmt::Write as _, path::Path, process::Command};

use anyhow::{Result, ensure};

/// A billion laughs (nine lists of nine, nine levels) under a VM's
/// addresses: about 500 bytes.
pub fn alias_bomb() -> String {
    let mut bomb = String::from(
        "&a0 [\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\"]",
    );
    for level in 1..9 {
        let _ = write!(bomb, ", &a{level} [");
        for i in 0..9 {
            let _ = write!(bomb, "{}*a{}", if i == 0 { "" } else { "," }, level - 1);
        }
        bomb.push(']');
    }
    format!(
        "version: 1\nsubscriptions: [{{id: s, offer: msdn, created: 2020-01-01}}]\nvms:\n  - name: v\n    subscription: s\n    interface: vm-ok\n    addresses: [{bomb}]\n"
    )
}

pub fn deep(depth: usize) -> String {
    format!(
        "version: 1\nvms: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    )
}

/// One hostile file: how to put it in place of the policy, and what the
/// agent and `check` say of it.
pub struct Case {
    pub name: &'static str,
    pub install: fn(dir: &Path, path: &Path) -> Result<()>,
    pub says: &'static str,
}

/// Puts `text` in place by rename.
pub fn replace_with(dir: &Path, path: &Path, text: &str) -> Result<()> {
    let tmp = dir.join(".new");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "a FIFO no one writes",
            install: |dir, path| {
                let tmp = dir.join(".fifo");
                let out = Command::new("mkfifo").arg(&tmp).output()?;
                ensure!(out.status.success(), "mkfifo: {out:?}");
                std::fs::rename(&tmp, path)?;
                Ok(())
            },
            says: "the policy is a FIFO; egress-guard reads a policy only from a regular file",
        },
        Case {
            name: "an alias bomb",
            install: |dir, path| replace_with(dir, path, &alias_bomb()),
            says: "an alias (`*name`); a policy file has no aliases",
        },
        Case {
            name: "nesting 60,000 deep",
            install: |dir, path| replace_with(dir, path, &deep(60_000)),
            says: "nested more than 32 levels deep",
        },
        Case {
            name: "a symlink to /dev/zero",
            install: |dir, path| {
                let tmp = dir.join(".zero");
                std::os::unix::fs::symlink("/dev/zero", &tmp)?;
                std::fs::rename(&tmp, path)?;
                Ok(())
            },
            says: "the policy is a character device",
        },
    ]
}

/// More hostile files, for `check`.
pub fn check_cases() -> Vec<Case> {
    vec![
        Case {
            name: "a file over --max-policy-bytes",
            install: |dir, path| {
                replace_with(dir, path, &format!("version: 1\n#{}\n", "x".repeat(5000)))
            },
            says: "the limit is 4096 bytes (--max-policy-bytes)",
        },
        Case {
            name: "a custom tag",
            install: |dir, path| replace_with(dir, path, "version: !evil 1\n"),
            says: "1:10: tag `!evil`",
        },
        Case {
            name: "a VM name of 1 MiB",
            install: |dir, path| {
                replace_with(
                    dir,
                    path,
                    &format!(
                        "version: 1\nsubscriptions: [{{id: s, offer: msdn, created: 2020-01-01}}]\nvms:\n  - name: {}\n    subscription: s\n    interface: tap0\n",
                        "x".repeat(1 << 20)
                    ),
                )
            },
            says: "4:11: a value of 1048576 bytes; values are at most 1024 bytes",
        },
        Case {
            name: "interface names Linux never gives",
            install: |dir, path| {
                replace_with(
                    dir,
                    path,
                    "version: 1\nsubscriptions: [{id: s, offer: msdn, created: 2020-01-01}]\nvms:\n  - {name: a, subscription: s, interface: \"tap\\0a\"}\n  - {name: b, subscription: s, interface: tap%d}\n",
                )
            },
            says: "contains a NUL byte, which Linux does not allow",
        },
    ]
}
