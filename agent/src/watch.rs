//! Noticing that the policy file may have changed, however it changed:
//!
//! - edited in place (IN_MODIFY / IN_CLOSE_WRITE on the file);
//! - replaced by rename (IN_MOVED_TO in its directory);
//! - swapped through a directory symlink, as a Kubernetes ConfigMap volume
//!   does (`..data` renamed over in the same directory: IN_MOVED_TO);
//! - deleted and created again (IN_DELETE, IN_CREATE).
//!
//! inotify watches the directory the path names and the directory of the
//! file it resolves to; a one-second poll of the file's identity (device,
//! inode, size, times) catches what inotify cannot see, such as the
//! directory itself being replaced. The watcher only says "look again": the
//! agent re-reads the file and compares its hash, so a spurious wake-up
//! costs one read.

use std::{
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::Duration,
};

use futures::StreamExt as _;
use inotify::{EventStream, Inotify, WatchMask};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("cannot watch for policy changes: {0}")]
    Init(#[source] std::io::Error),
}

/// How often the file's identity is polled, besides inotify.
pub const POLL_EVERY: Duration = Duration::from_secs(1);

/// What identifies one version of a file without reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

fn identity(path: &Path) -> Option<Identity> {
    let m = std::fs::metadata(path).ok()?;
    Some(Identity {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    })
}

/// Watches one policy file.
pub struct PolicyWatch {
    path: PathBuf,
    events: EventStream<Vec<u8>>,
    last: Option<Identity>,
    poll: tokio::time::Interval,
    inotify_alive: bool,
}

impl PolicyWatch {
    pub fn new(path: &Path) -> Result<Self, WatchError> {
        let inotify = Inotify::init().map_err(WatchError::Init)?;
        let events = inotify
            .into_event_stream(vec![0u8; 16 * 1024])
            .map_err(WatchError::Init)?;
        let mut poll = tokio::time::interval(POLL_EVERY);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watch = Self {
            path: path.to_owned(),
            events,
            last: identity(path),
            poll,
            inotify_alive: true,
        };
        watch.rewatch();
        Ok(watch)
    }

    /// (Re-)adds the watches: the directory of the path as given, and the
    /// directory of the file it resolves to now. Adding a watch twice is
    /// harmless; a directory that does not exist is skipped (the poll still
    /// sees the file come back).
    fn rewatch(&mut self) {
        let mask = WatchMask::MODIFY
            | WatchMask::CLOSE_WRITE
            | WatchMask::ATTRIB
            | WatchMask::CREATE
            | WatchMask::DELETE
            | WatchMask::MOVED_TO
            | WatchMask::MOVED_FROM
            | WatchMask::DELETE_SELF
            | WatchMask::MOVE_SELF;
        let mut dirs = Vec::new();
        if let Some(parent) = self.path.parent() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            dirs.push(parent.to_owned());
        }
        if let Ok(real) = std::fs::canonicalize(&self.path)
            && let Some(parent) = real.parent()
        {
            dirs.push(parent.to_owned());
        }
        let mut watches = self.events.watches();
        for dir in dirs {
            let _ = watches.add(&dir, mask);
        }
    }

    /// Returns when the file may have changed.
    pub async fn changed(&mut self) {
        loop {
            tokio::select! {
                event = self.events.next(), if self.inotify_alive => {
                    if event.is_some() {
                        self.rewatch();
                        self.last = identity(&self.path);
                        return;
                    }
                    // The stream ended (cannot happen with a live fd): the
                    // poll alone goes on.
                    self.inotify_alive = false;
                }
                _ = self.poll.tick() => {
                    let now = identity(&self.path);
                    if now != self.last {
                        self.last = now;
                        self.rewatch();
                        return;
                    }
                }
            }
        }
    }
}
