//! What `check` prints.

use serde_json::json;

use std::collections::HashMap;

use super::{ok, t};
use crate::policy::{Facts, Policy, report};

fn table(p: &Policy, at: &str) -> String {
    let none = HashMap::new();
    report::table(
        p,
        &Facts {
            now: t(at),
            interface_created: &none,
        },
    )
}

fn json(p: &Policy, at: &str) -> serde_json::Value {
    let none = HashMap::new();
    report::json(
        p,
        &Facts {
            now: t(at),
            interface_created: &none,
        },
    )
}

const POLICY: &str = "version: 1
subscriptions:
  - {id: contoso-dev, offer: msdn, created: 2019-04-02}
  - {id: contoso-prod, offer: pay-as-you-go, created: 2020-05-01, exemption: {granted: 2027-01-01T00:00:00Z}}
  - {id: ea, offer: enterprise-agreement, created: 2020-05-01}
vms:
  - {name: web-1, subscription: contoso-dev, interface: tap-web1}
  - {name: mail, subscription: contoso-prod, interface: tap-mail}
  - {name: app, subscription: ea, interface: tap-app, override: allow}
";

#[test]
fn table_is_aligned() {
    let p = ok(POLICY);
    let expected = "\
VM     SUBSCRIPTION  OFFER                 INTERFACE  VERDICT  REASON
web-1  contoso-dev   msdn                  tap-web1   block    subscription contoso-dev (msdn) created 2019-04-02, on or after the cutoff 2017-11-15; offer msdn cannot be exempted: send through an authenticated relay (port 587)
mail   contoso-prod  pay-as-you-go         tap-mail   block    exemption granted for 2027-01-01T00:00:00Z, not in effect yet
app    ea            enterprise-agreement  tap-app    allow    override: allow
";
    assert_eq!(
        table(&p, "2026-01-01T00:00:00Z"),
        format!("{expected}\nnext change: 2027-01-01T00:00:00Z\n")
    );
}

#[test]
fn table_without_vms_or_changes() {
    assert_eq!(
        table(&ok("version: 1\n"), "2026-01-01T00:00:00Z"),
        "VM  SUBSCRIPTION  OFFER  INTERFACE  VERDICT  REASON\n"
    );
}

#[test]
fn json_lists_every_vm() {
    let j = json(&ok(POLICY), "2026-01-01T00:00:00Z");
    assert_eq!(j["at"], json!("2026-01-01T00:00:00Z"));
    assert_eq!(j["next_change"], json!("2027-01-01T00:00:00Z"));
    assert_eq!(
        j["vms"][1],
        json!({
            "name": "mail",
            "subscription": "contoso-prod",
            "offer": "pay-as-you-go",
            "interface": "tap-mail",
            "verdict": "block",
            "reason": "exemption granted for 2027-01-01T00:00:00Z, not in effect yet",
            "reason_code": "exemption-not-yet",
        })
    );
    assert_eq!(j["vms"].as_array().map(Vec::len), Some(3));
    assert_eq!(j["vms"][2]["verdict"], json!("allow"));
    assert_eq!(
        j["enforcement"],
        json!({
            "ports": [25],
            "action": "drop",
            "mode": "enforce",
            "hook": "auto",
            "attach": [],
            "unknown": "block",
            "allow_destinations": [],
            "cutoff": "2017-11-15",
        })
    );
    assert_eq!(
        json(&ok(POLICY), "2027-01-01T00:00:00Z")["next_change"],
        serde_json::Value::Null
    );
}

/// `check --format json` writes, a VM at a time, what pretty-printing the
/// whole document (with `policy`) gives.
#[test]
fn streamed_json_is_the_pretty_document() {
    let example = include_str!("../../../../deploy/policy.example.yaml");
    for text in [POLICY, "version: 1\n", example] {
        let p = ok(text);
        let none = HashMap::new();
        let facts = Facts {
            now: t("2026-01-01T00:00:00Z"),
            interface_created: &none,
        };
        let path = std::path::Path::new("/etc/egress-guard/policy \"x\".yaml");
        let mut doc = report::json(&p, &facts);
        doc["policy"] = json!({"path": path, "hash": p.hash});
        let mut expected = serde_json::to_string_pretty(&doc).expect("json");
        expected.push('\n');
        let mut out = Vec::new();
        report::write_json(&mut out, &p, &facts, path).expect("write");
        assert_eq!(String::from_utf8(out).expect("utf-8"), expected);
    }
}
