//! What differs between the XDP and the TC program: how a packet is read,
//! classified, resized, written and sent back. Everything else is
//! [`crate::guard`], once for both.

use aya_ebpf::{
    bindings::{BPF_F_ADJ_ROOM_FIXED_GSO, bpf_adj_room_mode::BPF_ADJ_ROOM_MAC},
    helpers::{
        bpf_l4_csum_replace, bpf_skb_adjust_room, bpf_skb_change_head, bpf_skb_change_tail,
        bpf_skb_store_bytes, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::{TcContext, XdpContext},
};
use egress_guard_common::{
    classify::{Class, ClassKind, classify},
    maps::port_slot,
    parse::{IpPacket, MAX_HEADER_OFFSET, MAX_READ, Malformed, Parsed, parse, parse_l3},
    reply::ones_sub,
};

use crate::{
    maps::PORTS,
    packet::{Direct, Frame},
};

/// One hook's access to the packet it runs on.
pub trait Hook {
    /// Whether packets start with an Ethernet header. False on an L3
    /// device (a tun): they start at the IP header, and a reply has no MAC
    /// addresses to swap.
    const L2: bool = true;

    /// The interface the packet came in on.
    fn ifindex(&self) -> u32;

    /// The program's context.
    type Ctx: Frame;

    /// A view of the packet (valid after any helper that changed it too).
    fn packet(&self) -> Direct<'_, Self::Ctx>;

    /// The packet's length.
    fn len(&self) -> usize;

    /// What the packet is, as far as the held ports go. `fence`: this
    /// CPU's slot for `PacketBytes::forget`.
    #[inline(always)]
    fn classify(&self, fence: *mut u64) -> Class {
        let pkt = self.packet().with_fence(fence);
        classify(&pkt, &parse(&pkt), is_held_port)
    }

    /// Makes the first `len` bytes readable directly.
    fn linearize(&self, len: usize) -> bool;

    /// Adds `n` bytes in front of the frame.
    fn push_head(&self, n: usize) -> bool;

    /// Cuts the frame to `len` bytes.
    fn set_len(&self, len: usize) -> bool;

    /// Writes `bytes` at `off`.
    fn store<const N: usize>(&self, off: usize, bytes: &[u8; N]) -> bool;

    /// Writes a big-endian 16-bit word at `off`.
    #[inline(always)]
    fn store16(&self, off: usize, value: u16) -> bool {
        self.store(off, &value.to_be_bytes())
    }

    /// Writes a big-endian 32-bit word at `off`.
    #[inline(always)]
    fn store32(&self, off: usize, value: u32) -> bool {
        self.store(off, &value.to_be_bytes())
    }

    /// Writes a transport checksum at `off`: `full` is the checksum of the
    /// frame as it is; `partial` is what the field must hold if the kernel
    /// (or the VM's driver) will complete the checksum itself.
    fn store_checksum(&self, off: usize, full: u16, partial: u16) -> bool;
}

/// Whether TCP destination `port` is held.
#[inline(always)]
pub fn is_held_port(port: u16) -> bool {
    let (word, bit) = port_slot(port);
    PORTS.get(word).is_some_and(|w| *w & bit != 0)
}

/// Offsets the programs write at stay below this (headers only).
const MAX_WRITE_OFFSET: usize = MAX_HEADER_OFFSET;

pub struct Xdp<'a>(pub &'a XdpContext);

impl Hook for Xdp<'_> {
    type Ctx = XdpContext;

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        self.0.ingress_ifindex() as u32
    }

    #[inline(always)]
    fn packet(&self) -> Direct<'_, XdpContext> {
        Direct::xdp(self.0)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.data_end() - self.0.data()
    }

    #[inline(always)]
    fn linearize(&self, _len: usize) -> bool {
        true
    }

    #[inline(always)]
    fn push_head(&self, n: usize) -> bool {
        // SAFETY: plain helper call on the program's own context.
        unsafe { bpf_xdp_adjust_head(self.0.ctx, -(n as i32)) == 0 }
    }

    #[inline(always)]
    fn set_len(&self, len: usize) -> bool {
        let delta = len as i32 - self.len() as i32;
        // SAFETY: plain helper call on the program's own context.
        delta == 0 || unsafe { bpf_xdp_adjust_tail(self.0.ctx, delta) == 0 }
    }

    #[inline(always)]
    fn store<const N: usize>(&self, off: usize, bytes: &[u8; N]) -> bool {
        if off > MAX_WRITE_OFFSET {
            return false;
        }
        let data_end = self.0.data_end();
        // Read back through memory, as in `Direct::bytes`.
        // SAFETY: a local.
        let data_end = unsafe { core::ptr::read_volatile(&raw const data_end) };
        let start = self.0.data() + off;
        if start + N > data_end {
            return false;
        }
        // SAFETY: `start..start + N` was checked to lie within the packet.
        unsafe { core::ptr::write_unaligned(start as *mut [u8; N], *bytes) };
        true
    }

    #[inline(always)]
    fn store_checksum(&self, off: usize, full: u16, _partial: u16) -> bool {
        self.store(off, &full.to_be_bytes())
    }
}

/// The TC program's access. `L2`: the device's packets start with an
/// Ethernet header (veth, tap, macvtap); false for an L3 tun, whose packets
/// start at the IP header, of the family the skb's protocol names.
pub struct Tc<'a, const L2: bool>(pub &'a TcContext);

impl<const L2: bool> Tc<'_, L2> {
    #[inline(always)]
    fn parse<P: egress_guard_common::parse::PacketBytes>(&self, pkt: &P) -> Parsed {
        if L2 {
            parse(pkt)
        } else {
            // SAFETY: the context pointer is valid for the whole program run.
            let protocol = unsafe { (*self.0.skb.skb).protocol };
            parse_l3(pkt, u16::from_be(protocol as u16))
        }
    }
}

/// Bytes the TC program pulls into the linear part to parse headers that
/// were not there: every offset the parser reads, and the longest read.
const TC_PULL_LEN: usize = MAX_HEADER_OFFSET + MAX_READ;

impl<const L2: bool> Hook for Tc<'_, L2> {
    const L2: bool = L2;

    type Ctx = TcContext;

    #[inline(always)]
    fn ifindex(&self) -> u32 {
        // SAFETY: the context pointer is valid for the whole program run.
        unsafe { (*self.0.skb.skb).ifindex }
    }

    #[inline(always)]
    fn packet(&self) -> Direct<'_, TcContext> {
        Direct::tc(self.0)
    }

    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn classify(&self, fence: *mut u64) -> Class {
        // Headers outside the linear part read as missing: pull them in and
        // look again, once. Only packets that looked unparseable pay for it.
        {
            let pkt = self.packet().with_fence(fence);
            let class = classify(&pkt, &self.parse(&pkt), is_held_port);
            if class.kind != ClassKind::Unparseable || !pkt.is_partial() {
                return class;
            }
        }
        if !self.linearize(TC_PULL_LEN) {
            return Class {
                kind: ClassKind::Unparseable,
                identified: false,
                header_end: 0,
                why: Some(Malformed::TooLong),
                ip: IpPacket::EMPTY,
            };
        }
        let pkt = self.packet().with_fence(fence);
        classify(&pkt, &self.parse(&pkt), is_held_port)
    }

    #[inline(always)]
    fn linearize(&self, len: usize) -> bool {
        let len = if len < self.len() { len } else { self.len() };
        if len <= self.0.data_end() - self.0.data() {
            return true;
        }
        self.0.pull_data(len as u32).is_ok()
    }

    #[inline(always)]
    fn push_head(&self, n: usize) -> bool {
        if L2 {
            // SAFETY: plain helper call on the program's own context.
            unsafe { bpf_skb_change_head(self.0.skb.skb, n as u32, 0) == 0 }
        } else {
            // An L3 device's reply leaves through `__bpf_redirect_no_mac`,
            // which pulls everything before the network header: the room
            // must move the network header with it, as `change_head` (for
            // an L2 header) does not. With no L2 header, room at the MAC
            // header's end is room at the front.
            // SAFETY: plain helper call on the program's own context.
            unsafe {
                bpf_skb_adjust_room(
                    self.0.skb.skb,
                    n as i32,
                    BPF_ADJ_ROOM_MAC,
                    BPF_F_ADJ_ROOM_FIXED_GSO as u64,
                ) == 0
            }
        }
    }

    #[inline(always)]
    fn set_len(&self, len: usize) -> bool {
        // Also linearizes the skb and drops its GSO state: the reply is one
        // small packet.
        // SAFETY: plain helper call on the program's own context.
        unsafe { bpf_skb_change_tail(self.0.skb.skb, len as u32, 0) == 0 }
    }

    /// Through `bpf_skb_store_bytes`, not direct writes: a TC program that
    /// writes packet data directly gets a prologue that unclones every
    /// cloned skb it sees (`bpf_unclone_prologue`), passing ones included.
    #[inline(always)]
    fn store<const N: usize>(&self, off: usize, bytes: &[u8; N]) -> bool {
        if off > MAX_WRITE_OFFSET {
            return false;
        }
        // SAFETY: the helper checks the range; `bytes` is N readable bytes.
        unsafe {
            bpf_skb_store_bytes(
                self.0.skb.skb,
                off as u32,
                bytes.as_ptr().cast(),
                N as u32,
                0,
            ) == 0
        }
    }

    /// The skb's checksum state cannot be read from the program. Write the
    /// value that is right if the checksum is still to be completed, then
    /// let `bpf_l4_csum_replace` (which knows the state) move it by
    /// `partial - full` only when it is not: the kernel subtracts the
    /// difference from a complete checksum, and leaves a pending one alone.
    #[inline(always)]
    fn store_checksum(&self, off: usize, full: u16, partial: u16) -> bool {
        if !self.store(off, &partial.to_be_bytes()) {
            return false;
        }
        // The kernel adds checksums as they lie in memory: the difference
        // goes in network byte order too.
        let diff = ones_sub(partial, full).to_be() as u64;
        // SAFETY: plain helper call on the program's own context; flags 0:
        // `to` is a difference, not a pseudo-header field.
        unsafe { bpf_l4_csum_replace(self.0.skb.skb, off as u32, 0, diff, 0) == 0 }
    }
}
