//! How each hook reads packet bytes for the shared parser.

use aya_ebpf::programs::{TcContext, XdpContext};
use egress_guard_common::parse::{MAX_HEADER_OFFSET, PacketBytes};

/// XDP: direct packet access. The program is not frags-aware, so the kernel
/// gives it the whole frame in `data..data_end` (generic XDP linearizes).
pub struct XdpPacket {
    data: usize,
    data_end: usize,
}

impl XdpPacket {
    #[inline(always)]
    pub fn new(ctx: &XdpContext) -> Self {
        Self {
            data: ctx.data(),
            data_end: ctx.data_end(),
        }
    }
}

impl PacketBytes for XdpPacket {
    #[inline(always)]
    fn packet_len(&self) -> usize {
        self.data_end - self.data
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // Bounding `off` first lets the verifier prove `data + off` stays
        // within the packet range it tracks.
        if off > MAX_HEADER_OFFSET {
            return None;
        }
        let start = self.data + off;
        if start + N > self.data_end {
            return None;
        }
        // SAFETY: `start..start + N` was checked to lie within the packet.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }
}

/// TC: direct access to the linear part of the skb, and `bpf_skb_load_bytes`
/// for headers beyond it (GSO and GRO skbs, tap and virtio paths can leave
/// headers in paged fragments).
pub struct TcPacket<'a> {
    ctx: &'a TcContext,
    data: usize,
    data_end: usize,
}

impl<'a> TcPacket<'a> {
    #[inline(always)]
    pub fn new(ctx: &'a TcContext) -> Self {
        Self {
            ctx,
            data: ctx.data(),
            data_end: ctx.data_end(),
        }
    }
}

impl PacketBytes for TcPacket<'_> {
    #[inline(always)]
    fn packet_len(&self) -> usize {
        self.ctx.len() as usize
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_HEADER_OFFSET {
            return None;
        }
        let start = self.data + off;
        if start + N <= self.data_end {
            // SAFETY: `start..start + N` was checked to lie within the linear data.
            return Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) });
        }
        self.ctx.load::<[u8; N]>(off).ok()
    }
}
