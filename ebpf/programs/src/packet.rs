//! How each hook reads packet bytes for the shared parser: direct packet
//! access, bounded so that the verifier can follow every offset.

use aya_ebpf::{
    bindings::{__sk_buff, xdp_md},
    helpers::bpf_csum_diff,
    programs::{TcContext, XdpContext},
};
use egress_guard_common::{
    parse::{MAX_HEADER_OFFSET, PacketBytes},
    reply::fold,
};

use crate::maps::SCRATCH;

/// Where a hook's packet lies: its context's `data` and `data_end`.
pub trait Frame {
    /// `data`, loaded from the context afresh.
    fn data(&self) -> usize;
    /// `data_end`, loaded from the context afresh.
    fn data_end(&self) -> usize;
}

// Each load is one instruction, `*(u32 *)(ctx + offset)`, written out: the
// verifier accepts only that form for context fields, and the compiler, left
// to itself, may hoist `ctx + offset` out of the load or reuse an earlier load
// (volatile loads included).

/// `*(u32 *)(ctx + OFF)`, loaded afresh.
#[inline(always)]
fn ctx_load<const OFF: usize>(ctx: *const u8) -> usize {
    let value: u64;
    // SAFETY: a load of a context field at a constant offset, which the
    // verifier checks; it has no other effect.
    unsafe {
        core::arch::asm!(
            "{v} = *(u32 *)({ctx} + {off})",
            v = lateout(reg) value,
            ctx = in(reg) ctx,
            off = const OFF,
            options(readonly, nostack, preserves_flags),
        );
    }
    value as usize
}

impl Frame for XdpContext {
    #[inline(always)]
    fn data(&self) -> usize {
        ctx_load::<{ core::mem::offset_of!(xdp_md, data) }>(self.ctx.cast())
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        ctx_load::<{ core::mem::offset_of!(xdp_md, data_end) }>(self.ctx.cast())
    }
}

impl Frame for TcContext {
    #[inline(always)]
    fn data(&self) -> usize {
        ctx_load::<{ core::mem::offset_of!(__sk_buff, data) }>(self.skb.skb.cast())
    }

    #[inline(always)]
    fn data_end(&self) -> usize {
        ctx_load::<{ core::mem::offset_of!(__sk_buff, data_end) }>(self.skb.skb.cast())
    }
}

/// Direct access to `data..data_end`.
///
/// Both are loaded from the context afresh (volatile loads) for every read.
/// A packet pointer kept across reads carries the range the verifier has
/// proven for it so far, which differs from path to path (each VLAN depth,
/// each header chain checks a different range): states that differ only in
/// that range are not recognised as the same, and the verifier walks every
/// path to the end. A fresh pointer carries nothing. (One `data_end` for all
/// checks would also let the compiler drop checks it can prove redundant, a
/// proof the verifier, which tracks ranges per pointer, cannot follow.)
pub struct Direct<'a, C: Frame> {
    ctx: &'a C,
    /// The packet's whole length (beyond `data_end` in a non-linear skb).
    len: usize,
    /// This CPU's slot for [`PacketBytes::forget`], or null: then nothing is
    /// forgotten (views made after the parse, which need no fence).
    fence: *mut u64,
}

impl<'a> Direct<'a, XdpContext> {
    /// XDP: the program is not frags-aware, so the kernel gives it the whole
    /// frame in `data..data_end` (generic XDP linearizes).
    #[inline(always)]
    pub fn xdp(ctx: &'a XdpContext) -> Self {
        Self {
            ctx,
            len: ctx.data_end() - ctx.data(),
            fence: core::ptr::null_mut(),
        }
    }
}

impl<'a> Direct<'a, TcContext> {
    /// TC: the linear part of the skb. A GSO or GRO skb, or one from a tap
    /// whose guest chose a short header length, can keep headers in paged
    /// fragments: reads there fail, the parser reports the packet as
    /// unparseable, and the TC program pulls the headers in and parses
    /// again (`Tc::classify`). Reading everything with `bpf_skb_load_bytes`
    /// instead would cost a helper call a read on every packet; falling back
    /// to it read by read would double the verifier's paths at every read.
    #[inline(always)]
    pub fn tc(ctx: &'a TcContext) -> Self {
        Self {
            ctx,
            len: ctx.len() as usize,
            fence: core::ptr::null_mut(),
        }
    }
}

impl<C: Frame> Direct<'_, C> {
    /// This view, with `fence` for [`PacketBytes::forget`] (a per-CPU map
    /// slot: the verifier does not track what is stored in a map).
    #[inline(always)]
    pub fn with_fence(mut self, fence: *mut u64) -> Self {
        self.fence = fence;
        self
    }

    /// Whether part of the packet lies beyond the direct-access range.
    #[inline(always)]
    pub fn is_partial(&self) -> bool {
        self.ctx.data_end() - self.ctx.data() < self.len
    }
}

impl<C: Frame> PacketBytes for Direct<'_, C> {
    #[inline(always)]
    fn packet_len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn forget(&self, v: usize) -> usize {
        if self.fence.is_null() {
            return v;
        }
        // SAFETY: a per-CPU map slot, used only within this program run
        // (XDP and TC programs do not nest on a CPU).
        unsafe {
            core::ptr::write_volatile(self.fence, v as u64);
            core::ptr::read_volatile(self.fence) as usize
        }
    }

    /// In chunks of 512 (the most `bpf_csum_diff` takes at once) down to 4
    /// bytes, each taken or not as `len` says: a dozen steps, not a loop of
    /// up to 308 reads. Between steps the offset and the length go through
    /// memory, so that every step starts from one state whatever the steps
    /// before it did.
    #[inline(always)]
    fn sum_words(&self, off: usize, len: usize) -> Option<u64> {
        let scratch = SCRATCH.get_ptr_mut(0)?;
        // SAFETY: a map value pointer, valid for this program run.
        let fence = unsafe { &raw mut (*scratch).fence };
        let forget = |v: usize| -> usize {
            // SAFETY: this CPU's slot, used only within this program run.
            unsafe {
                core::ptr::write_volatile(fence, v as u64);
                core::ptr::read_volatile(fence) as usize
            }
        };
        let mut at = off;
        let mut left = len;
        let mut csum: u32 = 0;
        for size in [512, 512, 256, 128, 64, 32, 16, 8, 4] {
            at = forget(at) & 0x7ff;
            left = forget(left) & 0x7ff;
            if left < size {
                continue;
            }
            let start = self.ctx.data() + at;
            if start + size > self.ctx.data_end() {
                return None;
            }
            // SAFETY: `start..start + size` was checked to lie within the
            // packet; the helper only reads it.
            let r = unsafe {
                bpf_csum_diff(
                    core::ptr::null_mut(),
                    0,
                    start as *mut u32,
                    size as u32,
                    csum,
                )
            };
            if r < 0 {
                return None;
            }
            csum = r as u32;
            at += size;
            left -= size;
        }
        // The helper sums 16-bit words in memory order; folded, that is the
        // big-endian sum byte-swapped on a little-endian CPU (RFC 1071 2(B)).
        Some(u16::from_be(fold(csum as u64)) as u64)
    }

    #[inline(always)]
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        // Bounding `off` first lets the verifier prove `data + off` stays
        // within the packet range it tracks.
        if off > MAX_HEADER_OFFSET {
            return None;
        }
        let start = self.ctx.data() + off;
        if start + N > self.ctx.data_end() {
            return None;
        }
        // SAFETY: `start..start + N` was checked to lie within the packet.
        Some(unsafe { core::ptr::read_unaligned(start as *const [u8; N]) })
    }
}
