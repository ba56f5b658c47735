//! Why a VM (or an interface) has its verdict: the [`Reason`], the sentence
//! an operator reads, and its short code.
//!
//! Invariants: every reason has one code, listed in [`Reason::CODES`] and
//! in docs/policy.md ("Reason codes"), stable across releases (the state
//! file and JSON output keep it); times are shown as [`fmt_time`] writes
//! them.

use std::{fmt, sync::Arc};

use chrono::{DateTime, NaiveDate, Utc};

use crate::policy::{choices::Verdict, values::fmt_time};

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

/// The reason of an enforced interface that belongs to no VM.
pub fn unknown_reason(ifname: &str, verdict: Verdict) -> String {
    format!("interface {ifname} belongs to no VM in the policy (unknown: {verdict})")
}
