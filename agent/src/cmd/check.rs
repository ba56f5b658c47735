//! `egress-guard check`: validate a policy and print each VM's verdict and
//! reason at a given time, without touching the kernel.

use std::{collections::HashMap, path::Path};

use chrono::{DateTime, Utc};

use super::Format;
use crate::policy::{self, PolicyError, report};

/// Prints the verdicts of the policy at `path` at time `at`.
pub fn check(path: &Path, at: DateTime<Utc>, format: Format) -> Result<String, PolicyError> {
    let policy = policy::load(path)?;
    let no_observations = HashMap::new();
    let desired = policy::evaluate(
        &policy,
        &policy::Facts {
            now: at,
            interface_created: &no_observations,
        },
    );
    Ok(match format {
        Format::Table => report::table(&desired),
        Format::Json => {
            let mut json = report::json(&desired, at);
            json["policy"] = serde_json::json!({
                "path": path,
                "hash": policy.hash,
            });
            let mut text = serde_json::to_string_pretty(&json).unwrap_or_default();
            text.push('\n');
            text
        }
    })
}
