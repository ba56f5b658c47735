//! Prometheus metrics, `/healthz` and `/readyz` on `--metrics-addr`.
//!
//! The HTTP side never touches the agent: a scrape sends a request to the
//! run loop, which owns the agent, and gets back a [`Snapshot`] taken there
//! (counters read from the maps at that moment). The text is rendered with
//! prometheus-client, from the snapshot alone.
//!
//! Label cardinality is bounded by the policy: a VM has series only while it
//! is in the policy in force (the agent also drops its kernel counters when
//! it leaves), and per-VM counter series exist only for VMs that have had
//! something held back.

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use egress_guard_common::maps::{Attempts, Counters, user::Reason};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric as _},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};
use thiserror::Error;
use tokio::sync::{mpsc, oneshot};
use tracing::warn;

/// The default `--metrics-addr`.
pub const DEFAULT_ADDR: &str = "127.0.0.1:9725";

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("cannot listen on {addr} for metrics: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

/// One VM (or unknown interface) with counters.
#[derive(Clone, Debug)]
pub struct VmCounters {
    pub vm: String,
    pub subscription: String,
    pub counters: Counters,
}

/// One VM (or unknown interface) with blocked connection attempts.
#[derive(Clone, Debug)]
pub struct VmAttempts {
    pub vm: String,
    pub subscription: String,
    pub attempts: Attempts,
}

/// Everything the metrics show, taken at one moment by the run loop.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub counters: Vec<VmCounters>,
    /// VMs of the policy in force by verdict.
    pub vms_allowed: u64,
    pub vms_blocked: u64,
    /// Enforced interfaces by hook name.
    pub interfaces_by_hook: Vec<(String, u64)>,
    /// Enforced interfaces by (device kind, coverage).
    pub interfaces_by_kind: Vec<((String, String), u64)>,
    pub policy_generation: u64,
    pub policy_hash: String,
    pub policy_path: String,
    pub reloads: u64,
    pub reload_failures: u64,
    pub attach_failures: u64,
    /// Unix time of the last successful apply.
    pub last_apply_seconds: i64,
    pub ready: bool,
    /// Blocked connection attempts (SYNs to a held port) by VM, and the
    /// events about them the kernel did not send (rate limit, full ring).
    pub attempts: Vec<VmAttempts>,
}

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

type Labels = Vec<(&'static str, String)>;

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Counter,
    )?;
    for (labels, value) in series {
        if labels.is_empty() {
            // A single series: no braces at all.
            ConstCounter::new(value).encode(family)?;
            break;
        }
        ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge_family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: prometheus_client::encoding::EncodeMetric,
{
    let mut family = encoder.encode_descriptor(
        name,
        help,
        None,
        prometheus_client::metrics::MetricType::Gauge,
    )?;
    for (labels, value) in series {
        if labels.is_empty() {
            // A single series: no braces at all.
            ConstGauge::new(value).encode(family)?;
            break;
        }
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.0;
        let per_reason = |bytes: bool| {
            s.counters.iter().flat_map(move |vm| {
                Reason::all().map(move |r| {
                    let labels: Labels = vec![
                        ("vm", vm.vm.clone()),
                        ("subscription", vm.subscription.clone()),
                        ("reason", r.name().to_owned()),
                    ];
                    let value = if bytes {
                        vm.counters.bytes[r.index()]
                    } else {
                        vm.counters.packets[r.index()]
                    };
                    (labels, value)
                })
            })
        };
        counter_family(
            &mut encoder,
            "egress_guard_held_back_packets",
            "Packets held back (or, for reason audit, that would have been), by VM and reason.",
            per_reason(false),
        )?;
        counter_family(
            &mut encoder,
            "egress_guard_held_back_bytes",
            "Bytes of the packets counted in egress_guard_held_back_packets_total.",
            per_reason(true),
        )?;
        encode_agent(s, &mut encoder)
    }
}

/// The enforced interfaces: by hook, and by device kind and coverage.
fn encode_interfaces(s: &Snapshot, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    gauge_family(
        encoder,
        "egress_guard_interfaces",
        "Enforced interfaces, by hook.",
        s.interfaces_by_hook
            .iter()
            .map(|(hook, n)| (vec![("hook", hook.clone())], *n)),
    )?;
    gauge_family(
        encoder,
        "egress_guard_interfaces_by_kind",
        "Enforced interfaces, by device kind and how far their hook is proven to see the VM's frames.",
        s.interfaces_by_kind.iter().map(|((kind, coverage), n)| {
            (
                vec![("kind", kind.clone()), ("coverage", coverage.clone())],
                *n,
            )
        }),
    )?;
    gauge_family(
        encoder,
        "egress_guard_interfaces_unverified",
        "Enforced interfaces of a kind whose coverage is unverified (no rule for the kind).",
        std::iter::once((
            Vec::new(),
            s.interfaces_by_kind
                .iter()
                .filter(|((_, coverage), _)| coverage == "unverified")
                .map(|(_, n)| *n)
                .sum::<u64>(),
        )),
    )?;
    Ok(())
}

/// The families that are not per-VM counters.
fn encode_agent(s: &Snapshot, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
    let vm_labels = |a: &VmAttempts| -> Labels {
        vec![
            ("vm", a.vm.clone()),
            ("subscription", a.subscription.clone()),
        ]
    };
    counter_family(
        encoder,
        "egress_guard_blocked_attempts",
        "Connection attempts (SYNs to a held port) from blocked VMs (in audit mode: that would have been held back).",
        s.attempts
            .iter()
            .map(|a| (vm_labels(a), a.attempts.attempts)),
    )?;
    counter_family(
        encoder,
        "egress_guard_events_lost",
        "Blocked-attempt events the kernel did not deliver to the agent, by cause: rate-limited (the VM's event rate) or ring-full (the agent was slow or not running).",
        s.attempts.iter().flat_map(|a| {
            [
                ("rate-limited", a.attempts.rate_limited),
                ("ring-full", a.attempts.ring_full),
            ]
            .into_iter()
            .map(move |(cause, n)| {
                let mut labels = vm_labels(a);
                labels.push(("cause", cause.to_owned()));
                (labels, n)
            })
        }),
    )?;
    gauge_family(
        encoder,
        "egress_guard_vms",
        "VMs of the policy in force, by verdict.",
        [("allow", s.vms_allowed), ("block", s.vms_blocked)]
            .into_iter()
            .map(|(v, n)| (vec![("verdict", v.to_owned())], n)),
    )?;
    encode_interfaces(s, encoder)?;
    gauge_family(
        encoder,
        "egress_guard_policy_generation",
        "Generation of the policy in force; its sha256 and path are labels.",
        std::iter::once((
            vec![
                ("sha256", s.policy_hash.clone()),
                ("path", s.policy_path.clone()),
            ],
            s.policy_generation,
        )),
    )?;
    counter_family(
        encoder,
        "egress_guard_reloads",
        "New policies applied after the first.",
        std::iter::once((Vec::new(), s.reloads)),
    )?;
    counter_family(
        encoder,
        "egress_guard_reload_failures",
        "Policy files rejected (the policy in force stayed).",
        std::iter::once((Vec::new(), s.reload_failures)),
    )?;
    counter_family(
        encoder,
        "egress_guard_attach_failures",
        "Attempts to put the program on an interface that failed.",
        std::iter::once((Vec::new(), s.attach_failures)),
    )?;
    gauge_family(
        encoder,
        "egress_guard_last_apply_timestamp_seconds",
        "Unix time of the last successful apply of the policy to the kernel.",
        std::iter::once((Vec::new(), s.last_apply_seconds)),
    )?;
    gauge_family(
        encoder,
        "egress_guard_ready",
        "1 when every interface the policy names is enforced.",
        std::iter::once((Vec::new(), u64::from(s.ready))),
    )?;
    Ok(())
}

/// The Prometheus text of a snapshot.
pub fn render(snapshot: Snapshot) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(SnapshotCollector(snapshot)));
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// A scrape's request to the run loop.
pub type Request = oneshot::Sender<Snapshot>;

#[derive(Clone)]
struct Shared {
    requests: mpsc::Sender<Request>,
    ready: Arc<AtomicBool>,
}

/// Listens on `addr`; returns the channel the run loop answers scrapes on.
pub async fn serve(
    addr: SocketAddr,
    ready: Arc<AtomicBool>,
) -> Result<mpsc::Receiver<Request>, MetricsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })?;
    let (requests, receiver) = mpsc::channel(16);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(Shared { requests, ready });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            warn!(error = %e, "the metrics server stopped");
        }
    });
    Ok(receiver)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    let (reply, answer) = oneshot::channel();
    if shared.requests.send(reply).await.is_err() {
        return (StatusCode::SERVICE_UNAVAILABLE, String::new()).into_response();
    }
    match answer.await {
        Ok(snapshot) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            render(snapshot),
        )
            .into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()).into_response(),
    }
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    if shared.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: some interface is not enforced yet\n",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use egress_guard_common::maps::reason;

    #[test]
    fn renders_every_family_with_labels() {
        let mut counters = Counters::default();
        counters.packets[reason::POLICY] = 5;
        counters.bytes[reason::POLICY] = 370;
        let text = render(Snapshot {
            counters: vec![VmCounters {
                vm: "web-1".into(),
                subscription: "contoso".into(),
                counters,
            }],
            vms_allowed: 2,
            vms_blocked: 1,
            interfaces_by_hook: vec![("tc".into(), 3)],
            interfaces_by_kind: vec![(("veth".into(), "verified".into()), 3)],
            policy_generation: 4,
            policy_hash: "abc".into(),
            policy_path: "/etc/p.yaml".into(),
            reloads: 3,
            reload_failures: 1,
            attach_failures: 0,
            last_apply_seconds: 1_700_000_000,
            ready: true,
            attempts: vec![VmAttempts {
                vm: "web-1".into(),
                subscription: "contoso".into(),
                attempts: Attempts {
                    attempts: 20,
                    events: 12,
                    rate_limited: 7,
                    ring_full: 1,
                },
            }],
        });
        for line in [
            r#"egress_guard_held_back_packets_total{vm="web-1",subscription="contoso",reason="policy"} 5"#,
            r#"egress_guard_held_back_bytes_total{vm="web-1",subscription="contoso",reason="policy"} 370"#,
            r#"egress_guard_held_back_packets_total{vm="web-1",subscription="contoso",reason="malformed"} 0"#,
            r#"egress_guard_blocked_attempts_total{vm="web-1",subscription="contoso"} 20"#,
            r#"egress_guard_events_lost_total{vm="web-1",subscription="contoso",cause="rate-limited"} 7"#,
            r#"egress_guard_events_lost_total{vm="web-1",subscription="contoso",cause="ring-full"} 1"#,
            r#"egress_guard_vms{verdict="block"} 1"#,
            r#"egress_guard_interfaces{hook="tc"} 3"#,
            r#"egress_guard_policy_generation{sha256="abc",path="/etc/p.yaml"} 4"#,
            "egress_guard_reloads_total 3",
            "egress_guard_reload_failures_total 1",
            "egress_guard_ready 1",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "no line {line:?} in\n{text}"
            );
        }
    }
}
