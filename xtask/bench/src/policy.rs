//! The policies the benchmarks run the agent with.

use std::fmt::Write as _;

/// What a VM of a benchmark policy is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// msdn, created after the cutoff: blocked, cannot be exempted.
    Blocked,
    /// The same subscription with `override: allow`.
    Allowed,
    /// pay-as-you-go, exemption granted, the VM started since: allowed
    /// after the exemption rule (the longest path of the verdict rules).
    Exempt,
}

/// A policy holding back port 25 with `hook`, `attach` globs, the VMs
/// `vms` (name = interface), and `generated` more VMs whose interfaces
/// (`g0000000`, ...) do not exist, a third each blocked, exempt and allowed
/// by their offer's date.
pub fn policy(hook: &str, attach: &[&str], vms: &[(&str, Role)], generated: usize) -> String {
    let attach: Vec<String> = attach.iter().map(|g| format!("\"{g}\"")).collect();
    let mut list = String::with_capacity(80 * (vms.len() + generated));
    for (name, role) in vms {
        let (sub, extra) = match role {
            Role::Blocked => ("dev-msdn", ""),
            Role::Allowed => ("dev-msdn", "    override: allow\n"),
            Role::Exempt => ("prod-payg", "    started: 2021-01-11T08:00:00Z\n"),
        };
        let _ = write!(
            list,
            "  - name: {name}\n    subscription: {sub}\n    interface: {name}\n{extra}"
        );
    }
    for i in 0..generated {
        let (sub, extra) = match i % 3 {
            0 => ("dev-msdn", ""),
            1 => ("prod-payg", "    started: 2021-01-11T08:00:00Z\n"),
            _ => ("legacy-payg", ""),
        };
        let _ = write!(
            list,
            "  - name: gen-{i}\n    subscription: {sub}\n    interface: g{i:07}\n{extra}"
        );
    }
    format!(
        r"version: 1
enforcement:
  ports: [25]
  action: drop
  mode: enforce
  hook: {hook}
  attach: [{attach}]
  unknown: block
  allow_destinations: [198.51.100.25/32]
subscriptions:
  - id: dev-msdn
    offer: msdn
    created: 2019-04-02
  - id: prod-payg
    offer: pay-as-you-go
    created: 2020-05-01
    exemption:
      granted: 2021-01-10T12:00:00Z
  - id: legacy-payg
    offer: pay-as-you-go
    created: 2016-03-01
vms:
{list}",
        attach = attach.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::Path};

    use egress_guard::policy::{self, Facts, Verdict};

    use super::{Role, policy};

    fn verdicts(text: &str) -> Vec<(String, Verdict)> {
        let parsed = policy::from_bytes(Path::new("bench.yaml"), text.as_bytes())
            .unwrap_or_else(|e| panic!("the benchmark policy does not parse: {e}\n{text}"));
        let created = HashMap::new();
        let desired = policy::evaluate(
            &parsed,
            &Facts {
                now: chrono::Utc::now(),
                interface_created: &created,
            },
        );
        desired
            .vms
            .into_iter()
            .map(|v| (v.name, v.verdict))
            .collect()
    }

    #[test]
    fn benchmark_policies_parse_and_give_each_role_its_verdict() {
        for hook in ["auto", "tc", "xdp", "xdp-generic"] {
            let text = policy(
                hook,
                &["tapx*"],
                &[
                    ("vm-blk", Role::Blocked),
                    ("vm-all", Role::Allowed),
                    ("vm-exm", Role::Exempt),
                ],
                6,
            );
            let v = verdicts(&text);
            assert_eq!(v.len(), 9, "{v:?}");
            let of = |name: &str| v.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            assert_eq!(of("vm-blk"), Some(Verdict::Block));
            assert_eq!(of("vm-all"), Some(Verdict::Allow));
            assert_eq!(of("vm-exm"), Some(Verdict::Allow));
            // The generated VMs: blocked, exempt, allowed by date, in turn.
            assert_eq!(of("gen-0"), Some(Verdict::Block));
            assert_eq!(of("gen-1"), Some(Verdict::Allow));
            assert_eq!(of("gen-2"), Some(Verdict::Allow));
            assert_eq!(of("gen-3"), Some(Verdict::Block));
        }
    }
}
