//! The verdict rules but exemptions, one by one, at their boundaries: the
//! override, the cutoff, offers never or always restricted, offers that
//! cannot be exempted, custom and built-in offers.

use std::sync::Arc;

use chrono::NaiveDate;

use super::{eval, ok, only, single};
use crate::policy::{Reason, Restriction, Verdict};

#[test]
fn created_on_the_cutoff_day_is_restricted() {
    let p = single("    offer: pay-as-you-go\n    created: 2017-11-15\n", "");
    assert_eq!(
        only(&eval(&p, "2026-01-01T00:00:00Z")),
        (
            Verdict::Block,
            "subscription s (pay-as-you-go) created 2017-11-15, on or after the cutoff 2017-11-15; \
             no exemption granted: request one, or send through an authenticated relay (port 587)"
                .to_owned(),
            "no-exemption"
        )
    );
}

#[test]
fn created_the_day_before_the_cutoff_is_allowed() {
    let p = single("    offer: pay-as-you-go\n    created: 2017-11-14\n", "");
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "subscription s (pay-as-you-go) created 2017-11-14, before the cutoff 2017-11-15"
                .to_owned(),
            "before-cutoff"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::BeforeCutoff {
            subscription: Arc::from("s"),
            offer: Arc::from("pay-as-you-go"),
            created: NaiveDate::from_ymd_opt(2017, 11, 14).expect("date"),
            cutoff: NaiveDate::from_ymd_opt(2017, 11, 15).expect("date"),
        }
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn a_custom_cutoff_moves_the_boundary() {
    let yaml = "version: 1\nenforcement:\n  cutoff: 2020-05-02\nsubscriptions:\n  - id: s\n    offer: msdn\n    created: 2020-05-01\n  - id: s2\n    offer: msdn\n    created: 2020-05-02\nvms:\n  - {name: a, subscription: s, interface: tap0}\n  - {name: b, subscription: s2, interface: tap1}\n";
    let d = eval(&ok(yaml), "2026-01-01T00:00:00Z");
    assert_eq!(d.vms[0].verdict, Verdict::Allow);
    assert_eq!(d.vms[0].reason.code(), "before-cutoff");
    assert_eq!(d.vms[1].verdict, Verdict::Block);
    assert_eq!(
        d.vms[1].reason.to_string(),
        "subscription s2 (msdn) created 2020-05-02, on or after the cutoff 2020-05-02; offer msdn cannot be exempted: send through an authenticated relay (port 587)"
    );
}

#[test]
fn enterprise_agreement_is_never_restricted() {
    let p = single(
        "    offer: enterprise-agreement\n    created: 2024-01-01\n",
        "",
    );
    assert_eq!(
        only(&eval(&p, "2026-01-01T00:00:00Z")),
        (
            Verdict::Allow,
            "offer enterprise-agreement is never restricted".to_owned(),
            "never-restricted"
        )
    );
}

#[test]
fn not_exemptable_offer_reason_carries_the_facts() {
    let yaml = "version: 1\nsubscriptions:\n  - id: contoso-dev\n    offer: msdn\n    created: 2019-04-02\nvms:\n  - {name: v, subscription: contoso-dev, interface: tap0}\n";
    assert_eq!(
        only(&eval(&ok(yaml), "2026-01-01T00:00:00Z")),
        (
            Verdict::Block,
            "subscription contoso-dev (msdn) created 2019-04-02, on or after the cutoff 2017-11-15; offer msdn cannot be exempted: send through an authenticated relay (port 587)".to_owned(),
            "not-exemptable"
        )
    );
}

#[test]
fn override_beats_everything() {
    // Allow beats a revoked exemption on an always-restricted offer.
    let yaml = "version: 1\noffers:\n  locked: {restricted: always, exemption: on-request}\nsubscriptions:\n  - id: s\n    offer: locked\n    created: 2010-01-01\n    exemption: {granted: 2021-01-01T00:00:00Z, revoked: 2022-01-01T00:00:00Z}\n  - id: ea\n    offer: enterprise-agreement\n    created: 2010-01-01\nvms:\n  - {name: a, subscription: s, interface: tap0, override: allow}\n  - {name: b, subscription: ea, interface: tap1, override: block}\n";
    let d = eval(&ok(yaml), "2026-01-01T00:00:00Z");
    assert_eq!(d.vms[0].verdict, Verdict::Allow);
    assert_eq!(d.vms[0].reason, Reason::Override(Verdict::Allow));
    assert_eq!(d.vms[0].reason.to_string(), "override: allow");
    assert_eq!(d.vms[0].reason.code(), "override");
    assert_eq!(d.vms[1].verdict, Verdict::Block);
    assert_eq!(d.vms[1].reason.to_string(), "override: block");
    // An override makes time irrelevant.
    let d = eval(&ok(yaml), "2021-06-01T00:00:00Z");
    assert_eq!(d.next_change, None);
}

#[test]
fn restricted_always_skips_the_cutoff() {
    let yaml = "version: 1\noffers:\n  locked: {restricted: always, exemption: never}\nsubscriptions:\n  - {id: s, offer: locked, created: 2001-01-01}\nvms:\n  - {name: v, subscription: s, interface: tap0}\n";
    let d = eval(&ok(yaml), "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "subscription s (locked): offer locked is always restricted; offer locked cannot be exempted: send through an authenticated relay (port 587)".to_owned(),
            "not-exemptable"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::NotExemptable {
            subscription: Arc::from("s"),
            offer: Arc::from("locked"),
            restriction: Restriction::Always,
        }
    );
}

#[test]
fn custom_offers_and_overrides_of_built_ins() {
    let yaml = "version: 1
offers:
  partner-x: {restricted: from-cutoff, exemption: on-request}
  msdn: {exemption: on-request}
  pay-as-you-go: {restricted: never}
  enterprise-agreement: {restricted: from-cutoff}
subscriptions:
  - id: px
    offer: partner-x
    created: 2020-01-01
    exemption: {granted: 2021-01-01T00:00:00Z}
  - id: dev
    offer: msdn
    created: 2020-01-01
    exemption: {granted: 2021-01-01T00:00:00Z}
  - {id: payg, offer: pay-as-you-go, created: 2024-01-01}
  - {id: ea, offer: enterprise-agreement, created: 2024-01-01}
vms:
  - {name: a, subscription: px, interface: tap0, started: 2021-02-01T00:00:00Z}
  - {name: b, subscription: dev, interface: tap1, started: 2021-02-01T00:00:00Z}
  - {name: c, subscription: payg, interface: tap2}
  - {name: d, subscription: ea, interface: tap3}
";
    let p = ok(yaml);
    let px = &p.offers["partner-x"];
    assert!(!px.builtin);
    // msdn keeps `restricted: from-cutoff`, takes `exemption: on-request`.
    let msdn = &p.offers["msdn"];
    assert_eq!(
        (msdn.restricted, msdn.exemption, msdn.builtin),
        (
            crate::policy::Restricted::FromCutoff,
            crate::policy::ExemptionRule::OnRequest,
            true
        )
    );
    // enterprise-agreement keeps `exemption: never`.
    assert_eq!(
        p.offers["enterprise-agreement"].exemption,
        crate::policy::ExemptionRule::Never
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    let got: Vec<(&str, Verdict, &str)> = d
        .vms
        .iter()
        .map(|v| (v.name.as_str(), v.verdict, v.reason.code()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("a", Verdict::Allow, "exempted"),
            ("b", Verdict::Allow, "exempted"),
            ("c", Verdict::Allow, "never-restricted"),
            ("d", Verdict::Block, "not-exemptable"),
        ]
    );
    assert_eq!(d.vms[3].offer, "enterprise-agreement");
}

#[test]
fn every_built_in_offer_has_its_spec_row() {
    use crate::policy::{BUILTIN_OFFERS, ExemptionRule as E, Restricted as R};
    let p = ok("version: 1\n");
    let rows: Vec<(&str, R, E)> = p
        .offers
        .values()
        .map(|o| (o.name.as_str(), o.restricted, o.exemption))
        .collect();
    let mut expected: Vec<(&str, R, E)> = vec![
        ("enterprise-agreement", R::Never, E::Never),
        ("pay-as-you-go", R::FromCutoff, E::OnRequest),
        ("cloud-solution-provider", R::FromCutoff, E::OnRequest),
        ("microsoft-partner-network", R::FromCutoff, E::OnRequest),
        ("bizspark-plus", R::FromCutoff, E::OnRequest),
        ("azure-sponsorship", R::FromCutoff, E::OnRequest),
        ("msdn", R::FromCutoff, E::Never),
        ("azure-pass", R::FromCutoff, E::Never),
        ("azure-in-open", R::FromCutoff, E::Never),
        ("education", R::FromCutoff, E::Never),
        ("azure-for-students", R::FromCutoff, E::Never),
        ("free-trial", R::FromCutoff, E::Never),
        ("visual-studio", R::FromCutoff, E::Never),
    ];
    assert_eq!(BUILTIN_OFFERS.len(), expected.len());
    expected.sort_unstable_by_key(|r| r.0);
    assert_eq!(rows, expected);
}
