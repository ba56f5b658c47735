//! Hostile policies: each bound of `policy::limits` gives its own clear
//! `file:line:col` error, in bounded time and memory (measured here with
//! generous margins: debug builds, a shared machine).

use std::{fmt::Write as _, time::Duration};

use super::{
    alloc::{check_cost, measure},
    errors, ok,
};
use crate::policy::{
    self, PolicyError,
    limits::{MAX_DEPTH, MAX_ERRORS, MAX_NAME, MAX_SCALAR, MAX_SERDE_BYTES},
    parse,
};

const HEAD: &str = "version: 1\nsubscriptions: [{id: s, offer: msdn, created: 2020-01-01}]\n";

/// The diagnostics of `text`, and what reading it cost, which must stay
/// within `time` and `memory` bytes.
fn hostile(text: &str, time: Duration, memory: u64) -> Vec<String> {
    let (result, cost) = measure(|| parse("p.yaml", text));
    check_cost(text.len(), cost, time, memory);
    match result {
        Ok(_) => panic!("expected errors, the policy is valid"),
        Err(PolicyError::Invalid(d)) => d.iter().map(ToString::to_string).collect(),
        Err(e) => panic!("unexpected error {e}"),
    }
}

/// A billion laughs: nine lists of nine, each of the one before.
fn alias_bomb(levels: usize) -> String {
    let mut bomb = String::from(
        "&a0 [\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\",\"10.0.0.1\"]",
    );
    for level in 1..levels {
        let prev = level - 1;
        let _ = write!(bomb, ", &a{level} [");
        for i in 0..9 {
            let _ = write!(bomb, "{}*a{prev}", if i == 0 { "" } else { "," });
        }
        bomb.push(']');
    }
    bomb
}

#[test]
fn an_alias_bomb_is_refused_at_once() {
    let text = format!(
        "{HEAD}vms:\n  - name: v\n    subscription: s\n    interface: tap0\n    addresses: [{}]\n",
        alias_bomb(9)
    );
    assert!(text.len() < 600, "{}", text.len());
    let e = hostile(&text, Duration::from_secs(2), 1 << 20);
    assert_eq!(
        e[0],
        "p.yaml:7:128: an alias (`*name`); a policy file has no aliases: write the value out"
    );
    assert_eq!(e.len(), MAX_ERRORS + 1, "{e:#?}");

    // Under `offers`, and as a lone alias anywhere.
    let text = format!(
        "version: 1\noffers:\n  x: {{restricted: [{}]}}\n",
        alias_bomb(9)
    );
    let e = hostile(&text, Duration::from_secs(2), 1 << 20);
    assert!(e[0].starts_with("p.yaml:3:"), "{e:?}");
    assert!(e[0].contains("an alias"), "{e:?}");
    assert_eq!(
        errors("version: &v 1\nenforcement: {mode: *v}\n"),
        ["p.yaml:2:21: an alias (`*name`); a policy file has no aliases: write the value out"]
    );
}

#[test]
fn deep_nesting_is_refused_before_any_parser_goes_quadratic() {
    let depth = 100_000;
    for text in [
        format!(
            "version: 1\nvms: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
        format!(
            "version: 1\nvms: {}{}\n",
            "{a: ".repeat(depth),
            "}".repeat(depth)
        ),
        // serde_norway reads a file the streaming reader left early (a
        // duplicate key): the bound is checked before it.
        format!(
            "version: 1\nversion: 1\nvms: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ),
    ] {
        let e = hostile(&text, Duration::from_secs(5), 4 << 20);
        let line = if text.starts_with("version: 1\nversion") {
            3
        } else {
            2
        };
        // Where the event parser stops (at its own limit, 255).
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].starts_with(&format!("p.yaml:{line}:")), "{e:?}");
        assert!(
            e[0].ends_with(&format!(
                ": nested more than {MAX_DEPTH} levels deep; a policy needs at most 4"
            )),
            "{e:?}"
        );
    }
    // Deeper than the bound, not as deep as the event parser's limit.
    let text = format!("version: 1\nvms: {}{}\n", "[".repeat(40), "]".repeat(40));
    assert_eq!(
        errors(&text),
        [format!(
            "p.yaml:2:{}: nested more than {MAX_DEPTH} levels deep; a policy needs at most 4",
            6 + MAX_DEPTH - 1
        )]
    );
    // At the bound, the file is read (and its shape is wrong).
    let text = format!(
        "version: 1\nvms: {}{}\n",
        "[".repeat(MAX_DEPTH - 1),
        "]".repeat(MAX_DEPTH - 1)
    );
    let e = errors(&text);
    assert!(!e.iter().any(|e| e.contains("nested")), "{e:?}");
}

#[test]
fn errors_are_capped() {
    let mut text = String::from(HEAD);
    text.push_str("vms:\n");
    let n = 100_000;
    for i in 0..n {
        let _ = writeln!(
            text,
            "  - name: v{i}\n    subscription: missing\n    interface: tap{i}"
        );
    }
    let e = hostile(&text, Duration::from_secs(20), 64 << 20);
    assert_eq!(e.len(), MAX_ERRORS + 1);
    assert_eq!(
        e[0],
        "p.yaml:5:19: unknown subscription `missing`; no subscription under `subscriptions` has that id"
    );
    assert_eq!(
        e[MAX_ERRORS],
        format!(
            "p.yaml:{}:19: and {} more errors from here on (only the first {MAX_ERRORS} are reported)",
            5 + 3 * MAX_ERRORS,
            n - MAX_ERRORS
        )
    );
}

#[test]
fn custom_tags_are_refused() {
    assert_eq!(
        errors("version: !evil 1\n"),
        [
            "p.yaml:1:10: tag `!evil`; a policy file has only the YAML core schema's tags (!!str, !!int, !!map, ...)"
        ]
    );
    assert_eq!(
        errors("version: 1\nvms: !<tag:example.com,2000:x> []\n"),
        [
            "p.yaml:2:6: tag `tag:example.com,2000:x`; a policy file has only the YAML core schema's tags (!!str, !!int, !!map, ...)"
        ]
    );
    // The core schema's are fine.
    ok("--- !!map\nversion: !!int 1\nenforcement: {mode: !!str enforce}\n");
}

#[test]
fn long_values_are_refused() {
    // A VM name of 1 MiB: refused by the scalar cap, whichever reader.
    let huge = "x".repeat(1 << 20);
    for text in [
        format!("{HEAD}vms:\n  - name: {huge}\n    subscription: s\n    interface: tap0\n"),
        format!("{HEAD}vms:\n  - {{name: \"{huge}\", subscription: s, interface: tap0}}\n"),
    ] {
        let e = hostile(&text, Duration::from_secs(5), 64 << 20);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].ends_with(&format!(
                ": a value of {} bytes; values are at most {MAX_SCALAR} bytes",
                1 << 20
            )),
            "{e:?}"
        );
        assert!(e[0].starts_with("p.yaml:4:"), "{e:?}");
    }
    // Names have their own, lower cap.
    let long = "n".repeat(MAX_NAME + 1);
    let e = errors(&format!(
        "{HEAD}vms:\n  - name: {long}\n    subscription: s\n    interface: tap0\n"
    ));
    assert_eq!(
        e,
        [format!(
            "p.yaml:4:11: `name` `{}...` is {} bytes long; names are at most {MAX_NAME} bytes",
            "n".repeat(64),
            MAX_NAME + 1
        )]
    );
    let e = errors(&format!(
        "version: 1\nsubscriptions: [{{id: {long}, offer: msdn, created: 2020-01-01}}]\n"
    ));
    assert_eq!(e.len(), 1);
    assert!(e[0].starts_with("p.yaml:2:22: `id` `nnn"), "{e:?}");
    let e = errors(&format!(
        "version: 1\noffers:\n  {long}: {{restricted: always, exemption: never}}\n"
    ));
    assert!(e[0].starts_with("p.yaml:3:3: `offer` `nnn"), "{e:?}");
    // Exactly at the cap is fine.
    ok(&format!(
        "{HEAD}vms:\n  - name: {}\n    subscription: s\n    interface: tap0\n",
        "n".repeat(MAX_NAME)
    ));
}

#[test]
fn names_have_no_control_characters() {
    assert_eq!(
        errors(&format!(
            "{HEAD}vms:\n  - {{name: \"a\\nb\", subscription: s, interface: tap0}}\n"
        )),
        ["p.yaml:4:12: `name` `a\\nb` contains whitespace; names have none"]
    );
    assert_eq!(
        errors(&format!(
            "{HEAD}vms:\n  - {{name: \"a\\eb\", subscription: s, interface: tap0}}\n"
        )),
        ["p.yaml:4:12: `name` `a\\u{1b}b` contains the control character \\u{1b}; names have none"]
    );
}

#[test]
fn interface_names_follow_the_kernel() {
    let vm = |ifname: &str| {
        errors(&format!(
            "{HEAD}vms:\n  - {{name: a, subscription: s, interface: {ifname}}}\n"
        ))
    };
    assert_eq!(
        vm("\"tap\\0a\""),
        ["p.yaml:4:43: interface name `tap\\0a` contains a NUL byte, which Linux does not allow"]
    );
    assert_eq!(
        vm("tap%d"),
        ["p.yaml:4:43: interface name `tap%d` contains `%`, which Linux does not allow"]
    );
    assert_eq!(
        vm("\"tap\\ta\""),
        ["p.yaml:4:43: interface name `tap\\ta` contains whitespace, which Linux does not allow"]
    );
    assert_eq!(
        vm("\"tap\\x07\""),
        [
            "p.yaml:4:43: interface name `tap\\u{7}` contains the control character \\u{7}, which Linux does not allow"
        ]
    );
    // `attach` globs may hold `*`, `?` and classes, never what no name has.
    assert_eq!(
        errors("version: 1\nenforcement: {attach: [\"vm*\", \"tap%d\", \"a b*\", \"x\\0*\"]}\n"),
        [
            "p.yaml:2:31: bad `attach` glob `tap%d`: it contains `%`, which no interface name has",
            "p.yaml:2:40: bad `attach` glob `a b*`: it contains whitespace, which no interface name has",
            "p.yaml:2:48: bad `attach` glob `x\\0*`: it contains a NUL byte, which no interface name has",
        ]
    );
    ok("version: 1\nenforcement: {attach: [\"vm*\", \"tap[0-9]?\", \"{a,b}*\"]}\n");
}

#[test]
fn the_report_takes_any_width() {
    // Names past the formatter's width limit (u16::MAX) could only come
    // from a policy built in code; the report still prints them.
    let mut p = ok(&format!(
        "{HEAD}vms:\n  - {{name: a, subscription: s, interface: tap0}}\n"
    ));
    p.vms[0].name = "x".repeat(1 << 20).into_boxed_str();
    let facts = policy::Facts {
        now: super::t("2026-01-01T00:00:00Z"),
        interface_created: &std::collections::HashMap::new(),
    };
    let table = policy::report::table(&p, &facts);
    let first = table.lines().nth(1).expect("a VM line");
    assert!(first.starts_with(&"x".repeat(1 << 20)), "{}", &first[..10]);
    let header = table.lines().next().expect("header");
    assert_eq!(header.find("SUBSCRIPTION"), Some((1 << 20) + 2));
}

#[test]
fn a_large_file_of_the_wrong_shape_is_not_handed_to_serde_norway() {
    // Over MAX_SERDE_BYTES, a file the streaming reader stops in gets the
    // lint's messages, or where the streaming reader stopped: never
    // serde_norway's reading, which holds about twenty times the file.
    let vms = &super::scale::big_policy(80_000)["version: 1\n".len()..];
    assert!(vms.len() > MAX_SERDE_BYTES, "{}", vms.len());
    let text = format!("version: 1\nversion: 1\n{vms}");
    let e = hostile(&text, Duration::from_secs(30), 64 << 20);
    assert_eq!(e, ["p.yaml:2:1: duplicate key `version` (first at line 1)"]);
    let text = format!("version: [1]\n{vms}");
    let e = hostile(&text, Duration::from_secs(30), 64 << 20);
    assert_eq!(
        e,
        [format!(
            "p.yaml:1:10: this is not a policy's structure (a value of the wrong shape, or a null where a mapping or list belongs); the file is over {MAX_SERDE_BYTES} bytes, too large for a more precise message: check the part from here"
        )]
    );
    // Smaller, serde_norway says exactly what is wrong.
    assert_eq!(
        errors("version: 1\nenforcement: [1]\n"),
        [
            "p.yaml:2:14: enforcement: invalid type: sequence, expected the enforcement settings: a mapping with ports, action, mode, hook, attach, unknown, allow_destinations and cutoff"
        ]
    );
}
