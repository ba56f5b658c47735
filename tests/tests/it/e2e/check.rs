//! `egress-guard check`: the verdict of every VM of every built-in offer
//! at a given time, in JSON and as a table, and invalid policies refused
//! with exit 2 and a location. No kernel, no namespace.

use std::{path::Path, process::Command, time::Duration};

use anyhow::{Context as _, Result, ensure};
use egress_guard_tests::netns::{
    PolicyBuilder, TempDir, agent_bin, cmd,
    policy::{GRANT, STARTED_AFTER_GRANT},
};
use serde_json::Value;

use crate::fixtures::serial;

/// One VM of the `check` test: its offer, subscription, and the verdict it
/// must get at [`CHECK_AT`].
struct Case {
    name: &'static str,
    offer: &'static str,
    created: &'static str,
    exemption: Option<(&'static str, Option<&'static str>)>,
    started: Option<&'static str>,
    over: Option<&'static str>,
    verdict: &'static str,
}

const CHECK_AT: &str = "2024-06-01T00:00:00Z";

const fn case(
    name: &'static str,
    offer: &'static str,
    created: &'static str,
    verdict: &'static str,
) -> Case {
    Case {
        name,
        offer,
        created,
        exemption: None,
        started: None,
        over: None,
        verdict,
    }
}

const AFTER_GRANT: &str = STARTED_AFTER_GRANT;

fn check_cases() -> Vec<Case> {
    let exempt = |mut c: Case, revoked: Option<&'static str>, started: &'static str| {
        c.exemption = Some((GRANT, revoked));
        c.started = Some(started);
        c
    };
    let overridden = |mut c: Case, over: &'static str| {
        c.over = Some(over);
        c
    };
    vec![
        case("ea", "enterprise-agreement", "2020-01-01", "allow"),
        case("payg-old", "pay-as-you-go", "2016-01-01", "allow"),
        case("payg-new", "pay-as-you-go", "2020-01-01", "block"),
        case("payg-cutoff-day", "pay-as-you-go", "2017-11-15", "block"),
        case("payg-day-before", "pay-as-you-go", "2017-11-14", "allow"),
        exempt(
            case("payg-exempt", "pay-as-you-go", "2020-01-01", "allow"),
            None,
            AFTER_GRANT,
        ),
        // Started exactly at the grant counts as started since the grant.
        exempt(
            case(
                "payg-start-at-grant",
                "pay-as-you-go",
                "2020-01-01",
                "allow",
            ),
            None,
            GRANT,
        ),
        // Granted after the VM last started: needs a stop and start.
        exempt(
            case("payg-not-restarted", "pay-as-you-go", "2020-01-01", "block"),
            None,
            "2021-01-01T00:00:00Z",
        ),
        exempt(
            case("payg-revoked", "pay-as-you-go", "2020-01-01", "block"),
            Some("2022-03-01T00:00:00Z"),
            AFTER_GRANT,
        ),
        exempt(
            case("payg-revoked-later", "pay-as-you-go", "2020-01-01", "allow"),
            Some("2030-01-01T00:00:00Z"),
            AFTER_GRANT,
        ),
        case("csp", "cloud-solution-provider", "2019-01-01", "block"),
        exempt(
            case(
                "csp-exempt",
                "cloud-solution-provider",
                "2019-01-01",
                "allow",
            ),
            None,
            AFTER_GRANT,
        ),
        exempt(
            case(
                "mpn-exempt",
                "microsoft-partner-network",
                "2019-01-01",
                "allow",
            ),
            None,
            AFTER_GRANT,
        ),
        case("bizspark", "bizspark-plus", "2019-01-01", "block"),
        case(
            "sponsorship-old",
            "azure-sponsorship",
            "2016-01-01",
            "allow",
        ),
        case("msdn", "msdn", "2019-01-01", "block"),
        case("azure-pass", "azure-pass", "2019-01-01", "block"),
        case("in-open-old", "azure-in-open", "2016-01-01", "allow"),
        case("education", "education", "2020-01-01", "block"),
        case("students", "azure-for-students", "2020-01-01", "block"),
        case("trial-old", "free-trial", "2016-01-01", "allow"),
        case("trial-new", "free-trial", "2020-01-01", "block"),
        case("visual-studio", "visual-studio", "2020-01-01", "block"),
        overridden(
            case("msdn-override", "msdn", "2020-01-01", "allow"),
            "allow",
        ),
        overridden(
            case("ea-override", "enterprise-agreement", "2020-01-01", "block"),
            "block",
        ),
        case("lab", "internal-lab", "2010-01-01", "block"),
    ]
}

fn check_policy(cases: &[Case]) -> String {
    let mut p = PolicyBuilder::new().offer("internal-lab", "restricted: always, exemption: never");
    for (i, c) in cases.iter().enumerate() {
        let sub = format!("sub-{}", c.name);
        p = match c.exemption {
            Some((granted, revoked)) => {
                p.exempted_subscription(&sub, c.offer, c.created, granted, revoked)
            }
            None => p.subscription(&sub, c.offer, c.created, &[]),
        };
        let mut extra = Vec::new();
        extra.extend(c.started.map(|s| format!("started: {s}")));
        extra.extend(c.over.map(|o| format!("override: {o}")));
        p = p.vm_with(c.name, &format!("tap{i}"), &sub, &extra);
    }
    p.yaml()
}

fn check(bin: &Path, args: &[&str]) -> Result<cmd::Finished> {
    Ok(cmd::output_within(
        Command::new(bin).arg("check").args(args),
        Duration::from_secs(30),
    )?)
}

#[test]
fn check_prints_the_expected_verdict_for_every_vm_of_every_built_in_offer() -> Result<()> {
    let _serial = serial::shared(module_path!());
    let bin = agent_bin()?;
    let cases = check_cases();
    let dir = TempDir::new("check")?;
    let path = dir.write("policy.yaml", check_policy(&cases))?;
    let path_s = path.to_string_lossy();
    let out = check(
        &bin,
        &["--policy", &path_s, "--at", CHECK_AT, "--format", "json"],
    )?
    .check()?;
    let doc: Value = serde_json::from_str(&out.stdout)
        .with_context(|| format!("check printed no JSON:\n{}", out.stdout))?;
    ensure!(
        doc["at"]
            .as_str()
            .is_some_and(|a| a.starts_with("2024-06-01T00:00:00")),
        "at:\n{doc:#}"
    );
    let vms = doc["vms"].as_array().context("no vms list")?;
    ensure!(
        vms.len() == cases.len(),
        "{} VMs, expected {}",
        vms.len(),
        cases.len()
    );
    let mut wrong = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let Some(v) = vms.iter().find(|v| v["name"] == c.name) else {
            wrong.push(format!("{}: missing", c.name));
            continue;
        };
        if v["verdict"] != c.verdict {
            wrong.push(format!(
                "{}: verdict {} (expected {}): {}",
                c.name, v["verdict"], c.verdict, v["reason"]
            ));
        }
        let sub = format!("sub-{}", c.name);
        let iface = format!("tap{i}");
        for (field, want) in [
            ("subscription", sub.as_str()),
            ("offer", c.offer),
            ("interface", iface.as_str()),
        ] {
            if v[field] != want {
                wrong.push(format!(
                    "{}: {field} {} (expected {want})",
                    c.name, v[field]
                ));
            }
        }
        for field in ["reason", "reason_code"] {
            if v[field].as_str().is_none_or(str::is_empty) {
                wrong.push(format!("{}: no {field}", c.name));
            }
        }
    }
    let not_restarted = vms.iter().find(|v| v["name"] == "payg-not-restarted");
    if let Some(v) = not_restarted
        && !v["reason"].as_str().is_some_and(|r| r.contains("start"))
    {
        wrong.push(format!("payg-not-restarted: the reason should say it takes effect when the VM is stopped and started: {}", v["reason"]));
    }
    ensure!(
        wrong.is_empty(),
        "check --format json:\n{}\n\nfull output:\n{doc:#}",
        wrong.join("\n")
    );

    // The table names every VM and its verdict.
    let table = check(&bin, &["--policy", &path_s, "--at", CHECK_AT])?.check()?;
    for c in &cases {
        ensure!(
            table
                .stdout
                .lines()
                .any(|l| l.contains(c.name) && l.contains(c.verdict)),
            "table has no line for {} with {}:\n{}",
            c.name,
            c.verdict,
            table.stdout
        );
    }
    Ok(())
}

#[test]
fn check_rejects_invalid_policies_with_exit_2_and_a_location() -> Result<()> {
    let _serial = serial::shared(module_path!());
    let bin = agent_bin()?;
    let dir = TempDir::new("check")?;
    let good = check_policy(&check_cases()[..2]);
    let bad = [
        ("unknown field", good.replace("version: 1\n", "version: 1\ncolour: red\n"), 2),
        (
            "unknown offer",
            good.replace("offer: enterprise-agreement", "offer: no-such-offer"),
            0,
        ),
        (
            "exemption on an offer that cannot have one",
            good.replace(
                "offer: enterprise-agreement\n    created: 2020-01-01\n",
                "offer: msdn\n    created: 2020-01-01\n    exemption:\n      granted: 2021-01-10T12:00:00Z\n",
            ),
            0,
        ),
        ("bad date", good.replace("created: 2016-01-01", "created: 2016-13-01"), 0),
    ];
    for (what, text, line) in bad {
        ensure!(text != good, "{what}: the test did not change the policy");
        let path = dir.write("bad.yaml", &text)?;
        let out = check(
            &bin,
            &["--policy", &path.to_string_lossy(), "--format", "json"],
        )?;
        ensure!(
            out.code() == Some(2),
            "{what}: exit {:?}, expected 2\n{}{}\n--- policy ---\n{text}",
            out.code(),
            out.stdout,
            out.stderr
        );
        let location = if line > 0 {
            format!("{}:{line}:", path.display())
        } else {
            format!("{}:", path.display())
        };
        ensure!(
            out.stderr.contains(&location),
            "{what}: the error should name {location}LINE:COL:\n{}",
            out.stderr
        );
    }
    Ok(())
}
