//! VMs that stop and start, exemptions that come and go on time, and
//! interfaces that appear and go while the agent runs.

use std::{
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use chrono::{SubsecRound as _, Utc};
use egress_guard_common::maps::{VERDICT_ALLOW, VERDICT_BLOCK};
use egress_guard_tests::netns::{
    AttachWatch, Netns, Role, held_back_packets,
    policy::{GRANT, STARTED_AFTER_GRANT},
    require_root,
};

use super::{
    POLL, PROBE, iface_entries, ifindex, link_pins, policy, policy_builder, status_interfaces,
    with_agent,
};
use crate::fixtures::{SINK4, Setup, ms, serial, status_until, vm_field};

// 4. A re-created interface opens a pending exemption
// ---------------------------------------------------------------------------

#[test]
fn a_recreated_interface_opens_a_pending_exemption_across_agent_restarts() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-r", "vm-b"], PROBE)?;
    with_agent(
        &s,
        &policy(&[("vm-r", Role::NeedsRestart), ("vm-b", Role::Blocked)]),
        &[],
        |agent| {
            let (vm_r, vm_b) = (s.vm("vm-r"), s.vm("vm-b"));
            let doc = agent.status_json()?;
            ensure!(
                vm_field(&doc, "vm-r", "reason_code") == "exemption-needs-restart"
                    && vm_field(&doc, "vm-r", "verdict") == "block",
                "before the restart:\n{doc:#}"
            );
            s.expect_vm(vm_r, SINK4, 25, false)?;

            // The VM is stopped and started: a new interface.
            let old_index = ifindex(&s.topo.hv, "vm-r")?;
            s.topo.unplug(vm_r)?;
            s.topo.replug(vm_r)?;
            let new_index = ifindex(&s.topo.hv, "vm-r")?;
            ensure!(old_index != new_index, "the interface should be new");
            let (doc, _) =
                status_until(agent, Duration::from_secs(5), POLL, "vm-r exempted", |d| {
                    vm_field(d, "vm-r", "reason_code") == "exempted"
                })?;
            ensure!(vm_field(&doc, "vm-r", "verdict") == "allow", "{doc:#}");
            ensure!(
                status_interfaces(&doc, "vm-r", new_index)
                    .iter()
                    .any(|i| i["verdict"] == "allow" && i["ifindex"] == new_index),
                "the new interface should be enforced with allow:\n{doc:#}"
            );
            s.expect_vm(vm_r, SINK4, 25, true)?;
            s.expect_vm(vm_b, SINK4, 25, false)?;

            // The agent is killed and started again: it remembers the creation.
            agent.kill()?;
            agent.restart(None)?;
            let doc = agent.status_json()?;
            ensure!(
                vm_field(&doc, "vm-r", "reason_code") == "exempted"
                    && vm_field(&doc, "vm-r", "verdict") == "allow",
                "after an agent restart vm-r should still be exempted:\n{doc:#}"
            );
            let entries = iface_entries(agent.pin_dir())?;
            ensure!(
                entries.get(&new_index).map(|e| e.verdict) == Some(VERDICT_ALLOW),
                "EG_IFACES[{new_index}] should be allow: {entries:?}"
            );
            s.expect_vm(vm_r, SINK4, 25, true)?;
            s.expect_vm(vm_b, SINK4, 25, false)?;
            Ok(())
        },
    )
}

#[test]
fn a_timed_revocation_and_a_timed_grant_take_effect_on_time_without_a_reload() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-rev", "vm-gra"], PROBE)?;
    // Whole seconds, far enough ahead for the agent to start and the first
    // checks to run.
    let at = (Utc::now() + chrono::TimeDelta::seconds(7)).trunc_subsecs(0);
    let at_s = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = policy_builder(&[])
        .exempted_subscription(
            "sub-vm-rev",
            "pay-as-you-go",
            "2020-05-01",
            GRANT,
            Some(&at_s),
        )
        .vm_with(
            "vm-rev",
            "vm-rev",
            "sub-vm-rev",
            &[format!("started: {STARTED_AFTER_GRANT}")],
        )
        .exempted_subscription("sub-vm-gra", "pay-as-you-go", "2020-05-01", &at_s, None)
        .vm_with(
            "vm-gra",
            "vm-gra",
            "sub-vm-gra",
            &[format!("started: {at_s}")],
        )
        .yaml();
    with_agent(&s, &text, &[], |agent| {
        let (vm_rev, vm_gra) = (s.vm("vm-rev"), s.vm("vm-gra"));
        let doc = agent.status_json()?;
        ensure!(
            vm_field(&doc, "vm-rev", "verdict") == "allow"
                && vm_field(&doc, "vm-gra", "reason_code") == "exemption-not-yet",
            "before {at_s}:\n{doc:#}"
        );
        s.expect_vm(vm_rev, SINK4, 25, true)?;
        ensure!(
            Utc::now() < at - chrono::TimeDelta::milliseconds(500),
            "the set-up took too long: {at_s} is already near"
        );

        // Poll status across the instant; note when each change shows.
        let mut revoked = None;
        let mut granted = None;
        let deadline = at + chrono::TimeDelta::seconds(3);
        while (revoked.is_none() || granted.is_none()) && Utc::now() < deadline {
            let doc = agent.status_json()?;
            let seen = Utc::now();
            if revoked.is_none() && vm_field(&doc, "vm-rev", "reason_code") == "exemption-revoked" {
                ensure!(seen >= at, "vm-rev was revoked before {at_s}:\n{doc:#}");
                ensure!(vm_field(&doc, "vm-rev", "verdict") == "block", "{doc:#}");
                revoked = Some(seen - at);
            }
            if granted.is_none() && vm_field(&doc, "vm-gra", "reason_code") == "exempted" {
                ensure!(seen >= at, "vm-gra was exempted before {at_s}:\n{doc:#}");
                ensure!(vm_field(&doc, "vm-gra", "verdict") == "allow", "{doc:#}");
                granted = Some(seen - at);
            }
            thread::sleep(Duration::from_millis(5));
        }
        let revoked = revoked.with_context(|| format!("vm-rev not revoked by {deadline}"))?;
        let granted = granted.with_context(|| format!("vm-gra not exempted by {deadline}"))?;
        for (what, delay) in [("revocation", revoked), ("grant", granted)] {
            println!(
                "timed {what}: visible in `status` {} ms after its time",
                delay.num_milliseconds()
            );
            ensure!(
                delay < chrono::TimeDelta::seconds(1),
                "the {what} took effect {delay} after its time"
            );
        }
        ensure!(
            !agent.stderr().contains("new policy"),
            "no reload should have happened"
        );
        s.expect_vm(vm_rev, SINK4, 25, false)?;
        s.expect_vm(vm_gra, SINK4, 25, true)?;
        Ok(())
    })
}

/// Median and maximum.
fn median_max(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let median = v.get(v.len() / 2).copied().unwrap_or_default();
    (median, v.last().copied().unwrap_or_default())
}

/// Creates `n` veth pairs in `hv`, alternately `pvmN` (named in the policy)
/// and `tapxN` (matching `attach`), each peer `qpeerN` (neither), and times
/// how long each goes without its program (see [`AttachWatch`]). Prints the
/// median and maximum; fails when a window reaches 500 ms. Returns the names
/// and ifindexes created.
fn create_and_time(hv: &Netns, n: usize) -> Result<Vec<(String, u32)>> {
    let mut from_return = Vec::new();
    let mut from_exists = Vec::new();
    let mut before_return = 0;
    let mut created = Vec::new();
    for i in 0..n {
        let name = if i % 2 == 0 {
            format!("pvm{}", i / 2)
        } else {
            format!("tapx{i}")
        };
        let watch = AttachWatch::start(&hv.path(), &name, Duration::from_secs(5))?;
        let status = Command::new("ip")
            .args(["-n", hv.name(), "link", "add", &name, "type", "veth"])
            .args(["peer", "name", &format!("qpeer{i}")])
            .status()?;
        let returned = Instant::now();
        ensure!(status.success(), "ip link add {name}: {status}");
        let times = watch
            .wait()
            .with_context(|| format!("{name} was not enforced"))?;
        if times.attached <= returned {
            before_return += 1;
        }
        from_return.push(times.attached.saturating_duration_since(returned));
        from_exists.push(times.attached.saturating_duration_since(times.exists));
        created.push((name, times.ifindex));
    }
    let (med_r, max_r) = median_max(from_return);
    let (med_e, max_e) = median_max(from_exists);
    println!(
        "attach window over {n} creations: from `ip link add` returning: median {}, max {} \
         ({before_return} attached before it returned); from the interface existing: median {}, max {}",
        ms(med_r),
        ms(max_r),
        ms(med_e),
        ms(max_e)
    );
    ensure!(
        max_e < Duration::from_millis(500),
        "an interface went {max_e:?} without its program"
    );
    Ok(created)
}

#[test]
fn interfaces_that_appear_are_enforced_at_once_and_those_that_go_leave_nothing() -> Result<()> {
    const CREATIONS: usize = 20;
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::routed(&["vm-blocked"], PROBE)?;
    // Half of the new interfaces are named in the policy (pvmN), half only
    // match the `attach` glob (tapxN); their peers (qpeerN) are neither.
    let mut vms: Vec<(String, Role)> = vec![("vm-blocked".to_owned(), Role::Blocked)];
    vms.extend((0..CREATIONS / 2).map(|i| (format!("pvm{i}"), Role::Blocked)));
    let vms_ref: Vec<(&str, Role)> = vms.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    with_agent(
        &s,
        &policy_builder(&vms_ref).attach(&["tapx*"]).yaml(),
        &[],
        |agent| {
            let hv = &s.topo.hv;
            let created = create_and_time(hv, CREATIONS)?;

            // Each one enforced: a pinned link and a blocking map entry. (The
            // link is pinned just after the program shows on the interface,
            // which is when the watch above returned: give the last one a
            // moment.)
            let deadline = Instant::now() + Duration::from_secs(1);
            let mut pins = link_pins(agent)?;
            while pins.len() < created.len() + 1 && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(10));
                pins = link_pins(agent)?;
            }
            let entries = iface_entries(agent.pin_dir())?;
            for (name, index) in &created {
                ensure!(
                    entries.get(index).map(|e| e.verdict) == Some(VERDICT_BLOCK),
                    "{name} (ifindex {index}) should have a blocking EG_IFACES entry: {entries:?}"
                );
                ensure!(
                    pins.contains(&format!("{index}_tc")),
                    "{name}: no link pin {index}_tc in {pins:?}"
                );
            }

            // They go: nothing of them stays.
            for (name, _) in &created {
                hv.ip(["link", "del", name])?;
            }
            let vm = s.vm("vm-blocked");
            s.expect_vm(vm, SINK4, 25, false)?;
            let held = held_back_packets(&agent.status_json()?, "vm-blocked").unwrap_or(0);
            ensure!(held > 0, "vm-blocked should have held-back packets");
            let vm_index = ifindex(hv, "vm-blocked")?;
            s.topo.unplug(vm)?;
            // Past the follow-up reconcile (200 ms after a link event).
            thread::sleep(Duration::from_millis(700));
            let gone: Vec<(String, u32)> = created
                .into_iter()
                .chain([("vm-blocked".to_owned(), vm_index)])
                .collect();
            let entries = iface_entries(agent.pin_dir())?;
            let pins = link_pins(agent)?;
            let doc = agent.status_json()?;
            for (name, index) in &gone {
                ensure!(
                    !entries.contains_key(index),
                    "{name} is gone but EG_IFACES still has {index}: {entries:?}"
                );
                ensure!(
                    !pins.iter().any(|p| p.starts_with(&format!("{index}_"))),
                    "{name} is gone but its link pin stays: {pins:?}"
                );
                ensure!(
                    status_interfaces(&doc, name, *index).is_empty(),
                    "{name} is gone but status lists it:\n{doc:#}"
                );
            }
            ensure!(
                pins.is_empty() && entries.is_empty(),
                "left: {pins:?} {entries:?}"
            );
            ensure!(
                held_back_packets(&doc, "vm-blocked") == Some(held),
                "vm-blocked's counters ({held} held back) should stay visible after its interface went:\n{doc:#}"
            );

            // The VM comes back: enforced again.
            s.topo.replug(vm)?;
            thread::sleep(Duration::from_millis(300));
            s.expect_vm(vm, SINK4, 25, false)?;
            Ok(())
        },
    )
}

// ---------------------------------------------------------------------------
