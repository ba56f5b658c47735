//! Under load, the kernel side changes: an upgrade to a changed program,
//! a pinned map from another build, a policy that outgrows the maps. Not
//! one SYN escapes and the counters carry over.

use std::{
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use egress_guard_common::maps::reason;
use egress_guard_tests::netns::{Agent, Role, bpf};

use super::{
    await_generation, counters, iface_entries, ifindex,
    load::{Load, all_counted, held, under_load},
    map_set, map_sets, policy_builder, tcx_program,
};
use crate::fixtures::ms;

#[test]
fn an_upgrade_to_a_changed_program_under_load_lets_no_syn_through() -> Result<()> {
    let upgrade = std::env::var_os("EGRESS_GUARD_BIN_UPGRADE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .context(
            "EGRESS_GUARD_BIN_UPGRADE is not set: it is the agent built with \
             EGRESS_GUARD_EBPF_FEATURES=upgrade-canary (`cargo xtask test` builds it)",
        )?;
    ensure!(upgrade.is_file(), "{} is not a file", upgrade.display());
    under_load(|s, agent| {
        let hv = &s.topo.hv;
        let index = ifindex(hv, "vm-blocked")?;
        let key = iface_entries(agent.pin_dir())?
            .get(&index)
            .map(|e| e.vm_key)
            .context("no EG_IFACES entry for vm-blocked")?;
        let canary = |agent: &Agent<'_>| -> Result<u64> {
            Ok(counters(agent.pin_dir(), key)?.packets[reason::COUNT - 1])
        };
        let old = tcx_program(hv, "vm-blocked")?;
        let set = map_set(agent.pin_dir())?;
        let held_before = held(agent)?;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));
        ensure!(
            canary(agent)? == 0,
            "the default build counts nothing in the spare slot"
        );

        // Killed and replaced by the rebuilt binary.
        agent.kill()?;
        let t = Instant::now();
        agent.restart(Some(&upgrade))?;
        println!("upgrade: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_millis(1500));
        let new = tcx_program(hv, "vm-blocked")?;
        let canary_count = canary(agent)?;

        // And back to the first build.
        agent.kill()?;
        agent.restart(Some(&s.bin))?;
        thread::sleep(Duration::from_secs(1));
        let back = tcx_program(hv, "vm-blocked")?;

        let report = load.finish()?;
        report.check("upgrade and downgrade")?;
        println!(
            "program on vm-blocked: tag {} (id {}) -> upgrade tag {} (id {}) -> back tag {} (id {})",
            old.tag_hex(),
            old.id,
            new.tag_hex(),
            new.id,
            back.tag_hex(),
            back.id
        );
        ensure!(
            new.tag != old.tag,
            "the upgraded binary's program should differ: {new:?} vs {old:?}"
        );
        ensure!(back.tag == old.tag, "{back:?} vs {old:?}");
        ensure!(
            canary_count > 0,
            "the upgraded program should have counted in the spare slot"
        );
        ensure!(
            map_set(agent.pin_dir())? == set,
            "an upgrade with the same map layout keeps the map set"
        );
        all_counted(agent, held_before, &report)
    })
}

#[test]
fn a_pinned_map_from_another_build_is_replaced_under_load_and_never_reused() -> Result<()> {
    under_load(|s, agent| {
        let hv = &s.topo.hv;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));
        agent.kill()?;
        let held_before = held(agent)?;
        let old_set = map_set(agent.pin_dir())?;
        // Another build's EG_CONFIG: an array whose value has another size.
        let pin = agent.pin_dir().join("maps").join("EG_CONFIG");
        let ours = bpf::pinned_map_info(&pin)?;
        std::fs::remove_file(&pin)?;
        let foreign = bpf::create_pinned_map(
            &pin,
            "EG_CONFIG",
            bpf::BPF_MAP_TYPE_ARRAY,
            4,
            ours.value_size + 8,
            1,
        )?;
        thread::sleep(Duration::from_millis(500));

        let t = Instant::now();
        agent.restart(None)?;
        println!("start over a foreign map: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_secs(1));
        let new_set = map_set(agent.pin_dir())?;
        let sets = map_sets(agent.pin_dir())?;
        let config = bpf::pinned_map_info(&pin)?;
        let prog = tcx_program(hv, "vm-blocked")?;
        let exempt_prog = tcx_program(hv, "vm-exempt")?;

        // A plain restart now stays on the new set.
        agent.kill()?;
        agent.restart(None)?;
        thread::sleep(Duration::from_millis(500));
        let report = load.finish()?;
        report.check("start over a map from another build")?;

        let log = agent.stderr();
        ensure!(
            log.contains("cannot be reused") && log.contains("another build"),
            "the agent should say the pinned maps cannot be reused"
        );
        println!(
            "map set {} -> {}; EG_CONFIG now id {} value {} B (the foreign one was id {foreign})",
            old_set.display(),
            new_set.display(),
            config.id,
            config.value_size
        );
        ensure!(new_set != old_set, "`maps` should point at a new set");
        ensure!(
            !old_set.exists() && sets.len() == 1,
            "the old set should be gone: {sets:?}"
        );
        ensure!(
            config.value_size == ours.value_size && config.id != foreign,
            "EG_CONFIG should be this build's: {config:?}"
        );
        for p in [&prog, &exempt_prog] {
            ensure!(
                !p.map_ids.contains(&foreign),
                "the program uses the foreign map {foreign}: {p:?}"
            );
        }
        ensure!(
            map_set(agent.pin_dir())? == new_set,
            "a plain restart should keep the new set"
        );
        let held_after = held(agent)?;
        println!("held back: {held_before} before the move, {held_after} after");
        ensure!(
            held_after > held_before,
            "the counters should carry over to the new set and go on"
        );
        Ok(())
    })
}

#[test]
fn a_policy_that_outgrows_the_maps_moves_to_larger_ones_under_load_with_no_gap() -> Result<()> {
    under_load(|s, agent| {
        let small = bpf::pinned_map_info(&agent.pin_dir().join("maps").join("EG_IFACES"))?;
        let old_set = map_set(agent.pin_dir())?;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));
        let held_before = held(agent)?;
        let big = policy_builder(&[("vm-blocked", Role::Blocked), ("vm-exempt", Role::Exempt)])
            .generated(4998)
            .yaml();
        let t = Instant::now();
        s.rename_policy(&big)?;
        let (doc, took) = await_generation(agent, 2, t, Duration::from_secs(20))?;
        println!("5,000-VM policy applied in {}", ms(took));
        thread::sleep(Duration::from_secs(1));
        let report = load.finish()?;
        report.check("growth from 2 to 5,000 VMs")?;

        let large = bpf::pinned_map_info(&agent.pin_dir().join("maps").join("EG_IFACES"))?;
        let new_set = map_set(agent.pin_dir())?;
        println!(
            "EG_IFACES {} -> {} entries; map set {} -> {}",
            small.max_entries,
            large.max_entries,
            old_set.display(),
            new_set.display()
        );
        ensure!(
            doc["vms"].as_array().map(Vec::len) == Some(5000),
            "status should list 5,000 VMs"
        );
        ensure!(
            large.max_entries > small.max_entries && large.max_entries >= 5000,
            "the maps should have grown: {small:?} -> {large:?}"
        );
        ensure!(new_set != old_set, "`maps` should point at a new set");
        ensure!(
            !old_set.exists() && map_sets(agent.pin_dir())?.len() == 1,
            "the old set should be gone"
        );
        ensure!(
            agent.stderr().contains("outgrows the maps"),
            "the agent should log the growth"
        );
        let held_after = held(agent)?;
        println!("vm-blocked held back: {held_before} before the growth, {held_after} after");
        ensure!(
            held_after > held_before,
            "vm-blocked's counters should carry over to the new maps"
        );
        agent.stop()?;
        Ok(())
    })
}

// ---------------------------------------------------------------------------
