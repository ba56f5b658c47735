//! The agent's life: `status` while it runs, SIGTERM (enforcement stays)
//! and `detach` (everything goes), and a policy rejected before anything
//! touches the kernel.

use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use egress_guard_tests::netns::{
    Agent, Role, TempDir, Topology, agent_bin, attachments, held_back_packets, require_root,
    vm_entry,
};
use serde_json::Value;

use super::{PAIR, policy, routed_and_bridged, with_agent};
use crate::fixtures::{SINK4, SINK6, routed, serial, with_agent_output};

#[test]
fn status_shows_held_back_counters_that_grow() -> Result<()> {
    let _serial = serial::shared(module_path!());
    require_root()?;
    let topo = routed(&["vm-blocked", "vm-exempt"])?;
    with_agent(topo, &policy("auto", &[], "drop", &PAIR), |s, agent| {
        let before = agent.status_json()?;
        let held = |doc: &Value, vm: &str| {
            held_back_packets(doc, vm)
                .with_context(|| format!("no vms[name={vm}].held_back.packets in status:\n{doc:#}"))
        };
        ensure!(
            held(&before, "vm-blocked")? == 0,
            "before any attempt:\n{before:#}"
        );
        ensure!(
            before["agent"]["running"] == true,
            "agent.running:\n{before:#}"
        );
        ensure!(
            before["agent"]["pid"].as_u64() == Some(u64::from(agent.pid())),
            "agent.pid should be {}:\n{before:#}",
            agent.pid()
        );
        for (vm, verdict) in [("vm-blocked", "block"), ("vm-exempt", "allow")] {
            let entry = vm_entry(&before, vm).with_context(|| format!("{vm} in:\n{before:#}"))?;
            ensure!(entry["verdict"] == verdict, "{vm}:\n{entry:#}");
            let iface = before["interfaces"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == vm))
                .with_context(|| format!("interface {vm} in:\n{before:#}"))?;
            ensure!(
                iface["hook"].as_str().is_some_and(|h| !h.is_empty()),
                "{iface:#}"
            );
            ensure!(iface["verdict"] == verdict, "{iface:#}");
        }
        ensure!(
            before["policy"]["hash"]
                .as_str()
                .is_some_and(|h| !h.is_empty()),
            "policy.hash:\n{before:#}"
        );

        s.expect("vm-blocked", SINK4, 25, false)?;
        s.expect("vm-blocked", SINK6, 25, false)?;
        s.expect("vm-exempt", SINK4, 25, true)?;
        let after = agent.status_json()?;
        let n = held(&after, "vm-blocked")?;
        // Two SYNs at least (v4 and v6), with their retransmissions.
        ensure!(
            n >= 2,
            "held_back.packets of vm-blocked should have grown to >= 2, is {n}:\n{after:#}"
        );
        ensure!(
            held(&after, "vm-exempt")? == 0,
            "vm-exempt had nothing held back:\n{after:#}"
        );
        let bytes = vm_entry(&after, "vm-blocked").and_then(|e| e["held_back"]["bytes"].as_u64());
        ensure!(
            bytes.is_some_and(|b| b >= n * 40),
            "held_back.bytes:\n{after:#}"
        );
        // The table form works too and names the VM.
        let table = agent.status_text()?;
        ensure!(table.stdout.contains("vm-blocked"), "{}", table.stdout);
        Ok(())
    })
}

/// SIGTERM leaves enforcement in place; `detach` removes everything.
fn stop_then_detach(hook: &str) -> Result<()> {
    require_root()?;
    let s = routed_and_bridged()?;
    let mut agent = s.start_agent(&policy(hook, &[], "drop", &PAIR), &[])?;
    let result = (|| {
        // The control for the checks after detach: something is attached now.
        for vm in ["vm-blocked", "vm-exempt"] {
            let seen = attachments(&s.topo.hv, vm)?;
            ensure!(
                !seen.is_empty(),
                "with the agent running, nothing seen on {seen}"
            );
            if hook == "xdp" {
                ensure!(seen.xdp.is_some(), "hook: xdp, but {seen}");
            } else if hook == "tc" {
                ensure!(
                    seen.tcx_ingress > 0 || !seen.tc_filters.is_empty(),
                    "hook: tc, but {seen}"
                );
            }
        }
        ensure!(
            agent.pin_dir().exists(),
            "pin dir {} missing",
            agent.pin_dir().display()
        );

        let status = agent.stop()?;
        ensure!(
            status.code() == Some(0),
            "SIGTERM should exit 0, got {status}"
        );
        s.expect("vm-blocked", SINK4, 25, false)?;
        s.expect("vm-exempt", SINK4, 25, true)?;
        let st = agent.status_json()?;
        ensure!(
            st["agent"]["running"] == false,
            "agent.running after SIGTERM:\n{st:#}"
        );
        ensure!(
            held_back_packets(&st, "vm-blocked").unwrap_or(0) > 0,
            "counters readable after stop:\n{st:#}"
        );

        let out = agent.detach()?;
        ensure!(
            !agent.pin_dir().exists(),
            "detach left {}:\n{}{}",
            agent.pin_dir().display(),
            out.stdout,
            out.stderr
        );
        for link in s.topo.hv.links()? {
            let seen = attachments(&s.topo.hv, &link)?;
            ensure!(seen.is_empty(), "detach left a program on {seen}");
        }
        s.expect("vm-blocked", SINK4, 25, true)?;
        s.expect("vm-blocked", SINK6, 25, true)?;
        Ok(())
    })();
    with_agent_output(&agent, result)
}

#[test]
fn sigterm_leaves_enforcement_and_detach_removes_everything_tc() -> Result<()> {
    let _serial = serial::shared(module_path!());
    stop_then_detach("tc")
}

#[test]
fn sigterm_leaves_enforcement_and_detach_removes_everything_xdp() -> Result<()> {
    let _serial = serial::shared(module_path!());
    stop_then_detach("xdp")
}

#[test]
fn run_rejects_an_invalid_policy_with_exit_2_before_touching_the_kernel() -> Result<()> {
    let _serial = serial::shared(module_path!());
    require_root()?;
    let bin = agent_bin()?;
    let topo = Topology::builder().routed_vm("vm-blocked").build()?;
    let dir = TempDir::new("policy")?;
    let text = policy("auto", &[], "drop", &[("vm-blocked", Role::Blocked)])
        .replace("  unknown: block\n", "  unknown: block\n  colour: red\n");
    let path = dir.write("policy.yaml", text)?;
    let mut agent = Agent::spawn(&topo.hv, &bin, &path, &[] as &[&str])?;
    let status = agent
        .wait_exit(Duration::from_secs(20))?
        .with_context(|| format!("run with an invalid policy should exit\n{}", agent.output()))?;
    ensure!(
        status.code() == Some(2),
        "exit {status}, expected 2\n{}",
        agent.output()
    );
    let stderr = agent.stderr();
    ensure!(
        stderr.contains(&format!("{}:9:", path.display())),
        "the error should say file:line:col ({}:9:...):\n{stderr}",
        path.display()
    );
    ensure!(
        !agent.pin_dir().exists(),
        "an invalid policy created {}",
        agent.pin_dir().display()
    );
    let seen = attachments(&topo.hv, "vm-blocked")?;
    ensure!(seen.is_empty(), "an invalid policy attached {seen}");
    Ok(())
}
