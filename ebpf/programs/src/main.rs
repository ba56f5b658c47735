//! The egress-guard kernel programs.
//!
//! Two entry points, one for each hook the agent can put on a VM's host-side
//! interface, and one body ([`guard::guard`]) that both run:
//!
//! - `eg_xdp`: XDP, native or generic, sees the VM's frames before the host
//!   allocates an skb (native) or right after (generic);
//! - `eg_tc`: a TC classifier on tcx ingress, sees them as skbs.
//!
//! Frames from the VM arrive on the *ingress* of the host-side interface; the
//! ingress ifindex is the VM's identity.
#![no_std]
#![no_main]

mod guard;
mod maps;
mod packet;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    guard::{Action, guard},
    packet::{TcPacket, XdpPacket},
};

#[xdp]
pub fn eg_xdp(ctx: XdpContext) -> u32 {
    let ifindex = ctx.ingress_ifindex() as u32;
    match guard(&XdpPacket::new(&ctx), ifindex) {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
    }
}

#[classifier]
pub fn eg_tc(ctx: TcContext) -> i32 {
    // SAFETY: the context pointer is valid for the whole program run.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    match guard(&TcPacket::new(&ctx), ifindex) {
        // Under tcx, TC_ACT_UNSPEC is TCX_NEXT: let any program after ours
        // (another tool's) see the packet too, instead of ending the chain.
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT as i32,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any path that reaches here; there are none.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
