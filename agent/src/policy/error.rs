//! What a failed read of a policy file says: every problem at its line and
//! column ([`Diagnostic`]), or why the file could not be read at all.
//!
//! Invariant: a [`PolicyError::Invalid`] holds at least one diagnostic, in
//! file order, and displays one `file:line:col: message` a line.

use std::{fmt, path::PathBuf};

use thiserror::Error;

/// One problem in a policy file, at a 1-based line and column.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.line, self.column, self.message
        )
    }
}

#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("reading the policy {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Every problem found, in file order. Displays one
    /// `file:line:col: message` a line.
    #[error("{}", lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn lines(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl PolicyError {
    /// The diagnostics, if the policy was read but is invalid.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        match self {
            PolicyError::Invalid(d) => d,
            PolicyError::Io { .. } => &[],
        }
    }
}
