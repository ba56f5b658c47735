//! `egress-guard check`: validate a policy and print each VM's verdict and
//! reason at a given time, without touching the kernel.

use std::{collections::HashMap, io::Write, path::Path};

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::Format;
use crate::policy::{self, PolicyError, report};

#[derive(Debug, Error)]
pub enum CheckError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("writing the report: {0}")]
    Write(#[source] std::io::Error),
}

impl CheckError {
    /// 2 for an invalid policy, 1 for the rest.
    pub fn exit_code(&self) -> u8 {
        match self {
            CheckError::Policy(PolicyError::Invalid(_)) => 2,
            _ => 1,
        }
    }
}

/// Writes the verdicts of the policy at `path` (read within `limits`) at
/// time `at` to `out`.
pub fn check(
    path: &Path,
    limits: policy::Limits,
    at: DateTime<Utc>,
    format: Format,
    out: &mut dyn Write,
) -> Result<(), CheckError> {
    let policy = policy::load(path, limits)?;
    let no_observations = HashMap::new();
    let facts = policy::Facts {
        now: at,
        interface_created: &no_observations,
    };
    match format {
        Format::Table => report::write_table(out, &policy, &facts),
        Format::Json => report::write_json(out, &policy, &facts, path),
    }
    .map_err(CheckError::Write)
}
