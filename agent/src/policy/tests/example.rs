//! `deploy/policy.example.yaml` parses, uses every built-in offer, and gives
//! the verdicts its comments claim.

use std::collections::BTreeSet;

use super::{eval, ok};
use crate::policy::{BUILTIN_OFFERS, Verdict};

const EXAMPLE: &str = include_str!("../../../../deploy/policy.example.yaml");

/// The time the example's comments are about.
const AT: &str = "2026-01-01T00:00:00Z";

/// `(vm name, verdict, reason code)` from each `# => VERDICT (code)` line
/// and the `- name:` that follows it.
fn claims() -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(String, String)> = None;
    for line in EXAMPLE.lines() {
        let trimmed = line.trim();
        if let Some(rest) = trimmed.strip_prefix("# => ") {
            let (verdict, rest) = rest.split_once(" (").expect("`# => VERDICT (code)`");
            let (code, _) = rest.split_once(')').expect("`(code)`");
            assert!(pending.is_none(), "two claims in a row before {line}");
            pending = Some((verdict.to_owned(), code.to_owned()));
        } else if let Some(name) = trimmed.strip_prefix("- name: ") {
            let (verdict, code) = pending.take().expect("every VM has a claim");
            out.push((name.to_owned(), verdict, code));
        }
    }
    assert!(pending.is_none());
    out
}

#[test]
fn example_gives_the_verdicts_its_comments_claim() {
    let policy = ok(EXAMPLE);
    let desired = eval(&policy, AT);
    let claims = claims();
    assert_eq!(claims.len(), policy.vms.len());
    assert_eq!(claims.len(), 15);
    for (vm, (name, verdict, code)) in desired.vms.iter().zip(&claims) {
        assert_eq!(&vm.name, name);
        assert_eq!(
            (vm.verdict.as_str(), vm.reason.code()),
            (verdict.as_str(), code.as_str()),
            "{name}: {}",
            vm.reason
        );
    }
    // The bizspark grant (2030) and the lab's revocation (2027) are to come.
    assert_eq!(desired.next_change, Some(super::t("2027-01-01T00:00:00Z")));
}

#[test]
fn example_uses_every_built_in_offer_and_its_settings() {
    let policy = ok(EXAMPLE);
    let used: BTreeSet<&str> = policy.subscriptions.iter().map(|s| &*s.offer).collect();
    for (name, _, _) in BUILTIN_OFFERS {
        assert!(used.contains(name), "{name} is not used");
    }
    let e = &policy.enforcement;
    assert!(e.matches_attach("vm-stray"));
    let nets: Vec<String> = e
        .allow_destinations
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, vec!["10.77.250.0/24", "fd77::fa/128"]);
    for vm in &policy.vms {
        for a in &vm.addresses {
            let s = a.to_string();
            assert!(s.starts_with("10.77.") || s.starts_with("fd77::"), "{s}");
        }
    }
}

#[test]
fn demo_vms_keep_their_verdicts_from_2025_on() {
    let policy = ok(EXAMPLE);
    for at in [
        "2025-01-01T00:00:00Z",
        "2026-06-15T12:00:00Z",
        "2027-01-01T00:00:00Z",
        "2030-01-01T00:00:00Z",
        "2099-12-31T23:59:59Z",
    ] {
        let d = eval(&policy, at);
        let blocked = d.interface("vm-blocked").expect("enforced");
        assert_eq!(blocked.verdict, Verdict::Block, "{at}");
        assert_eq!(blocked.vm.map(|v| v.name.as_str()), Some("vm-blocked"));
        let exempt = d.interface("vm-exempt").expect("enforced");
        assert_eq!(exempt.verdict, Verdict::Allow, "{at}");
        assert_eq!(exempt.reason_code, "exempted");
        assert_eq!(
            exempt.reason,
            "exemption granted 2021-01-10T12:00:00Z, in effect since the VM started 2021-01-11T08:00:00Z"
        );
        let stray = d.interface("vm-stray").expect("attach glob");
        assert_eq!((stray.verdict, stray.vm), (Verdict::Block, None));
    }
}
