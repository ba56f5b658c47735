//! What the state directory says of the policy in force and the interfaces
//! enforced, and the copy of the policy file `status` evaluates.
//!
//! Invariant: the copy of a new policy is written before the state that
//! names it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use super::core::{Agent, AgentError};
use crate::state::{EnforcedInterface, PolicyInForce};

impl Agent {
    /// The generation of the policy in force: the saved one if the file is
    /// the same, the next one otherwise.
    pub(super) fn generation(&self) -> u64 {
        match &self.state.policy {
            Some(p) if p.hash == self.policy.hash => p.generation,
            Some(p) => p.generation + 1,
            None => 1,
        }
    }

    /// What the state says of the policy in force and the interfaces
    /// enforced; the copy of the policy file first when it is new.
    pub(super) fn record(
        &mut self,
        now: DateTime<Utc>,
        generation: u64,
        interfaces: BTreeMap<u32, EnforcedInterface>,
    ) -> Result<(), AgentError> {
        let same_policy = self
            .state
            .policy
            .as_ref()
            .is_some_and(|p| p.generation == generation && p.path == self.policy_path);
        if !same_policy {
            self.state.policy = Some(PolicyInForce {
                path: self.policy_path.clone(),
                hash: self.policy.hash.clone(),
                generation,
                applied_at: now,
            });
        }
        self.state.interfaces = interfaces;
        self.state.evaluated_at = self.verdicts.as_ref().map(|v| v.at);
        self.state.version = crate::state::STATE_VERSION;
        if self.copied.as_deref() != Some(self.policy.hash.as_str())
            && let Some(text) = self.policy.text()
        {
            self.states
                .save_policy(&self.policy.hash, text.as_bytes())?;
            self.copied = Some(self.policy.hash.clone());
        }
        self.save()
    }
}
