//! The rules of SPEC's "A VM's verdict at time T", first that applies:
//! the operator's override, an offer not restricted, an exemption in
//! effect, else restricted; and when the outcome next changes by time
//! alone.
//!
//! Invariants: pure (no clock: the time is given), so the same facts give
//! the same verdict and reason; what the rules decide ([`Why`]) is small
//! and `Copy`, and the names a [`Reason`] carries are added only when one
//! is asked for.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};

use crate::policy::{
    choices::{ExemptionRule, Restricted, Verdict},
    model::{Exemption, Subscription, Vm},
};

use super::reason::{Reason, Restriction, Since};

/// Why a VM has its verdict, without the names [`Reason`] carries (they
/// are its subscription's): what the rules decide, small and `Copy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Why {
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
    pub(super) fn reason(self, sub: &Subscription, cutoff: NaiveDate) -> Reason {
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
pub(super) fn why(
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
pub(super) fn change_after(
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
