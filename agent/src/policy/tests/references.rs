//! Validation of what refers to what: subscription ids and VM names and
//! interfaces unique, VMs naming known subscriptions, subscriptions naming
//! known offers, exemptions only where an offer allows them, the file's
//! own offers complete. Exact `file:line:col: message` throughout.

use super::{BASE, errors, one};

#[test]
fn duplicate_subscription_ids() {
    let yaml = format!("{BASE}  - id: s\n    offer: msdn\n    created: 2021-01-01\n");
    assert_eq!(
        one(&yaml),
        "p.yaml:9:9: duplicate subscription id `s` (first at line 3)"
    );
}

#[test]
fn duplicate_vm_names_and_interfaces() {
    let yaml = format!(
        "{BASE}vms:
  - {{name: a, subscription: s, interface: tap0}}
  - {{name: b, subscription: s, interface: tap1}}
  - {{name: a, subscription: s, interface: tap0}}
"
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "p.yaml:12:12: duplicate VM name `a` (first at line 10)",
            "p.yaml:12:43: duplicate interface `tap0`, already the interface of VM `a` (first at line 10)",
        ]
    );
}

#[test]
fn unknown_subscription() {
    let yaml = format!("{BASE}vms:\n  - {{name: a, subscription: nope, interface: tap0}}\n");
    assert_eq!(
        one(&yaml),
        "p.yaml:10:29: unknown subscription `nope`; no subscription under `subscriptions` has that id"
    );
}

#[test]
fn unknown_offer() {
    let yaml = "version: 1\noffers:\n  lab: {restricted: always, exemption: never}\nsubscriptions:\n  - {id: a, offer: msdn-plus, created: 2020-01-01}\n";
    assert_eq!(
        one(yaml),
        "p.yaml:5:20: unknown offer `msdn-plus`; known offers: azure-for-students, azure-in-open, azure-pass, azure-sponsorship, bizspark-plus, cloud-solution-provider, education, enterprise-agreement, free-trial, lab, microsoft-partner-network, msdn, pay-as-you-go, visual-studio"
    );
}

#[test]
fn exemption_on_an_offer_that_cannot_be_exempted() {
    let yaml = "version: 1
subscriptions:
  - id: dev
    offer: msdn
    created: 2020-01-01
    exemption:
      granted: 2021-01-01T00:00:00Z
  - id: ea
    offer: enterprise-agreement
    created: 2020-01-01
    exemption: {granted: 2021-01-01T00:00:00Z}
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:6:5: offer `msdn` cannot be exempted (its exemption is `never`); remove the exemption and send through an authenticated relay (port 587)",
            "p.yaml:11:5: offer `enterprise-agreement` is never restricted, so an exemption is meaningless; remove it",
        ]
    );
}

#[test]
fn exemption_needs_granted() {
    let yaml = "version: 1\nsubscriptions:\n  - id: p\n    offer: pay-as-you-go\n    created: 2020-01-01\n    exemption:\n      revoked: 2021-01-01T00:00:00Z\n";
    assert_eq!(
        one(yaml),
        "p.yaml:7:7: missing `granted`: an exemption needs one"
    );
}

#[test]
fn custom_offers() {
    let yaml = "version: 1
offers:
  lab: {restricted: always}
  msdn: {}
  odd: {restricted: sometimes, exemption: maybe}
  blank:
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:3:8: offer `lab` is not a built-in offer, so it needs both `restricted` and `exemption`; missing `exemption`",
            "p.yaml:4:9: offer `msdn` overrides the built-in offer but sets neither `restricted` nor `exemption`",
            "p.yaml:5:21: bad `restricted` `sometimes`: expected always, never or from-cutoff",
            "p.yaml:5:43: bad `exemption` `maybe`: expected on-request or never",
            "p.yaml:6:3: offer `blank` is empty; give `restricted` and `exemption`",
        ]
    );
}
