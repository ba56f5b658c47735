//! What holds a flood back in the hypervisor-device benchmark, on which
//! device: egress-guard under a `hook:` setting, one nftables netdev rule,
//! or a drop-all program (the floor), each set up and taken down again.
//!
//! Invariants: a [`Holding`] is released before the next one is set up
//! (the caller checks), so one window measures one holder; the nftables
//! rule sits at the place the programs sit (`ingress` on the tap, `egress`
//! on the macvtap) and counts what it drops; a floor is a link, dropped
//! with it.

use std::os::fd::OwnedFd;

use anyhow::{Context as _, Result};
use egress_guard_netns::{
    Agent,
    bpf::{
        self, BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_EGRESS, BPF_TCX_INGRESS, BPF_XDP,
        XDP_FLAGS_DRV_MODE, XDP_FLAGS_SKB_MODE,
    },
};

use super::lab::{HvLab, MACVTAP, TAP_BLOCKED};
use crate::{flood, lab::Hook};

/// The device flooded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Device {
    Tap,
    Macvtap,
}

impl Device {
    pub const ALL: [Device; 2] = [Device::Tap, Device::Macvtap];

    pub fn name(self) -> &'static str {
        match self {
            Device::Tap => TAP_BLOCKED,
            Device::Macvtap => MACVTAP,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Device::Tap => "tap",
            Device::Macvtap => "macvtap",
        }
    }

    /// What holds the flood back on this device, in the order of the first
    /// round.
    pub fn holders(self) -> Vec<Holder> {
        match self {
            Device::Tap => vec![
                Holder::Guard(Hook::Tc),
                Holder::Floor(Hook::Tc),
                Holder::Nft,
                Holder::Guard(Hook::Xdp),
                Holder::Floor(Hook::Xdp),
                Holder::Guard(Hook::XdpGeneric),
                Holder::Floor(Hook::XdpGeneric),
            ],
            // Only tcx egress sees a macvtap guest's frames: the agent puts
            // its TC program there under every `hook:` setting.
            Device::Macvtap => vec![
                Holder::Guard(Hook::Tc),
                Holder::Floor(Hook::Tc),
                Holder::Nft,
            ],
        }
    }

    /// nftables' netdev hook at the place the programs sit.
    pub fn nft_hook(self) -> &'static str {
        match self {
            Device::Tap => "ingress",
            Device::Macvtap => "egress",
        }
    }

    pub fn nft_rules(self) -> String {
        format!(
            "table netdev egb_hv {{\n  chain c {{\n    type filter hook {hook} device \"{dev}\" priority filter; policy accept;\n    tcp dport 25 counter drop\n  }}\n}}\n",
            hook = self.nft_hook(),
            dev = self.name()
        )
    }
}

/// What holds the flood back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Holder {
    /// egress-guard with this `hook:`.
    Guard(Hook),
    /// The nftables rule.
    Nft,
    /// The drop-all program at this hook.
    Floor(Hook),
}

impl Holder {
    pub fn label(self, device: Device) -> String {
        let at = |hook: Hook| match (device, hook) {
            (Device::Macvtap, _) => "tcx egress",
            (_, Hook::Xdp) => "native XDP",
            (_, Hook::XdpGeneric) => "generic XDP",
            _ => "tcx ingress",
        };
        match self {
            Holder::Guard(hook) if device == Device::Macvtap => {
                format!("egress-guard, `{}` ({})", hook.policy_value(), at(hook))
            }
            Holder::Guard(hook) => format!("egress-guard, `{}`", hook.policy_value()),
            Holder::Nft => format!("nftables netdev {} rule", device.nft_hook()),
            Holder::Floor(hook) => format!("drop-all program, {}", at(hook)),
        }
    }

    /// The floor this holder is held against: the drop-all at its hook (for
    /// nftables, the tc floor: a netdev chain runs in the same receive or
    /// transmit path, right after tcx).
    pub fn floor(self) -> Holder {
        match self {
            Holder::Guard(h) | Holder::Floor(h) => Holder::Floor(h),
            Holder::Nft => Holder::Floor(Hook::Tc),
        }
    }
}

/// What holds the flood back while it is in scope.
pub enum Holding<'a> {
    Guard(Box<Agent<'a>>),
    Nft,
    /// The drop-all program's link (dropping it detaches the program).
    Floor(OwnedFd),
}

pub fn hold(lab: &HvLab, device: Device, holder: Holder) -> Result<(Holding<'_>, String)> {
    match holder {
        Holder::Guard(hook) => {
            let (agent, hooks) = lab.agent(hook.policy_value())?;
            let actual = hooks
                .get(device.name())
                .cloned()
                .with_context(|| format!("status shows no hook on {}", device.name()))?;
            Ok((Holding::Guard(Box::new(agent)), actual))
        }
        Holder::Nft => {
            let path = lab.dir.write("hv.nft", device.nft_rules())?;
            lab.hv()
                .run("nft", [std::ffi::OsStr::new("-f"), path.as_os_str()])?;
            Ok((Holding::Nft, String::new()))
        }
        Holder::Floor(hook) => {
            let ifindex = match device {
                Device::Tap => lab.tap_blocked.ifindex(),
                Device::Macvtap => lab.macvtap.ifindex(),
            };
            let (prog_type, ret, attach, flags) = match (device, hook) {
                (Device::Macvtap, _) => (BPF_PROG_TYPE_SCHED_CLS, 2, BPF_TCX_EGRESS, 0),
                (_, Hook::Xdp) => (BPF_PROG_TYPE_XDP, 1, BPF_XDP, XDP_FLAGS_DRV_MODE),
                (_, Hook::XdpGeneric) => (BPF_PROG_TYPE_XDP, 1, BPF_XDP, XDP_FLAGS_SKB_MODE),
                _ => (BPF_PROG_TYPE_SCHED_CLS, 2, BPF_TCX_INGRESS, 0),
            };
            let link = bpf::in_netns(&lab.hv().path(), move || {
                let prog = bpf::load_trivial(prog_type, 0, ret, "egb_drop_all")?;
                bpf::link_create_flags(std::os::fd::AsFd::as_fd(&prog), ifindex, attach, flags)
            })
            .context("attaching the drop-all program")?;
            Ok((Holding::Floor(link), String::new()))
        }
    }
}

impl Holding<'_> {
    /// Held back so far (a floor counts nothing: `written` is used).
    pub fn held(&self, lab: &HvLab) -> Result<u64> {
        match self {
            Holding::Guard(agent) => flood::guard_held(agent.pin_dir()),
            Holding::Nft => {
                let out = lab
                    .hv()
                    .run("nft", ["-j", "list", "table", "netdev", "egb_hv"])?;
                let doc: serde_json::Value = serde_json::from_str(&out.stdout)
                    .with_context(|| format!("`{}` printed {}", out.command, out.stdout))?;
                Ok(flood::nft_counter_packets(&doc))
            }
            Holding::Floor(_) => Ok(0),
        }
    }

    pub fn release(self, lab: &HvLab) -> Result<()> {
        match self {
            Holding::Guard(agent) => drop(agent),
            Holding::Nft => {
                lab.hv()
                    .run("nft", ["delete", "table", "netdev", "egb_hv"])?;
            }
            Holding::Floor(link) => drop(link),
        }
        Ok(())
    }
}
