//! What the two stages of [`crate::guard`] hand each other, and what a
//! program does with a packet: plain types at the bottom of the programs'
//! modules, which the stages, the maps, the events and the replies all use
//! (so that none of them imports another for a type).

use egress_guard_common::{
    classify::{Class, ClassKind},
    parse::{FragKind, IpPacket, IpVersion, Ports, TransportKind},
};

/// What the hook does with the packet.
pub enum Action {
    Pass,
    Drop,
    /// Send the (rewritten) frame back out of the interface it came in on.
    Reply,
}

/// `Pending::kind`.
pub const KIND_HELD_PORT: u8 = 1;
pub const KIND_FIRST_FRAGMENT: u8 = 2;
pub const KIND_LATER_FRAGMENT: u8 = 3;
pub const KIND_UNPARSEABLE: u8 = 4;

/// `Pending::frag`.
pub const FRAG_NONE: u8 = 0;
pub const FRAG_FIRST: u8 = 1;
pub const FRAG_LATER: u8 = 2;

/// A packet the fast stage could not let pass, as the slow stage gets it:
/// plain integers, so that it can go through [`fence`].
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Pending {
    pub vm_key: u64,
    pub ip_end: u32,
    pub frag_id: u32,
    pub ifindex: u32,
    pub l3_off: u16,
    pub l4_off: u16,
    pub frag_start: u16,
    /// Later fragments: their offset in bytes. First fragments: the bytes
    /// of headers in the fragmentable part.
    pub frag_offset: u16,
    pub kind: u8,
    /// 4, 6, or 0 when the datagram could not be identified.
    pub version: u8,
    pub proto: u8,
    pub key_proto: u8,
    pub frag: u8,
    pub routed: u8,
    pub pad: [u8; 2],
}

impl Pending {
    #[inline(always)]
    pub fn new(vm_key: u64, ifindex: u32, class: &Class) -> Self {
        let ip = &class.ip;
        let kind = match class.kind {
            ClassKind::HeldPort => KIND_HELD_PORT,
            ClassKind::FirstFragment => KIND_FIRST_FRAGMENT,
            ClassKind::LaterFragment => KIND_LATER_FRAGMENT,
            _ => KIND_UNPARSEABLE,
        };
        let (frag, frag_offset) = match ip.fragment {
            FragKind::None => (FRAG_NONE, 0),
            FragKind::First => (FRAG_FIRST, class.header_end),
            FragKind::Later => (FRAG_LATER, ip.frag_offset),
        };
        Pending {
            vm_key,
            ip_end: ip.ip_end,
            frag_id: ip.frag_id,
            ifindex,
            l3_off: ip.l3_off,
            l4_off: ip.l4_off,
            frag_start: ip.frag_start,
            frag_offset,
            kind,
            version: match (class.identified, ip.version) {
                (false, _) => 0,
                (true, IpVersion::V4) => 4,
                (true, IpVersion::V6) => 6,
            },
            proto: ip.proto,
            key_proto: ip.key_proto,
            frag: if class.identified { frag } else { FRAG_NONE },
            routed: ip.routed as u8,
            pad: [0; 2],
        }
    }

    /// The datagram as the parser saw it (the parts the slow stage uses).
    #[inline(always)]
    pub fn ip(&self) -> IpPacket {
        IpPacket {
            version: if self.version == 6 {
                IpVersion::V6
            } else {
                IpVersion::V4
            },
            l3_off: self.l3_off,
            l4_off: self.l4_off,
            ip_end: self.ip_end,
            proto: self.proto,
            key_proto: self.key_proto,
            fragment: FragKind::None,
            frag_id: self.frag_id,
            frag_offset: 0,
            frag_start: self.frag_start,
            routed: self.routed != 0,
            transport: TransportKind::Payload,
            ports: Ports { src: 0, dst: 0 },
            why: None,
        }
    }

    #[inline(always)]
    pub fn is_v6(&self) -> bool {
        self.version == 6
    }

    #[inline(always)]
    pub fn is_fragment(&self) -> bool {
        self.frag != FRAG_NONE
    }
}
