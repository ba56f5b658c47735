//! A rejected policy counted, a VM leaving the policy leaving the metrics,
//! and `status` in both formats while the agent runs, is stopped and is
//! started again.

#![allow(
    clippy::too_many_lines,
    reason = "each test is one story, told in order"
)]

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use egress_guard_tests::netns::{Agent, policy::BLOCKED_SUB, topology::SINK_V4, vm_entry};
use serde_json::Value;

use super::{
    BLOCKED, EXEMPT, SETTLE,
    metrics::{ATTEMPT, await_generation, scrape_until, until},
    policy, with_agent,
};
use crate::fixtures::time_of;

/// A rejected policy counts as a reload failure and the one in force stays;
/// a VM that leaves the policy leaves the metrics (its counters with it).
#[test]
fn a_rejected_policy_is_counted_and_a_vm_that_leaves_the_policy_leaves_the_metrics() -> Result<()> {
    with_agent("auto", |s, agent| {
        let vm = s.sender(BLOCKED)?;
        vm.send(&[vm.syn4(SINK_V4, 43000)])?;
        scrape_until(s, "vm-blocked counted", |m| Ok(m.held("policy")? >= 1))?;

        s.write_policy("version: 1\ncolour: red\n")?;
        let m = scrape_until(s, "a reload failure", |m| {
            Ok(m.get("egress_guard_reload_failures_total", &[])? >= 1)
        })?;
        ensure!(
            m.get("egress_guard_reload_failures_total", &[])? == 1,
            "{}",
            m.text
        );
        ensure!(m.get("egress_guard_reloads_total", &[])? == 0, "{}", m.text);
        ensure!(
            m.held("policy")? == 1,
            "the policy in force stays:\n{}",
            m.text
        );
        let st = agent.status_json()?;
        ensure!(
            st["rejected"].is_object(),
            "status shows the rejection:\n{st:#}"
        );

        s.write_policy(&policy("auto", "enforce", "drop", &[BLOCKED]))?;
        let m = await_generation(s, 2)?;
        ensure!(
            !m.mentions_vm(BLOCKED),
            "vm-blocked left the policy:\n{}",
            m.text
        );
        ensure!(
            m.get("egress_guard_vms", &[("verdict", "block")])? == 0,
            "{}",
            m.text
        );
        ensure!(
            m.get("egress_guard_vms", &[("verdict", "allow")])? == 1,
            "{}",
            m.text
        );
        ensure!(
            m.get("egress_guard_interfaces", &[("hook", "tc")])? == 1,
            "{}",
            m.text
        );
        ensure!(m.get("egress_guard_reloads_total", &[])? == 1, "{}", m.text);
        let st = agent.status_json()?;
        ensure!(vm_entry(&st, BLOCKED).is_none(), "{st:#}");
        Ok(())
    })
}

/// `status` (table and JSON, and `--vm`) reads the same counters, verdicts,
/// hooks and last attempts while the agent runs, while it is stopped, and
/// after it is started again (after SIGTERM and after SIGKILL); an unknown
/// `--vm` is a usage error.
#[test]
fn status_in_both_formats_before_and_after_an_agent_restart() -> Result<()> {
    with_agent("auto", |s, agent| {
        let vm = s.sender(BLOCKED)?;
        let syns: Vec<Vec<u8>> = (0..3).map(|i| vm.syn4(SINK_V4, 44000 + i)).collect();
        vm.send(&syns)?;
        vm.send(&vm.malformed()[..1])?;
        scrape_until(s, "3 SYNs and a malformed frame", |m| {
            Ok(m.held("policy")? >= 3 && m.held("malformed")? >= 1)
        })?;
        // The agent saves the last attempts within a second.
        until(SETTLE, "the last attempts in status --vm", || {
            let doc = status_vm(agent)?;
            Ok((recent_count(&doc) == 3).then_some(()))
        })?;

        let check = |doc: &Value, running: bool, policy: u64, attempts: u64| -> Result<()> {
            ensure!(
                doc["agent"]["running"] == running,
                "agent.running:\n{doc:#}"
            );
            ensure!(
                doc["policy"]["path"] == s.policy_path().display().to_string(),
                "{doc:#}"
            );
            ensure!(doc["policy"]["generation"] == 1, "{doc:#}");
            let b = vm_entry(doc, BLOCKED).with_context(|| format!("{doc:#}"))?;
            ensure!(
                b["verdict"] == "block" && b["subscription"] == BLOCKED_SUB,
                "{b:#}"
            );
            ensure!(b["reason"].as_str().is_some_and(|r| !r.is_empty()), "{b:#}");
            ensure!(b["counters"]["policy"]["packets"] == policy, "{b:#}");
            ensure!(b["counters"]["malformed"]["packets"] == 1, "{b:#}");
            ensure!(b["held_back"]["packets"] == policy + 1, "{b:#}");
            ensure!(b["attempts"]["total"] == attempts, "{b:#}");
            ensure!(b["attempts"]["events"] == attempts, "{b:#}");
            let e = vm_entry(doc, EXEMPT).with_context(|| format!("{doc:#}"))?;
            ensure!(
                e["verdict"] == "allow" && e["held_back"]["packets"] == 0,
                "{e:#}"
            );
            let hooks: Vec<(&str, &str)> = doc["interfaces"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    (
                        i["name"].as_str().unwrap_or(""),
                        i["hook"].as_str().unwrap_or(""),
                    )
                })
                .collect();
            ensure!(
                hooks.contains(&(BLOCKED, "tc")) && hooks.contains(&(EXEMPT, "tc")),
                "interfaces and hooks: {hooks:?}"
            );
            Ok(())
        };

        check(&agent.status_json()?, true, 3, 3)?;
        check_table(agent, true, 3)?;
        let doc = status_vm(agent)?;
        let recent = &vm_entry(&doc, BLOCKED).context("--vm")?["recent_attempts"];
        ensure!(
            recent[0]["dst"] == SINK_V4.to_string() && recent[0]["dst_port"] == 25,
            "{doc:#}"
        );
        ensure!(
            doc["vms"].as_array().map(Vec::len) == Some(1),
            "only that VM:\n{doc:#}"
        );

        // An unknown VM: exit 2 and a message that says which VMs there are.
        for format in ["table", "json"] {
            let out = agent.status(&["--vm", "no-such-vm", "--format", format])?;
            ensure!(
                out.code() == Some(2),
                "exit {:?}:\n{}{}",
                out.code(),
                out.stdout,
                out.stderr
            );
            ensure!(
                out.stderr.contains("no-such-vm")
                    && out.stderr.contains(BLOCKED)
                    && out.stdout.is_empty(),
                "{}",
                out.stderr
            );
        }

        // Stopped: the same, read from the pins and the state directory.
        let status = agent.stop()?;
        ensure!(status.code() == Some(0), "SIGTERM: {status}");
        check(&agent.status_json()?, false, 3, 3)?;
        check_table(agent, false, 3)?;
        ensure!(
            recent_count(&status_vm(agent)?) == 3,
            "last attempts while stopped"
        );
        // Enforcement and counting go on without the agent; the events wait
        // in the ring buffer.
        vm.send(&[vm.syn4(SINK_V4, 44010), vm.syn4(SINK_V4, 44011)])?;
        until(SETTLE, "the SYNs counted without an agent", || {
            let doc = agent.status_json()?;
            Ok(
                (vm_entry(&doc, BLOCKED).is_some_and(|b| b["counters"]["policy"]["packets"] == 5))
                    .then_some(()),
            )
        })?;

        // Started again: the counters read back, the waiting events are
        // logged, the last attempts go on.
        agent.restart(None)?;
        check(&agent.status_json()?, true, 5, 5)?;
        check_table(agent, true, 5)?;
        let m = s.scrape()?;
        ensure!(
            m.held("policy")? == 5 && m.held("malformed")? == 1 && m.attempts()? == 5,
            "{}",
            m.text
        );
        let restarted = Utc::now();
        let queued = until(SETTLE, "the events queued while stopped logged", || {
            Ok(agent
                .logged(ATTEMPT)
                .into_iter()
                .find(|e| e["src_port"] == 44010))
        })?;
        ensure!(
            time_of(&queued["at"]).is_some_and(|at| at < restarted),
            "the attempt is logged with the time it happened: {queued:#}"
        );
        until(SETTLE, "all 5 attempts in status --vm", || {
            Ok((recent_count(&status_vm(agent)?) == 5).then_some(()))
        })?;

        // SIGKILL: nothing is lost either.
        agent.kill()?;
        agent.restart(None)?;
        check(&agent.status_json()?, true, 5, 5)?;
        let m = s.scrape()?;
        ensure!(m.held("policy")? == 5 && m.attempts()? == 5, "{}", m.text);
        ensure!(
            recent_count(&status_vm(agent)?) == 5,
            "last attempts after SIGKILL"
        );

        // The copy of the policy in force that status evaluates, damaged
        // (say, written by a build that reads it differently): status still
        // shows the policy and the interfaces, no VMs, and says why.
        let status = agent.stop()?;
        ensure!(status.code() == Some(0), "SIGTERM: {status}");
        let state_dir = egress_guard::state::StateDir::for_pin_dir(agent.pin_dir());
        let hash = egress_guard::policy::sha256_hex(&std::fs::read(s.policy_path())?);
        // The copy is named after the sha256 of the policy in force.
        let copy = state_dir.policy_file(&hash);
        let text = std::fs::read_to_string(&copy).with_context(|| copy.display().to_string())?;
        ensure!(
            egress_guard::policy::sha256_hex(text.as_bytes()) == hash,
            "the copy in {} is the policy in force",
            copy.display()
        );
        let damaged = "version: 1\nvms: [\n";
        std::fs::write(&copy, damaged)?;
        let damaged_status = |warning: &str| -> Result<()> {
            let out = agent.status(&["--format", "json"])?;
            ensure!(
                out.code() == Some(0),
                "exit {:?}: {}",
                out.code(),
                out.stderr
            );
            let doc: Value = serde_json::from_str(&out.stdout)?;
            ensure!(
                doc["vms"].as_array().is_some_and(Vec::is_empty)
                    && doc["interfaces"].as_array().is_some_and(|i| i.len() == 2)
                    && doc["policy"]["generation"] == 1,
                "{doc:#}"
            );
            ensure!(out.stderr.contains(warning), "the warning: {}", out.stderr);
            Ok(())
        };
        // A copy whose bytes are not the sha256 it is named after...
        damaged_status("does not match the sha256 it is named after")?;
        // ... or one that is, which this build cannot read...
        let damaged_hash = egress_guard::policy::sha256_hex(damaged.as_bytes());
        let damaged_copy = state_dir.policy_file(&damaged_hash);
        std::fs::rename(&copy, &damaged_copy)?;
        let state_file = copy.with_file_name("state.json");
        let mut state: Value = serde_json::from_slice(&std::fs::read(&state_file)?)?;
        state["policy"]["hash"] = damaged_hash.into();
        std::fs::write(&state_file, serde_json::to_vec(&state)?)?;
        damaged_status("does not read with this build")?;
        // ... or none at all.
        std::fs::remove_file(&damaged_copy)?;
        damaged_status("the copy of the policy in force is missing")?;
        Ok(())
    })
}

/// The table and `--vm` table of `status`: vm-blocked blocked with `policy`
/// packets held back for reason policy and 1 malformed.
fn check_table(agent: &Agent<'_>, running: bool, policy: u64) -> Result<()> {
    let table = agent.status_text()?.stdout;
    let line = table
        .lines()
        .find(|l| l.starts_with(BLOCKED) && l.contains(BLOCKED_SUB))
        .with_context(|| format!("no row of VM {BLOCKED}:\n{table}"))?;
    ensure!(
        line.contains("block")
            && line.contains(&format!("policy {policy}"))
            && line.contains("malformed 1"),
        "{line}\n{table}"
    );
    ensure!(
        table.contains(if running {
            "Agent:         running"
        } else {
            "not running"
        }),
        "{table}"
    );
    let detail = agent.status(&["--vm", BLOCKED])?.check()?.stdout;
    ensure!(
        detail.contains("last blocked attempts") && detail.contains(&format!("{SINK_V4}:25")),
        "{detail}"
    );
    ensure!(
        !detail.contains(EXEMPT),
        "--vm shows only that VM:\n{detail}"
    );
    Ok(())
}

/// `status --vm vm-blocked --format json`.
fn status_vm(agent: &Agent<'_>) -> Result<Value> {
    Ok(agent.status_json_with(&["--vm", BLOCKED])?)
}

/// The attempts the last-attempts list of vm-blocked stands for.
fn recent_count(doc: &Value) -> u64 {
    vm_entry(doc, BLOCKED)
        .and_then(|b| b["recent_attempts"].as_array())
        .map_or(0, |list| {
            list.iter().filter_map(|r| r["count"].as_u64()).sum()
        })
}
