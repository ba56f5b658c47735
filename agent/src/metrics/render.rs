//! The Prometheus text of a [`Snapshot`], rendered with
//! prometheus-client from the snapshot alone.
//!
//! Invariants: the family names, help texts and labels are the metrics'
//! interface (docs and dashboards use them): held-back counters carry one
//! series a VM and reason (every reason of the map ABI, zero included);
//! a family without labels is one series without braces.

use egress_guard_common::maps::user::Reason;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::snapshot::{Snapshot, VmAttempts};

#[derive(Debug)]
struct SnapshotCollector(Snapshot);

type Labels = Vec<(&'static str, String)>;

/// One family of metrics of `kind`: a series for each item of `series`
/// (a single series, without braces, when its labels are empty).
fn family<V, M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    series: impl Iterator<Item = (Labels, V)>,
    metric: impl Fn(V) -> M,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in series {
        if labels.is_empty() {
            // A single series: no braces at all.
            metric(value).encode(family)?;
            break;
        }
        metric(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter_family(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Labels, u64)>,
) -> Result<(), std::fmt::Error> {
    family(encoder, name, help, MetricType::Counter, series, |v| {
        ConstCounter::new(v)
    })
}

fn gauge_family<V>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (Labels, V)>,
) -> Result<(), std::fmt::Error>
where
    ConstGauge<V>: EncodeMetric,
{
    family(
        encoder,
        name,
        help,
        MetricType::Gauge,
        series,
        ConstGauge::new,
    )
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

#[cfg(test)]
mod tests {
    use egress_guard_common::maps::{Attempts, Counters, reason};

    use super::render;
    use crate::metrics::snapshot::{Snapshot, VmAttempts, VmCounters};

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
