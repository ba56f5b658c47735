//! Every validation error: exact `file:line:col: message`.

use super::{errors, ok};
use crate::policy::{Action, Hook, Mode, PolicyError, Verdict, load, parse};

/// A valid base: subscriptions `s` (msdn) and `p` (pay-as-you-go), no VMs.
const BASE: &str = "version: 1
subscriptions:
  - id: s
    offer: msdn
    created: 2020-01-01
  - id: p
    offer: pay-as-you-go
    created: 2020-01-01
";

fn one(yaml: &str) -> String {
    let e = errors(yaml);
    assert_eq!(e.len(), 1, "expected one error, got {e:#?}");
    e.into_iter().next().unwrap_or_default()
}

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
fn bad_dates() {
    let yaml = "version: 1
enforcement:
  cutoff: 2017/11/15
subscriptions:
  - {id: a, offer: msdn, created: 2021-02-30}
  - {id: b, offer: msdn, created: 2021-02-03T00:00:00Z}
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:3:11: bad `cutoff` date: `2017/11/15` is not a date; expected YYYY-MM-DD, e.g. 2020-05-01",
            "p.yaml:5:35: bad `created` date: `2021-02-30` is not a valid date (YYYY-MM-DD)",
            "p.yaml:6:35: bad `created` date: `2021-02-03T00:00:00Z` is not a date; expected YYYY-MM-DD, e.g. 2020-05-01",
        ]
    );
}

#[test]
fn bad_times() {
    let yaml = format!(
        "{BASE}  - id: q
    offer: pay-as-you-go
    created: 2020-01-01
    exemption:
      granted: 2021-01-10 noon
      revoked: 2021-01-10T12:00:00
vms:
  - {{name: a, subscription: s, interface: tap0, started: 2021-01-10}}
"
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "p.yaml:13:16: bad `granted` time: `2021-01-10 noon` is not an RFC 3339 time with an offset, e.g. 2021-01-10T12:00:00Z",
            "p.yaml:14:16: bad `revoked` time: `2021-01-10T12:00:00` has no UTC offset; add one, e.g. `2021-01-10T12:00:00Z` for UTC (RFC 3339)",
            "p.yaml:16:58: bad `started` time: `2021-01-10` is not an RFC 3339 time with an offset, e.g. 2021-01-10T12:00:00Z",
        ]
    );
}

#[test]
fn times_with_offsets_are_utc() {
    let yaml = format!(
        "{BASE}vms:\n  - {{name: a, subscription: s, interface: tap0, started: \"2021-01-10T13:00:00+01:00\"}}\n"
    );
    let p = ok(&yaml);
    assert_eq!(p.vms[0].started, Some(super::t("2021-01-10T12:00:00Z")));
}

#[test]
fn revoked_not_after_granted() {
    let yaml = format!(
        "{BASE}  - id: q
    offer: pay-as-you-go
    created: 2020-01-01
    exemption:
      granted: 2021-01-10T12:00:00Z
      revoked: 2021-01-10T13:00:00+01:00
"
    );
    assert_eq!(
        one(&yaml),
        "p.yaml:14:16: `revoked` 2021-01-10T12:00:00Z is not after `granted` 2021-01-10T12:00:00Z"
    );
}

#[test]
fn bad_prefixes() {
    let yaml = "version: 1
enforcement:
  allow_destinations:
    - 10.0.0.1/8
    - \"2001:db8::1/32\"
    - 10.0.0.0/33
    - relay.example
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:4:7: 10.0.0.1/8 has host bits set; did you mean 10.0.0.0/8?",
            "p.yaml:5:7: 2001:db8::1/32 has host bits set; did you mean 2001:db8::/32?",
            "p.yaml:6:7: `10.0.0.0/33` is not an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8",
            "p.yaml:7:7: `relay.example` is not an IPv4 or IPv6 prefix, e.g. 10.0.0.0/8 or fd00::/8",
        ]
    );
}

#[test]
fn bad_addresses() {
    let yaml = format!(
        "{BASE}vms:\n  - name: a\n    subscription: s\n    interface: tap0\n    addresses: [10.0.0.4, 10.0.0.400, \"fd77::/64\"]\n"
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "p.yaml:13:27: `10.0.0.400` is not an IPv4 or IPv6 address",
            "p.yaml:13:39: `fd77::/64` is not an IPv4 or IPv6 address",
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

#[test]
fn ports() {
    assert_eq!(
        one("version: 1\nenforcement:\n  ports: [25, 0, 587]\n"),
        "p.yaml:3:15: port 0 is not a TCP port; ports go from 1 to 65535"
    );
    assert_eq!(
        one("version: 1\nenforcement:\n  ports: [25, 587, 25]\n"),
        "p.yaml:3:20: duplicate port 25 (first at line 3)"
    );
    assert_eq!(
        errors("version: 1\nenforcement:\n  ports: [25, smtp, 70000]\n"),
        vec![
            "p.yaml:3:15: bad port `smtp`: expected a number from 1 to 65535",
            "p.yaml:3:21: bad port `70000`: expected a number from 1 to 65535",
        ]
    );
    assert_eq!(
        one("version: 1\nenforcement:\n  ports: []\n"),
        "p.yaml:3:10: `ports` is empty; list at least one TCP port (the default is [25])"
    );
    let seventeen: Vec<String> = (1..=17).map(|p| p.to_string()).collect();
    assert_eq!(
        one(&format!(
            "version: 1\nenforcement:\n  ports: [{}]\n",
            seventeen.join(", ")
        )),
        "p.yaml:3:66: more than 16 ports; the datapath holds at most 16"
    );
    let sixteen: Vec<String> = (1..=16).map(|p| p.to_string()).collect();
    let p = ok(&format!(
        "version: 1\nenforcement:\n  ports: [{}]\n",
        sixteen.join(", ")
    ));
    assert_eq!(p.enforcement.ports.len(), 16);
}

#[test]
fn bad_enum_values() {
    let yaml = "version: 1
enforcement:
  action: dorp
  mode: Enforce
  hook: ebpf
  unknown: deny
subscriptions:
  - {id: s, offer: msdn, created: 2020-01-01}
vms:
  - {name: a, subscription: s, interface: tap0, override: yes}
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:3:11: bad `action` `dorp`: expected drop, reset or icmp",
            "p.yaml:4:9: bad `mode` `Enforce`: expected enforce or audit",
            "p.yaml:5:9: bad `hook` `ebpf`: expected auto, xdp, xdp-generic or tc",
            "p.yaml:6:12: bad `unknown` `deny`: expected allow or block",
            "p.yaml:10:59: bad `override` `yes`: expected allow or block",
        ]
    );
}

#[test]
fn bad_attach_globs() {
    assert_eq!(
        errors("version: 1\nenforcement:\n  attach: [\"tap*\", \"vnet[\", \"\"]\n"),
        vec![
            "p.yaml:3:20: bad `attach` glob `vnet[`: unclosed character class; missing ']'",
            "p.yaml:3:29: empty glob in `attach`",
        ]
    );
}

#[test]
fn empty_list_items() {
    let yaml = format!(
        "{BASE}enforcement:
  ports: [25, ~]
  allow_destinations: [\"\"]
vms:
  - {{name: a, subscription: s, interface: tap0, addresses: [null]}}
"
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "p.yaml:10:15: empty port in `ports`",
            "p.yaml:11:24: empty prefix in `allow_destinations`",
            "p.yaml:13:61: empty address in `addresses`",
        ]
    );
}

#[test]
fn interface_names_linux_refuses() {
    let yaml = format!(
        "{BASE}vms:
  - {{name: a, subscription: s, interface: \"\"}}
  - {{name: b, subscription: s, interface: a-very-long-name}}
  - {{name: c, subscription: s, interface: tap/0}}
  - {{name: d, subscription: s, interface: \"tap:0\"}}
  - {{name: e, subscription: s, interface: \"tap 0\"}}
  - {{name: f, subscription: s, interface: .}}
  - {{name: g, subscription: s, interface: ..}}
  - {{name: h, subscription: s, interface: 123456789012345}}
"
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "p.yaml:10:43: interface name is empty",
            "p.yaml:11:43: interface name `a-very-long-name` is 16 bytes long; Linux allows at most 15",
            "p.yaml:12:43: interface name `tap/0` contains `/`, which Linux does not allow",
            "p.yaml:13:43: interface name `tap:0` contains `:`, which Linux does not allow",
            "p.yaml:14:43: interface name `tap 0` contains whitespace, which Linux does not allow",
            "p.yaml:15:43: interface name `.` is not allowed by Linux",
            "p.yaml:16:43: interface name `..` is not allowed by Linux",
        ]
    );
}

#[test]
fn empty_and_missing_names() {
    let yaml = "version: 1
subscriptions:
  - {id: \"\", offer: msdn, created: 2020-01-01}
  - {offer: msdn, created: 2020-01-01}
  - {id: ok, offer: msdn, created: 2020-01-01}
vms:
  - {name: \"\", subscription: ok, interface: tap0}
  - {name: x, subscription: ok}
  - {name: y, subscription: , interface: tap2}
";
    assert_eq!(
        errors(yaml),
        vec![
            "p.yaml:3:10: `id` is empty",
            "p.yaml:4:5: missing `id`: every subscription needs one",
            "p.yaml:7:12: `name` is empty",
            "p.yaml:8:5: missing `interface`: every VM needs one",
            "p.yaml:9:15: `subscription` is empty",
        ]
    );
}

#[test]
fn empty_optional_values() {
    let yaml = format!(
        "{BASE}enforcement:
  cutoff:
vms:
  - {{name: a, subscription: s, interface: tap0, started: '', override: ~}}
"
    );
    assert_eq!(
        errors(&yaml),
        vec![
            "p.yaml:10:3: `cutoff` is empty; give a value or leave the field out",
            "p.yaml:12:58: `started` is empty; give a value or leave the field out",
            "p.yaml:12:62: `override` is empty; give a value or leave the field out",
        ]
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
