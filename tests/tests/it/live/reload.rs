//! Each way the policy file can change (edited in place, replaced by
//! rename, deleted and re-created, a ConfigMap's `..data` swap, SIGHUP),
//! applied within a second; a rejected policy reported while the one in
//! force stays; and only the map entries that changed are written.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use chrono::Utc;
use egress_guard_tests::netns::{
    Agent, Role, TempDir,
    agent::{READY_TIMEOUT, strip_ansi},
    cmd, require_root,
};

use super::{
    BY_INOTIFY, POLL, PROBE, WITHIN, applied_after, await_generation, generation, policy,
    with_agent,
};
use crate::fixtures::{
    SINK4, Setup, ms, routed, serial, status_until, time_of, vm_field, with_agent_output,
};

// 1. Each way the policy file can change
// ---------------------------------------------------------------------------

/// Edited in place, replaced by rename, deleted and re-created, and SIGHUP:
/// each applied within a second, with the traffic effect.
#[test]
fn policy_edits_renames_deletion_and_sighup_apply_within_a_second() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-a", "vm-b"], PROBE)?;
    let with_a = |a: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt)]);
    with_agent(
        &s,
        &with_a(Role::Blocked),
        &["--log-format", "json"],
        |agent| {
            let (vm_a, vm_b) = (s.vm("vm-a"), s.vm("vm-b"));
            s.expect_vm(vm_a, SINK4, 25, false)?;
            let mut latencies = Vec::new();

            // Edited in place.
            let (t, w) = (Instant::now(), Utc::now());
            s.write_policy(&with_a(Role::Overridden))?;
            let (doc, took) = await_generation(agent, 2, t, WITHIN * 3)?;
            ensure!(vm_field(&doc, "vm-a", "verdict") == "allow", "{doc:#}");
            latencies.push(("edited in place", took, w));
            s.expect_vm(vm_a, SINK4, 25, true)?;

            // Replaced by rename.
            let (t, w) = (Instant::now(), Utc::now());
            s.rename_policy(&with_a(Role::Blocked))?;
            let (doc, took) = await_generation(agent, 3, t, WITHIN * 3)?;
            ensure!(vm_field(&doc, "vm-a", "verdict") == "block", "{doc:#}");
            latencies.push(("replaced by rename", took, w));
            s.expect_vm(vm_a, SINK4, 25, false)?;

            // Deleted: the policy in force stays, the agent goes on.
            std::fs::remove_file(s.policy_path())?;
            thread::sleep(Duration::from_millis(1500));
            let doc = agent.status_json()?;
            ensure!(
                generation(&doc) == 3 && doc["agent"]["running"] == true,
                "after the file was deleted, the policy in force (3) should stay:\n{doc:#}"
            );
            ensure!(
                agent.stderr().contains("cannot read the policy file"),
                "the agent should say it cannot read the deleted file"
            );
            s.expect_vm(vm_a, SINK4, 25, false)?;
            // ... and re-created.
            let (t, w) = (Instant::now(), Utc::now());
            s.write_policy(&with_a(Role::Overridden))?;
            let (doc, took) = await_generation(agent, 4, t, WITHIN * 3)?;
            ensure!(vm_field(&doc, "vm-a", "verdict") == "allow", "{doc:#}");
            latencies.push(("deleted and re-created", took, w));
            s.expect_vm(vm_a, SINK4, 25, true)?;

            // SIGHUP. The change is written through a hard link in a directory
            // the agent does not watch, so inotify says nothing and only the 1 s
            // identity poll (then 100 ms of quiet) could see it: SIGHUP must
            // apply it at once.
            let hidden = TempDir::new("hidden")?;
            let link = hidden.path().join("policy.yaml");
            std::fs::hard_link(s.policy_path(), &link)?;
            // Let the watcher see the link count change (and find nothing new).
            thread::sleep(Duration::from_millis(1300));
            let before = agent.json_logs().len();
            std::fs::write(&link, with_a(Role::Blocked))?;
            let (t, w) = (Instant::now(), Utc::now());
            ensure!(
                cmd::signal(agent.pid(), libc::SIGHUP),
                "kill -HUP {}",
                agent.pid()
            );
            let (doc, took) = await_generation(agent, 5, t, WITHIN * 3)?;
            ensure!(vm_field(&doc, "vm-a", "verdict") == "block", "{doc:#}");
            latencies.push(("SIGHUP", took, w));
            let logs = agent.json_logs();
            let new = &logs[before.min(logs.len())..];
            let hup = new
                .iter()
                .find(|e| e["message"] == "SIGHUP: re-reading the policy")
                .context("no `SIGHUP: re-reading the policy` in the log after kill -HUP")?;
            let applied = new
                .iter()
                .find(|e| e["message"] == "new policy")
                .context("no `new policy` in the log after kill -HUP")?;
            let gap = time_of(&applied["timestamp"])
                .zip(time_of(&hup["timestamp"]))
                .map(|(a, h)| a - h);
            ensure!(
                gap.is_some_and(
                    |g| g >= chrono::TimeDelta::zero() && g < chrono::TimeDelta::milliseconds(80)
                ),
                "SIGHUP itself should re-read the policy (not the file poll later): {hup} then {applied}"
            );
            s.expect_vm(vm_a, SINK4, 25, false)?;
            s.expect_vm(vm_b, SINK4, 25, true)?;

            for (how, took, w) in &latencies {
                let logged = applied_after(agent, *w).map_or_else(
                    || "-".to_owned(),
                    |d| format!("{} ms", d.num_milliseconds()),
                );
                println!(
                    "reload latency, {how}: {} to the new generation in `status`; {logged} to the agent's `applied` log event",
                    ms(*took)
                );
                let bound = if *how == "SIGHUP" { WITHIN } else { BY_INOTIFY };
                ensure!(
                    *took < bound,
                    "{how}: applied after {took:?}, more than {bound:?}"
                );
            }
            Ok(())
        },
    )
}

/// The policy path is a symlink into `..data`, swapped as kubelet updates a
/// ConfigMap volume.
#[test]
fn a_configmap_style_symlink_swap_applies_within_a_second() -> Result<()> {
    /// Writes a new `..<timestamp>` directory, points `..data_tmp` at it,
    /// renames that over `..data`, and removes the old directory, as
    /// kubelet's atomic writer does.
    fn publish(dir: &Path, serial: u32, text: &str, old: Option<&str>) -> Result<String> {
        let name = format!("..2026_01_01_00_00_{serial:02}.{serial:09}");
        std::fs::create_dir(dir.join(&name))?;
        std::fs::write(dir.join(&name).join("policy.yaml"), text)?;
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(&name, &tmp)?;
        std::fs::rename(&tmp, dir.join("..data"))?;
        if let Some(old) = old {
            std::fs::remove_dir_all(dir.join(old))?;
        }
        Ok(name)
    }

    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-a", "vm-b"], PROBE)?;
    let with_a = |a: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt)]);
    let cm = TempDir::new("configmap")?;
    let mut current = publish(cm.path(), 1, &with_a(Role::Blocked), None)?;
    let path = cm.path().join("policy.yaml");
    std::os::unix::fs::symlink("..data/policy.yaml", &path)?;
    let mut agent = Agent::spawn(&s.topo.hv, &s.bin, &path, &[] as &[&str])?;
    agent.wait_ready(READY_TIMEOUT)?;
    let r = (|| {
        let vm_a = s.vm("vm-a");
        s.expect_vm(vm_a, SINK4, 25, false)?;
        let mut gen_ = 1;
        for (serial, role, delivered) in [(2, Role::Overridden, true), (3, Role::Blocked, false)] {
            let t = Instant::now();
            current = publish(cm.path(), serial, &with_a(role), Some(&current))?;
            gen_ += 1;
            let (doc, took) = await_generation(&agent, gen_, t, WITHIN * 3)?;
            println!(
                "reload latency, ConfigMap `..data` swap: {} (write to new generation in `status`)",
                ms(took)
            );
            ensure!(took < BY_INOTIFY, "applied after {took:?}");
            ensure!(
                vm_field(&doc, "vm-a", "verdict") == if delivered { "allow" } else { "block" },
                "{doc:#}"
            );
            s.expect_vm(vm_a, SINK4, 25, delivered)?;
        }
        s.expect_vm(s.vm("vm-b"), SINK4, 25, true)?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

#[test]
fn an_invalid_policy_is_reported_and_the_one_in_force_stays_until_fixed() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-a", "vm-b"], PROBE)?;
    let with_a = |a: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt)]);
    with_agent(&s, &with_a(Role::Blocked), &[], |agent| {
        let (vm_a, vm_b) = (s.vm("vm-a"), s.vm("vm-b"));
        let before = agent.status_json()?;
        // The bad file would also let vm-a through, were it applied.
        let good = with_a(Role::Overridden);
        let line = good
            .lines()
            .position(|l| l == "enforcement:")
            .context("no enforcement line")?
            + 2;
        let bad = good.replacen("enforcement:\n", "enforcement:\n  colour: red\n", 1);
        let t = Instant::now();
        let path = s.write_policy(&bad)?;
        let location = format!("{}:{line}:3", path.display());
        let (doc, seen) = status_until(agent, WITHIN * 3, POLL, "`rejected`", |d| {
            !d["rejected"].is_null()
        })?;
        println!("rejection visible in `status` after {}", ms(seen - t));
        ensure!(seen - t < WITHIN, "the rejection took {:?}", seen - t);
        let errors = doc["rejected"]["errors"].as_str().unwrap_or("");
        ensure!(
            errors.contains(&location),
            "rejected.errors should name {location}:\n{doc:#}"
        );
        ensure!(
            doc["policy"] == before["policy"],
            "the policy in force should stay:\nbefore {:#}\nafter {:#}",
            before["policy"],
            doc["policy"]
        );
        ensure!(vm_field(&doc, "vm-a", "verdict") == "block", "{doc:#}");
        let log = strip_ansi(&agent.stderr());
        ensure!(
            log.lines()
                .any(|l| l.contains("policy rejected") && l.contains(&location)),
            "the log should carry the diagnostic {location}"
        );
        s.expect_vm(vm_a, SINK4, 25, false)?;
        s.expect_vm(vm_b, SINK4, 25, true)?;

        // Fixed: applied, and `rejected` cleared.
        let t = Instant::now();
        s.write_policy(&good)?;
        let (doc, took) = await_generation(agent, 2, t, WITHIN * 3)?;
        println!("fixed policy applied after {}", ms(took));
        ensure!(took < WITHIN, "the fixed policy took {took:?}");
        ensure!(
            doc["rejected"].is_null(),
            "rejected should be cleared:\n{doc:#}"
        );
        ensure!(vm_field(&doc, "vm-a", "verdict") == "allow", "{doc:#}");
        s.expect_vm(vm_a, SINK4, 25, true)?;
        Ok(())
    })
}

#[test]
fn a_one_vm_change_writes_only_its_entry_and_the_generation() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::bare(routed(&["vm-a", "vm-b"])?)?;
    // vm-ghost is in the policy but has no interface.
    let text =
        |a: Role, ghost: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt), ("vm-ghost", ghost)]);
    with_agent(
        &s,
        &text(Role::Blocked, Role::Blocked),
        &["--log-format", "json"],
        |agent| {
            // (change, generation, map writes): a verdict change on an enforced
            // interface writes its EG_IFACES entry and EG_CONFIG (whose
            // generation changes); one on a VM with no interface, EG_CONFIG only.
            let steps = [
                (text(Role::Overridden, Role::Blocked), 2, 2),
                (text(Role::Overridden, Role::Overridden), 3, 1),
                (text(Role::Blocked, Role::Overridden), 4, 2),
            ];
            for (text, gen_, writes) in steps {
                let before = agent.logged("applied").len();
                let t = Instant::now();
                s.rename_policy(&text)?;
                await_generation(agent, gen_, t, WITHIN * 3)?;
                // The event is logged right after the write; give it a moment.
                thread::sleep(Duration::from_millis(100));
                let applied = agent.logged("applied");
                let new = &applied[before.min(applied.len())..];
                ensure!(
                    new.len() == 1,
                    "generation {gen_}: expected one `applied` event, got {new:#?}"
                );
                let e = &new[0];
                println!(
                    "generation {gen_}: map_writes {} map_removals {} attached {} detached {}",
                    e["map_writes"], e["map_removals"], e["attached"], e["detached"]
                );
                ensure!(
                    e["map_writes"] == writes
                        && e["map_removals"] == 0
                        && e["attached"] == 0
                        && e["detached"] == 0,
                    "generation {gen_}: expected exactly {writes} map write(s) and nothing else: {e}"
                );
            }
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------
