//! The streaming reader reads what serde_norway reads, and leaves the rest
//! to it.

use super::{eval, ok, scale::big_policy};
use crate::policy::{raw::RawPolicy, stream};

const EXAMPLE: &str = include_str!("../../../../deploy/policy.example.yaml");

/// What the streaming reader reads, VMs put back in place.
fn streamed(text: &str) -> Option<RawPolicy> {
    let mut vms = Vec::new();
    let mut raw = stream::read(text, &mut |i, vm| vms.push((i, vm))).ok()?;
    for (n, (i, _)) in vms.iter().enumerate() {
        assert_eq!(n, *i);
    }
    if !vms.is_empty() {
        raw.vms = Some(vms.into_iter().map(|(_, vm)| vm).collect());
    }
    Some(raw)
}

fn serde_read(text: &str) -> RawPolicy {
    match serde_norway::from_str(text) {
        Ok(raw) => raw,
        Err(e) => panic!("serde_norway: {e}"),
    }
}

#[test]
fn streaming_reads_what_serde_norway_reads() {
    let flow = "version: 1
enforcement: {ports: [25, 465], attach: ['tap*'], cutoff: 2017-11-15}
offers:
  lab: {restricted: always, exemption: on-request}
subscriptions:
  - id: a
    offer: lab
    created: 2020-01-01
    exemption: {granted: 2021-01-01T00:00:00Z}
  - {id: b, offer: lab, created: 2020-01-01, exemption: {granted: 2021-01-01T00:00:00Z}}
vms:
  - {name: x, subscription: a, interface: tap0, addresses: [10.0.0.1, \"fd00::1\"]}
  - name: y
    subscription: b
    interface: \"tap1\"
    started: ~
    override: allow
";
    for text in [
        EXAMPLE,
        flow,
        "version: 1\nvms:\nsubscriptions: []\n",
        &big_policy(50),
    ] {
        let streamed = streamed(text).expect("the streaming reader reads it");
        assert_eq!(format!("{streamed:?}"), format!("{:?}", serde_read(text)));
    }
}

#[test]
fn unusual_files_go_to_serde_norway() {
    for text in [
        "--- !!map\nversion: 1\n",
        "version: 1\nbogus: 2\n",
        "version: 1\nversion: 1\n",
        "version: 1\nvms: [{name: a, name: b}]\n",
        "version: 1\nvms: *nowhere\n",
        // Anchors (no use without aliases, which are refused), indicators
        // the two parsers read differently, several words in a plain
        // scalar, tabs in indentation: serde_norway decides.
        "version: &v 1\n",
        "version: 1\nvms: [{name: ?, interface: tap0}]\n",
        "version: 1\nvms: [{name: a b, interface: tap0}]\n",
        "version: 1\n\t# a comment\n",
        "version: 1\nvms: [{name\n  : a}]\n",
        "version: [1\n",
        "version: 1\n---\nversion: 1\n",
    ] {
        assert!(streamed(text).is_none(), "{text}");
    }
    // And serde_norway's reading is used when it succeeds.
    let p = ok(
        "--- !!map\nversion: 1\nsubscriptions: [{id: s, offer: msdn, created: 2020-01-01}]\nvms: [{name: v, subscription: s, interface: tap0}]\n",
    );
    assert_eq!(
        eval(&p, "2026-01-01T00:00:00Z").vms[0].reason.code(),
        "not-exemptable"
    );
}
