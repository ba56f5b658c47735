//! The desired kernel state: from the policy, its verdicts and the
//! interfaces that exist to what the maps and links must hold. Where each
//! interface's program goes ([`crate::placement`]), the kernel's view of the
//! settings ([`kernel_config`]), each interface's entry (its VM's key and
//! verdict code), and the whole of what the maps must say ([`wanted`]).
//!
//! Pure: no kernel, no I/O; [`crate::agent`] makes the kernel match it.

use egress_guard_common::maps::{
    Config, DEFAULT_REPLY_BURST, DEFAULT_REPLY_RATE, IfaceEntry,
    user::{Action, Mode, Verdict},
};

use crate::{
    datapath::{Hook, KernelState},
    netdev::{DevKind, NetDev},
    placement::{self, Placement},
    policy::{self, Enforcement, Policy, Verdicts},
    state::EnforcedInterface,
};

/// The kernel's view of the settings of a policy.
pub fn kernel_config(e: &Enforcement, generation: u64) -> Config {
    Config {
        mode: match e.mode {
            policy::Mode::Enforce => Mode::Enforce,
            policy::Mode::Audit => Mode::Audit,
        }
        .code(),
        action: match e.action {
            policy::Action::Drop => Action::Drop,
            policy::Action::Reset => Action::Reset,
            policy::Action::Icmp => Action::Icmp,
        }
        .code(),
        generation,
        ..Config::default()
    }
    .with_reply_rate(DEFAULT_REPLY_RATE, DEFAULT_REPLY_BURST)
}

/// The code of a policy verdict in [`IfaceEntry::verdict`].
pub fn verdict_code(verdict: policy::Verdict) -> u32 {
    match verdict {
        policy::Verdict::Allow => Verdict::Allow,
        policy::Verdict::Block => Verdict::Block,
    }
    .code()
}

/// One interface the policy wants enforced, as it exists now.
#[derive(Clone, Debug)]
pub struct Target {
    pub dev: NetDev,
    pub entry: IfaceEntry,
    pub hook: Hook,
    pub placement: Placement,
    pub record: EnforcedInterface,
    /// Native XDP on a veth with `reset` or `icmp`: the veth driver does not
    /// deliver the replies (XDP_TX) to its peer; the segments are only
    /// dropped. Warned about when the program is attached.
    pub replies_lost: bool,
}

/// The enforcement the policy wants on one interface, if any.
pub fn target(policy: &Policy, verdicts: &Verdicts, dev: &NetDev) -> Option<Target> {
    let enforced = policy.enforced(verdicts, &dev.name)?;
    let e = &policy.enforcement;
    let placement = placement::place(e.hook, &dev.kind);
    let hook = placement.hook;
    Some(Target {
        dev: dev.clone(),
        entry: IfaceEntry {
            vm_key: enforced.key,
            verdict: verdict_code(enforced.verdict),
            flags: 0,
        },
        hook,
        placement,
        replies_lost: hook == Hook::Xdp
            && dev.kind == DevKind::Veth
            && e.action != policy::Action::Drop,
        record: EnforcedInterface {
            name: dev.name.clone(),
            hook,
            kind: dev.kind.to_string(),
            coverage: placement.coverage,
            vm: enforced.vm.map(|i| policy.vms[i].name.to_string()),
            verdict: enforced.verdict,
            key: enforced.key,
        },
    })
}

/// Every interface of `devs` the policy wants enforced.
pub fn targets(policy: &Policy, verdicts: &Verdicts, devs: &[NetDev]) -> Vec<Target> {
    devs.iter()
        .filter_map(|dev| target(policy, verdicts, dev))
        .collect()
}

/// What the maps must hold for the policy and `targets`.
pub fn wanted(policy: &Policy, generation: u64, targets: &[Target]) -> KernelState {
    let e = &policy.enforcement;
    let mut wanted = KernelState {
        config: kernel_config(e, generation),
        ports: e.ports.iter().copied().collect(),
        ..KernelState::default()
    };
    wanted.set_allowed(&e.allow_destinations);
    wanted.ifaces = targets.iter().map(|t| (t.dev.index, t.entry)).collect();
    wanted
}

#[cfg(test)]
mod tests;
