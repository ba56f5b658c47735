//! One blocked connection attempt as the agent sees it: decoded from the
//! kernel's [`AttemptEvent`], and whose it is.
//!
//! Invariant: an event of an unknown address family is no attempt
//! (`None`), never a guess; ports are in host order, times in both clocks.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use chrono::{DateTime, Utc};
use egress_guard_common::maps::{AttemptEvent, FAMILY_V4, FAMILY_V6};

use super::clock::Clock;

/// One blocked connection attempt, decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attempt {
    /// When the SYN arrived: the kernel's monotonic time, and the wall time.
    pub mono_ns: u64,
    pub at: DateTime<Utc>,
    pub vm_key: u64,
    pub ifindex: u32,
    pub src: IpAddr,
    pub src_port: u16,
    pub dst: IpAddr,
    pub dst_port: u16,
    /// The policy was in audit mode: the SYN passed.
    pub audit: bool,
}

impl Attempt {
    /// The attempt an event tells of; `None` for an event of an unknown
    /// family.
    pub fn from_event(event: &AttemptEvent, clock: &Clock) -> Option<Self> {
        let (src, dst) = match event.family {
            FAMILY_V4 => {
                let four = |a: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3]));
                (four(&event.src), four(&event.dst))
            }
            FAMILY_V6 => (
                IpAddr::V6(Ipv6Addr::from(event.src)),
                IpAddr::V6(Ipv6Addr::from(event.dst)),
            ),
            _ => return None,
        };
        Some(Self {
            mono_ns: event.ts_ns,
            at: clock.wall(event.ts_ns),
            vm_key: event.vm_key,
            ifindex: event.ifindex,
            src,
            src_port: u16::from_be_bytes(event.src_port),
            dst,
            dst_port: u16::from_be_bytes(event.dst_port),
            audit: event.is_audit(),
        })
    }

    pub(super) fn family(&self) -> &'static str {
        if self.src.is_ipv6() { "ipv6" } else { "ipv4" }
    }
}

/// Whose attempt it is, from the policy in force.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Who {
    /// The VM's name; `unknown:<interface>` for an interface that belongs to
    /// no VM.
    pub vm: String,
    /// Its subscription (empty for an unknown interface).
    pub subscription: String,
    /// The host-side interface the SYN came in on.
    pub interface: String,
}
