//! The verdict rules, one by one, at their boundaries.

use std::sync::Arc;

use chrono::NaiveDate;

use super::{eval, eval_seen, ok, t};
use crate::policy::{
    Desired, Policy, Reason, Restriction, Since, UNKNOWN_INTERFACE_CODE, Verdict, unknown_key,
    vm_key,
};

/// One subscription `s` (its fields indented by 4) and one VM `v` on `tap0`
/// (extra fields indented by 4).
fn single(sub: &str, vm: &str) -> Policy {
    ok(&format!(
        "version: 1\nsubscriptions:\n  - id: s\n{sub}vms:\n  - name: v\n    subscription: s\n    interface: tap0\n{vm}"
    ))
}

/// Verdict, reason sentence and reason code of the only VM.
fn only(d: &Desired) -> (Verdict, String, &'static str) {
    assert_eq!(d.vms.len(), 1);
    let vm = &d.vms[0];
    (vm.verdict, vm.reason.to_string(), vm.reason.code())
}

const PAYG_2020: &str = "    offer: pay-as-you-go\n    created: 2020-05-01\n";

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
fn grant_at_exactly_the_start_time_allows() {
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n"),
        "    started: 2021-01-10T12:00:00Z\n",
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM started 2021-01-10T12:00:00Z".to_owned(),
            "exempted"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::Exempted {
            granted: t("2021-01-10T12:00:00Z"),
            since: Since::Started(t("2021-01-10T12:00:00Z")),
            revoked: None,
        }
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn started_one_second_before_the_grant_needs_a_restart() {
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n"),
        "    started: 2021-01-10T11:59:59Z\n",
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "exemption granted 2021-01-10T12:00:00Z takes effect when the VM is stopped and started".to_owned(),
            "exemption-needs-restart"
        )
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn no_started_and_no_observation_needs_a_restart() {
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n"),
        "",
    );
    assert_eq!(
        only(&eval(&p, "2026-01-01T00:00:00Z")).2,
        "exemption-needs-restart"
    );
}

#[test]
fn grant_at_exactly_t_is_granted() {
    // The VM started before the grant: granted, but not restarted.
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2025-06-01T00:00:00Z\n"),
        "    started: 2025-01-01T00:00:00Z\n",
    );
    let at = eval(&p, "2025-06-01T00:00:00Z");
    assert_eq!(only(&at).2, "exemption-needs-restart");
    let before = eval(&p, "2025-05-31T23:59:59Z");
    assert_eq!(
        only(&before),
        (
            Verdict::Block,
            "exemption granted for 2025-06-01T00:00:00Z, not in effect yet".to_owned(),
            "exemption-not-yet"
        )
    );
    assert_eq!(before.next_change, Some(t("2025-06-01T00:00:00Z")));
    assert_eq!(at.next_change, None);

    // Granted and started at T: allowed at T.
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2025-06-01T00:00:00Z\n"),
        "    started: 2025-06-01T00:00:00Z\n",
    );
    assert_eq!(only(&eval(&p, "2025-06-01T00:00:00Z")).0, Verdict::Allow);
    let d = eval(&p, "2025-05-01T00:00:00Z");
    assert_eq!(only(&d).2, "exemption-not-yet");
    assert_eq!(d.next_change, Some(t("2025-06-01T00:00:00Z")));
}

#[test]
fn revocation_at_exactly_t_is_revoked() {
    let p = single(
        &format!(
            "{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n      revoked: 2022-03-01T00:00:00Z\n"
        ),
        "    started: 2021-01-11T08:00:00Z\n",
    );
    let d = eval(&p, "2022-03-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "exemption revoked 2022-03-01T00:00:00Z".to_owned(),
            "exemption-revoked"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::ExemptionRevoked {
            granted: t("2021-01-10T12:00:00Z"),
            revoked: t("2022-03-01T00:00:00Z"),
        }
    );
    assert_eq!(d.next_change, None);
}

#[test]
fn revocation_in_the_future_still_allows_and_is_the_next_change() {
    let p = single(
        &format!(
            "{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n      revoked: 2022-03-01T00:00:00Z\n"
        ),
        "    started: 2021-01-11T08:00:00Z\n",
    );
    let d = eval(&p, "2022-02-28T23:59:59Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM started 2021-01-11T08:00:00Z; to be revoked 2022-03-01T00:00:00Z".to_owned(),
            "exempted"
        )
    );
    assert_eq!(d.next_change, Some(t("2022-03-01T00:00:00Z")));
}

#[test]
fn grant_in_the_future_blocks_until_it_comes() {
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2027-01-01T00:00:00Z\n"),
        "    started: 2027-02-01T00:00:00Z\n",
    );
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert_eq!(
        only(&d),
        (
            Verdict::Block,
            "exemption granted for 2027-01-01T00:00:00Z, not in effect yet".to_owned(),
            "exemption-not-yet"
        )
    );
    // At the grant the reason changes (needs a restart), then at `started`
    // the verdict does.
    assert_eq!(d.next_change, Some(t("2027-01-01T00:00:00Z")));
    let d = eval(&p, "2027-01-01T00:00:00Z");
    assert_eq!(only(&d).2, "exemption-needs-restart");
    assert_eq!(d.next_change, Some(t("2027-02-01T00:00:00Z")));
    let d = eval(&p, "2027-02-01T00:00:00Z");
    assert_eq!(only(&d).0, Verdict::Allow);
    assert_eq!(d.next_change, None);
}

#[test]
fn interface_created_after_the_grant_with_an_older_started_allows() {
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n"),
        "    started: 2020-12-01T00:00:00Z\n",
    );
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap0", "2021-02-01T10:00:00Z")],
    );
    assert_eq!(
        only(&d),
        (
            Verdict::Allow,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM's interface was created 2021-02-01T10:00:00Z".to_owned(),
            "exempted"
        )
    );
    assert_eq!(
        d.vms[0].reason,
        Reason::Exempted {
            granted: t("2021-01-10T12:00:00Z"),
            since: Since::InterfaceCreated(t("2021-02-01T10:00:00Z")),
            revoked: None,
        }
    );
    // Created exactly at the grant counts too; before it does not; another
    // interface's creation does not.
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap0", "2021-01-10T12:00:00Z")],
    );
    assert_eq!(only(&d).0, Verdict::Allow);
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap0", "2021-01-10T11:00:00Z")],
    );
    assert_eq!(only(&d).2, "exemption-needs-restart");
    let d = eval_seen(
        &p,
        "2026-01-01T00:00:00Z",
        &[("tap1", "2021-02-01T10:00:00Z")],
    );
    assert_eq!(only(&d).2, "exemption-needs-restart");
}

#[test]
fn started_after_t_does_not_count_yet() {
    let p = single(
        &format!("{PAYG_2020}    exemption:\n      granted: 2021-01-10T12:00:00Z\n"),
        "    started: 2021-03-01T00:00:00Z\n",
    );
    let d = eval(&p, "2021-02-01T00:00:00Z");
    assert_eq!(only(&d).2, "exemption-needs-restart");
    assert_eq!(d.next_change, Some(t("2021-03-01T00:00:00Z")));
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

#[test]
fn interfaces_vms_attach_globs_and_unknown() {
    let yaml = "version: 1
enforcement:
  attach: [\"tap*\", \"vnet[0-9]\"]
subscriptions:
  - {id: s, offer: msdn, created: 2020-01-01}
  - {id: ea, offer: enterprise-agreement, created: 2020-01-01}
vms:
  - {name: web, subscription: s, interface: tap-web}
  - {name: mail, subscription: ea, interface: eth-mail}
";
    let d = eval(&ok(yaml), "2026-01-01T00:00:00Z");
    // A VM's interface: the VM's verdict, whether or not a glob matches.
    let web = d.interface("tap-web").expect("enforced");
    assert_eq!(web.verdict, Verdict::Block);
    assert_eq!(web.key, vm_key("web"));
    assert_eq!(web.vm.map(|v| v.name.as_str()), Some("web"));
    assert_eq!(web.reason_code, "not-exemptable");
    assert_eq!(web.reason, d.vms[0].reason.to_string());
    let mail = d.interface("eth-mail").expect("enforced");
    assert_eq!((mail.verdict, mail.key), (Verdict::Allow, vm_key("mail")));
    // Unknown interfaces matching a glob: the `unknown` verdict.
    let stray = d.interface("tap9").expect("attach glob");
    assert_eq!(stray.verdict, Verdict::Block);
    assert_eq!(stray.key, unknown_key("tap9"));
    assert!(stray.vm.is_none());
    assert_eq!(
        stray.reason,
        "interface tap9 belongs to no VM in the policy (unknown: block)"
    );
    assert_eq!(stray.reason_code, UNKNOWN_INTERFACE_CODE);
    assert!(d.interface("vnet3").is_some());
    // Not matching: not enforced.
    assert!(d.interface("vnet10").is_none());
    assert!(d.interface("eth0").is_none());
    assert!(d.interface("xtap1").is_none());
    assert!(d.enforcement.matches_attach("tap"));
    assert!(!d.enforcement.matches_attach("eth-mail"));

    let allow = ok(&yaml.replace("  attach:", "  unknown: allow\n  attach:"));
    let d = eval(&allow, "2026-01-01T00:00:00Z");
    let stray = d.interface("tap9").expect("attach glob");
    assert_eq!(stray.verdict, Verdict::Allow);
    assert_eq!(
        stray.reason,
        "interface tap9 belongs to no VM in the policy (unknown: allow)"
    );
}

#[test]
fn no_attach_means_only_vm_interfaces() {
    let p = single("    offer: msdn\n    created: 2020-01-01\n", "");
    let d = eval(&p, "2026-01-01T00:00:00Z");
    assert!(d.interface("tap0").is_some());
    assert!(d.interface("tap1").is_none());
}

#[test]
fn next_change_is_the_earliest_over_all_vms() {
    let yaml = "version: 1
subscriptions:
  - {id: a, offer: pay-as-you-go, created: 2020-01-01, exemption: {granted: 2030-01-01T00:00:00Z}}
  - {id: b, offer: pay-as-you-go, created: 2020-01-01, exemption: {granted: 2020-01-01T00:00:00Z, revoked: 2029-06-01T00:00:00Z}}
  - {id: c, offer: pay-as-you-go, created: 2020-01-01, exemption: {granted: 2020-01-01T00:00:00Z, revoked: 2028-06-01T00:00:00Z}}
vms:
  - {name: a, subscription: a, interface: tap0}
  - {name: b, subscription: b, interface: tap1, started: 2020-02-01T00:00:00Z}
  # Needs a restart: its revocation changes the reason (and not the verdict).
  - {name: c, subscription: c, interface: tap2}
";
    let p = ok(yaml);
    assert_eq!(
        eval(&p, "2026-01-01T00:00:00Z").next_change,
        Some(t("2028-06-01T00:00:00Z"))
    );
    assert_eq!(
        eval(&p, "2028-06-01T00:00:00Z").next_change,
        Some(t("2029-06-01T00:00:00Z"))
    );
    assert_eq!(
        eval(&p, "2029-06-01T00:00:00Z").next_change,
        Some(t("2030-01-01T00:00:00Z"))
    );
    assert_eq!(eval(&p, "2030-01-01T00:00:00Z").next_change, None);
}

#[test]
fn vm_verdicts_carry_the_vm() {
    let yaml = "version: 1\nsubscriptions:\n  - {id: s, offer: msdn, created: 2020-01-01}\nvms:\n  - {name: web, subscription: s, interface: tap-web, addresses: [10.0.0.4, \"2001:db8::4\"]}\n";
    let d = eval(&ok(yaml), "2026-01-01T00:00:00Z");
    let vm = &d.vms[0];
    assert_eq!(vm.name, "web");
    assert_eq!(vm.subscription, "s");
    assert_eq!(vm.offer, "msdn");
    assert_eq!(vm.interface, "tap-web");
    assert_eq!(
        vm.addresses,
        vec![
            "10.0.0.4".parse::<std::net::IpAddr>().expect("ip"),
            "2001:db8::4".parse().expect("ip")
        ]
    );
    assert_eq!(vm.key, vm_key("web"));
    assert_eq!(d.at, t("2026-01-01T00:00:00Z"));
    assert_eq!(d.blocked(), 1);
}

#[test]
fn keys_are_fnv1a_64() {
    // Reference values of FNV-1a 64 ("vm:web", "if:tap9"), computed
    // independently of the implementation.
    fn reference(s: &str) -> u64 {
        s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    // The published test vectors of FNV-1a 64.
    assert_eq!(reference(""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(reference("a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(reference("foobar"), 0x8594_4171_f739_67e8);
    assert_eq!(vm_key("web"), reference("vm:web"));
    assert_eq!(unknown_key("tap9"), reference("if:tap9"));
    assert_ne!(vm_key("tap9"), unknown_key("tap9"));
}

#[test]
fn reason_codes_are_listed() {
    for code in [
        "override",
        "never-restricted",
        "before-cutoff",
        "exempted",
        "exemption-needs-restart",
        "exemption-revoked",
        "exemption-not-yet",
        "not-exemptable",
        "no-exemption",
        "unknown-interface",
    ] {
        assert!(Reason::CODES.contains(&code), "{code}");
    }
    assert_eq!(Reason::CODES.len(), 10);
}
