//! The file's settings: its `version`, and its `enforcement:` section
//! (ports, action, mode, hook, attach globs, the unknown verdict, the
//! destinations never held back, the cutoff).
//!
//! Invariant: a setting left out keeps its default ([`Enforcement::default`]);
//! a setting given wrongly is reported, and the rest of the section is
//! still checked.

use crate::policy::{
    enforcement::{AttachGlobs, Enforcement, MAX_PORTS, compile_glob},
    limits::MAX_NAME,
    locate::{Loc, yaml_path},
    names::{shown, what_char},
    raw::{Field, RawEnforcement},
    values::parse_prefix,
};

use super::checker::Checker;

pub(crate) fn check_version(c: &mut Checker, version: Field) {
    match version {
        Field::Absent => c.error(
            Loc::Value(yaml_path![]),
            "missing `version`: a policy file starts with `version: 1`".to_owned(),
        ),
        Field::Text(t) if t == "1" => {}
        Field::Text(t) => c.error(
            Loc::Value(yaml_path!["version"]),
            format!("unsupported `version` `{t}`: this egress-guard reads version 1"),
        ),
        Field::Null => c.error(
            Loc::Key(yaml_path!["version"]),
            "`version` is empty: this egress-guard reads version 1".to_owned(),
        ),
    }
}

pub(crate) fn enforcement(c: &mut Checker, raw: RawEnforcement) -> Enforcement {
    let mut e = Enforcement::default();
    if let Some(ports) = raw.ports {
        e.ports = check_ports(c, ports);
    }
    let at = |key: &'static str| move || yaml_path!["enforcement", key];
    e.action = c
        .choice(raw.action, "action", at("action"))
        .unwrap_or(e.action);
    e.mode = c.choice(raw.mode, "mode", at("mode")).unwrap_or(e.mode);
    e.hook = c.choice(raw.hook, "hook", at("hook")).unwrap_or(e.hook);
    e.unknown = c
        .choice(raw.unknown, "unknown", at("unknown"))
        .unwrap_or(e.unknown);
    if let Some(globs) = raw.attach {
        let (patterns, compiled) = check_attach(c, globs);
        e.attach = patterns;
        e.attach_globs = compiled;
    }
    if let Some(prefixes) = raw.allow_destinations {
        for (i, field) in prefixes.into_iter().enumerate() {
            let here = || yaml_path!["enforcement", "allow_destinations", i];
            let Some(text) = c.item(field, "prefix", "allow_destinations", here) else {
                continue;
            };
            match parse_prefix(&text) {
                Ok(net) => e.allow_destinations.push(net),
                Err(why) => c.error(Loc::Value(here()), why),
            }
        }
    }
    if let Some(text) = c.optional(raw.cutoff, "cutoff", || yaml_path!["enforcement", "cutoff"])
        && let Some(d) = c.date(&text, "cutoff", || yaml_path!["enforcement", "cutoff"])
    {
        e.cutoff = d;
    }
    e
}

fn check_ports(c: &mut Checker, ports: Vec<Field>) -> Vec<u16> {
    let at = || yaml_path!["enforcement", "ports"];
    if ports.is_empty() {
        c.error(
            Loc::Value(at()),
            "`ports` is empty; list at least one TCP port (the default is [25])".to_owned(),
        );
    }
    let mut seen: Vec<(u16, usize)> = Vec::with_capacity(ports.len());
    for (i, field) in ports.into_iter().enumerate() {
        let here = || yaml_path!["enforcement", "ports", i];
        if i == MAX_PORTS {
            c.error(
                Loc::Value(here()),
                format!("more than {MAX_PORTS} ports; the datapath holds at most {MAX_PORTS}"),
            );
        }
        let Some(text) = c.item(field, "port", "ports", here) else {
            continue;
        };
        match text.parse::<u16>() {
            Ok(0) => c.error(
                Loc::Value(here()),
                "port 0 is not a TCP port; ports go from 1 to 65535".to_owned(),
            ),
            Ok(port) => {
                if let Some(&(_, first)) = seen.iter().find(|(p, _)| *p == port) {
                    c.duplicate(
                        Loc::Value(here()),
                        Loc::Value(yaml_path!["enforcement", "ports", first]),
                        format!("duplicate port {port}"),
                    );
                } else {
                    seen.push((port, i));
                }
            }
            Err(_) => c.error(
                Loc::Value(here()),
                format!("bad port `{text}`: expected a number from 1 to 65535"),
            ),
        }
    }
    seen.into_iter().map(|(p, _)| p).collect()
}

fn check_attach(c: &mut Checker, globs: Vec<Field>) -> (Vec<String>, AttachGlobs) {
    let mut patterns = Vec::with_capacity(globs.len());
    for (i, field) in globs.into_iter().enumerate() {
        let here = || yaml_path!["enforcement", "attach", i];
        let Some(glob) = c.item(field, "glob", "attach", here) else {
            continue;
        };
        if let Some(ch) = glob
            .chars()
            .find(|c| matches!(c, '/' | ':' | '%') || c.is_whitespace() || c.is_control())
        {
            c.error(
                Loc::Value(here()),
                format!(
                    "bad `attach` glob `{}`: it contains {}, which no interface name has",
                    shown(&glob),
                    what_char(ch)
                ),
            );
            continue;
        }
        if glob.len() > MAX_NAME {
            c.error(
                Loc::Value(here()),
                format!(
                    "bad `attach` glob `{}`: {} bytes long; globs are at most {MAX_NAME} bytes",
                    shown(&glob),
                    glob.len()
                ),
            );
            continue;
        }
        match compile_glob(&glob) {
            Ok(_) => patterns.push(glob),
            Err(why) => c.error(
                Loc::Value(here()),
                format!("bad `attach` glob `{glob}`: {why}"),
            ),
        }
    }
    match AttachGlobs::new(&patterns) {
        Ok(compiled) => (patterns, compiled),
        Err((glob, why)) => {
            c.error(
                Loc::Value(yaml_path!["enforcement", "attach"]),
                format!("bad `attach` glob `{glob}`: {why}"),
            );
            (Vec::new(), AttachGlobs::default())
        }
    }
}
