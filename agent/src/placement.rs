//! Where the program goes on each kind of device: the hook a policy's `hook:`
//! setting gives an interface, and how far that placement is proven.
//!
//! Invariants:
//! - Every device gets the hook where its VM's outbound frames pass. A
//!   setting that cannot see them there (XDP on a macvtap, whose guest's
//!   frames are transmitted, never received; XDP on an L3 tun, whose packets
//!   have no Ethernet header) is overridden, never honoured blind, and the
//!   override says why ([`Placement::overridden`]).
//! - A kind with no rule of its own keeps the setting (tc under `auto`) and
//!   is [`Coverage::Unverified`]: the agent does not claim to see its VM's
//!   frames. docs/datapath.md lists the tests behind [`Coverage::Verified`].
//!
//! Pure: no kernel, no I/O.

use crate::{datapath::Hook, netdev::DevKind, policy};

/// How far the placement on a kind of device is proven.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Coverage {
    /// End-to-end tests send a VM's frames through this kind of device and
    /// see them held back (docs/datapath.md names the tests).
    Verified,
    /// Reasoned from the kernel's code and held to the same rule as a
    /// verified kind, but not run here (ipvtap: this kernel has no ipvlan).
    Reasoned,
    /// No rule for this kind: a program is put at the setting's hook, with
    /// no claim that the VM's frames pass there.
    Unverified,
}

impl Coverage {
    pub fn as_str(self) -> &'static str {
        match self {
            Coverage::Verified => "verified",
            Coverage::Reasoned => "reasoned",
            Coverage::Unverified => "unverified",
        }
    }

    /// What an operator must know of a placement this far proven, if
    /// anything: said by `run` in its log and by `check` on stderr.
    pub fn caveat(self) -> Option<&'static str> {
        match self {
            Coverage::Verified => None,
            Coverage::Reasoned => Some(
                "coverage of this kind of device is reasoned from the kernel's code, not tested here: it takes the same hook as a macvtap",
            ),
            Coverage::Unverified => Some(
                "coverage of this kind of device is unverified: egress-guard has no rule for it and does not know that its VM's frames pass this hook (docs/datapath.md lists the verified kinds)",
            ),
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == text)
    }

    pub const ALL: [Coverage; 3] = [Coverage::Verified, Coverage::Reasoned, Coverage::Unverified];
}

impl serde::Serialize for Coverage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Coverage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Coverage::parse(&text)
            .ok_or_else(|| serde::de::Error::custom(format!("not a coverage: {text:?}")))
    }
}

/// Where the program goes on one interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    pub hook: Hook,
    pub coverage: Coverage,
    /// Set when the policy's setting was not followed: why.
    pub overridden: Option<&'static str>,
}

/// Why XDP is not used on a macvtap or ipvtap.
pub const XDP_ON_MACVTAP: &str = "XDP runs only on frames a device receives, and a macvtap's (or ipvtap's) guest frames are transmitted by the device: the TC program is put on its tcx egress instead";
/// Why XDP is not used on an L3 tun.
pub const XDP_ON_L3_TUN: &str = "an L3 tun's packets start at the IP header, with no Ethernet header for XDP to parse: the TC program that parses from the IP header is put on its tcx ingress instead";

/// The hook `auto` picks for a kind of interface. From the allowed-traffic
/// throughput measured across a veth and a tap (README, "Choosing a hook"):
/// native XDP costs an allowed packet more than tc on virtual devices
/// (their XDP path converts frames to and from `xdp_buff`), and a physical
/// NIC or SR-IOV representor with a driver XDP hook drops before any skb
/// exists.
fn auto_hook(kind: &DevKind) -> Hook {
    match kind {
        DevKind::Physical => Hook::Xdp,
        DevKind::Tun => Hook::TcL3,
        DevKind::Macvtap | DevKind::Ipvtap => Hook::TcEgress,
        DevKind::Veth | DevKind::Tap | DevKind::Other(_) => Hook::Tc,
    }
}

/// How far the placement on `kind` is proven.
pub fn coverage(kind: &DevKind) -> Coverage {
    match kind {
        DevKind::Veth | DevKind::Tap | DevKind::Tun | DevKind::Macvtap => Coverage::Verified,
        DevKind::Ipvtap => Coverage::Reasoned,
        DevKind::Physical | DevKind::Other(_) => Coverage::Unverified,
    }
}

/// Where the policy's `setting` puts the program on a device of `kind`.
pub fn place(setting: policy::Hook, kind: &DevKind) -> Placement {
    let coverage = coverage(kind);
    let fixed = match kind {
        DevKind::Macvtap | DevKind::Ipvtap => Some((Hook::TcEgress, XDP_ON_MACVTAP)),
        DevKind::Tun => Some((Hook::TcL3, XDP_ON_L3_TUN)),
        _ => None,
    };
    if let Some((hook, why)) = fixed {
        // Only an XDP setting is overridden: tc and auto ask for tc.
        let asked_xdp = matches!(setting, policy::Hook::Xdp | policy::Hook::XdpGeneric);
        return Placement {
            hook,
            coverage,
            overridden: asked_xdp.then_some(why),
        };
    }
    let hook = match setting {
        policy::Hook::Auto => auto_hook(kind),
        policy::Hook::Xdp => Hook::Xdp,
        policy::Hook::XdpGeneric => Hook::XdpGeneric,
        policy::Hook::Tc => Hook::Tc,
    };
    Placement {
        hook,
        coverage,
        overridden: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: [policy::Hook; 4] = [
        policy::Hook::Auto,
        policy::Hook::Tc,
        policy::Hook::Xdp,
        policy::Hook::XdpGeneric,
    ];

    #[test]
    fn a_macvtap_and_an_ipvtap_get_tcx_egress_under_every_setting() {
        for kind in [DevKind::Macvtap, DevKind::Ipvtap] {
            for setting in SETTINGS {
                let p = place(setting, &kind);
                assert_eq!(p.hook, Hook::TcEgress, "{kind} {setting:?}");
                let xdp = matches!(setting, policy::Hook::Xdp | policy::Hook::XdpGeneric);
                assert_eq!(p.overridden, xdp.then_some(XDP_ON_MACVTAP), "{kind}");
            }
        }
        assert_eq!(coverage(&DevKind::Macvtap), Coverage::Verified);
        // This kernel has no ipvlan: the same rule, reasoned, not run.
        assert_eq!(coverage(&DevKind::Ipvtap), Coverage::Reasoned);
    }

    #[test]
    fn an_l3_tun_gets_the_l3_program_under_every_setting() {
        for setting in SETTINGS {
            let p = place(setting, &DevKind::Tun);
            assert_eq!(p.hook, Hook::TcL3, "{setting:?}");
            let xdp = matches!(setting, policy::Hook::Xdp | policy::Hook::XdpGeneric);
            assert_eq!(p.overridden, xdp.then_some(XDP_ON_L3_TUN));
        }
    }

    #[test]
    fn ethernet_devices_follow_the_setting() {
        for kind in [DevKind::Veth, DevKind::Tap] {
            assert_eq!(place(policy::Hook::Auto, &kind).hook, Hook::Tc);
            assert_eq!(place(policy::Hook::Tc, &kind).hook, Hook::Tc);
            assert_eq!(place(policy::Hook::Xdp, &kind).hook, Hook::Xdp);
            assert_eq!(
                place(policy::Hook::XdpGeneric, &kind).hook,
                Hook::XdpGeneric
            );
            for setting in SETTINGS {
                assert_eq!(place(setting, &kind).overridden, None);
                assert_eq!(place(setting, &kind).coverage, Coverage::Verified);
            }
        }
        assert_eq!(
            place(policy::Hook::Auto, &DevKind::Physical).hook,
            Hook::Xdp
        );
    }

    #[test]
    fn a_kind_without_a_rule_is_enforced_but_unverified() {
        for kind in [DevKind::Other("bond".into()), DevKind::Physical] {
            for setting in SETTINGS {
                let p = place(setting, &kind);
                assert_eq!(p.coverage, Coverage::Unverified, "{kind}");
                assert_eq!(p.overridden, None);
            }
        }
        // Said by run and check alike; a verified kind has nothing to say.
        assert!(
            Coverage::Unverified
                .caveat()
                .is_some_and(|c| c.contains("unverified"))
        );
        assert!(Coverage::Reasoned.caveat().is_some());
        assert_eq!(Coverage::Verified.caveat(), None);
        let vxlan = DevKind::Other("vxlan".into());
        assert_eq!(place(policy::Hook::Auto, &vxlan).hook, Hook::Tc);
        assert_eq!(place(policy::Hook::Xdp, &vxlan).hook, Hook::Xdp);
    }
}
