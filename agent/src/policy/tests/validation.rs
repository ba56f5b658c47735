//! Validation of the file as a whole: defaults, the hash, its structure
//! (YAML syntax, shapes, unknown fields, duplicate keys, documents), and how
//! the diagnostics are ordered, shown and named. Exact
//! `file:line:col: message` throughout.

use super::{BASE, errors, ok, one};
use crate::policy::{Action, Hook, Mode, PolicyError, Verdict, load, parse};

#[test]
fn defaults() {
    let p = ok("version: 1\n");
    let e = &p.enforcement;
    assert_eq!(e.ports, vec![25]);
    assert_eq!(e.action, Action::Drop);
    assert_eq!(e.mode, Mode::Enforce);
    assert_eq!(e.hook, Hook::Auto);
    assert!(e.attach.is_empty());
    assert_eq!(e.unknown, Verdict::Block);
    assert!(e.allow_destinations.is_empty());
    assert_eq!(e.cutoff.to_string(), "2017-11-15");
    assert_eq!(p.offers.len(), 13);
    assert!(p.subscriptions.is_empty() && p.vms.is_empty());
    // Null sections are their defaults too.
    let p = ok("version: 1\nenforcement:\noffers:\nsubscriptions:\nvms:\n");
    assert_eq!(p.enforcement.ports, vec![25]);
}

#[test]
fn every_enforcement_setting_is_read() {
    let p = ok("version: 1
enforcement:
  ports: [25, 465, 587]
  action: icmp
  mode: audit
  hook: xdp-generic
  attach: [\"tap*\"]
  unknown: allow
  allow_destinations: [10.77.250.0/24, \"fd77::/64\", 192.0.2.1]
  cutoff: 2018-01-01
");
    let e = &p.enforcement;
    assert_eq!(e.ports, vec![25, 465, 587]);
    assert_eq!(e.action, Action::Icmp);
    assert_eq!(e.mode, Mode::Audit);
    assert_eq!(e.hook, Hook::XdpGeneric);
    assert_eq!(e.attach, vec!["tap*".to_owned()]);
    assert_eq!(e.unknown, Verdict::Allow);
    let nets: Vec<String> = e
        .allow_destinations
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(nets, vec!["10.77.250.0/24", "fd77::/64", "192.0.2.1/32"]);
    assert_eq!(e.cutoff.to_string(), "2018-01-01");
    assert_eq!(Hook::XdpGeneric.as_str(), "xdp-generic");
    assert_eq!(
        serde_json::to_string(&Hook::XdpGeneric).unwrap_or_default(),
        "\"xdp-generic\""
    );
    assert_eq!(
        serde_json::to_string(&Action::Reset).unwrap_or_default(),
        "\"reset\""
    );
}

#[test]
fn hash_is_sha256_of_the_bytes() {
    // sha256("version: 1\n")
    let p = ok("version: 1\n");
    assert_eq!(
        p.hash,
        "09bfcc6a14b83e2192b8673677725c84883ee9cd0c70e45c9ec09daa8f2b2847"
    );
}

#[test]
fn empty_file() {
    assert_eq!(
        one(""),
        "p.yaml:1:1: the policy file is empty; it needs at least `version: 1`"
    );
    assert_eq!(
        one("# just a comment\n\n"),
        "p.yaml:1:1: the policy file is empty; it needs at least `version: 1`"
    );
    assert_eq!(
        one("---\n"),
        "p.yaml:1:1: the policy file is empty; it needs at least `version: 1`"
    );
}

#[test]
fn version_missing_or_not_1() {
    assert_eq!(
        one("enforcement:\n  mode: audit\n"),
        "p.yaml:1:1: missing `version`: a policy file starts with `version: 1`"
    );
    assert_eq!(
        one("version: 2\n"),
        "p.yaml:1:10: unsupported `version` `2`: this egress-guard reads version 1"
    );
    assert_eq!(
        one("version:\n"),
        "p.yaml:1:1: `version` is empty: this egress-guard reads version 1"
    );
}

#[test]
fn yaml_syntax_error() {
    assert_eq!(
        one("version: 1\nvms: [\n"),
        "p.yaml:3:1: YAML syntax error: while parsing a node, did not find expected node content"
    );
}

#[test]
fn wrong_shapes_are_serde_errors() {
    assert_eq!(
        one("version: 1\nvms: 3\n"),
        "p.yaml:2:6: vms: invalid type: integer `3`, expected a sequence"
    );
    assert_eq!(
        one("- version: 1\n"),
        "p.yaml:1:1: invalid type: sequence, expected a policy: a mapping with version, enforcement, offers, subscriptions and vms"
    );
}

#[test]
fn unknown_fields_at_every_level_list_the_accepted_ones() {
    let yaml = "version: 1
enforcment: {}
enforcement:
  port: [25]
offers:
  x: {restricted: always, exemption: never, note: hi}
subscriptions:
  - id: a
    offer: x
    created: 2020-01-01
    owner: me
    exemption:
      granted: 2021-01-01T00:00:00Z
      by: ops
vms:
  - name: v
    subscription: a
    interface: tap0
    ip: 10.0.0.1
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:2:1: unknown field `enforcment` in the policy; accepted fields: version, enforcement, offers, subscriptions, vms",
            "p.yaml:4:3: unknown field `port` in enforcement; accepted fields: ports, action, mode, hook, attach, unknown, allow_destinations, cutoff",
            "p.yaml:6:45: unknown field `note` in an offer; accepted fields: restricted, exemption",
            "p.yaml:11:5: unknown field `owner` in a subscription; accepted fields: id, offer, created, exemption",
            "p.yaml:14:7: unknown field `by` in an exemption; accepted fields: granted, revoked",
            "p.yaml:19:5: unknown field `ip` in a VM; accepted fields: name, subscription, interface, addresses, started, override",
        ]
    );
}

#[test]
fn duplicate_yaml_keys() {
    let yaml =
        format!("{BASE}vms:\n  - name: a\n    subscription: s\n    interface: tap0\n    name: b\n");
    assert_eq!(
        one(&yaml),
        "p.yaml:13:5: duplicate key `name` (first at line 10)"
    );
    assert_eq!(
        one("version: 1\nversion: 1\n"),
        "p.yaml:2:1: duplicate key `version` (first at line 1)"
    );
    assert_eq!(
        one(
            "version: 1\noffers:\n  x: {restricted: always, exemption: never}\n  x: {restricted: never}\n"
        ),
        "p.yaml:4:3: duplicate key `x` (first at line 3)"
    );
}

#[test]
fn a_second_document() {
    assert_eq!(
        one("version: 1\n---\nversion: 1\n"),
        "p.yaml:2:1: a policy file holds one YAML document; this is a second one"
    );
}

#[test]
fn every_semantic_error_is_reported_in_file_order() {
    let yaml = "version: 1
subscriptions:
  - {id: a, offer: nope, created: 2020-13-01}
vms:
  - {name: v, subscription: b, interface: tap0, started: yesterday}
enforcement:
  ports: [0]
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:3:20: unknown offer `nope`; known offers: azure-for-students, azure-in-open, azure-pass, azure-sponsorship, bizspark-plus, cloud-solution-provider, education, enterprise-agreement, free-trial, microsoft-partner-network, msdn, pay-as-you-go, visual-studio",
            "p.yaml:3:35: bad `created` date: `2020-13-01` is not a valid date (YYYY-MM-DD)",
            "p.yaml:5:29: unknown subscription `b`; no subscription under `subscriptions` has that id",
            "p.yaml:5:58: bad `started` time: `yesterday` is not an RFC 3339 time with an offset, e.g. 2021-01-10T12:00:00Z",
            "p.yaml:7:11: port 0 is not a TCP port; ports go from 1 to 65535",
        ]
    );
}

#[test]
fn invalid_displays_one_diagnostic_a_line() {
    let e = parse("dir/p.yaml", "version: 2\nenforcement: {mode: x}\n").err();
    let Some(e) = e else {
        panic!("expected an error")
    };
    assert_eq!(
        e.to_string(),
        "dir/p.yaml:1:10: unsupported `version` `2`: this egress-guard reads version 1\n\
         dir/p.yaml:2:21: bad `mode` `x`: expected enforce or audit"
    );
    assert_eq!(e.diagnostics().len(), 2);
    assert_eq!(e.diagnostics()[1].line, 2);
    assert_eq!(e.diagnostics()[1].column, 21);
}

#[test]
fn load_names_the_file_as_given() {
    let dir = std::env::temp_dir().join(format!("egress-guard-policy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "version: 1\nvms:\n  - {name: a}\n").expect("write");
    let e = load(&path, crate::policy::Limits::default())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e.as_deref(),
        Some(
            format!(
                "{}:3:5: missing `subscription`: every VM needs one\n{}:3:5: missing `interface`: every VM needs one",
                path.display(),
                path.display()
            )
            .as_str()
        )
    );

    std::fs::write(&path, b"version: 1\n# caf\xe9\n").expect("write");
    let e = load(&path, crate::policy::Limits::default())
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        e,
        Some(format!(
            "{}:2:6: the policy file is not UTF-8 text",
            path.display()
        ))
    );

    let missing = dir.join("missing.yaml");
    match load(&missing, crate::policy::Limits::default()) {
        Err(PolicyError::Io { path: p, source }) => {
            assert_eq!(p, missing);
            assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}
