//! Reading the policy file again while the agent runs: the read and the
//! comparison with the policy in force happen in a [`ReloadJob`], which the
//! run loop hands to a blocking thread (so that a large or hostile file
//! never stalls link events or scrapes); [`Agent::reloaded`] then applies
//! what it found, on the loop, at the cost of at most
//! [`policy::MAX_SPLICE`] bytes of VMs read there.

use std::{path::PathBuf, time::Instant};

use chrono::{DateTime, Utc};
use tracing::{error, info, warn};

use super::core::{Agent, AgentError, Reload};
use crate::{
    policy::{self, Change, PolicyError},
    state::RejectedPolicy,
};

/// Reading the policy file again, off the event loop: everything it needs,
/// owned.
#[derive(Debug)]
pub struct ReloadJob {
    path: PathBuf,
    limits: policy::Limits,
    /// The policy in force, to compare with; none to read the file whole.
    base: Option<policy::Base>,
    /// The bytes already read, for a second job that reads them whole.
    bytes: Option<Vec<u8>>,
}

impl ReloadJob {
    /// Reads the file within the limits (never blocking on a FIFO, never
    /// past the size cap) and compares it with the policy in force, reading
    /// it whole unless only a few VMs changed. Time linear in the file's
    /// size, memory bounded by the limits.
    pub fn run(self) -> Result<policy::Prepared, PolicyError> {
        let bytes = match self.bytes {
            Some(bytes) => bytes,
            None => policy::read(&self.path, self.limits)?,
        };
        Ok(policy::prepare(&self.path, bytes, self.base.as_ref()))
    }
}

/// What [`Agent::reloaded`] leads to.
#[derive(Debug)]
pub enum ReloadStep {
    Done(Reload),
    /// Run this job too, and hand its result to [`Agent::reloaded`].
    ReadWhole(ReloadJob),
}

impl Agent {
    /// Reads the policy file again and, if it holds a new valid policy,
    /// applies it: [`Agent::reload_job`] run here, then
    /// [`Agent::reloaded`]. The run loop runs the job on another thread
    /// instead, so that nothing a file holds can stall it.
    pub async fn reload(&mut self, now: DateTime<Utc>) -> Result<Reload, AgentError> {
        let began = Instant::now();
        let mut job = self.reload_job();
        loop {
            match self.reloaded(job.run(), began, now).await? {
                ReloadStep::Done(reload) => return Ok(reload),
                ReloadStep::ReadWhole(again) => job = again,
            }
        }
    }

    /// What reading the policy file again takes, to run anywhere
    /// ([`ReloadJob::run`]): the file is read within the limits and
    /// compared with the policy in force, and read whole unless only a few
    /// VMs changed.
    pub fn reload_job(&self) -> ReloadJob {
        let rejected = self.state.rejected.as_ref().map(|r| r.hash.as_str());
        ReloadJob {
            path: self.policy_path.clone(),
            limits: self.limits,
            base: Some(self.policy.base(rejected)),
            bytes: None,
        }
    }

    /// Applies what a [`ReloadJob`] found: a new valid policy is put in
    /// force; an invalid file is reported (each diagnostic logged, and
    /// recorded for `status`) and the policy in force stays. A change that
    /// cannot be put in place here asks for a job that reads the file
    /// whole. `began` is when the first job started.
    pub async fn reloaded(
        &mut self,
        read: Result<policy::Prepared, PolicyError>,
        began: Instant,
        now: DateTime<Utc>,
    ) -> Result<ReloadStep, AgentError> {
        let prepared = match read {
            Ok(prepared) => prepared,
            Err(PolicyError::Io { path, source }) => {
                // Deleted and not yet re-created, or unreadable: keep going.
                warn!(
                    path = %path.display(),
                    error = %source,
                    "cannot read the policy file; the policy in force stays"
                );
                return Ok(ReloadStep::Done(Reload::Unchanged));
            }
            // Refused before it was read (not a regular file, too large).
            Err(error) => policy::Prepared::Whole {
                hash: String::new(),
                result: Err(error),
            },
        };
        match self.policy.apply(prepared) {
            policy::Applied::InForce => {
                if self.state.rejected.take().is_some() {
                    self.save()?;
                }
                Ok(ReloadStep::Done(Reload::Unchanged))
            }
            policy::Applied::Rejected => Ok(ReloadStep::Done(Reload::Unchanged)),
            policy::Applied::ReadWhole { bytes, hash: _ } => Ok(ReloadStep::ReadWhole(ReloadJob {
                path: self.policy_path.clone(),
                limits: self.limits,
                base: None,
                bytes: Some(bytes),
            })),
            policy::Applied::Changed { hash, change } => {
                info!(
                    path = %self.policy_path.display(),
                    sha256 = %hash,
                    vms = self.policy.vms.len(),
                    read = match change {
                        Change::Vms { .. } => "the changed VMs",
                        Change::Whole => "the whole file",
                    },
                    "new policy"
                );
                self.state.rejected = None;
                self.evaluate(now);
                let mut done = self.reconcile(now).await?;
                done.took = began.elapsed();
                self.stats.reloads += 1;
                Ok(ReloadStep::Done(Reload::Applied {
                    generation: self.state.policy.as_ref().map_or(0, |p| p.generation),
                    done,
                }))
            }
            policy::Applied::Invalid { hash, error } => {
                self.reject(hash, &error.to_string(), now)?;
                Ok(ReloadStep::Done(Reload::Rejected))
            }
        }
    }

    /// Records a rejected version of the file (its hash, empty when it was
    /// not read) and logs its errors; the policy in force stays.
    pub fn reject(
        &mut self,
        hash: String,
        errors: &str,
        now: DateTime<Utc>,
    ) -> Result<(), AgentError> {
        for line in errors.lines() {
            error!(
                diagnostic = line,
                "policy rejected; the policy in force stays"
            );
        }
        self.stats.reload_failures += 1;
        self.state.rejected = Some(RejectedPolicy {
            path: self.policy_path.clone(),
            hash,
            at: now,
            errors: errors.to_owned(),
        });
        self.save()
    }
}
