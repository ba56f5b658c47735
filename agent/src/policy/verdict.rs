//! A VM's verdict at a time T (SPEC, "A VM's verdict at time T"): pure, no
//! I/O, no clock, no kernel.

use std::{collections::HashMap, fmt, net::IpAddr, sync::Arc};

use hashbrown::HashTable;

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};

use super::{
    model::{
        Enforcement, Exemption, ExemptionRule, Policy, Restricted, Subscription, Verdict, Vm,
        name_hash,
    },
    unknown_key,
};

/// How times appear in reasons and reports: RFC 3339 in UTC, `Z`, fractions
/// of a second only when there are some.
pub fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// What the agent knows besides the policy.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub now: DateTime<Utc>,
    /// Latest creation time the agent observed for each interface name (a
    /// VM stop+start makes a new interface).
    pub interface_created: &'a HashMap<String, DateTime<Utc>>,
}

/// Why a VM that has no exemption in effect is restricted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Restriction {
    /// The offer is `restricted: always`.
    Always,
    /// The subscription was created on or after the cutoff.
    FromCutoff {
        created: NaiveDate,
        cutoff: NaiveDate,
    },
}

/// How a VM is known to have started since its exemption was granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    /// Its `started`.
    Started(DateTime<Utc>),
    /// The agent saw its interface created then.
    InterfaceCreated(DateTime<Utc>),
}

/// Why a VM has its verdict. `Display` is the sentence an operator reads;
/// [`Reason::code`] a short stable id.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Rule 1: the operator's `override`.
    Override(Verdict),
    /// Rule 2: the offer is never restricted.
    NeverRestricted { offer: Arc<str> },
    /// Rule 2: a `from-cutoff` offer and a subscription created before the cutoff.
    BeforeCutoff {
        subscription: Arc<str>,
        offer: Arc<str>,
        created: NaiveDate,
        cutoff: NaiveDate,
    },
    /// Rule 3: an exemption in effect, the VM started since its grant.
    Exempted {
        granted: DateTime<Utc>,
        since: Since,
        /// A revocation still to come.
        revoked: Option<DateTime<Utc>>,
    },
    /// Rule 3: granted, but the VM has not been stopped and started since.
    ExemptionNeedsRestart { granted: DateTime<Utc> },
    /// Rule 4: the exemption was revoked.
    ExemptionRevoked {
        granted: DateTime<Utc>,
        revoked: DateTime<Utc>,
    },
    /// Rule 4: the exemption's grant is still to come.
    ExemptionNotYet { granted: DateTime<Utc> },
    /// Rule 4: restricted, and the offer cannot be exempted.
    NotExemptable {
        subscription: Arc<str>,
        offer: Arc<str>,
        restriction: Restriction,
    },
    /// Rule 4: restricted, exemptions are granted on request, none is.
    NoExemption {
        subscription: Arc<str>,
        offer: Arc<str>,
        restriction: Restriction,
    },
}

/// The reason code of an interface that belongs to no VM.
pub const UNKNOWN_INTERFACE_CODE: &str = "unknown-interface";

impl Reason {
    /// Every code [`Reason::code`] gives, and [`UNKNOWN_INTERFACE_CODE`].
    pub const CODES: &'static [&'static str] = &[
        "override",
        "never-restricted",
        "before-cutoff",
        "exempted",
        "exemption-needs-restart",
        "exemption-revoked",
        "exemption-not-yet",
        "not-exemptable",
        "no-exemption",
        UNKNOWN_INTERFACE_CODE,
    ];

    pub fn code(&self) -> &'static str {
        match self {
            Reason::Override(_) => "override",
            Reason::NeverRestricted { .. } => "never-restricted",
            Reason::BeforeCutoff { .. } => "before-cutoff",
            Reason::Exempted { .. } => "exempted",
            Reason::ExemptionNeedsRestart { .. } => "exemption-needs-restart",
            Reason::ExemptionRevoked { .. } => "exemption-revoked",
            Reason::ExemptionNotYet { .. } => "exemption-not-yet",
            Reason::NotExemptable { .. } => "not-exemptable",
            Reason::NoExemption { .. } => "no-exemption",
        }
    }
}

fn restricted_because(
    f: &mut fmt::Formatter<'_>,
    subscription: &str,
    offer: &str,
    restriction: Restriction,
) -> fmt::Result {
    match restriction {
        Restriction::Always => write!(
            f,
            "subscription {subscription} ({offer}): offer {offer} is always restricted"
        ),
        Restriction::FromCutoff { created, cutoff } => write!(
            f,
            "subscription {subscription} ({offer}) created {created}, on or after the cutoff {cutoff}"
        ),
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Override(v) => write!(f, "override: {v}"),
            Reason::NeverRestricted { offer } => write!(f, "offer {offer} is never restricted"),
            Reason::BeforeCutoff {
                subscription,
                offer,
                created,
                cutoff,
            } => write!(
                f,
                "subscription {subscription} ({offer}) created {created}, before the cutoff {cutoff}"
            ),
            Reason::Exempted {
                granted,
                since,
                revoked,
            } => {
                write!(
                    f,
                    "exemption granted {}, in effect since ",
                    fmt_time(*granted)
                )?;
                match since {
                    Since::Started(t) => write!(f, "the VM started {}", fmt_time(*t))?,
                    Since::InterfaceCreated(t) => {
                        write!(f, "the VM's interface was created {}", fmt_time(*t))?;
                    }
                }
                if let Some(r) = revoked {
                    write!(f, "; to be revoked {}", fmt_time(*r))?;
                }
                Ok(())
            }
            Reason::ExemptionNeedsRestart { granted } => write!(
                f,
                "exemption granted {} takes effect when the VM is stopped and started",
                fmt_time(*granted)
            ),
            Reason::ExemptionRevoked { revoked, .. } => {
                write!(f, "exemption revoked {}", fmt_time(*revoked))
            }
            Reason::ExemptionNotYet { granted } => write!(
                f,
                "exemption granted for {}, not in effect yet",
                fmt_time(*granted)
            ),
            Reason::NotExemptable {
                subscription,
                offer,
                restriction,
            } => {
                restricted_because(f, subscription, offer, *restriction)?;
                write!(
                    f,
                    "; offer {offer} cannot be exempted: send through an authenticated relay (port 587)"
                )
            }
            Reason::NoExemption {
                subscription,
                offer,
                restriction,
            } => {
                restricted_because(f, subscription, offer, *restriction)?;
                f.write_str(
                    "; no exemption granted: request one, or send through an authenticated relay (port 587)",
                )
            }
        }
    }
}

/// One VM's verdict, in full: what `evaluate` gives for each VM.
#[derive(Clone, Debug, PartialEq)]
pub struct VmVerdict {
    pub name: String,
    pub subscription: String,
    pub offer: String,
    pub interface: String,
    pub addresses: Vec<IpAddr>,
    pub verdict: Verdict,
    pub reason: Reason,
    /// [`super::vm_key`] of the name.
    pub key: u64,
}

/// What the policy wants at a time, in full: settings and every VM's
/// verdict with its reason. [`Verdicts`] is the compact form the agent keeps.
#[derive(Clone, Debug)]
pub struct Desired {
    pub enforcement: Enforcement,
    /// In policy order.
    pub vms: Vec<VmVerdict>,
    /// The earliest instant after `at` at which a VM's verdict or reason
    /// changes by time alone (a grant or revocation coming, a `started` or
    /// an observed interface creation in the future): evaluate again then.
    pub next_change: Option<DateTime<Utc>>,
    /// The time this is for (`Facts::now`).
    pub at: DateTime<Utc>,
    interfaces: HashTable<u32>,
}

/// The verdict for one interface.
#[derive(Clone, Debug, PartialEq)]
pub struct InterfaceVerdict<'a> {
    pub verdict: Verdict,
    pub key: u64,
    /// Its VM, if it belongs to one.
    pub vm: Option<&'a VmVerdict>,
    pub reason: String,
    pub reason_code: &'static str,
}

impl Desired {
    /// The verdict for an interface: its VM's, else (if it matches an
    /// `attach` glob) the `unknown` verdict, else `None` (not enforced).
    pub fn interface(&self, ifname: &str) -> Option<InterfaceVerdict<'_>> {
        if let Some(vm) = self.vm_by_interface(ifname) {
            return Some(InterfaceVerdict {
                verdict: vm.verdict,
                key: vm.key,
                vm: Some(vm),
                reason: vm.reason.to_string(),
                reason_code: vm.reason.code(),
            });
        }
        if self.enforcement.matches_attach(ifname) {
            let verdict = self.enforcement.unknown;
            return Some(InterfaceVerdict {
                verdict,
                key: unknown_key(ifname),
                vm: None,
                reason: unknown_reason(ifname, verdict),
                reason_code: UNKNOWN_INTERFACE_CODE,
            });
        }
        None
    }

    /// The VM whose interface is `ifname`.
    pub fn vm_by_interface(&self, ifname: &str) -> Option<&VmVerdict> {
        self.interfaces
            .find(name_hash(ifname), |&i| {
                self.vms[i as usize].interface == ifname
            })
            .map(|&i| &self.vms[i as usize])
    }

    /// How many VMs are blocked.
    pub fn blocked(&self) -> usize {
        self.vms
            .iter()
            .filter(|v| v.verdict == Verdict::Block)
            .count()
    }
}

/// The reason of an enforced interface that belongs to no VM.
pub fn unknown_reason(ifname: &str, verdict: Verdict) -> String {
    format!("interface {ifname} belongs to no VM in the policy (unknown: {verdict})")
}

/// Every VM's verdict at `facts.now`, each with its reason.
pub fn evaluate(policy: &Policy, facts: &Facts) -> Desired {
    let verdicts = verdicts(policy, facts);
    let vms: Vec<VmVerdict> = (0..policy.vms.len())
        .map(|i| {
            let vm = &policy.vms[i];
            let sub = policy.subscription_of(vm);
            let (verdict, reason) = policy.decide(i, facts);
            VmVerdict {
                name: vm.name.to_string(),
                subscription: sub.id.to_string(),
                offer: sub.offer.to_string(),
                interface: vm.interface.to_string(),
                addresses: vm.addresses.to_vec(),
                verdict,
                reason,
                key: vm.key,
            }
        })
        .collect();
    let mut interfaces = HashTable::with_capacity(vms.len());
    for (i, vm) in vms.iter().enumerate() {
        if !vm.interface.is_empty() {
            interfaces.insert_unique(name_hash(&vm.interface), i as u32, |&j: &u32| {
                name_hash(&vms[j as usize].interface)
            });
        }
    }
    Desired {
        enforcement: policy.enforcement.clone(),
        vms,
        next_change: verdicts.next_change,
        at: verdicts.at,
        interfaces,
    }
}

/// Every VM's verdict at a time, compact (a byte a VM): what the agent
/// keeps. Reasons are found again when they are asked for
/// ([`Policy::decide`]): the rules are pure, so the same facts give the
/// same reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdicts {
    /// The time these are for (`Facts::now`).
    pub at: DateTime<Utc>,
    /// As [`Desired::next_change`].
    pub next_change: Option<DateTime<Utc>>,
    by_vm: Vec<Verdict>,
}

impl Verdicts {
    /// The verdict of `vms[i]`.
    pub fn of(&self, i: usize) -> Verdict {
        self.by_vm[i]
    }

    pub fn len(&self) -> usize {
        self.by_vm.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_vm.is_empty()
    }

    /// How many VMs are blocked.
    pub fn blocked(&self) -> usize {
        self.by_vm.iter().filter(|v| **v == Verdict::Block).count()
    }
}

/// The verdict for one interface, compact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Enforced {
    pub verdict: Verdict,
    pub key: u64,
    /// The index in `vms` of its VM, if it belongs to one.
    pub vm: Option<usize>,
}

/// Every VM's verdict at `facts.now`, compact.
pub fn verdicts(policy: &Policy, facts: &Facts) -> Verdicts {
    let now = facts.now;
    let cutoff = policy.enforcement.cutoff;
    let mut next_change: Option<DateTime<Utc>> = None;
    let by_vm = policy
        .vms
        .iter()
        .map(|vm| {
            let sub = policy.subscription_of(vm);
            let created = created(facts, vm);
            let (verdict, why) = why(vm, sub, cutoff, now, created);
            if let Some(ex) = &sub.exemption
                && let Some(t) = change_after(vm, sub, ex, cutoff, now, created, why)
            {
                next_change = Some(next_change.map_or(t, |n| n.min(t)));
            }
            verdict
        })
        .collect();
    Verdicts {
        at: now,
        next_change,
        by_vm,
    }
}

fn created(facts: &Facts, vm: &Vm) -> Option<DateTime<Utc>> {
    if facts.interface_created.is_empty() {
        None
    } else {
        facts.interface_created.get(&*vm.interface).copied()
    }
}

impl Policy {
    /// The verdict of `vms[i]` at `facts.now`, and why.
    pub fn decide(&self, i: usize, facts: &Facts) -> (Verdict, Reason) {
        let vm = &self.vms[i];
        let sub = self.subscription_of(vm);
        let cutoff = self.enforcement.cutoff;
        let (verdict, why) = why(vm, sub, cutoff, facts.now, created(facts, vm));
        (verdict, why.reason(sub, cutoff))
    }

    /// The verdict for an interface under `verdicts`: its VM's, else (if
    /// it matches an `attach` glob) the `unknown` verdict, else `None` (not
    /// enforced).
    pub fn enforced(&self, verdicts: &Verdicts, ifname: &str) -> Option<Enforced> {
        if let Some(i) = self.vm_index_by_interface(ifname)
            && i < verdicts.len()
        {
            return Some(Enforced {
                verdict: verdicts.of(i),
                key: self.vms[i].key,
                vm: Some(i),
            });
        }
        if self.enforcement.matches_attach(ifname) {
            return Some(Enforced {
                verdict: self.enforcement.unknown,
                key: unknown_key(ifname),
                vm: None,
            });
        }
        None
    }
}

/// Why a VM has its verdict, without the names [`Reason`] carries (they
/// are its subscription's): what the rules decide, small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Why {
    Override(Verdict),
    NeverRestricted,
    BeforeCutoff,
    Exempted {
        granted: DateTime<Utc>,
        since: Since,
        revoked: Option<DateTime<Utc>>,
    },
    ExemptionNeedsRestart {
        granted: DateTime<Utc>,
    },
    ExemptionRevoked {
        granted: DateTime<Utc>,
        revoked: DateTime<Utc>,
    },
    ExemptionNotYet {
        granted: DateTime<Utc>,
    },
    NotExemptable(Restriction),
    NoExemption(Restriction),
}

impl Why {
    fn reason(self, sub: &Subscription, cutoff: NaiveDate) -> Reason {
        let subscription = || Arc::clone(&sub.id);
        let offer = || Arc::clone(&sub.offer);
        match self {
            Why::Override(v) => Reason::Override(v),
            Why::NeverRestricted => Reason::NeverRestricted { offer: offer() },
            Why::BeforeCutoff => Reason::BeforeCutoff {
                subscription: subscription(),
                offer: offer(),
                created: sub.created,
                cutoff,
            },
            Why::Exempted {
                granted,
                since,
                revoked,
            } => Reason::Exempted {
                granted,
                since,
                revoked,
            },
            Why::ExemptionNeedsRestart { granted } => Reason::ExemptionNeedsRestart { granted },
            Why::ExemptionRevoked { granted, revoked } => {
                Reason::ExemptionRevoked { granted, revoked }
            }
            Why::ExemptionNotYet { granted } => Reason::ExemptionNotYet { granted },
            Why::NotExemptable(restriction) => Reason::NotExemptable {
                subscription: subscription(),
                offer: offer(),
                restriction,
            },
            Why::NoExemption(restriction) => Reason::NoExemption {
                subscription: subscription(),
                offer: offer(),
                restriction,
            },
        }
    }
}

/// The rules, first that applies.
fn why(
    vm: &Vm,
    sub: &Subscription,
    cutoff: NaiveDate,
    at: DateTime<Utc>,
    interface_created: Option<DateTime<Utc>>,
) -> (Verdict, Why) {
    // 1. The operator's word.
    if let Some(v) = vm.override_verdict {
        return (v, Why::Override(v));
    }
    // 2. Not restricted.
    let restriction = match sub.restricted {
        Restricted::Never => return (Verdict::Allow, Why::NeverRestricted),
        Restricted::FromCutoff if sub.created < cutoff => {
            return (Verdict::Allow, Why::BeforeCutoff);
        }
        Restricted::FromCutoff => Restriction::FromCutoff {
            created: sub.created,
            cutoff,
        },
        Restricted::Always => Restriction::Always,
    };
    // 3. An exemption in effect, the VM started since its grant.
    if let Some(ex) = &sub.exemption {
        let granted = ex.granted;
        if granted > at {
            return (Verdict::Block, Why::ExemptionNotYet { granted });
        }
        if let Some(revoked) = ex.revoked
            && revoked <= at
        {
            return (Verdict::Block, Why::ExemptionRevoked { granted, revoked });
        }
        let since_grant = |t: &DateTime<Utc>| *t >= granted && *t <= at;
        let since = vm
            .started
            .filter(since_grant)
            .map(Since::Started)
            .or_else(|| {
                interface_created
                    .filter(since_grant)
                    .map(Since::InterfaceCreated)
            });
        return match since {
            Some(since) => (
                Verdict::Allow,
                Why::Exempted {
                    granted,
                    since,
                    revoked: ex.revoked,
                },
            ),
            None => (Verdict::Block, Why::ExemptionNeedsRestart { granted }),
        };
    }
    // 4. Restricted.
    let why = match sub.exemption_rule {
        ExemptionRule::Never => Why::NotExemptable(restriction),
        ExemptionRule::OnRequest => Why::NoExemption(restriction),
    };
    (Verdict::Block, why)
}

/// The first instant after `now` at which this VM's verdict or reason
/// changes by time alone. Only exemptions make time matter.
fn change_after(
    vm: &Vm,
    sub: &Subscription,
    ex: &Exemption,
    cutoff: NaiveDate,
    now: DateTime<Utc>,
    interface_created: Option<DateTime<Utc>>,
    current: Why,
) -> Option<DateTime<Utc>> {
    if matches!(
        current,
        Why::Override(_) | Why::NeverRestricted | Why::BeforeCutoff
    ) {
        return None;
    }
    let mut candidates = [Some(ex.granted), ex.revoked, vm.started, interface_created];
    candidates.sort_unstable();
    candidates
        .into_iter()
        .flatten()
        .filter(|t| *t > now)
        .find(|t| why(vm, sub, cutoff, *t, interface_created).1 != current)
}
