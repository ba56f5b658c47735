//! `egress-guard detach`: take enforcement off, removing every program
//! link, map and pin of one pin directory, and the agent's state.

use std::io;

use thiserror::Error;

use super::Location;
use crate::datapath::links::LinkError;

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
    let (links, pins) = location.pins.detach_all()?;
    location.states.remove()?;
    Ok(Detached { links, pins })
}
