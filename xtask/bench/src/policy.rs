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
