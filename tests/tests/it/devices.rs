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
//! held. Every problem of every round is reported together.
//!
//! The reply test reads what comes back to a blocked guest on its tap or
//! macvtap under `action: reset` and `icmp`. Needs root and
//! `$EGRESS_GUARD_BIN`.

mod harness;
mod replies;
mod streams;

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Result, bail, ensure};
use egress_guard_tests::netns::{
    VmDevice,
    topology::{SINK_V4, SINK_V6},
    tuntap::{IFF_NAPI, IFF_NAPI_FRAGS},
};
use harness::{Case, HOOKS, Lab, policy};
use streams::{Plan, Shape};

use crate::fixtures::serial;

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

/// A macvtap guest `.host` in 10.77.230.0/24 and fd77:0:230::/64, and the
/// plan of its streams to the lower device's peer.
fn macvtap_plan(dev: &VmDevice, host: u8, blocked: bool) -> Plan {
    Plan {
        device: dev.name().to_owned(),
        src4: Ipv4Addr::new(10, 77, 230, host),
        src6: Ipv6Addr::new(0xfd77, 0, 0x230, 0, 0, 0, 0, u16::from(host)),
        dst4: Ipv4Addr::new(10, 77, 230, 1),
        dst6: Ipv6Addr::new(0xfd77, 0, 0x230, 0, 0, 0, 0, 1),
        blocked,
    }
}

#[test]
fn tap_vnet_hdr_frames_to_25_are_held_back_under_every_hook() -> Result<()> {
    let _serial = serial::shared(module_path!());
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
        scattered: vec!["tap-frags"],
        ..Case::routed(&lab, vec![&blocked, &frags], vec![&exempt], streams)
    }
    .run()
}

#[test]
fn macvtap_frames_to_25_are_held_back_under_every_hook() -> Result<()> {
    let _serial = serial::shared(module_path!());
    let lab = Lab::new()?;
    let (hv, inet) = (lab.hv(), &lab.topo.internet);
    let peer_mac = lab.macvtap_lower()?;
    let blocked = VmDevice::macvtap(hv, "mv-low", "mvt-blk")?;
    let exempt = VmDevice::macvtap(hv, "mv-low", "mvt-ok")?;
    let mut streams = macvtap_plan(&blocked, 10, true).streams(
        &[Shape::Syn, Shape::Gso(30_000)],
        &[25, 587],
        43_000,
    );
    streams.extend(macvtap_plan(&exempt, 11, false).streams(&[Shape::Syn], &[25], 44_000));
    Case {
        peer_mac: Some(peer_mac),
        capture_ns: inet,
        capture_if: "mv-peer",
        ..Case::routed(&lab, vec![&blocked], vec![&exempt], streams)
    }
    .run()
}

#[test]
fn l3_tun_packets_to_25_are_held_back_under_every_hook() -> Result<()> {
    let _serial = serial::shared(module_path!());
    let lab = Lab::new()?;
    let hv = lab.hv();
    let blocked = VmDevice::l3_tun(hv, "l3-blk")?;
    let exempt = VmDevice::l3_tun(hv, "l3-ok")?;
    let shapes = [Shape::Syn, Shape::Data(1000)];
    let mut streams = routed(&lab, &blocked, 220, true)?.streams(&shapes, &[25, 587], 45_000);
    streams.extend(routed(&lab, &exempt, 221, false)?.streams(&shapes, &[25], 46_000));
    Case::routed(&lab, vec![&blocked], vec![&exempt], streams).run()
}

/// Under `reset` and `icmp`, a blocked guest's SYNs to 25 (IPv4 and IPv6)
/// are answered, and the answer reaches the guest: it can be read from the
/// VMM's side of its tap, macvtap or L3 tun, under every hook setting. The SYNs go
/// to addresses no host has (and the guest answers no ARP or neighbour
/// solicitation), so no reply can come from anywhere but the agent.
#[test]
fn tap_macvtap_and_tun_guests_get_the_reset_and_icmp_replies_under_every_hook() -> Result<()> {
    let _serial = serial::shared(module_path!());
    let lab = Lab::new()?;
    let hv = lab.hv();
    let peer_mac = lab.macvtap_lower()?;
    let tap = VmDevice::tap(hv, "tap-rep", 0)?;
    let mvt = VmDevice::macvtap(hv, "mv-low", "mvt-rep")?;
    let tun = VmDevice::l3_tun(hv, "l3-rep")?;
    // To addresses nobody has: whatever answers is the agent.
    let tap_plan = Plan {
        dst4: Ipv4Addr::new(198, 51, 100, 99),
        dst6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x99),
        ..routed(&lab, &tap, 213, true)?
    };
    let mvt_plan = Plan {
        dst4: Ipv4Addr::new(10, 77, 230, 99),
        dst6: Ipv6Addr::new(0xfd77, 0, 0x230, 0, 0, 0, 0, 0x99),
        ..macvtap_plan(&mvt, 20, true)
    };
    let tun_plan = Plan {
        dst4: Ipv4Addr::new(198, 51, 100, 98),
        dst6: Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x98),
        ..routed(&lab, &tun, 214, true)?
    };
    let guests = [
        (&tap, &tap_plan, None),
        (&mvt, &mvt_plan, Some(peer_mac)),
        (&tun, &tun_plan, None),
    ];
    let mut report = String::new();
    let mut sport = 47_000;
    // Without the agent nothing answers (else the test proves nothing).
    for (dev, plan, peer) in guests {
        for s in plan.streams(&[Shape::Syn], &[25], sport) {
            sport += 1;
            s.write(dev, peer, false)?;
            for action in ["reset", "icmp"] {
                let took =
                    replies::await_reply(dev, action, &s.segment, Duration::from_millis(300))?;
                if took.is_some() {
                    bail!(
                        "without the agent, a {action} reply came to {}: the test cannot tell the agent's replies",
                        s.label
                    );
                }
            }
        }
    }
    for action in ["reset", "icmp"] {
        for hook in HOOKS {
            let agent = lab.start_agent(&policy(
                hook,
                action,
                &["tap-rep", "mvt-rep", "l3-rep"],
                &[],
            ))?;
            for (dev, plan, peer) in guests {
                dev.drain()?;
                for s in plan.streams(&[Shape::Syn], &[25], sport) {
                    sport += 1;
                    s.write(dev, peer, false)?;
                    let took =
                        replies::await_reply(dev, action, &s.segment, Duration::from_secs(1))?;
                    eprintln!("{action}, hook {hook}: {}: reply {took:?}", s.label);
                    if took.is_none() {
                        let _ = writeln!(
                            report,
                            "action {action}, hook {hook}: {}: no reply reached the guest within 1 s",
                            s.label
                        );
                    }
                }
            }
            drop(agent);
        }
    }
    if !report.is_empty() {
        bail!("{report}");
    }
    Ok(())
}

/// `check` reads the interfaces of its namespace (and only reads them): a
/// policy asking for XDP on a macvtap and an L3 tun gets a warning for
/// each, naming it, its kind and the hook it gets instead; a tap, where
/// XDP is honoured, gets none. The report itself is unchanged.
#[test]
fn check_warns_where_xdp_is_overridden_naming_the_interface_and_kind() -> Result<()> {
    let _serial = serial::shared(module_path!());
    let lab = Lab::new()?;
    let hv = lab.hv();
    lab.macvtap_lower()?;
    let _mvt = VmDevice::macvtap(hv, "mv-low", "mvt-chk")?;
    let _tun = VmDevice::l3_tun(hv, "l3-chk")?;
    let _tap = VmDevice::tap(hv, "tap-chk", 0)?;
    for hook in ["xdp", "xdp-generic", "tc"] {
        let path = lab.dir.write(
            "check.yaml",
            policy(hook, "drop", &["mvt-chk", "l3-chk", "tap-chk"], &[]),
        )?;
        let out = egress_guard_tests::netns::cmd::run(
            hv.nsenter(&lab.bin).arg("check").arg("--policy").arg(&path),
        )?;
        let stderr = out.stderr.clone();
        let warned = |needle: &str| stderr.lines().any(|l| l.contains(needle));
        let xdp = hook != "tc";
        ensure!(
            warned("interface mvt-chk (macvtap)") == xdp && warned("interface l3-chk (tun)") == xdp,
            "hook {hook}: the macvtap and the L3 tun must be warned about exactly under XDP settings:\n{stderr}"
        );
        if xdp {
            ensure!(
                warned("tcx egress") && warned("IP header"),
                "hook {hook}: the warnings must say where the program goes instead:\n{stderr}"
            );
        }
        ensure!(
            !warned("tap-chk"),
            "hook {hook}: a tap is not overridden:\n{stderr}"
        );
        ensure!(
            out.stdout.contains("mvt-chk") && out.stdout.contains("l3-chk"),
            "the report lists every VM:\n{}",
            out.stdout
        );
    }
    Ok(())
}
