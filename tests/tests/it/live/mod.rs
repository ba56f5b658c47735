//! Live operation with no gap (issue 3), in network namespaces: the agent
//! picks up every kind of change to its policy file, refuses a bad one and
//! keeps enforcing, writes only what changed, counts a re-created interface
//! as a VM restart, applies timed grants and revocations on time, follows
//! interfaces as they come and go, lets not one SYN through while it is
//! killed, stopped, upgraded or moved to new maps, grows its maps with no
//! gap, keeps out of the way of a second agent, and takes 100,000 VMs.
//!
//! Each test builds its own topology (see `egress_guard_netns::Topology`)
//! and runs its own agent (`$EGRESS_GUARD_BIN`; the upgrade test also needs
//! `$EGRESS_GUARD_BIN_UPGRADE`, a build with the `upgrade-canary` kernel
//! programs: `cargo xtask test` sets both). Everything is removed when a test
//! ends, also when it fails. The tests run one at a time (they measure
//! latencies, and the machine may have 2 cores); each prints what it
//! measured (`cargo test -- --nocapture` shows it). Needs root.
//!
//! - [`reload`]: policy changes, a rejected policy, minimal map writes;
//! - [`vms`]: VMs restarted, timed exemptions, interfaces that come and go;
//! - [`load`]: restarts under a steady load of SYNs (and the load itself);
//! - [`maps`]: upgrades, foreign maps and growth under load;
//! - [`neighbours`]: two agents side by side, and 100,000 VMs.

mod load;
mod maps;
mod neighbours;
mod reload;
mod vms;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use chrono::{DateTime, Utc};
use egress_guard_common::maps::{Counters, IfaceEntry};
use egress_guard_tests::netns::{
    Agent, Netns, PolicyBuilder, ProgInfo, Role,
    bpf::{self, BPF_TCX_INGRESS},
};
use serde_json::Value;

use crate::fixtures::{Probe, Setup, status_until, time_of, with_agent_output};

/// swaks waits 1 s for each step of a quick probe: a held-back attempt
/// takes this long (a dropped SYN is retransmitted after 1 s).
const PROBE: Probe = Probe {
    timeout: Duration::from_secs(1),
    held_at_least: Duration::from_millis(900),
};

/// Every kind of policy change must be applied within this.
const WITHIN: Duration = Duration::from_secs(1);

/// A change to the file that inotify reports must be applied within this:
/// 100 ms of quiet, then the reload. The agent's 1 s identity poll is only
/// the backstop for what inotify cannot see; were it doing the work, a
/// change would take up to 1.1 s.
const BY_INOTIFY: Duration = Duration::from_millis(500);

/// How often `status` is polled: the latencies are measured with it.
const POLL: Duration = Duration::from_millis(5);

/// A policy holding back port 25 for `vms` (each named after its
/// interface), `attach: []` and `unknown: block`.
fn policy(vms: &[(&str, Role)]) -> String {
    policy_builder(vms).yaml()
}

/// [`policy`], to add to.
fn policy_builder(vms: &[(&str, Role)]) -> PolicyBuilder {
    vms.iter()
        .fold(PolicyBuilder::new().attach(&[]), |p, (name, role)| {
            p.vm(name, *role)
        })
}

/// Runs `test` with an agent on `policy` (and `extra` arguments) in `s`;
/// a failure carries what the agent printed.
fn with_agent(
    s: &Setup,
    policy: &str,
    extra: &[&str],
    test: impl FnOnce(&mut Agent<'_>) -> Result<()>,
) -> Result<()> {
    let mut agent = s.start_agent(policy, extra)?;
    let r = test(&mut agent);
    with_agent_output(&agent, r)
}

fn generation(doc: &Value) -> u64 {
    doc["policy"]["generation"].as_u64().unwrap_or(0)
}

/// Waits until status shows policy generation `gen`; returns the document
/// and the time from `since`.
fn await_generation(
    agent: &Agent<'_>,
    gen_: u64,
    since: Instant,
    timeout: Duration,
) -> Result<(Value, Duration)> {
    let (doc, at) = status_until(agent, timeout, POLL, &format!("generation {gen_}"), |d| {
        generation(d) >= gen_
    })?;
    ensure!(
        generation(&doc) == gen_,
        "expected generation {gen_}, status shows {}:\n{doc:#}",
        generation(&doc)
    );
    Ok((doc, at - since))
}

/// The time from `since` to the first `applied` event logged at or after it.
fn applied_after(agent: &Agent<'_>, since: DateTime<Utc>) -> Option<chrono::TimeDelta> {
    agent
        .logged("applied")
        .iter()
        .filter_map(|e| time_of(&e["timestamp"]))
        .find(|t| *t >= since)
        .map(|t| t - since)
}

/// The ifindex of `name` in `ns`.
fn ifindex(ns: &Netns, name: &str) -> Result<u32> {
    let out = ns.ip(["-j", "link", "show", "dev", name])?;
    let doc: Value = serde_json::from_str(&out.stdout)?;
    doc[0]["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .with_context(|| format!("no ifindex for {name}: {}", out.stdout))
}

/// The `interfaces` entries of a status document with this name or ifindex.
fn status_interfaces<'a>(doc: &'a Value, name: &str, index: u32) -> Vec<&'a Value> {
    doc["interfaces"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|i| i["name"] == name || i["ifindex"].as_u64() == Some(u64::from(index)))
                .collect()
        })
        .unwrap_or_default()
}

/// The interface entries of the pinned map set in use (`EG_IFACE_SLOTS`
/// and `EG_IFACES`), as the agent's own `Maps` reads them.
fn iface_entries(pin_dir: &Path) -> Result<BTreeMap<u32, IfaceEntry>> {
    let maps =
        egress_guard::datapath::Maps::open_pinned(&egress_guard::datapath::PinDir::new(pin_dir))?;
    Ok(maps.read_state()?.ifaces)
}

/// A VM's counters in the pinned `EG_COUNTERS` map in use, summed over CPUs.
fn counters(pin_dir: &Path, vm_key: u64) -> Result<Counters> {
    let maps =
        egress_guard::datapath::Maps::open_pinned(&egress_guard::datapath::PinDir::new(pin_dir))?;
    Ok(maps.counters_by_key()?.remove(&vm_key).unwrap_or_default())
}

/// The map set `<pin dir>/maps` points at.
fn map_set(pin_dir: &Path) -> Result<PathBuf> {
    let target = std::fs::read_link(pin_dir.join("maps"))
        .with_context(|| format!("reading {}/maps", pin_dir.display()))?;
    Ok(pin_dir.join(target))
}

/// The names of the map sets (`maps-v*`) in a pin directory.
fn map_sets(pin_dir: &Path) -> Result<Vec<String>> {
    let mut sets: Vec<String> = std::fs::read_dir(pin_dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("maps-v"))
        .collect();
    sets.sort();
    Ok(sets)
}

/// The link pins under `<pin dir>/links`.
fn link_pins(agent: &Agent<'_>) -> Result<Vec<String>> {
    let mut pins: Vec<String> = std::fs::read_dir(agent.links_dir())?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pins.sort();
    Ok(pins)
}

/// The program on the TCX ingress of `ifname` in `ns` (exactly one).
fn tcx_program(ns: &Netns, ifname: &str) -> Result<ProgInfo> {
    let index = ifindex(ns, ifname)?;
    let ids = bpf::tcx_prog_ids(&ns.path(), index, BPF_TCX_INGRESS)?;
    ensure!(
        ids.len() == 1,
        "expected one program on the TCX ingress of {ifname}, found {ids:?}"
    );
    Ok(bpf::prog_info(ids[0])?)
}

// ---------------------------------------------------------------------------
