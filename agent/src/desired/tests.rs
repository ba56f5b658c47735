//! The desired state from a policy and interfaces: which get a target, on
//! which hook, with which entry, and what the maps must hold.

use std::collections::HashMap;

use chrono::Utc;
use egress_guard_common::maps::{
    ACTION_ICMP, ACTION_RESET, MODE_AUDIT, MODE_ENFORCE, VERDICT_ALLOW, VERDICT_BLOCK,
};

use super::*;

const POLICY: &str = r#"version: 1
enforcement:
  ports: [25, 465]
  action: reset
  hook: xdp
  attach: ["vm*"]
  unknown: block
  allow_destinations: ["198.51.100.25/32"]
subscriptions:
  - id: dev-msdn
    offer: msdn
    created: 2019-04-02
  - id: legacy
    offer: pay-as-you-go
    created: 2016-03-01
vms:
  - name: blocked
    subscription: dev-msdn
    interface: tap-b
  - name: allowed
    subscription: legacy
    interface: mvt-a
"#;

fn policy(text: &str) -> Policy {
    policy::parse("test.yaml", text).expect("a valid policy")
}

fn dev(index: u32, name: &str, kind: DevKind) -> NetDev {
    NetDev {
        index,
        name: name.into(),
        kind,
    }
}

fn verdicts(p: &Policy) -> Verdicts {
    let created = HashMap::new();
    policy::verdicts(
        p,
        &policy::Facts {
            now: Utc::now(),
            interface_created: &created,
        },
    )
}

#[test]
fn each_enforced_interface_gets_its_entry_and_its_hook() {
    let p = policy(POLICY);
    let v = verdicts(&p);
    let devs = [
        dev(3, "tap-b", DevKind::Tap),
        dev(4, "mvt-a", DevKind::Macvtap),
        dev(5, "vm-extra", DevKind::Veth),
        dev(6, "eth0", DevKind::Physical),
    ];
    let t = targets(&p, &v, &devs);
    let names: Vec<&str> = t.iter().map(|t| t.dev.name.as_str()).collect();
    // eth0 is neither a VM's interface nor matched by `attach`.
    assert_eq!(names, ["tap-b", "mvt-a", "vm-extra"]);
    assert_eq!(t[0].entry.verdict, VERDICT_BLOCK);
    assert_eq!(t[0].entry.vm_key, policy::vm_key("blocked"));
    assert_eq!(t[0].hook, Hook::Xdp);
    assert_eq!(t[0].record.vm.as_deref(), Some("blocked"));
    assert_eq!(t[1].entry.verdict, VERDICT_ALLOW);
    // XDP cannot see a macvtap's guest frames: tcx egress, said why.
    assert_eq!(t[1].hook, Hook::TcEgress);
    assert!(t[1].placement.overridden.is_some());
    assert_eq!(t[1].record.hook, Hook::TcEgress);
    assert_eq!(t[1].record.kind, "macvtap");
    // An interface only a glob names: blocked, under its own key.
    assert_eq!(t[2].entry.verdict, VERDICT_BLOCK);
    assert_eq!(t[2].entry.vm_key, policy::unknown_key("vm-extra"));
    assert_eq!(t[2].record.vm, None);
    // Native XDP on a veth with replies: the replies cannot reach the VM.
    assert!(t[2].replies_lost);
    assert!(!t[0].replies_lost);
}

#[test]
fn the_maps_hold_the_settings_ports_destinations_and_entries() {
    let held = policy(POLICY);
    let verdicts = verdicts(&held);
    let tap = targets(&held, &verdicts, &[dev(3, "tap-b", DevKind::Tap)]);
    let w = wanted(&held, 7, &tap);
    assert_eq!(w.config.generation, 7);
    assert_eq!(w.config.mode, MODE_ENFORCE);
    assert_eq!(w.config.action, ACTION_RESET);
    assert!(w.config.reply_interval_ns > 0);
    assert_eq!(w.ports.iter().copied().collect::<Vec<_>>(), [25, 465]);
    assert_eq!(w.ifaces.len(), 1);
    assert_eq!(w.ifaces[&3].verdict, VERDICT_BLOCK);
    let audit = policy(&POLICY.replace("action: reset", "action: icmp\n  mode: audit"));
    let c = kernel_config(&audit.enforcement, 1);
    assert_eq!((c.mode, c.action), (MODE_AUDIT, ACTION_ICMP));
}
