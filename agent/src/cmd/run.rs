//! `egress-guard run`: enforce a policy, and keep enforcing it while
//! everything around it changes.
//!
//! One loop waits on every source of change and hands each to the agent:
//!
//! | source | what happens |
//! |---|---|
//! | rtnetlink link event | the interface is enforced (or cleaned up) at once; a reconcile follows shortly |
//! | the policy file changes (inotify, or a 1 s identity poll) | after 100 ms of quiet, the file is re-read on another thread and, if new and valid, applied |
//! | SIGHUP | the file is re-read (on another thread), and a full reconcile runs (verdicts evaluated again) |
//! | the re-read is done | a new valid policy is applied; an invalid one is reported and the policy in force stays |
//! | the re-read takes longer than 60 s | it is abandoned, and counted as a failed reload |
//! | a grant, revocation or start time comes | a full reconcile at that instant, verdicts evaluated again |
//! | every 30 s | a full reconcile, which catches whatever an event missed (interfaces listed and compared with the maps and links; the verdicts are evaluated again only if they can have changed) |
//! | a scrape of `/metrics` | a snapshot of the counters and the agent's state |
//! | the ring buffer of blocked attempts is readable | the events are logged (repeats summarised) |
//! | every second | repeat windows that ended are summarised; the last attempts are saved |
//! | SIGTERM, SIGINT | the loop ends; enforcement stays |
//!
//! The policy file is read and validated off the loop ([`ReloadJob`], on
//! tokio's blocking threads), so that while a large or hostile file is
//! read, link events are still enforced with the policy in force and
//! scrapes are answered. Only a change of a few VMs is put in place on the
//! loop itself (at most [`crate::policy::MAX_SPLICE`] bytes of VMs).

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use tokio::{
    signal::unix::{SignalKind, signal},
    time::Instant,
};
use tracing::{info, warn};

use egress_guard_common::maps::AttemptEvent;

use super::Location;
use crate::{
    agent::{AfterLinkEvent, Agent, AgentError, Reconciled, Reload, ReloadJob, ReloadStep},
    events::EventReader,
    metrics,
    netdev::LinkEvents,
    watch::PolicyWatch,
};

/// How often a full reconcile runs when nothing asks for one.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(30);
/// How long after a link event the follow-up reconcile runs (events come in
/// bursts when a hypervisor starts many VMs).
pub const AFTER_LINK_EVENT: Duration = Duration::from_millis(200);
/// How long the policy file must stay quiet before it is re-read (an editor
/// or a copy writes in several steps).
pub const FILE_QUIET: Duration = Duration::from_millis(100);
/// How long a re-read of the policy file may take before it is abandoned
/// (the policy in force stays).
pub const READ_DEADLINE: Duration = Duration::from_mins(1);

pub struct RunOptions {
    pub policy: PathBuf,
    pub location: Location,
    /// Where `/metrics`, `/healthz` and `/readyz` listen.
    pub metrics_addr: SocketAddr,
    /// Repeated blocked attempts from a VM to one destination within this
    /// are logged once, then summarised.
    pub repeat_window: Duration,
    /// The bounds on reading the policy file.
    pub limits: crate::policy::Limits,
}

/// Runs until SIGTERM or SIGINT. Enforcement stays in place when it
/// returns: only `detach` removes it.
#[allow(
    clippy::too_many_lines,
    reason = "the one loop over every source of change, read top to bottom"
)]
pub async fn run(options: RunOptions) -> Result<(), AgentError> {
    let RunOptions {
        policy,
        location,
        metrics_addr,
        repeat_window,
        limits,
    } = options;
    // Subscribe to link events before the first listing, so that no
    // interface created in between is missed.
    let mut links = LinkEvents::subscribe()?;
    let mut agent = Agent::start(
        &policy,
        limits,
        location.pins.clone(),
        location.states.clone(),
    )?;
    agent.set_repeat_window(repeat_window);
    let mut reader = None;
    refresh_reader(&mut agent, &mut reader);
    let mut attempt_tick = tokio::time::interval(Duration::from_secs(1));
    attempt_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watch = PolicyWatch::new(&policy).map_err(AgentError::Watch)?;
    let mut terminate = signal(SignalKind::terminate()).map_err(AgentError::Signals)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(AgentError::Signals)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(AgentError::Signals)?;
    let ready_flag = Arc::new(AtomicBool::new(false));
    let mut scrapes = metrics::serve(metrics_addr, Arc::clone(&ready_flag)).await?;

    // The first reconcile failing is fatal: nothing may be enforced yet.
    let done = agent.reconcile(Utc::now()).await?;
    log_changes(&done);
    let mut ready = done.failed == 0;
    if ready {
        ready_flag.store(true, Ordering::Relaxed);
        announce_ready(&agent, &done);
    }
    // The re-read of the policy file under way, if any; whether the file
    // changed again since it began; when the file has been quiet long
    // enough to be read.
    let mut reading: Option<Reading> = None;
    let mut again = false;
    let mut quiet_until: Option<Instant> = None;
    let mut due = Instant::now()
        + if ready {
            RECONCILE_EVERY
        } else {
            Duration::from_secs(2)
        };

    loop {
        // A move to a new map set brings a new ring buffer.
        refresh_reader(&mut agent, &mut reader);
        let wake = match agent.next_change() {
            Some(at) => due.min(instant_of(at)),
            None => due,
        };
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                info!("SIGHUP: re-reading the policy");
                start_reading(&agent, &mut reading, &mut again);
                agent.refresh_verdicts();
                due = Instant::now();
            }
            event = links.next() => {
                let Some(event) = event else {
                    warn!("the rtnetlink event stream ended; subscribing again");
                    links = LinkEvents::subscribe()?;
                    due = Instant::now();
                    continue;
                };
                match agent.on_link_event(event, Utc::now()) {
                    Ok(AfterLinkEvent::Reconcile) => due = due.min(Instant::now() + AFTER_LINK_EVENT),
                    Ok(AfterLinkEvent::Done) => {}
                    Err(e) => {
                        warn!(error = %crate::error_chain(&e), "handling a link event; reconciling");
                        due = Instant::now();
                    }
                }
            }
            batch = next_events(&mut reader) => {
                match batch {
                    Ok(batch) => agent.on_attempts(&batch),
                    Err(e) => {
                        warn!(error = %e, "reading the blocked attempts' ring buffer; no more attempts will be logged");
                        reader = None;
                    }
                }
            }
            _ = attempt_tick.tick() => agent.tick_attempts(),
            Some(reply) = scrapes.recv() => {
                match agent.snapshot(ready_flag.load(Ordering::Relaxed)) {
                    Ok(snapshot) => { let _ = reply.send(snapshot); }
                    Err(e) => warn!(error = %crate::error_chain(&e), "reading the counters for a scrape"),
                }
            }
            () = watch.changed() => {
                // Let a multi-step write finish.
                quiet_until = Some(Instant::now() + FILE_QUIET);
            }
            () = sleep_until_some(quiet_until) => {
                quiet_until = None;
                start_reading(&agent, &mut reading, &mut again);
            }
            (read, began) = finished(&mut reading) => {
                reading = None;
                if let Some(read) = read {
                    match agent.reloaded(read, began, Utc::now()).await {
                        Ok(ReloadStep::Done(done)) => log_reload(Ok(done)),
                        Ok(ReloadStep::ReadWhole(job)) => reading = Some(Reading::start(job, began)),
                        Err(e) => log_reload(Err(e)),
                    }
                } else {
                    warn!(
                        deadline_s = READ_DEADLINE.as_secs(),
                        "re-reading the policy file did not finish in time; the policy in force stays"
                    );
                    agent.stats.reload_failures += 1;
                }
                if reading.is_none() && std::mem::take(&mut again) {
                    start_reading(&agent, &mut reading, &mut again);
                }
            }
            () = tokio::time::sleep_until(wake) => {
                match agent.reconcile(Utc::now()).await {
                    Ok(done) => {
                        log_changes(&done);
                        if !ready && done.failed == 0 {
                            ready = true;
                            announce_ready(&agent, &done);
                        }
                        ready_flag.store(done.failed == 0, Ordering::Relaxed);
                    }
                    Err(e) => warn!(error = %crate::error_chain(&e), "reconcile failed; retrying"),
                }
                due = Instant::now() + if ready { RECONCILE_EVERY } else { Duration::from_secs(2) };
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    if let Some(reader) = &mut reader {
        agent.on_attempts(&reader.drain());
    }
    agent.finish_attempts();
    info!("stopping; enforcement stays in place until `egress-guard detach`");
    Ok(())
}

/// Takes the agent's new ring buffer, if it has one (after the start, and
/// after a move to a new map set), draining the old one first.
fn refresh_reader(agent: &mut Agent, reader: &mut Option<EventReader>) {
    let Some(ring) = agent.take_event_ring() else {
        return;
    };
    if let Some(mut old) = reader.take() {
        agent.on_attempts(&old.drain());
    }
    match EventReader::new(ring) {
        Ok(new) => *reader = Some(new),
        Err(e) => {
            warn!(error = %e, "cannot watch the blocked attempts' ring buffer; attempts will not be logged");
        }
    }
}

/// The next batch of events, or never when there is no reader.
async fn next_events(reader: &mut Option<EventReader>) -> std::io::Result<Vec<AttemptEvent>> {
    match reader {
        Some(reader) => reader.next_batch().await,
        None => std::future::pending().await,
    }
}

/// A re-read of the policy file on a blocking thread.
struct Reading {
    handle: tokio::task::JoinHandle<Result<crate::policy::Prepared, crate::policy::PolicyError>>,
    began: std::time::Instant,
    deadline: Instant,
}

impl Reading {
    fn start(job: ReloadJob, began: std::time::Instant) -> Self {
        Self {
            handle: tokio::task::spawn_blocking(move || job.run()),
            began,
            deadline: Instant::now() + READ_DEADLINE,
        }
    }
}

/// Starts re-reading the policy file, or, when a re-read is under way,
/// notes that the file must be read again once it is done.
fn start_reading(agent: &Agent, reading: &mut Option<Reading>, again: &mut bool) {
    if reading.is_some() {
        *again = true;
    } else {
        *reading = Some(Reading::start(
            agent.reload_job(),
            std::time::Instant::now(),
        ));
    }
}

/// The result of the re-read under way (`None` if it missed its deadline
/// or failed), with when it began; never when there is none.
async fn finished(
    reading: &mut Option<Reading>,
) -> (
    Option<Result<crate::policy::Prepared, crate::policy::PolicyError>>,
    std::time::Instant,
) {
    let Some(r) = reading else {
        return std::future::pending().await;
    };
    match tokio::time::timeout_at(r.deadline, &mut r.handle).await {
        Ok(Ok(read)) => (Some(read), r.began),
        Ok(Err(e)) => {
            warn!(error = %e, "the thread re-reading the policy file failed");
            (None, r.began)
        }
        Err(_) => (None, r.began),
    }
}

/// Sleeps until `at`, or forever when there is no `at`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

fn log_reload(result: Result<Reload, AgentError>) {
    match result {
        Ok(Reload::Applied { generation, done }) => {
            log_changes(&done);
            let _ = sd_notify::notify(&[sd_notify::NotifyState::Status(&format!(
                "policy generation {generation} in force"
            ))]);
        }
        Ok(Reload::Unchanged | Reload::Rejected) => {}
        Err(e) => {
            warn!(error = %crate::error_chain(&e), "applying the new policy failed; retrying at the next reconcile");
        }
    }
}

/// The tokio instant of a wall-clock time (now if it is past).
fn instant_of(at: chrono::DateTime<Utc>) -> Instant {
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    Instant::now() + wait
}

/// The `applied` event, when something changed. `took_ms` is the work
/// that led to it: for a new policy, from reading the file to the last map
/// write and the state saved (the quiet wait before is not in it).
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
            took_ms = (done.took.as_secs_f64() * 1e6).round() / 1e3,
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
