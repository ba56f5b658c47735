//! `/metrics`, parsed with a real Prometheus text parser (`prometheus-parse`)
//! and read exactly, and polled until it shows what a test waits for.

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use egress_guard_tests::netns::{Netns, http, policy::BLOCKED_SUB};

use super::{BLOCKED, Lab, SETTLE};

/// Where the agent serves metrics: the default address, on the loopback of
/// the test's own hypervisor namespace.
pub(super) const METRICS: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9725);
/// A sample's value as the integer it must be (every series here counts
/// something).
#[allow(
    clippy::cast_sign_loss,
    clippy::cast_possible_truncation,
    reason = "checked to be a whole number from 0 to 2^53"
)]
pub(super) fn whole(v: f64) -> Option<u64> {
    (v.fract().abs() < f64::EPSILON && (0.0..9.0e15).contains(&v)).then_some(v as u64)
}

/// `/metrics`, parsed with `prometheus-parse`.
pub(super) struct Metrics {
    pub(super) text: String,
    scrape: prometheus_parse::Scrape,
}

impl Metrics {
    pub(super) fn scrape(hv: &Netns) -> Result<Self> {
        let r = http::get(hv, METRICS, "/metrics")?;
        ensure!(
            r.status == 200,
            "/metrics answered {}:\n{}",
            r.status,
            r.body
        );
        ensure!(
            r.content_type
                .as_deref()
                .is_some_and(|t| t.starts_with("application/openmetrics-text")),
            "/metrics content type {:?}",
            r.content_type
        );
        let scrape = prometheus_parse::Scrape::parse(r.body.lines().map(|l| Ok(l.to_owned())))
            .context("parsing /metrics")?;
        Ok(Self {
            text: r.body,
            scrape,
        })
    }

    /// The samples of `name` whose labels include `labels`.
    pub(super) fn matching(
        &self,
        name: &str,
        labels: &[(&str, &str)],
    ) -> Vec<&prometheus_parse::Sample> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect()
    }

    /// The value of the one sample of `name` with exactly these labels
    /// (those given, none other), if there is one.
    pub(super) fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<Option<u64>> {
        let found: Vec<_> = self
            .matching(name, labels)
            .into_iter()
            .filter(|s| s.labels.len() == labels.len())
            .collect();
        ensure!(
            found.len() <= 1,
            "{} samples of {name}{labels:?}:\n{}",
            found.len(),
            self.text
        );
        let Some(sample) = found.first() else {
            return Ok(None);
        };
        let v = match sample.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => whole(v),
            _ => None,
        };
        v.map(Some)
            .with_context(|| format!("{name}{labels:?} is not a count: {:?}", sample.value))
    }

    /// Like [`Metrics::value`], but the sample must be there.
    pub(super) fn get(&self, name: &str, labels: &[(&str, &str)]) -> Result<u64> {
        self.value(name, labels)?
            .with_context(|| format!("no sample {name}{labels:?} in /metrics:\n{}", self.text))
    }

    /// `egress_guard_held_back_packets_total` of vm-blocked for `reason`.
    pub(super) fn held(&self, reason: &str) -> Result<u64> {
        self.get(
            "egress_guard_held_back_packets_total",
            &[
                ("vm", BLOCKED),
                ("subscription", BLOCKED_SUB),
                ("reason", reason),
            ],
        )
    }

    pub(super) fn held_bytes(&self, reason: &str) -> Result<u64> {
        self.get(
            "egress_guard_held_back_bytes_total",
            &[
                ("vm", BLOCKED),
                ("subscription", BLOCKED_SUB),
                ("reason", reason),
            ],
        )
    }

    pub(super) fn attempts(&self) -> Result<u64> {
        self.get(
            "egress_guard_blocked_attempts_total",
            &[("vm", BLOCKED), ("subscription", BLOCKED_SUB)],
        )
    }

    pub(super) fn lost(&self, cause: &str) -> Result<u64> {
        self.get(
            "egress_guard_events_lost_total",
            &[
                ("vm", BLOCKED),
                ("subscription", BLOCKED_SUB),
                ("cause", cause),
            ],
        )
    }

    /// Whether any sample names `vm`.
    pub(super) fn mentions_vm(&self, vm: &str) -> bool {
        self.scrape
            .samples
            .iter()
            .any(|s| s.labels.get("vm") == Some(vm))
    }
}

/// Polls `f` until it returns `Some`, for at most `timeout`.
pub(super) fn until<T>(
    timeout: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("after {timeout:?}: still not {what}");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Scrapes until `done` holds for the scrape; returns it.
pub(super) fn scrape_until(
    s: &Lab,
    what: &str,
    done: impl Fn(&Metrics) -> Result<bool>,
) -> Result<Metrics> {
    let mut last = String::new();
    until(SETTLE, what, || {
        let m = s.scrape()?;
        if done(&m).unwrap_or(false) {
            return Ok(Some(m));
        }
        last = m.text;
        Ok(None)
    })
    .with_context(|| format!("the last /metrics:\n{last}"))
}

/// The agent's JSON log events with this message.
pub(super) const ATTEMPT: &str = "blocked connection attempt";
pub(super) const AUDITED: &str = "connection attempt let through (audit mode)";
pub(super) const REPEATED: &str = "repeated blocked connection attempts";
/// Waits for the agent to apply policy generation `generation`.
pub(super) fn await_generation(s: &Lab, generation: u64) -> Result<Metrics> {
    scrape_until(s, &format!("policy generation {generation}"), |m| {
        let found = m
            .matching("egress_guard_policy_generation", &[])
            .first()
            .and_then(|g| match g.value {
                prometheus_parse::Value::Gauge(v) | prometheus_parse::Value::Untyped(v) => whole(v),
                _ => None,
            });
        Ok(found == Some(generation))
    })
}
