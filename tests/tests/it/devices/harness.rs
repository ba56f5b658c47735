//! The device tests' harness: the policy, the hooks the contract expects
//! per device kind, the [`Lab`] (a topology whose hypervisor namespace holds
//! the devices) and the [`Case`] that runs a round without the agent and one
//! per hook setting, and collects every problem.

use std::{
    fmt::Write as _,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use egress_guard_tests::netns::{
    Agent, DeviceKind, FrameCapture, Netns, PolicyBuilder, Role, TempDir, Topology, VmDevice,
    agent_bin, held_back_packets, mac_address, require_root, segment_in_software,
    topology::{SINK_V4, SINK_V6, UPLINK_IF},
};
use serde_json::Value;

use super::streams::{Seen, Stream};

/// The hook settings of a policy, each tried in turn.
pub const HOOKS: [&str; 4] = ["tc", "xdp", "xdp-generic", "auto"];

/// How long the passing streams may take to arrive in full.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to keep capturing after they did, for held segments that would
/// come late.
const GRACE: Duration = Duration::from_millis(300);

/// A policy holding back port 25 with `action` for the `blocked` VMs, with
/// the `exempt` ones exempt; each VM is named after its interface.
pub fn policy(hook: &str, action: &str, blocked: &[&str], exempt: &[&str]) -> String {
    let mut p = PolicyBuilder::new().hook(hook).action(action);
    for vm in blocked {
        p = p.vm(vm, Role::Blocked);
    }
    for vm in exempt {
        p = p.vm(vm, Role::Exempt);
    }
    p.yaml()
}

/// The hook `status` must show for a device of `kind` under `setting`;
/// `None`: any hook the agent may choose (`auto` on a tap).
pub fn expected_hook(kind: DeviceKind, setting: &str) -> Option<&'static str> {
    match kind {
        DeviceKind::Macvtap => Some("tc-egress"),
        DeviceKind::L3Tun => Some("tc-l3"),
        DeviceKind::Tap { .. } => match setting {
            "tc" => Some("tc"),
            "xdp" => Some("xdp"),
            "xdp-generic" => Some("xdp-generic"),
            _ => None,
        },
    }
}

/// Whether `run` must warn, naming the device, that `setting` cannot be
/// had on a device of `kind`.
pub fn warns(kind: DeviceKind, setting: &str) -> bool {
    matches!(kind, DeviceKind::Macvtap | DeviceKind::L3Tun)
        && matches!(setting, "xdp" | "xdp-generic")
}

/// A topology without VM namespaces: the devices under test are created in
/// its hypervisor namespace. Its uplink cuts and sums in software, and its
/// neighbours are fixed, so nothing is queued or lost waiting for ARP/NDP.
pub struct Lab {
    pub topo: Topology,
    pub bin: PathBuf,
    pub dir: TempDir,
}

impl Lab {
    pub fn new() -> Result<Self> {
        require_root()?;
        let bin = agent_bin()?;
        let topo = Topology::builder().build()?;
        segment_in_software(&topo.hv, UPLINK_IF)?;
        let mac = mac_address(&topo.internet, "eth0")?;
        let mac = mac.map(|b| format!("{b:02x}")).join(":");
        for sink in [SINK_V4.to_string(), SINK_V6.to_string()] {
            topo.hv.ip([
                "neigh",
                "replace",
                &sink,
                "lladdr",
                &mac,
                "dev",
                UPLINK_IF,
                "nud",
                "permanent",
            ])?;
        }
        Ok(Self {
            topo,
            bin,
            dir: TempDir::new("devices")?,
        })
    }

    pub fn hv(&self) -> &Netns {
        &self.topo.hv
    }

    /// A fresh agent in the hypervisor namespace with this policy, logging
    /// JSON, once it is ready.
    pub fn start_agent(&self, policy: &str) -> Result<Agent<'_>> {
        let path = self.dir.write("policy.yaml", policy)?;
        let mut agent = Agent::spawn(self.hv(), &self.bin, &path, &["--log-format", "json"])?;
        agent.wait_ready(Duration::from_mins(1))?;
        Ok(agent)
    }

    /// A lower device for macvtaps: a veth `mv-low` whose peer `mv-peer`
    /// is in the internet namespace with 10.77.230.1/24 and
    /// fd77:0:230::1/64 (the macvtap guests' neighbour). Returns the peer's
    /// MAC.
    pub fn macvtap_lower(&self) -> Result<[u8; 6]> {
        let (hv, inet) = (self.hv(), &self.topo.internet);
        hv.ip([
            "link",
            "add",
            "mv-low",
            "type",
            "veth",
            "peer",
            "name",
            "mv-peer",
            "netns",
            inet.name(),
        ])?;
        segment_in_software(hv, "mv-low")?;
        hv.ip(["link", "set", "mv-low", "up"])?;
        inet.ip(["addr", "add", "10.77.230.1/24", "dev", "mv-peer"])?;
        inet.ip([
            "-6",
            "addr",
            "add",
            "fd77:0:230::1/64",
            "dev",
            "mv-peer",
            "nodad",
        ])?;
        inet.ip(["link", "set", "mv-peer", "up"])?;
        Ok(mac_address(inet, "mv-peer")?)
    }
}

/// One test's devices, streams and capture point.
pub struct Case<'a> {
    pub lab: &'a Lab,
    pub blocked: Vec<&'a VmDevice>,
    pub exempt: Vec<&'a VmDevice>,
    /// Devices whose frames are written scattered (headers, then pages).
    pub scattered: Vec<&'a str>,
    /// The MAC a macvtap guest sends to (None: a routed tap or tun).
    pub peer_mac: Option<[u8; 6]>,
    pub capture_ns: &'a Netns,
    pub capture_if: &'a str,
    pub streams: Vec<Stream>,
}

impl<'a> Case<'a> {
    /// A case of routed devices (taps, L3 tuns), captured behind the
    /// hypervisor (on the internet namespace's `eth0`), none scattered.
    pub fn routed(
        lab: &'a Lab,
        blocked: Vec<&'a VmDevice>,
        exempt: Vec<&'a VmDevice>,
        streams: Vec<Stream>,
    ) -> Self {
        Self {
            lab,
            blocked,
            exempt,
            scattered: vec![],
            peer_mac: None,
            capture_ns: &lab.topo.internet,
            capture_if: "eth0",
            streams,
        }
    }

    /// The round without the agent, which must see everything arrive, then
    /// one round per hook setting; fails with every problem found.
    pub fn run(&self) -> Result<()> {
        let started = Instant::now();
        let baseline = self.round(None)?;
        if !baseline.is_empty() {
            bail!(
                "without the agent, not everything written arrived: the test itself is broken\n{}",
                baseline.join("\n")
            );
        }
        let mut report = String::new();
        for hook in HOOKS {
            let problems = self.round(Some(hook))?;
            for p in &problems {
                let _ = writeln!(report, "hook {hook}: {p}");
            }
        }
        eprintln!("all rounds took {:.1?}", started.elapsed());
        if !report.is_empty() {
            bail!("{report}");
        }
        Ok(())
    }

    fn round(&self, hook: Option<&str>) -> Result<Vec<String>> {
        let started = Instant::now();
        let names: Vec<&str> = self.blocked.iter().map(|d| d.name()).collect();
        let exempt: Vec<&str> = self.exempt.iter().map(|d| d.name()).collect();
        let mut problems = Vec::new();
        let agent = match hook {
            None => None,
            Some(hook) => {
                let agent = self
                    .lab
                    .start_agent(&policy(hook, "drop", &names, &exempt))?;
                let status = agent.status_json()?;
                problems.extend(self.hook_problems(&status, hook));
                Some(agent)
            }
        };

        // Without the agent, everything must arrive.
        let expect: Vec<Stream> = self
            .streams
            .iter()
            .map(|s| Stream {
                held: s.held && hook.is_some(),
                ..s.clone()
            })
            .collect();
        let capture = FrameCapture::start(self.capture_ns, self.capture_if)?;
        for s in &self.streams {
            let dev = self.device(&s.device);
            s.write(dev, self.peer_mac, self.scattered.contains(&dev.name()))?;
        }
        let arrived = capture.wait_for(ARRIVAL, |f| Seen::parse(f).complete(&expect));
        std::thread::sleep(GRACE);
        let frames = capture.stop()?;
        if frames.kernel_drops > 0 || frames.truncated > 0 {
            bail!(
                "the capture is incomplete ({} frames dropped by the kernel, {} truncated): cannot judge",
                frames.kernel_drops,
                frames.truncated
            );
        }
        let seen = Seen::parse(&frames.frames);
        if !arrived {
            problems.push(format!(
                "the control streams did not all arrive within {ARRIVAL:?}: the capture cannot prove anything (see below)"
            ));
        }
        problems.extend(seen.problems(&expect));

        let mut counters = String::new();
        if let (Some(agent), Some(hook)) = (&agent, hook) {
            let status = agent.status_json()?;
            for dev in &self.blocked {
                let held = self
                    .streams
                    .iter()
                    .filter(|s| s.held && s.device == dev.name())
                    .count() as u64;
                let got = held_back_packets(&status, dev.name());
                let _ = write!(counters, " {}={got:?}", dev.name());
                if got != Some(held) {
                    problems.push(format!(
                        "{}: status shows {got:?} packets held back, expected {held} (one per frame written to port 25)",
                        dev.name()
                    ));
                }
            }
            problems.extend(self.warning_problems(agent, hook));
        }
        let (segments, bytes) = seen.totals(&self.streams);
        eprintln!(
            "round {}: {} streams written, {segments} segments / {bytes} payload bytes arrived, held back:{counters}, {} problem(s), {:.1?}",
            hook.unwrap_or("without the agent"),
            self.streams.len(),
            problems.len(),
            started.elapsed()
        );
        Ok(problems)
    }

    fn device(&self, name: &str) -> &VmDevice {
        self.blocked
            .iter()
            .chain(&self.exempt)
            .find(|d| d.name() == name)
            .unwrap_or_else(|| panic!("no device {name} in this case"))
    }

    /// The hooks `status` shows against the contract.
    fn hook_problems(&self, status: &Value, setting: &str) -> Vec<String> {
        let mut problems = Vec::new();
        for dev in self.blocked.iter().chain(&self.exempt) {
            let shown = status["interfaces"].as_array().and_then(|all| {
                all.iter()
                    .find(|i| i["name"] == dev.name())
                    .and_then(|i| i["hook"].as_str())
            });
            let ok = match (expected_hook(dev.kind(), setting), shown) {
                (Some(want), Some(got)) => want == got,
                (None, Some(got)) => ["tc", "xdp", "xdp-generic"].contains(&got),
                (_, None) => false,
            };
            if !ok {
                problems.push(format!(
                    "{} ({:?}): status shows hook {shown:?}, expected {}",
                    dev.name(),
                    dev.kind(),
                    expected_hook(dev.kind(), setting).unwrap_or("tc, xdp or xdp-generic")
                ));
            }
        }
        problems
    }

    /// A warning naming each device that cannot have `setting`, and its
    /// kind (the devices' names do not contain the kind's word).
    fn warning_problems(&self, agent: &Agent<'_>, setting: &str) -> Vec<String> {
        let events: Vec<Value> = agent
            .json_logs()
            .into_iter()
            .filter(|e| e["level"] == "WARN")
            .collect();
        let warnings: Vec<String> = events.iter().map(Value::to_string).collect();
        self.blocked
            .iter()
            .chain(&self.exempt)
            .filter(|d| warns(d.kind(), setting))
            .filter(|d| {
                let kind = kind_word(d.kind());
                !warnings
                    .iter()
                    .any(|w| w.contains(d.name()) && w.to_lowercase().contains(kind))
            })
            .map(|d| {
                format!(
                    "{}: no warning naming it and its kind ({:?}) that hook {setting} cannot be had there; its warnings: {:?}",
                    d.name(),
                    kind_word(d.kind()),
                    events
                        .iter()
                        .filter(|e| e.to_string().contains(d.name()))
                        .map(|e| e["message"].as_str().unwrap_or_default())
                        .collect::<Vec<_>>()
                )
            })
            .collect()
    }
}

/// The word a warning about a device of `kind` must contain.
pub fn kind_word(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Macvtap => "macvtap",
        DeviceKind::L3Tun => "tun",
        DeviceKind::Tap { .. } => "tap",
    }
}
