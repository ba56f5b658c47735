//! `egress-guard check`: validate a policy and print each VM's verdict and
//! reason at a given time, without touching the kernel. It also reads (only
//! reads) the interfaces of its network namespace, to warn where the
//! policy's hook would be overridden or is not proven on an interface that
//! exists.

use std::{collections::HashMap, io::Write, path::Path};

use chrono::{DateTime, Utc};
use thiserror::Error;

use super::Format;
use crate::{
    netdev::NetDev,
    placement,
    policy::{self, Policy, PolicyError, report},
};

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
/// time `at` to `out`, and returns the warnings about the placement on
/// `devices` (the interfaces of this namespace).
pub fn check(
    path: &Path,
    limits: policy::Limits,
    at: DateTime<Utc>,
    format: Format,
    devices: &[NetDev],
    out: &mut dyn Write,
) -> Result<Vec<String>, CheckError> {
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
    .map_err(CheckError::Write)?;
    Ok(placement_warnings(&policy, &facts, devices))
}

/// One line for each interface of `devices` the policy enforces whose
/// placement is overridden or not verified, naming it, its kind and why.
pub fn placement_warnings(
    policy: &Policy,
    facts: &policy::Facts,
    devices: &[NetDev],
) -> Vec<String> {
    let verdicts = policy::verdicts(policy, facts);
    let setting = policy.enforcement.hook;
    let mut lines = Vec::new();
    for dev in devices {
        if policy.enforced(&verdicts, &dev.name).is_none() {
            continue;
        }
        let p = placement::place(setting, &dev.kind);
        if let Some(why) = p.overridden {
            lines.push(format!(
                "interface {} ({}): hook {} is not used there: {why}",
                dev.name,
                dev.kind,
                setting.as_str()
            ));
        }
        if let Some(caveat) = p.coverage.caveat() {
            lines.push(format!(
                "interface {} ({}): enforced on {}: {caveat}",
                dev.name, dev.kind, p.hook
            ));
        }
    }
    lines
}
