//! The offers (the built-in ones, overridden or not, and the file's own)
//! and the subscriptions, with their exemptions.
//!
//! Invariants: every subscription names a known offer and takes its rules
//! as they are when the policy is read; ids are unique; an exemption is
//! only on an offer that can be exempted, and is revoked, if at all, after
//! it is granted.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use chrono::NaiveDate;

use crate::policy::{
    choices::{ExemptionRule, Restricted},
    locate::{Loc, yaml_path},
    model::{Exemption, Offer, Subscription},
    names::check_name,
    offers,
    raw::{Field, RawExemption, RawOffers, RawSubscription},
    values::fmt_time,
};

use super::checker::Checker;

pub(crate) fn offer_table(c: &mut Checker, raw: RawOffers) -> BTreeMap<String, Offer> {
    let mut table = offers::builtins();
    for (name, body) in raw.0 {
        let at = || yaml_path!["offers", name.as_str()];
        if name.is_empty() {
            c.error(Loc::Key(at()), "offer name is empty".to_owned());
            continue;
        }
        if let Err(why) = check_name("offer", &name) {
            c.error(Loc::Key(at()), why);
            continue;
        }
        let builtin = offers::builtin(&name);
        let Some(body) = body else {
            c.error(
                Loc::Key(at()),
                format!(
                    "offer `{name}` is empty; give `restricted` and `exemption`{}",
                    if builtin.is_some() {
                        " (or one of them, to override the built-in offer)"
                    } else {
                        ""
                    }
                ),
            );
            continue;
        };
        let given_restricted = !matches!(body.restricted, Field::Absent);
        let given_exemption = !matches!(body.exemption, Field::Absent);
        let restricted = c.choice::<Restricted>(body.restricted, "restricted", || {
            yaml_path!["offers", name.as_str(), "restricted"]
        });
        let exemption = c.choice::<ExemptionRule>(body.exemption, "exemption", || {
            yaml_path!["offers", name.as_str(), "exemption"]
        });
        let offer = if let Some(base) = builtin {
            if !given_restricted && !given_exemption {
                c.error(
                    Loc::Value(at()),
                    format!(
                        "offer `{name}` overrides the built-in offer but sets neither `restricted` nor `exemption`"
                    ),
                );
                continue;
            }
            Offer {
                restricted: restricted.unwrap_or(base.restricted),
                exemption: exemption.unwrap_or(base.exemption),
                ..base
            }
        } else {
            let missing: Vec<&str> = [
                ("restricted", given_restricted),
                ("exemption", given_exemption),
            ]
            .iter()
            .filter(|(_, given)| !given)
            .map(|(k, _)| *k)
            .collect();
            if !missing.is_empty() {
                c.error(
                    Loc::Value(at()),
                    format!(
                        "offer `{name}` is not a built-in offer, so it needs both `restricted` and `exemption`; missing `{}`",
                        missing.join("` and `")
                    ),
                );
                continue;
            }
            let (Some(restricted), Some(exemption)) = (restricted, exemption) else {
                continue;
            };
            Offer {
                name: name.clone(),
                restricted,
                exemption,
                builtin: false,
            }
        };
        table.insert(name, offer);
    }
    table
}

pub(crate) fn subscriptions(
    c: &mut Checker,
    raw: Vec<RawSubscription>,
    offers: &BTreeMap<String, Offer>,
) -> Vec<Subscription> {
    let mut subs = Vec::with_capacity(raw.len());
    for (i, s) in raw.into_iter().enumerate() {
        let whose = "every subscription";
        let id = c.name(s.id, "id", whose, || yaml_path!["subscriptions", i, "id"]);
        let offer_name = c.name(s.offer, "offer", whose, || {
            yaml_path!["subscriptions", i, "offer"]
        });
        let created = c
            .required(s.created, "created", whose, || {
                yaml_path!["subscriptions", i, "created"]
            })
            .and_then(|t| c.date(&t, "created", || yaml_path!["subscriptions", i, "created"]));
        let offer = offer_name.as_ref().and_then(|name| {
            let offer = offers.get(name.as_str());
            if offer.is_none() {
                let known: Vec<&str> = offers.keys().map(String::as_str).collect();
                c.error(
                    Loc::Value(yaml_path!["subscriptions", i, "offer"]),
                    format!("unknown offer `{name}`; known offers: {}", known.join(", ")),
                );
            }
            offer
        });
        let exemption = s.exemption.and_then(|ex| check_exemption(c, ex, i, offer));
        subs.push(Subscription {
            id: Arc::from(id.unwrap_or_default()),
            offer: Arc::from(offer_name.unwrap_or_default()),
            restricted: offer.map_or(Restricted::Always, |o| o.restricted),
            exemption_rule: offer.map_or(ExemptionRule::Never, |o| o.exemption),
            created: created.unwrap_or(NaiveDate::MIN),
            exemption,
        });
    }

    let mut first: HashMap<&str, usize> = HashMap::with_capacity(subs.len());
    for (i, s) in subs.iter().enumerate() {
        if s.id.is_empty() {
            continue;
        }
        if let Some(&f) = first.get(&*s.id) {
            c.duplicate(
                Loc::Value(yaml_path!["subscriptions", i, "id"]),
                Loc::Value(yaml_path!["subscriptions", f, "id"]),
                format!("duplicate subscription id `{}`", s.id),
            );
        } else {
            first.insert(&s.id, i);
        }
    }
    subs
}

fn check_exemption(
    c: &mut Checker,
    ex: RawExemption,
    i: usize,
    offer: Option<&Offer>,
) -> Option<Exemption> {
    if let Some(offer) = offer
        && offer.exemption == ExemptionRule::Never
    {
        let why = if offer.restricted == Restricted::Never {
            format!(
                "offer `{}` is never restricted, so an exemption is meaningless; remove it",
                offer.name
            )
        } else {
            format!(
                "offer `{}` cannot be exempted (its exemption is `never`); remove the exemption and send through an authenticated relay (port 587)",
                offer.name
            )
        };
        c.error(Loc::Key(yaml_path!["subscriptions", i, "exemption"]), why);
    }
    let granted = c
        .required(ex.granted, "granted", "an exemption", || {
            yaml_path!["subscriptions", i, "exemption", "granted"]
        })
        .and_then(|t| {
            c.time(&t, "granted", || {
                yaml_path!["subscriptions", i, "exemption", "granted"]
            })
        });
    let revoked_at = || yaml_path!["subscriptions", i, "exemption", "revoked"];
    let revoked = c
        .optional(ex.revoked, "revoked", revoked_at)
        .and_then(|t| c.time(&t, "revoked", revoked_at));
    if let (Some(g), Some(r)) = (granted, revoked)
        && r <= g
    {
        c.error(
            Loc::Value(revoked_at()),
            format!(
                "`revoked` {} is not after `granted` {}",
                fmt_time(r),
                fmt_time(g)
            ),
        );
    }
    Some(Exemption {
        granted: granted?,
        revoked,
    })
}
