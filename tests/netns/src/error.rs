//! The one error type of the fixtures. Every variant says what was being done,
//! and for a command: the command line, how it ended and what it printed.

use std::{io, time::Duration};

/// What went wrong while building or using a fixture.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A program could not be started at all (not installed, not executable).
    #[error("could not start `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// A program ran and failed.
    #[error("`{command}` failed ({status})\n--- stderr ---\n{stderr}--- stdout ---\n{stdout}")]
    Failed {
        command: String,
        status: String,
        stdout: String,
        stderr: String,
    },
    /// A program, or a condition, did not finish in time.
    #[error("timed out after {timeout:?} waiting for {what}\n{details}")]
    Timeout {
        what: String,
        timeout: Duration,
        details: String,
    },
    /// A file or directory operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A program printed something that is not the JSON we expected.
    #[error("`{command}` printed output that is not valid JSON ({source}):\n{output}")]
    Json {
        command: String,
        output: String,
        #[source]
        source: serde_json::Error,
    },
    /// Anything else, said in words.
    #[error("{0}")]
    Other(String),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: io::Error) -> Self {
        Self::Io {
            what: what.into(),
            source,
        }
    }
}

/// The fixtures' result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
