//! `egress-guard detach`: take enforcement off, removing every program
//! link, map and pin of one pin directory, and the agent's state.

use std::io;

use thiserror::Error;

use super::Location;
use crate::datapath::links::{LinkError, pinned_links, unpin};

#[derive(Debug, Error)]
pub enum DetachError {
    #[error(
        "an egress-guard agent (pid {0}) is running with this pin directory: stop it first \
         (systemctl stop egress-guard), or it would put enforcement back"
    )]
    AgentRunning(u32),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("removing {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// What `detach` removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Detached {
    pub links: usize,
    pub pins: usize,
}

pub fn detach(location: &Location) -> Result<Detached, DetachError> {
    if let Some(pid) = location.states.running_agent() {
        return Err(DetachError::AgentRunning(pid));
    }
    let root = location.pins.root();
    let mut done = Detached::default();
    // Links first: the interfaces are free the moment their pin goes.
    for link in pinned_links(&location.pins)? {
        unpin(&link.path)?;
        done.links += 1;
    }
    if root.exists() {
        done.pins = count_files(root);
        std::fs::remove_dir_all(root).map_err(|source| DetachError::Io {
            path: root.to_owned(),
            source,
        })?;
    }
    location.states.remove()?;
    Ok(done)
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    count_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}
