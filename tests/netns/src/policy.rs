//! Policy files for the tests, the demo and the benchmarks, from a builder:
//! one place that knows the policy's YAML, so a test says what it wants
//! (which VMs are blocked, which exempt, which hook) and not how it is
//! spelled.
//!
//! Every policy has the same three subscriptions, whose verdicts never
//! change with time: [`BLOCKED_SUB`] (msdn, created after the cutoff:
//! blocked, never exempt), [`EXEMPT_SUB`] (pay-as-you-go with an exemption
//! granted at [`GRANT`]: allowed for a VM started after it) and
//! [`LEGACY_SUB`] (pay-as-you-go created before the cutoff: allowed).

use std::fmt::Write as _;

/// msdn, created after the cutoff: its VMs are blocked.
pub const BLOCKED_SUB: &str = "dev-msdn";
/// pay-as-you-go with an exemption: its VMs started after [`GRANT`] are
/// allowed.
pub const EXEMPT_SUB: &str = "prod-payg";
/// pay-as-you-go created before the cutoff: its VMs are allowed.
pub const LEGACY_SUB: &str = "legacy-payg";
/// When [`EXEMPT_SUB`]'s exemption was granted.
pub const GRANT: &str = "2021-01-10T12:00:00Z";
/// When an exempt VM started: after [`GRANT`].
pub const STARTED_AFTER_GRANT: &str = "2021-01-11T08:00:00Z";
/// When a VM that needs a restart started: before [`GRANT`].
pub const STARTED_BEFORE_GRANT: &str = "2021-01-01T00:00:00Z";

/// What a VM of a test policy is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Of [`BLOCKED_SUB`]: blocked.
    Blocked,
    /// Of [`EXEMPT_SUB`], started after the grant: allowed.
    Exempt,
    /// Of [`EXEMPT_SUB`] with no `started`: blocked until its interface is
    /// created after the grant (rule 3: a VM stopped and started).
    ExemptNotRestarted,
    /// Of [`EXEMPT_SUB`], started before the grant: blocked until it is
    /// stopped and started (`exemption-needs-restart`).
    NeedsRestart,
    /// Of [`LEGACY_SUB`]: allowed.
    Legacy,
    /// Of [`BLOCKED_SUB`], with `override: allow`: allowed.
    Overridden,
}

#[derive(Clone, Debug)]
struct VmLine {
    name: String,
    interface: String,
    subscription: String,
    /// More keys of the VM, each `key: value`.
    extra: Vec<String>,
}

/// A policy file, built up and written out with [`PolicyBuilder::yaml`].
#[derive(Clone, Debug)]
pub struct PolicyBuilder {
    ports: Vec<u16>,
    action: String,
    mode: String,
    hook: String,
    attach: Vec<String>,
    unknown_block: bool,
    allow: Vec<String>,
    offers: Vec<String>,
    subscriptions: Vec<String>,
    vms: Vec<VmLine>,
    generated: usize,
}

impl Default for PolicyBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl PolicyBuilder {
    /// Port 25, `drop`, `enforce`, `hook: auto`, no VMs.
    #[must_use]
    pub fn new() -> Self {
        Self {
            ports: vec![25],
            action: "drop".into(),
            mode: "enforce".into(),
            hook: "auto".into(),
            attach: Vec::new(),
            unknown_block: false,
            allow: Vec::new(),
            offers: Vec::new(),
            subscriptions: Vec::new(),
            vms: Vec::new(),
            generated: 0,
        }
    }

    #[must_use]
    pub fn ports(mut self, ports: &[u16]) -> Self {
        self.ports = ports.to_vec();
        self
    }

    #[must_use]
    pub fn action(mut self, action: &str) -> Self {
        action.clone_into(&mut self.action);
        self
    }

    #[must_use]
    pub fn mode(mut self, mode: &str) -> Self {
        mode.clone_into(&mut self.mode);
        self
    }

    #[must_use]
    pub fn hook(mut self, hook: &str) -> Self {
        hook.clone_into(&mut self.hook);
        self
    }

    /// `attach` globs (none is `attach: []`), with `unknown: block`.
    #[must_use]
    pub fn attach(mut self, globs: &[&str]) -> Self {
        self.attach = globs.iter().map(|g| (*g).to_owned()).collect();
        self.unknown_block = true;
        self
    }

    /// `allow_destinations` (prefixes, `a.b.c.d/len` or IPv6).
    #[must_use]
    pub fn allow(mut self, prefixes: &[String]) -> Self {
        self.allow = prefixes.to_vec();
        self
    }

    /// A custom offer: `name: {body}` under `offers`, e.g. `internal-lab`,
    /// `restricted: always, exemption: never`.
    #[must_use]
    pub fn offer(mut self, name: &str, body: &str) -> Self {
        self.offers.push(format!("  {name}: {{{body}}}\n"));
        self
    }

    /// One more subscription, as YAML lines after `- ` (indented by 4).
    #[must_use]
    pub fn subscription(mut self, id: &str, offer: &str, created: &str, extra: &[&str]) -> Self {
        let mut s = format!("  - id: {id}\n    offer: {offer}\n    created: {created}\n");
        for line in extra {
            let _ = writeln!(s, "    {line}");
        }
        self.subscriptions.push(s);
        self
    }

    /// One more subscription with an exemption granted at `granted` (and
    /// revoked at `revoked`).
    #[must_use]
    pub fn exempted_subscription(
        self,
        id: &str,
        offer: &str,
        created: &str,
        granted: &str,
        revoked: Option<&str>,
    ) -> Self {
        let granted = format!("  granted: {granted}");
        let revoked = revoked.map(|r| format!("  revoked: {r}"));
        let mut extra = vec!["exemption:", granted.as_str()];
        extra.extend(revoked.as_deref());
        self.subscription(id, offer, created, &extra)
    }

    /// A VM named after its interface, with `role`.
    #[must_use]
    pub fn vm(self, name: &str, role: Role) -> Self {
        self.vm_on(name, name, role)
    }

    /// A VM `name` on `interface`, with `role`.
    #[must_use]
    pub fn vm_on(self, name: &str, interface: &str, role: Role) -> Self {
        let (sub, extra) = match role {
            Role::Blocked => (BLOCKED_SUB, None),
            Role::Overridden => (BLOCKED_SUB, Some("override: allow".to_owned())),
            Role::Exempt => (EXEMPT_SUB, Some(format!("started: {STARTED_AFTER_GRANT}"))),
            Role::NeedsRestart => (EXEMPT_SUB, Some(format!("started: {STARTED_BEFORE_GRANT}"))),
            Role::ExemptNotRestarted => (EXEMPT_SUB, None),
            Role::Legacy => (LEGACY_SUB, None),
        };
        let extra: Vec<String> = extra.into_iter().collect();
        self.vm_with(name, interface, sub, &extra)
    }

    /// A VM of any subscription, with more keys (`key: value` each).
    #[must_use]
    pub fn vm_with(
        mut self,
        name: &str,
        interface: &str,
        subscription: &str,
        extra: &[String],
    ) -> Self {
        self.vms.push(VmLine {
            name: name.to_owned(),
            interface: interface.to_owned(),
            subscription: subscription.to_owned(),
            extra: extra.to_vec(),
        });
        self
    }

    /// `n` more blocked VMs, `gen-<i>` on interfaces `g<i, 7 digits>` that
    /// do not exist, after the others.
    #[must_use]
    pub fn generated(mut self, n: usize) -> Self {
        self.generated = n;
        self
    }

    /// The policy file's text.
    #[must_use]
    pub fn yaml(&self) -> String {
        let list = |items: &[String]| items.join(", ");
        let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
        let mut out = format!(
            "version: 1\nenforcement:\n  ports: [{}]\n  action: {}\n  mode: {}\n  hook: {}\n",
            list(&ports),
            self.action,
            self.mode,
            self.hook
        );
        if self.unknown_block {
            let globs: Vec<String> = self.attach.iter().map(|g| format!("\"{g}\"")).collect();
            let _ = writeln!(out, "  attach: [{}]", list(&globs));
        }
        if self.unknown_block {
            out.push_str("  unknown: block\n");
        }
        if !self.allow.is_empty() {
            let prefixes: Vec<String> = self.allow.iter().map(|p| format!("\"{p}\"")).collect();
            let _ = writeln!(out, "  allow_destinations: [{}]", list(&prefixes));
        }
        if !self.offers.is_empty() {
            out.push_str("offers:\n");
            for offer in &self.offers {
                out.push_str(offer);
            }
        }
        let _ = write!(
            out,
            "subscriptions:\n  - id: {BLOCKED_SUB}\n    offer: msdn\n    created: 2019-04-02\n  - id: {EXEMPT_SUB}\n    offer: pay-as-you-go\n    created: 2020-05-01\n    exemption:\n      granted: {GRANT}\n  - id: {LEGACY_SUB}\n    offer: pay-as-you-go\n    created: 2016-03-01\n"
        );
        for s in &self.subscriptions {
            out.push_str(s);
        }
        if self.vms.is_empty() && self.generated == 0 {
            return out;
        }
        out.push_str("vms:\n");
        for vm in &self.vms {
            let _ = write!(
                out,
                "  - name: {}\n    subscription: {}\n    interface: {}\n",
                vm.name, vm.subscription, vm.interface
            );
            for line in &vm.extra {
                let _ = writeln!(out, "    {line}");
            }
        }
        for i in 0..self.generated {
            let _ = write!(
                out,
                "  - name: gen-{i}\n    subscription: {BLOCKED_SUB}\n    interface: g{i:07}\n"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_yaml_says_what_was_built() {
        let text = PolicyBuilder::new()
            .hook("tc")
            .action("reset")
            .attach(&["vm-*"])
            .allow(&["198.51.100.25/32".into()])
            .vm("vm-a", Role::Blocked)
            .vm_on("web", "tap7", Role::Exempt)
            .vm("vm-o", Role::Overridden)
            .vm("vm-r", Role::NeedsRestart)
            .offer("internal-lab", "restricted: always, exemption: never")
            .exempted_subscription("late", "msdn", "2020-01-01", GRANT, Some("2022-03-01"))
            .generated(2)
            .yaml();
        for line in [
            "  hook: tc\n",
            "  action: reset\n",
            "  attach: [\"vm-*\"]\n  unknown: block\n",
            "  allow_destinations: [\"198.51.100.25/32\"]\n",
            "  - name: vm-a\n    subscription: dev-msdn\n    interface: vm-a\n",
            "  - name: web\n    subscription: prod-payg\n    interface: tap7\n    started: 2021-01-11T08:00:00Z\n",
            "  - name: vm-o\n    subscription: dev-msdn\n    interface: vm-o\n    override: allow\n",
            "  - name: vm-r\n    subscription: prod-payg\n    interface: vm-r\n    started: 2021-01-01T00:00:00Z\n",
            "offers:\n  internal-lab: {restricted: always, exemption: never}\nsubscriptions:\n",
            "  - id: late\n    offer: msdn\n    created: 2020-01-01\n    exemption:\n      granted: 2021-01-10T12:00:00Z\n      revoked: 2022-03-01\n",
            "  - name: gen-1\n    subscription: dev-msdn\n    interface: g0000001\n",
        ] {
            assert!(text.contains(line), "{line:?} not in\n{text}");
        }
    }
}
