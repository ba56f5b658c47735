//! Hypervisor devices fed as a VMM feeds them, end to end without a guest:
//! taps opened with `IFF_VNET_HDR` (and `IFF_NAPI_FRAGS`) carrying GSO
//! super-frames and `NEEDS_CSUM` partial checksums, macvtaps written through
//! their `/dev/tapN`, and L3 tuns carrying bare IP packets.
//!
//! Each test builds one topology (a hypervisor namespace routing to an
//! "internet" namespace), creates a blocked VM's and an exempt VM's devices
//! in the hypervisor namespace, and runs rounds: first without the agent
//! (everything written must arrive whole: the frames are good, and the
//! capture works), then with a fresh agent under each hook setting. In each
//! round an `AF_PACKET` capture behind the hypervisor sees what left it; a
//! held stream must not have a single segment there, every other stream must
//! arrive whole (segments, checksums, payload byte for byte). The exempt
//! VM's port-25 streams and the blocked VM's port-587 streams are the
//! controls: a capture that missed them fails the round. `status` must show
//! the hook the device needs and the held-back counters moved by what was
//! held. Every problem of every round is reported together. Needs root and
//! `$EGRESS_GUARD_BIN`.

#[path = "devices/streams.rs"]
mod streams;

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Result, bail};
use egress_guard_tests::netns::{
    Agent, DeviceKind, FrameCapture, Netns, TempDir, Topology, VmDevice, agent_bin,
    held_back_packets, mac_address, require_root, segment_in_software,
    topology::{SINK_V4, SINK_V6, UPLINK_IF},
    tuntap::{IFF_NAPI, IFF_NAPI_FRAGS},
};
use serde_json::Value;
use streams::{Plan, Seen, Shape, Stream};

/// The hook settings of a policy, each tried in turn.
const HOOKS: [&str; 4] = ["tc", "xdp", "xdp-generic", "auto"];

/// How long the passing streams may take to arrive in full.
const ARRIVAL: Duration = Duration::from_secs(5);
/// How long to keep capturing after they did, for held segments that would
/// come late.
const GRACE: Duration = Duration::from_millis(300);

/// A policy holding back port 25 for the `blocked` VMs, with the `exempt`
/// ones exempt; each VM is named after its interface.
fn policy(hook: &str, blocked: &[&str], exempt: &[&str]) -> String {
    let mut out = format!(
        "version: 1
enforcement:
  ports: [25]
  action: drop
  mode: enforce
  hook: {hook}
subscriptions:
  - id: dev-msdn
    offer: msdn
    created: 2019-04-02
  - id: prod-payg
    offer: pay-as-you-go
    created: 2020-05-01
    exemption:
      granted: 2021-01-10T12:00:00Z
vms:
"
    );
    for vm in blocked {
        let _ = write!(
            out,
            "  - name: {vm}\n    subscription: dev-msdn\n    interface: {vm}\n"
        );
    }
    for vm in exempt {
        let _ = write!(
            out,
            "  - name: {vm}\n    subscription: prod-payg\n    interface: {vm}\n    started: 2021-01-11T08:00:00Z\n"
        );
    }
    out
}

/// The hook `status` must show for a device of `kind` under `setting`;
/// `None`: any hook the agent may choose (`auto` on a tap).
fn expected_hook(kind: DeviceKind, setting: &str) -> Option<&'static str> {
    match kind {
        DeviceKind::Macvtap => Some("tc-egress"),
        DeviceKind::L3Tun => Some("tc"),
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
fn warns(kind: DeviceKind, setting: &str) -> bool {
    matches!(kind, DeviceKind::Macvtap | DeviceKind::L3Tun)
        && matches!(setting, "xdp" | "xdp-generic")
}

/// A topology without VM namespaces: the devices under test are created in
/// its hypervisor namespace. Its uplink cuts and sums in software, and its
/// neighbours are fixed, so nothing is queued or lost waiting for ARP/NDP.
struct Lab {
    topo: Topology,
    bin: PathBuf,
    dir: TempDir,
}

impl Lab {
    fn new() -> Result<Self> {
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

    fn hv(&self) -> &Netns {
        &self.topo.hv
    }
}

/// One test's devices, streams and capture point.
struct Case<'a> {
    lab: &'a Lab,
    blocked: Vec<&'a VmDevice>,
    exempt: Vec<&'a VmDevice>,
    /// Devices whose frames are written scattered (headers, then pages).
    scattered: Vec<&'a str>,
    /// The MAC a macvtap guest sends to (None: a routed tap or tun).
    peer_mac: Option<[u8; 6]>,
    capture_ns: &'a Netns,
    capture_if: &'a str,
    streams: Vec<Stream>,
}

impl Case<'_> {
    /// The round without the agent, which must see everything arrive, then
    /// one round per hook setting; fails with every problem found.
    fn run(&self) -> Result<()> {
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
                let path = self
                    .lab
                    .dir
                    .write("policy.yaml", policy(hook, &names, &exempt))?;
                let mut agent = Agent::spawn(
                    self.lab.hv(),
                    &self.lab.bin,
                    &path,
                    &["--log-format", "json"],
                )?;
                agent.wait_ready(Duration::from_mins(1))?;
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
fn kind_word(kind: DeviceKind) -> &'static str {
    match kind {
        DeviceKind::Macvtap => "macvtap",
        DeviceKind::L3Tun => "tun",
        DeviceKind::Tap { .. } => "tap",
    }
}

/// The gateway (`.1`, `::1`) and VM (`.2`, `::2`) addresses of routed
/// device `k`: 10.77.k.0/24 and fd77:0:k::/64.
fn subnet(k: u8) -> (Ipv4Addr, Ipv6Addr, Ipv4Addr, Ipv6Addr) {
    let k16 = u16::from(k);
    (
        Ipv4Addr::new(10, 77, k, 1),
        Ipv6Addr::new(0xfd77, 0, k16, 0, 0, 0, 0, 1),
        Ipv4Addr::new(10, 77, k, 2),
        Ipv6Addr::new(0xfd77, 0, k16, 0, 0, 0, 0, 2),
    )
}

/// A routed device in `k`'s subnet and the plan of its streams to the sink.
fn routed(lab: &Lab, dev: &VmDevice, k: u8, blocked: bool) -> Result<Plan> {
    let (gw4, gw6, vm4, vm6) = subnet(k);
    dev.gateway(lab.hv(), gw4, gw6)?;
    Ok(Plan {
        device: dev.name().to_owned(),
        src4: vm4,
        src6: vm6,
        dst4: SINK_V4,
        dst6: SINK_V6,
        blocked,
    })
}

#[test]
fn tap_vnet_hdr_frames_to_25_are_held_back_under_every_hook() -> Result<()> {
    let lab = Lab::new()?;
    let hv = lab.hv();
    let blocked = VmDevice::tap(hv, "tap-blk", 0)?;
    let frags = VmDevice::tap(hv, "tap-frags", IFF_NAPI | IFF_NAPI_FRAGS)?;
    let exempt = VmDevice::tap(hv, "tap-ok", 0)?;
    // GSO super-frames (tun hands them to generic XDP), NEEDS_CSUM and
    // whole small frames (tun's build_skb path, native XDP before any skb).
    let shapes = [
        Shape::Gso(64_000),
        Shape::Gso(20_000),
        Shape::Partial(1200),
        Shape::Data(512),
        Shape::Syn,
    ];
    let mut streams = routed(&lab, &blocked, 210, true)?.streams(&shapes, &[25, 587], 40_000);
    streams.extend(routed(&lab, &frags, 211, true)?.streams(&shapes, &[25, 587], 41_000));
    streams.extend(routed(&lab, &exempt, 212, false)?.streams(
        &[Shape::Gso(64_000), Shape::Partial(1200), Shape::Syn],
        &[25],
        42_000,
    ));
    Case {
        lab: &lab,
        blocked: vec![&blocked, &frags],
        exempt: vec![&exempt],
        scattered: vec!["tap-frags"],
        peer_mac: None,
        capture_ns: &lab.topo.internet,
        capture_if: "eth0",
        streams,
    }
    .run()
}

#[test]
fn macvtap_frames_to_25_are_held_back_under_every_hook() -> Result<()> {
    let lab = Lab::new()?;
    let (hv, inet) = (lab.hv(), &lab.topo.internet);
    // The macvtaps' lower device: a veth whose peer is in the internet.
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
    let peer_mac = mac_address(inet, "mv-peer")?;
    let blocked = VmDevice::macvtap(hv, "mv-low", "mvt-blk")?;
    let exempt = VmDevice::macvtap(hv, "mv-low", "mvt-ok")?;
    let plan = |dev: &VmDevice, host: u8, blocked| Plan {
        device: dev.name().to_owned(),
        src4: Ipv4Addr::new(10, 77, 230, host),
        src6: Ipv6Addr::new(0xfd77, 0, 0x230, 0, 0, 0, 0, u16::from(host)),
        dst4: Ipv4Addr::new(10, 77, 230, 1),
        dst6: "fd77:0:230::1".parse().unwrap_or(Ipv6Addr::UNSPECIFIED),
        blocked,
    };
    let mut streams =
        plan(&blocked, 10, true).streams(&[Shape::Syn, Shape::Gso(30_000)], &[25, 587], 43_000);
    streams.extend(plan(&exempt, 11, false).streams(&[Shape::Syn], &[25], 44_000));
    Case {
        lab: &lab,
        blocked: vec![&blocked],
        exempt: vec![&exempt],
        scattered: vec![],
        peer_mac: Some(peer_mac),
        capture_ns: inet,
        capture_if: "mv-peer",
        streams,
    }
    .run()
}

#[test]
fn l3_tun_packets_to_25_are_held_back_under_every_hook() -> Result<()> {
    let lab = Lab::new()?;
    let hv = lab.hv();
    let blocked = VmDevice::l3_tun(hv, "l3-blk")?;
    let exempt = VmDevice::l3_tun(hv, "l3-ok")?;
    let shapes = [Shape::Syn, Shape::Data(1000)];
    let mut streams = routed(&lab, &blocked, 220, true)?.streams(&shapes, &[25, 587], 45_000);
    streams.extend(routed(&lab, &exempt, 221, false)?.streams(&shapes, &[25], 46_000));
    Case {
        lab: &lab,
        blocked: vec![&blocked],
        exempt: vec![&exempt],
        scattered: vec![],
        peer_mac: None,
        capture_ns: &lab.topo.internet,
        capture_if: "eth0",
        streams,
    }
    .run()
}
