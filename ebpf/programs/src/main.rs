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
//! ingress ifindex is the VM's identity. A reply (the `reset` and `icmp`
//! actions) leaves by the same interface, back to the VM: `XDP_TX`, or a
//! redirect to the interface's egress.
#![no_std]
#![no_main]
// `asm!` for the BPF target: the context loads in `packet`.
#![feature(asm_experimental_arch)]

mod events;
mod guard;
mod hook;
mod maps;
mod packet;
mod reply;
mod stats;

use aya_ebpf::{
    bindings::{TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    guard::{Action, guard},
    hook::{Hook as _, Tc, Xdp},
};

#[xdp]
pub fn eg_xdp(ctx: XdpContext) -> u32 {
    match guard(&Xdp(&ctx)) {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
        Action::Reply => xdp_action::XDP_TX,
    }
}

#[classifier]
pub fn eg_tc(ctx: TcContext) -> i32 {
    let hook = Tc(&ctx);
    match guard(&hook) {
        // Under tcx, TC_ACT_UNSPEC is TCX_NEXT: let any program after ours
        // (another tool's) see the packet too, instead of ending the chain.
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT as i32,
        // To the egress of the interface the frame came in on: to the VM.
        // SAFETY: a plain helper call; it returns TC_ACT_REDIRECT.
        Action::Reply => unsafe { bpf_redirect(hook.ifindex(), 0) as i32 },
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
