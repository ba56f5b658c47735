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

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail, ensure};
use chrono::{DateTime, SubsecRound as _, Utc};
use egress_guard_common::maps::{Counters, IfaceEntry, VERDICT_ALLOW, VERDICT_BLOCK, reason};
use egress_guard_tests::netns::{
    Agent, AttachWatch, Captured, Netns, ProgInfo, Sent, SmtpSink, SynCapture, SynStream, TempDir,
    Topology, Vm, agent_bin,
    bpf::{self, BPF_TCX_INGRESS},
    held_back_packets, require_root,
    topology::{SINK_V4, SINK_V6},
    vm_entry,
};
use serde_json::Value;

use crate::fixtures::serial;

// ---------------------------------------------------------------------------
// Set-up shared by the tests
// ---------------------------------------------------------------------------

/// How long swaks waits for each step of a quick probe: a held-back attempt
/// takes this long (a dropped SYN is retransmitted after 1 s).
const PROBE: Duration = Duration::from_secs(1);

/// Every kind of policy change must be applied within this.
const WITHIN: Duration = Duration::from_secs(1);

/// A change to the file that inotify reports must be applied within this:
/// 100 ms of quiet, then the reload. The agent's 1 s identity poll is only
/// the backstop for what inotify cannot see; were it doing the work, a
/// change would take up to 1.1 s.
const BY_INOTIFY: Duration = Duration::from_millis(500);

const GRANT: &str = "2021-01-10T12:00:00Z";

/// What a VM of a test policy is. Its name is also its interface's name.
#[derive(Clone, Debug)]
enum Role {
    /// msdn, created after the cutoff: blocked, cannot be exempted.
    Blocked,
    /// The same subscription, with `override: allow`.
    Allowed,
    /// pay-as-you-go, exemption granted, the VM started after the grant:
    /// allowed.
    Exempt,
    /// pay-as-you-go, exemption granted after the VM last started: blocked
    /// until it is stopped and started (`exemption-needs-restart`).
    NeedsRestart,
    /// A pay-as-you-go subscription of its own with this exemption, and the
    /// VM's `started`.
    Timed {
        granted: String,
        revoked: Option<String>,
        started: String,
    },
}

/// A policy holding back port 25 for `vms`, with `attach` globs and
/// `generated` more blocked VMs whose interfaces (`g0000000`...) do not
/// exist.
fn policy_with(attach: &[&str], vms: &[(&str, Role)], generated: usize) -> String {
    let attach: Vec<String> = attach.iter().map(|g| format!("\"{g}\"")).collect();
    let mut subs = String::new();
    let mut list = String::new();
    for (name, role) in vms {
        let (sub, extra) = match role {
            Role::Blocked => ("dev-msdn".to_owned(), String::new()),
            Role::Allowed => ("dev-msdn".to_owned(), "    override: allow\n".to_owned()),
            Role::Exempt => (
                "prod-payg".to_owned(),
                "    started: 2021-01-11T08:00:00Z\n".to_owned(),
            ),
            Role::NeedsRestart => (
                "prod-payg".to_owned(),
                "    started: 2021-01-01T00:00:00Z\n".to_owned(),
            ),
            Role::Timed {
                granted,
                revoked,
                started,
            } => {
                let _ = write!(
                    subs,
                    "  - id: sub-{name}\n    offer: pay-as-you-go\n    created: 2020-05-01\n    exemption:\n      granted: {granted}\n"
                );
                if let Some(r) = revoked {
                    let _ = writeln!(subs, "      revoked: {r}");
                }
                (format!("sub-{name}"), format!("    started: {started}\n"))
            }
        };
        let _ = write!(
            list,
            "  - name: {name}\n    subscription: {sub}\n    interface: {name}\n{extra}"
        );
    }
    for i in 0..generated {
        let _ = write!(
            list,
            "  - name: gen-{i}\n    subscription: dev-msdn\n    interface: g{i:07}\n"
        );
    }
    format!(
        r"version: 1
enforcement:
  ports: [25]
  action: drop
  mode: enforce
  hook: auto
  attach: [{attach}]
  unknown: block
subscriptions:
  - id: dev-msdn
    offer: msdn
    created: 2019-04-02
  - id: prod-payg
    offer: pay-as-you-go
    created: 2020-05-01
    exemption:
      granted: {GRANT}
{subs}vms:
{list}",
        attach = attach.join(", ")
    )
}

fn policy(vms: &[(&str, Role)]) -> String {
    policy_with(&[], vms, 0)
}

/// A topology, a sink, a directory for policies, and the agent binary.
/// Dropped in reverse order of declaration in the tests (agent first).
struct Setup {
    dir: TempDir,
    topo: Topology,
    sink: Option<SmtpSink>,
    bin: PathBuf,
}

impl Setup {
    /// With an SMTP sink in the internet namespace.
    fn new(topo: Topology) -> Result<Self> {
        let sink = SmtpSink::start_in(&topo)?;
        Self::with(topo, Some(sink))
    }

    /// Without a sink (the SYN-stream tests count SYNs, not mail).
    fn bare(topo: Topology) -> Result<Self> {
        Self::with(topo, None)
    }

    fn with(topo: Topology, sink: Option<SmtpSink>) -> Result<Self> {
        Ok(Self {
            dir: TempDir::new("policy")?,
            topo,
            sink,
            bin: agent_bin()?,
        })
    }

    fn policy_path(&self) -> PathBuf {
        self.dir.path().join("policy.yaml")
    }

    /// Writes the policy file in place (truncate and write, the same inode).
    fn write_policy(&self, text: &str) -> Result<PathBuf> {
        let path = self.policy_path();
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Replaces the policy file by rename, as most tools save a file.
    fn rename_policy(&self, text: &str) -> Result<()> {
        let tmp = self.dir.path().join(".policy.yaml.new");
        std::fs::write(&tmp, text)?;
        std::fs::rename(&tmp, self.policy_path())?;
        Ok(())
    }

    fn start_agent(&self, text: &str, extra: &[&str]) -> Result<Agent<'_>> {
        let path = self.write_policy(text)?;
        let mut agent = Agent::spawn(&self.topo.hv, &self.bin, &path, extra)?;
        agent.wait_ready(egress_guard_tests::netns::agent::READY_TIMEOUT)?;
        Ok(agent)
    }

    /// Asserts that `vm` can (or cannot) deliver mail to the sink on port 25
    /// over IPv4 (a quick probe: a held-back attempt takes [`PROBE`]).
    fn expect(&self, vm: &Vm, delivered: bool) -> Result<()> {
        let sink = self.sink.as_ref().context("this set-up has no sink")?;
        let d = sink.try_deliver(vm, SINK_V4.into(), 25, PROBE)?;
        if d.delivered() != delivered {
            bail!(
                "expected {} -> sink:25 to be {}:\n{}",
                vm.host_if,
                if delivered { "delivered" } else { "held back" },
                d.describe()
            );
        }
        if !delivered {
            ensure!(
                d.attempt.elapsed >= Duration::from_millis(900),
                "a held-back attempt should time out, not fail at once:\n{}",
                d.describe()
            );
        }
        Ok(())
    }

    fn vm(&self, name: &str) -> &Vm {
        self.topo.vm(name)
    }
}

/// Adds what the agent printed to a failure.
fn with_agent_output<T>(agent: &Agent<'_>, r: Result<T>) -> Result<T> {
    r.map_err(|e| anyhow::anyhow!("{e:#}\n\n{}", agent.output()))
}

/// Polls `status --format json` until `done` holds; returns the document and
/// when it was first seen.
fn status_until(
    agent: &Agent<'_>,
    timeout: Duration,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<(Value, Instant)> {
    let deadline = Instant::now() + timeout;
    loop {
        let doc = agent.status_json()?;
        let at = Instant::now();
        if done(&doc) {
            return Ok((doc, at));
        }
        if at >= deadline {
            bail!("after {timeout:?}, status still does not show {what}:\n{doc:#}");
        }
        thread::sleep(Duration::from_millis(5));
    }
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
    let (doc, at) = status_until(agent, timeout, &format!("generation {gen_}"), |d| {
        generation(d) >= gen_
    })?;
    ensure!(
        generation(&doc) == gen_,
        "expected generation {gen_}, status shows {}:\n{doc:#}",
        generation(&doc)
    );
    Ok((doc, at - since))
}

fn vm_field<'a>(doc: &'a Value, vm: &str, field: &str) -> &'a str {
    vm_entry(doc, vm)
        .and_then(|v| v[field].as_str())
        .unwrap_or("")
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The log events (`--log-format json`) with this message.
fn events(agent: &Agent<'_>, message: &str) -> Vec<Value> {
    agent
        .json_logs()
        .into_iter()
        .filter(|e| e["message"] == message)
        .collect()
}

/// The time from `since` to the first `applied` event logged at or after it.
fn applied_after(agent: &Agent<'_>, since: DateTime<Utc>) -> Option<chrono::TimeDelta> {
    events(agent, "applied")
        .iter()
        .filter_map(event_time)
        .find(|t| *t >= since)
        .map(|t| t - since)
}

fn event_time(event: &Value) -> Option<DateTime<Utc>> {
    event["timestamp"]
        .as_str()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
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
// 1. Each way the policy file can change
// ---------------------------------------------------------------------------

/// Edited in place, replaced by rename, deleted and re-created, and SIGHUP:
/// each applied within a second, with the traffic effect.
#[test]
fn policy_edits_renames_deletion_and_sighup_apply_within_a_second() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new(
        Topology::builder()
            .routed_vm("vm-a")
            .routed_vm("vm-b")
            .build()?,
    )?;
    let with_a = |a: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt)]);
    let agent = s.start_agent(&with_a(Role::Blocked), &["--log-format", "json"])?;
    let r = (|| {
        let (vm_a, vm_b) = (s.vm("vm-a"), s.vm("vm-b"));
        s.expect(vm_a, false)?;
        let mut latencies = Vec::new();

        // Edited in place.
        let (t, w) = (Instant::now(), Utc::now());
        s.write_policy(&with_a(Role::Allowed))?;
        let (doc, took) = await_generation(&agent, 2, t, WITHIN * 3)?;
        ensure!(vm_field(&doc, "vm-a", "verdict") == "allow", "{doc:#}");
        latencies.push(("edited in place", took, w));
        s.expect(vm_a, true)?;

        // Replaced by rename.
        let (t, w) = (Instant::now(), Utc::now());
        s.rename_policy(&with_a(Role::Blocked))?;
        let (doc, took) = await_generation(&agent, 3, t, WITHIN * 3)?;
        ensure!(vm_field(&doc, "vm-a", "verdict") == "block", "{doc:#}");
        latencies.push(("replaced by rename", took, w));
        s.expect(vm_a, false)?;

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
        s.expect(vm_a, false)?;
        // ... and re-created.
        let (t, w) = (Instant::now(), Utc::now());
        s.write_policy(&with_a(Role::Allowed))?;
        let (doc, took) = await_generation(&agent, 4, t, WITHIN * 3)?;
        ensure!(vm_field(&doc, "vm-a", "verdict") == "allow", "{doc:#}");
        latencies.push(("deleted and re-created", took, w));
        s.expect(vm_a, true)?;

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
            egress_guard_tests::netns::cmd::signal(agent.pid(), libc::SIGHUP),
            "kill -HUP {}",
            agent.pid()
        );
        let (doc, took) = await_generation(&agent, 5, t, WITHIN * 3)?;
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
        let gap = event_time(applied).zip(event_time(hup)).map(|(a, h)| a - h);
        ensure!(
            gap.is_some_and(
                |g| g >= chrono::TimeDelta::zero() && g < chrono::TimeDelta::milliseconds(80)
            ),
            "SIGHUP itself should re-read the policy (not the file poll later): {hup} then {applied}"
        );
        s.expect(vm_a, false)?;
        s.expect(vm_b, true)?;

        for (how, took, w) in &latencies {
            let logged = applied_after(&agent, *w).map_or_else(
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
    })();
    with_agent_output(&agent, r)
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
    let s = Setup::new(
        Topology::builder()
            .routed_vm("vm-a")
            .routed_vm("vm-b")
            .build()?,
    )?;
    let with_a = |a: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt)]);
    let cm = TempDir::new("configmap")?;
    let mut current = publish(cm.path(), 1, &with_a(Role::Blocked), None)?;
    let path = cm.path().join("policy.yaml");
    std::os::unix::fs::symlink("..data/policy.yaml", &path)?;
    let mut agent = Agent::spawn(&s.topo.hv, &s.bin, &path, &[] as &[&str])?;
    agent.wait_ready(egress_guard_tests::netns::agent::READY_TIMEOUT)?;
    let r = (|| {
        let vm_a = s.vm("vm-a");
        s.expect(vm_a, false)?;
        let mut gen_ = 1;
        for (serial, role, delivered) in [(2, Role::Allowed, true), (3, Role::Blocked, false)] {
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
            s.expect(vm_a, delivered)?;
        }
        s.expect(s.vm("vm-b"), true)?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 2. A rejected policy
// ---------------------------------------------------------------------------

#[test]
fn an_invalid_policy_is_reported_and_the_one_in_force_stays_until_fixed() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new(
        Topology::builder()
            .routed_vm("vm-a")
            .routed_vm("vm-b")
            .build()?,
    )?;
    let with_a = |a: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt)]);
    let agent = s.start_agent(&with_a(Role::Blocked), &[])?;
    let r = (|| {
        let (vm_a, vm_b) = (s.vm("vm-a"), s.vm("vm-b"));
        let before = agent.status_json()?;
        // The bad file would also let vm-a through, were it applied.
        let good = with_a(Role::Allowed);
        let line = good
            .lines()
            .position(|l| l == "enforcement:")
            .context("no enforcement line")?
            + 2;
        let bad = good.replacen("enforcement:\n", "enforcement:\n  colour: red\n", 1);
        let t = Instant::now();
        let path = s.write_policy(&bad)?;
        let location = format!("{}:{line}:3", path.display());
        let (doc, seen) = status_until(&agent, WITHIN * 3, "`rejected`", |d| {
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
        let log = egress_guard_tests::netns::agent::strip_ansi(&agent.stderr());
        ensure!(
            log.lines()
                .any(|l| l.contains("policy rejected") && l.contains(&location)),
            "the log should carry the diagnostic {location}"
        );
        s.expect(vm_a, false)?;
        s.expect(vm_b, true)?;

        // Fixed: applied, and `rejected` cleared.
        let t = Instant::now();
        s.write_policy(&good)?;
        let (doc, took) = await_generation(&agent, 2, t, WITHIN * 3)?;
        println!("fixed policy applied after {}", ms(took));
        ensure!(took < WITHIN, "the fixed policy took {took:?}");
        ensure!(
            doc["rejected"].is_null(),
            "rejected should be cleared:\n{doc:#}"
        );
        ensure!(vm_field(&doc, "vm-a", "verdict") == "allow", "{doc:#}");
        s.expect(vm_a, true)?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 3. Only the entries that changed are written
// ---------------------------------------------------------------------------

#[test]
fn a_one_vm_change_writes_only_its_entry_and_the_generation() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::bare(
        Topology::builder()
            .routed_vm("vm-a")
            .routed_vm("vm-b")
            .build()?,
    )?;
    // vm-ghost is in the policy but has no interface.
    let text =
        |a: Role, ghost: Role| policy(&[("vm-a", a), ("vm-b", Role::Exempt), ("vm-ghost", ghost)]);
    let agent = s.start_agent(
        &text(Role::Blocked, Role::Blocked),
        &["--log-format", "json"],
    )?;
    let r = (|| {
        // (change, generation, map writes): a verdict change on an enforced
        // interface writes its EG_IFACES entry and EG_CONFIG (whose
        // generation changes); one on a VM with no interface, EG_CONFIG only.
        let steps = [
            (text(Role::Allowed, Role::Blocked), 2, 2),
            (text(Role::Allowed, Role::Allowed), 3, 1),
            (text(Role::Blocked, Role::Allowed), 4, 2),
        ];
        for (text, gen_, writes) in steps {
            let before = events(&agent, "applied").len();
            let t = Instant::now();
            s.rename_policy(&text)?;
            await_generation(&agent, gen_, t, WITHIN * 3)?;
            // The event is logged right after the write; give it a moment.
            thread::sleep(Duration::from_millis(100));
            let applied = events(&agent, "applied");
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
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 4. A re-created interface opens a pending exemption
// ---------------------------------------------------------------------------

#[test]
fn a_recreated_interface_opens_a_pending_exemption_across_agent_restarts() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new(
        Topology::builder()
            .routed_vm("vm-r")
            .routed_vm("vm-b")
            .build()?,
    )?;
    let mut agent = s.start_agent(
        &policy(&[("vm-r", Role::NeedsRestart), ("vm-b", Role::Blocked)]),
        &[],
    )?;
    let r = (|| {
        let (vm_r, vm_b) = (s.vm("vm-r"), s.vm("vm-b"));
        let doc = agent.status_json()?;
        ensure!(
            vm_field(&doc, "vm-r", "reason_code") == "exemption-needs-restart"
                && vm_field(&doc, "vm-r", "verdict") == "block",
            "before the restart:\n{doc:#}"
        );
        s.expect(vm_r, false)?;

        // The VM is stopped and started: a new interface.
        let old_index = ifindex(&s.topo.hv, "vm-r")?;
        s.topo.unplug(vm_r)?;
        s.topo.replug(vm_r)?;
        let new_index = ifindex(&s.topo.hv, "vm-r")?;
        ensure!(old_index != new_index, "the interface should be new");
        let (doc, _) = status_until(&agent, Duration::from_secs(5), "vm-r exempted", |d| {
            vm_field(d, "vm-r", "reason_code") == "exempted"
        })?;
        ensure!(vm_field(&doc, "vm-r", "verdict") == "allow", "{doc:#}");
        ensure!(
            status_interfaces(&doc, "vm-r", new_index)
                .iter()
                .any(|i| i["verdict"] == "allow" && i["ifindex"] == new_index),
            "the new interface should be enforced with allow:\n{doc:#}"
        );
        s.expect(vm_r, true)?;
        s.expect(vm_b, false)?;

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
        s.expect(vm_r, true)?;
        s.expect(vm_b, false)?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 5. Timed grants and revocations
// ---------------------------------------------------------------------------

#[test]
fn a_timed_revocation_and_a_timed_grant_take_effect_on_time_without_a_reload() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new(
        Topology::builder()
            .routed_vm("vm-rev")
            .routed_vm("vm-gra")
            .build()?,
    )?;
    // Whole seconds, far enough ahead for the agent to start and the first
    // checks to run.
    let at = (Utc::now() + chrono::TimeDelta::seconds(7)).trunc_subsecs(0);
    let at_s = at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let text = policy(&[
        (
            "vm-rev",
            Role::Timed {
                granted: GRANT.to_owned(),
                revoked: Some(at_s.clone()),
                started: "2021-01-11T08:00:00Z".to_owned(),
            },
        ),
        (
            "vm-gra",
            Role::Timed {
                granted: at_s.clone(),
                revoked: None,
                started: at_s.clone(),
            },
        ),
    ]);
    let agent = s.start_agent(&text, &[])?;
    let r = (|| {
        let (vm_rev, vm_gra) = (s.vm("vm-rev"), s.vm("vm-gra"));
        let doc = agent.status_json()?;
        ensure!(
            vm_field(&doc, "vm-rev", "verdict") == "allow"
                && vm_field(&doc, "vm-gra", "reason_code") == "exemption-not-yet",
            "before {at_s}:\n{doc:#}"
        );
        s.expect(vm_rev, true)?;
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
        s.expect(vm_rev, false)?;
        s.expect(vm_gra, true)?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 6. Interfaces that come and go
// ---------------------------------------------------------------------------

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
    let s = Setup::new(Topology::builder().routed_vm("vm-blocked").build()?)?;
    // Half of the new interfaces are named in the policy (pvmN), half only
    // match the `attach` glob (tapxN); their peers (qpeerN) are neither.
    let mut vms: Vec<(String, Role)> = vec![("vm-blocked".to_owned(), Role::Blocked)];
    vms.extend((0..CREATIONS / 2).map(|i| (format!("pvm{i}"), Role::Blocked)));
    let vms_ref: Vec<(&str, Role)> = vms.iter().map(|(n, r)| (n.as_str(), r.clone())).collect();
    let agent = s.start_agent(&policy_with(&["tapx*"], &vms_ref, 0), &[])?;
    let r = (|| {
        let hv = &s.topo.hv;
        let created = create_and_time(hv, CREATIONS)?;

        // Each one enforced: a pinned link and a blocking map entry. (The
        // link is pinned just after the program shows on the interface,
        // which is when the watch above returned: give the last one a
        // moment.)
        let deadline = Instant::now() + Duration::from_secs(1);
        let mut pins = link_pins(&agent)?;
        while pins.len() < created.len() + 1 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(10));
            pins = link_pins(&agent)?;
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
        s.expect(vm, false)?;
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
        let pins = link_pins(&agent)?;
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
        s.expect(vm, false)?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 7. Restart, upgrade and foreign maps under load: zero escapes
// ---------------------------------------------------------------------------

/// SYNs a second in each stream.
const RATE: u32 = 250;

/// A blocked VM's stream of port-25 SYNs, an exempt VM's, and the capture in
/// the internet namespace that counts what arrives of both.
struct Load {
    capture: SynCapture,
    blocked: SynStream,
    allowed: SynStream,
    blocked_addrs: [IpAddr; 2],
    allowed_addrs: [IpAddr; 2],
    started: Instant,
}

/// What a [`Load`] sent and what arrived.
struct LoadReport {
    blocked: Sent,
    allowed: Sent,
    /// SYNs from the blocked VM that reached the internet namespace.
    escaped: u64,
    /// Sequence numbers of the exempt VM's SYNs that never arrived.
    missing: Vec<u64>,
    captured: Captured,
}

impl Load {
    fn start(topo: &Topology, blocked: &Vm, allowed: &Vm) -> Result<Self> {
        let capture = SynCapture::start(&topo.internet, "eth0", &[25])?;
        Ok(Self {
            capture,
            blocked: SynStream::start(blocked, SINK_V4, Some(SINK_V6), 25, RATE)?,
            allowed: SynStream::start(allowed, SINK_V4, Some(SINK_V6), 25, RATE)?,
            blocked_addrs: [blocked.ipv4.into(), blocked.ipv6.into()],
            allowed_addrs: [allowed.ipv4.into(), allowed.ipv6.into()],
            started: Instant::now(),
        })
    }

    fn finish(mut self) -> Result<LoadReport> {
        let blocked = self.blocked.stop()?;
        let allowed = self.allowed.stop()?;
        // What is in flight arrives.
        thread::sleep(Duration::from_millis(300));
        let captured = self.capture.stop()?;
        println!(
            "load: {:.1} s, {} SYN/s per stream",
            self.started.elapsed().as_secs_f64(),
            RATE
        );
        Ok(LoadReport {
            escaped: captured.syns_from(&self.blocked_addrs),
            missing: captured.missing(&self.allowed_addrs, allowed.sent),
            blocked,
            allowed,
            captured,
        })
    }
}

impl LoadReport {
    fn check(&self, what: &str) -> Result<()> {
        let arrived = self.allowed.sent - self.missing.len() as u64;
        println!(
            "{what}: blocked VM sent {} port-25 SYNs ({} v4, {} v6), {} reached the internet; \
             exempt VM sent {}, {} arrived, {} lost; capture saw {} frames, kernel drops {}",
            self.blocked.sent,
            self.blocked.sent_v4,
            self.blocked.sent_v6,
            self.escaped,
            self.allowed.sent,
            arrived,
            self.missing.len(),
            self.captured.frames,
            self.captured.kernel_drops
        );
        ensure!(
            self.captured.kernel_drops == 0,
            "the capture lost {} frames: its counts are not complete",
            self.captured.kernel_drops
        );
        ensure!(
            self.blocked.errors == 0 && self.allowed.errors == 0,
            "a sender failed: {:?} {:?}",
            self.blocked.first_error,
            self.allowed.first_error
        );
        ensure!(
            self.blocked.sent > 0 && self.allowed.sent > 0,
            "the streams sent nothing"
        );
        ensure!(
            self.escaped == 0,
            "{what}: {} SYNs of the blocked VM reached the internet",
            self.escaped
        );
        ensure!(
            self.missing.is_empty(),
            "{what}: {} SYNs of the exempt VM were lost, e.g. numbers {:?}",
            self.missing.len(),
            &self.missing[..self.missing.len().min(20)]
        );
        Ok(())
    }
}

fn two_vm_policy() -> String {
    policy(&[("vm-blocked", Role::Blocked), ("vm-exempt", Role::Exempt)])
}

fn load_setup() -> Result<Setup> {
    Setup::bare(
        Topology::builder()
            .routed_vm("vm-blocked")
            .routed_vm("vm-exempt")
            .build()?,
    )
}

/// The held-back packets of vm-blocked in status.
fn held(agent: &Agent<'_>) -> Result<u64> {
    let doc = agent.status_json()?;
    held_back_packets(&doc, "vm-blocked")
        .with_context(|| format!("no held_back for vm-blocked:\n{doc:#}"))
}

#[test]
fn kill_and_sigterm_restarts_under_load_let_no_syn_through_and_lose_nothing() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = load_setup()?;
    let mut agent = s.start_agent(&two_vm_policy(), &[])?;
    let r = (|| {
        let hv = &s.topo.hv;
        let first = tcx_program(hv, "vm-blocked")?;
        let held_before = held(&agent)?;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));

        // (a) kill -9, a moment with no agent, start again.
        agent.kill()?;
        thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        agent.restart(None)?;
        println!("restart after kill -9: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_secs(1));
        let after_kill = tcx_program(hv, "vm-blocked")?;

        // (b) SIGTERM (exit 0, enforcement stays), start again.
        let status = agent.stop()?;
        ensure!(status.code() == Some(0), "SIGTERM: {status}");
        thread::sleep(Duration::from_millis(500));
        let t = Instant::now();
        agent.restart(None)?;
        println!("restart after SIGTERM: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_secs(1));
        let after_term = tcx_program(hv, "vm-blocked")?;

        let report = load.finish()?;
        report.check("kill -9 and SIGTERM restarts")?;
        for (what, p) in [("kill -9", &after_kill), ("SIGTERM", &after_term)] {
            println!(
                "program on vm-blocked after {what} and restart: id {} tag {} (was id {} tag {})",
                p.id,
                p.tag_hex(),
                first.id,
                first.tag_hex()
            );
            ensure!(
                p.tag == first.tag && p.name == first.name,
                "a restart of the same binary should run the same program: {p:?} vs {first:?}"
            );
        }
        ensure!(
            first.id != after_kill.id && after_kill.id != after_term.id,
            "each restart loads its own program and moves the link to it: ids {} {} {}",
            first.id,
            after_kill.id,
            after_term.id
        );
        // The same map set throughout: every blocked SYN was counted.
        let counted = held(&agent)? - held_before;
        println!(
            "held back while under load: {counted} (sent {})",
            report.blocked.sent
        );
        ensure!(
            counted == report.blocked.sent,
            "every blocked SYN should have been held back by our program and counted: \
             {counted} counted, {} sent",
            report.blocked.sent
        );
        Ok(())
    })();
    with_agent_output(&agent, r)
}

#[test]
fn an_upgrade_to_a_changed_program_under_load_lets_no_syn_through() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let upgrade = std::env::var_os("EGRESS_GUARD_BIN_UPGRADE")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .context(
            "EGRESS_GUARD_BIN_UPGRADE is not set: it is the agent built with \
             EGRESS_GUARD_EBPF_FEATURES=upgrade-canary (`cargo xtask test` builds it)",
        )?;
    ensure!(upgrade.is_file(), "{} is not a file", upgrade.display());
    let s = load_setup()?;
    let mut agent = s.start_agent(&two_vm_policy(), &[])?;
    let r = (|| {
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
        let held_before = held(&agent)?;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));
        ensure!(
            canary(&agent)? == 0,
            "the default build counts nothing in the spare slot"
        );

        // Killed and replaced by the rebuilt binary.
        agent.kill()?;
        let t = Instant::now();
        agent.restart(Some(&upgrade))?;
        println!("upgrade: ready in {}", ms(t.elapsed()));
        thread::sleep(Duration::from_millis(1500));
        let new = tcx_program(hv, "vm-blocked")?;
        let canary_count = canary(&agent)?;

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
        let counted = held(&agent)? - held_before;
        ensure!(
            counted == report.blocked.sent,
            "every blocked SYN should have been held back and counted: {counted} counted, {} sent",
            report.blocked.sent
        );
        Ok(())
    })();
    with_agent_output(&agent, r)
}

#[test]
fn a_pinned_map_from_another_build_is_replaced_under_load_and_never_reused() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = load_setup()?;
    let mut agent = s.start_agent(&two_vm_policy(), &[])?;
    let r = (|| {
        let hv = &s.topo.hv;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));
        agent.kill()?;
        let held_before = held(&agent)?;
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
        let held_after = held(&agent)?;
        println!("held back: {held_before} before the move, {held_after} after");
        ensure!(
            held_after > held_before,
            "the counters should carry over to the new set and go on"
        );
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
// 8. Growth with no gap
// ---------------------------------------------------------------------------

#[test]
fn a_policy_that_outgrows_the_maps_moves_to_larger_ones_under_load_with_no_gap() -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let s = load_setup()?;
    let mut agent = s.start_agent(&two_vm_policy(), &[])?;
    let r = (|| {
        let small = bpf::pinned_map_info(&agent.pin_dir().join("maps").join("EG_IFACES"))?;
        let old_set = map_set(agent.pin_dir())?;
        let load = Load::start(&s.topo, s.vm("vm-blocked"), s.vm("vm-exempt"))?;
        thread::sleep(Duration::from_secs(1));
        let held_before = held(&agent)?;
        let big = policy_with(
            &[],
            &[("vm-blocked", Role::Blocked), ("vm-exempt", Role::Exempt)],
            4998,
        );
        let t = Instant::now();
        s.rename_policy(&big)?;
        let (doc, took) = await_generation(&agent, 2, t, Duration::from_secs(20))?;
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
        let held_after = held(&agent)?;
        println!("vm-blocked held back: {held_before} before the growth, {held_after} after");
        ensure!(
            held_after > held_before,
            "vm-blocked's counters should carry over to the new maps"
        );
        agent.stop()?;
        Ok(())
    })();
    with_agent_output(&agent, r)
}

// ---------------------------------------------------------------------------
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

#[test]
fn two_agents_in_two_namespaces_do_not_disturb_each_other() -> Result<()> {
    fn build() -> Result<Setup> {
        Setup::new(
            Topology::builder()
                .routed_vm("vm-blocked")
                .routed_vm("vm-exempt")
                .build()?,
        )
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
            sb.expect(sb.vm("vm-blocked"), false)?;
            sb.expect(sb.vm("vm-exempt"), true)
        };

        // A's policy changes: B sees nothing of it.
        let b_pins = pin_snapshot(b.pin_dir())?;
        let b_status = status_view(&b.status_json()?);
        let t = Instant::now();
        sa.rename_policy(&policy(&[
            ("vm-blocked", Role::Allowed),
            ("vm-exempt", Role::Exempt),
        ]))?;
        await_generation(&a, 2, t, WITHIN * 3)?;
        sa.expect(sa.vm("vm-blocked"), true)?;
        expect_b()?;
        ensure!(
            pin_snapshot(b.pin_dir())? == b_pins,
            "A's reload changed B's pins"
        );
        ensure!(
            status_view(&b.status_json()?) == b_status,
            "A's reload changed B's status"
        );

        // B restarts: A sees nothing of it.
        let a_pins = pin_snapshot(a.pin_dir())?;
        let a_status = status_view(&a.status_json()?);
        b.kill()?;
        b.restart(None)?;
        expect_b()?;
        sa.expect(sa.vm("vm-blocked"), true)?;
        ensure!(
            pin_snapshot(a.pin_dir())? == a_pins,
            "B's restart changed A's pins"
        );
        ensure!(
            status_view(&a.status_json()?) == a_status,
            "B's restart changed A's status"
        );

        // A stops and detaches: B sees nothing of it.
        let b_pins = pin_snapshot(b.pin_dir())?;
        let b_status = status_view(&b.status_json()?);
        a.stop()?;
        a.detach()?;
        ensure!(!a.pin_dir().exists(), "A's pins should be gone");
        sa.expect(sa.vm("vm-exempt"), true)?;
        expect_b()?;
        ensure!(
            pin_snapshot(b.pin_dir())? == b_pins,
            "A's detach changed B's pins"
        );
        ensure!(
            status_view(&b.status_json()?) == b_status,
            "A's detach changed B's status"
        );
        println!(
            "B's {} pins and its status stayed the same through A's reload and detach",
            b_pins.len()
        );
        Ok(())
    })();
    let r = with_agent_output(&a, r);
    with_agent_output(&b, r)
}

// ---------------------------------------------------------------------------
// 10. Scale
// ---------------------------------------------------------------------------

#[test]
fn a_running_agent_takes_a_100000_vm_policy() -> Result<()> {
    const VMS: usize = 100_000;
    let _serial = serial::exclusive();
    require_root()?;
    let s = Setup::new(
        Topology::builder()
            .routed_vm("vm-blocked")
            .routed_vm("vm-exempt")
            .build()?,
    )?;
    let text = |blocked: Role| {
        policy_with(
            &[],
            &[("vm-blocked", blocked), ("vm-exempt", Role::Exempt)],
            VMS - 2,
        )
    };
    let path = s.write_policy(&text(Role::Blocked))?;
    let t = Instant::now();
    let mut agent = Agent::spawn(&s.topo.hv, &s.bin, &path, &["--log-format", "json"])?;
    agent.wait_ready(egress_guard_tests::netns::agent::READY_TIMEOUT)?;
    let ready = t.elapsed();
    let r = (|| {
        let line = agent.stdout_lines().join("\n");
        ensure!(
            line.contains("enforcing 2 interface(s), 1 blocked, 1 allowed"),
            "{line}"
        );
        s.expect(s.vm("vm-blocked"), false)?;
        s.expect(s.vm("vm-exempt"), true)?;

        // One VM changes: time to the `applied` event.
        let before = events(&agent, "applied").len();
        let t = Instant::now();
        s.rename_policy(&text(Role::Allowed))?;
        let deadline = t + Duration::from_mins(1);
        let applied = loop {
            let applied = events(&agent, "applied");
            if applied.len() > before {
                break t.elapsed();
            }
            ensure!(
                Instant::now() < deadline,
                "the 100,000-VM change was not applied in 60 s"
            );
            thread::sleep(Duration::from_millis(10));
        };
        let news = events(&agent, "new policy");
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
        s.expect(s.vm("vm-blocked"), true)?;
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
