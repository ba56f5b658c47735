//! Two agents side by side in two namespaces that do not disturb each
//! other, and one agent that takes 100,000 VMs.

use std::{
    path::Path,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Result, ensure};
use egress_guard_common::maps::VERDICT_ALLOW;
use egress_guard_tests::netns::{Agent, Role, agent::READY_TIMEOUT, bpf, require_root};
use serde_json::Value;

use super::{
    PROBE, WITHIN, await_generation, iface_entries, ifindex, load::two_vm_policy, policy,
    policy_builder,
};
use crate::fixtures::{SINK4, Setup, ms, serial, with_agent_output};

// 9. Two agents side by side
// ---------------------------------------------------------------------------

/// Every pin of a pin directory: paths, the `maps` target, the id of each
/// pinned map, and the id and program of each pinned link.
fn pin_snapshot(pin_dir: &Path) -> Result<Vec<String>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            let rel = path.strip_prefix(root)?.display().to_string();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                out.push(format!("{rel} -> {}", std::fs::read_link(&path)?.display()));
            } else if meta.is_dir() {
                out.push(format!("{rel}/"));
                walk(root, &path, out)?;
            } else if rel.starts_with("links/") {
                let link = bpf::pinned_link_info(&path)?;
                out.push(format!("{rel} link {} prog {}", link.id, link.prog_id));
            } else {
                out.push(format!("{rel} map {}", bpf::pinned_map_info(&path)?.id));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(pin_dir, pin_dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// What must not change in one agent's status when the other agent acts:
/// all but the counters.
fn status_view(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(vms) = doc["vms"].as_array_mut() {
        for vm in vms {
            if let Some(o) = vm.as_object_mut() {
                o.remove("held_back");
                o.remove("counters");
                o.remove("attempts");
            }
        }
    }
    doc
}

/// Asserts that `agent`'s pins and status view are still `pins` and
/// `status` after `what` (the other agent's doing).
fn untouched(agent: &Agent<'_>, pins: &[String], status: &Value, what: &str) -> Result<()> {
    ensure!(
        pin_snapshot(agent.pin_dir())? == pins,
        "{what} changed the other agent's pins"
    );
    ensure!(
        status_view(&agent.status_json()?) == *status,
        "{what} changed the other agent's status"
    );
    Ok(())
}

#[test]
fn two_agents_in_two_namespaces_do_not_disturb_each_other() -> Result<()> {
    fn build() -> Result<Setup> {
        Setup::routed(&["vm-blocked", "vm-exempt"], PROBE)
    }
    let _serial = serial::exclusive();
    require_root()?;
    // The same interface names in both: only the pin directories differ.
    let (sa, sb) = (build()?, build()?);
    let mut a = sa.start_agent(&two_vm_policy(), &[])?;
    let mut b = sb.start_agent(&two_vm_policy(), &[])?;
    let r = (|| {
        ensure!(a.pin_dir() != b.pin_dir(), "two pin directories");
        let expect_b = || -> Result<()> {
            sb.expect_vm(sb.vm("vm-blocked"), SINK4, 25, false)?;
            sb.expect_vm(sb.vm("vm-exempt"), SINK4, 25, true)
        };

        // A's policy changes: B sees nothing of it.
        let b_pins = pin_snapshot(b.pin_dir())?;
        let b_status = status_view(&b.status_json()?);
        let t = Instant::now();
        sa.rename_policy(&policy(&[
            ("vm-blocked", Role::Overridden),
            ("vm-exempt", Role::Exempt),
        ]))?;
        await_generation(&a, 2, t, WITHIN * 3)?;
        sa.expect_vm(sa.vm("vm-blocked"), SINK4, 25, true)?;
        expect_b()?;
        untouched(&b, &b_pins, &b_status, "A's reload")?;

        // B restarts: A sees nothing of it.
        let a_pins = pin_snapshot(a.pin_dir())?;
        let a_status = status_view(&a.status_json()?);
        b.kill()?;
        b.restart(None)?;
        expect_b()?;
        sa.expect_vm(sa.vm("vm-blocked"), SINK4, 25, true)?;
        untouched(&a, &a_pins, &a_status, "B's restart")?;

        // A stops and detaches: B sees nothing of it.
        let b_pins = pin_snapshot(b.pin_dir())?;
        let b_status = status_view(&b.status_json()?);
        a.stop()?;
        a.detach()?;
        ensure!(!a.pin_dir().exists(), "A's pins should be gone");
        sa.expect_vm(sa.vm("vm-exempt"), SINK4, 25, true)?;
        expect_b()?;
        untouched(&b, &b_pins, &b_status, "A's detach")?;
        println!(
            "B's {} pins and its status stayed the same through A's reload and detach",
            b_pins.len()
        );
        Ok(())
    })();
    let r = with_agent_output(&a, r);
    with_agent_output(&b, r)
}

#[test]
fn a_running_agent_takes_a_100000_vm_policy() -> Result<()> {
    const VMS: usize = 100_000;
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-blocked", "vm-exempt"], PROBE)?;
    let text = |blocked: Role| {
        policy_builder(&[("vm-blocked", blocked), ("vm-exempt", Role::Exempt)])
            .generated(VMS - 2)
            .yaml()
    };
    let path = s.write_policy(&text(Role::Blocked))?;
    let t = Instant::now();
    let mut agent = Agent::spawn(&s.topo.hv, &s.bin, &path, &["--log-format", "json"])?;
    agent.wait_ready(READY_TIMEOUT)?;
    let ready = t.elapsed();
    let r = (|| {
        let line = agent.stdout_lines().join("\n");
        ensure!(
            line.contains("enforcing 2 interface(s), 1 blocked, 1 allowed"),
            "{line}"
        );
        s.expect_vm(s.vm("vm-blocked"), SINK4, 25, false)?;
        s.expect_vm(s.vm("vm-exempt"), SINK4, 25, true)?;

        // One VM changes: time to the `applied` event.
        let before = agent.logged("applied").len();
        let t = Instant::now();
        s.rename_policy(&text(Role::Overridden))?;
        let deadline = t + Duration::from_mins(1);
        let applied = loop {
            let applied = agent.logged("applied");
            if applied.len() > before {
                break t.elapsed();
            }
            ensure!(
                Instant::now() < deadline,
                "the 100,000-VM change was not applied in 60 s"
            );
            thread::sleep(Duration::from_millis(10));
        };
        let news = agent.logged("new policy");
        ensure!(
            news.iter().any(|e| e["vms"] == VMS),
            "the new policy should have {VMS} VMs: {news:?}"
        );
        let index = ifindex(&s.topo.hv, "vm-blocked")?;
        let entries = iface_entries(agent.pin_dir())?;
        ensure!(
            entries.get(&index).map(|e| e.verdict) == Some(VERDICT_ALLOW),
            "{entries:?}"
        );
        s.expect_vm(s.vm("vm-blocked"), SINK4, 25, true)?;
        println!(
            "100,000 VMs: ready {} after start; a one-VM change applied {} after the write",
            ms(ready),
            ms(applied)
        );
        agent.stop()?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}
