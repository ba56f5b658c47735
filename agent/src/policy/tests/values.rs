//! Validation of each value on its own: days, times, prefixes, addresses,
//! ports, words, globs, names, interface names, empty values. Exact
//! `file:line:col: message` throughout.

use super::{BASE, errors, ok, one};

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

/// [`BASE`] and a pay-as-you-go subscription `q`, its exemption's
/// `granted` and `revoked` (lines 13 and 14, column 16) as written.
fn exempted(granted: &str, revoked: &str) -> String {
    format!(
        "{BASE}  - id: q\n    offer: pay-as-you-go\n    created: 2020-01-01\n    exemption:\n      granted: {granted}\n      revoked: {revoked}\n"
    )
}

#[test]
fn bad_times() {
    let yaml = format!(
        "{}vms:\n  - {{name: a, subscription: s, interface: tap0, started: 2021-01-10}}\n",
        exempted("2021-01-10 noon", "2021-01-10T12:00:00")
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
    assert_eq!(
        one(&exempted(
            "2021-01-10T12:00:00Z",
            "2021-01-10T13:00:00+01:00"
        )),
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
