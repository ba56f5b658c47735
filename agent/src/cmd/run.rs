//! `egress-guard run`: enforce a policy, and keep enforcing it.

use std::{path::PathBuf, time::Duration};

use chrono::Utc;
use tokio::signal::unix::{SignalKind, signal};
use tracing::{info, warn};

use super::Location;
use crate::agent::{Agent, AgentError, Reconciled};

/// How often the agent re-reads the interfaces and re-applies the policy.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(5);

pub struct RunOptions {
    pub policy: PathBuf,
    pub location: Location,
}

/// Runs until SIGTERM or SIGINT. Enforcement stays in place when it
/// returns: only `detach` removes it.
pub async fn run(options: RunOptions) -> Result<(), AgentError> {
    let RunOptions { policy, location } = options;
    let mut agent = Agent::start(&policy, location.pins.clone(), location.states.clone())?;
    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;

    let mut ready = false;
    let mut first = true;
    loop {
        match agent.reconcile(Utc::now()).await {
            Ok(done) => {
                log_changes(&done);
                if !ready && done.failed == 0 {
                    ready = true;
                    announce_ready(&agent, &done);
                }
            }
            // The first reconcile failing is fatal (nothing may be enforced
            // yet); later ones are retried.
            Err(e) if first => return Err(e),
            Err(e) => warn!(error = %crate::error_chain(&e), "reconcile failed; retrying"),
        }
        first = false;
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            () = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    info!("stopping; enforcement stays in place until `egress-guard detach`");
    Ok(())
}

fn log_changes(done: &Reconciled) {
    if done.written + done.removed + done.attached + done.detached > 0 {
        info!(
            enforced = done.enforced,
            blocked = done.blocked,
            failed = done.failed,
            map_writes = done.written,
            map_removals = done.removed,
            attached = done.attached,
            detached = done.detached,
            "applied"
        );
    }
}

fn announce_ready(agent: &Agent, done: &Reconciled) {
    let state = agent.state();
    let (hash, generation) = state.policy.as_ref().map_or(("-", 0), |p| {
        (p.hash.get(..12).unwrap_or(&p.hash), p.generation)
    });
    let line = format!(
        "egress-guard ready: enforcing {} interface(s), {} blocked, {} allowed; policy {} sha256:{} generation {}",
        done.enforced,
        done.blocked,
        done.enforced - done.blocked,
        state
            .policy
            .as_ref()
            .map_or_else(String::new, |p| p.path.display().to_string()),
        hash,
        generation,
    );
    println!("{line}");
    let _ = sd_notify::notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&line),
    ]);
}
