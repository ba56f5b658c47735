//! What a verdict is for: interfaces (a VM's, an `attach` glob's, none),
//! the VM a verdict carries, the kernel keys, the reason codes.

use super::{eval, ok, single, t};
use crate::policy::{Reason, UNKNOWN_INTERFACE_CODE, Verdict, unknown_key, vm_key};

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

/// The reason codes docs/policy.md lists ("Reason codes"), in its order.
fn documented_codes() -> Vec<&'static str> {
    const DOC: &str = include_str!("../../../../docs/policy.md");
    let section = DOC.split("### Reason codes").nth(1).expect("the section");
    section
        .lines()
        .skip_while(|l| !l.starts_with("| `"))
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| l.strip_prefix("| `")?.split('`').next())
        .collect()
}

#[test]
fn reason_codes_are_the_documented_ones() {
    assert_eq!(documented_codes().len(), 10);
    assert_eq!(Reason::CODES, documented_codes().as_slice());
}
