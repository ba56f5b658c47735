//! The egress-guard kernel programs.
//!
//! One entry point for each place the agent can put a program on a VM's
//! host-side interface, and one body ([`guard::guard`]) that all run:
//!
//! - `eg_xdp`: XDP, native or generic, sees the VM's frames before the host
//!   allocates an skb (native) or right after (generic);
//! - `eg_tc`: a TC classifier on tcx ingress, sees them as skbs;
//! - `eg_tc_egress`: the same on tcx egress, for a macvtap or ipvtap, whose
//!   guest's frames are transmitted by the device, never received by it;
//! - `eg_tc_l3`: the same on tcx ingress of an L3 tun, whose packets start
//!   at the IP header.
//!
//! The interface the program runs on is the VM's identity. A reply (the
//! `reset` and `icmp` actions) goes back to the VM: `XDP_TX`, a redirect to
//! the interface's egress (ingress programs) or to its ingress (the egress
//! program: the device then queues it to the guest).
#![no_std]
#![no_main]
// `asm!` for the BPF target: the context loads in `packet`.
#![feature(asm_experimental_arch)]

mod events;
mod guard;
mod hook;
mod maps;
mod packet;
mod pending;
mod reply;
mod stats;

use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT, TC_ACT_UNSPEC, xdp_action},
    helpers::bpf_redirect,
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};

use crate::{
    guard::guard,
    hook::{Hook as _, Tc, Xdp},
    pending::Action,
};

#[xdp]
pub fn eg_xdp(ctx: XdpContext) -> u32 {
    match guard(&Xdp(&ctx)) {
        Action::Pass => xdp_action::XDP_PASS,
        Action::Drop => xdp_action::XDP_DROP,
        Action::Reply => xdp_action::XDP_TX,
    }
}

/// TC on tcx ingress of a device whose frames start with Ethernet (veth,
/// tap): the VM's frames arrive there.
#[classifier]
pub fn eg_tc(ctx: TcContext) -> i32 {
    tc(&Tc::<true>(&ctx), Side::Ingress)
}

/// TC on tcx egress of a macvtap (or ipvtap): a guest's frames are
/// *transmitted* by the device (`tap_get_user` -> `dev_queue_xmit`), so no
/// ingress hook sees them.
#[classifier]
pub fn eg_tc_egress(ctx: TcContext) -> i32 {
    tc(&Tc::<true>(&ctx), Side::Egress)
}

/// TC on tcx ingress of an L3 tun (`ARPHRD_NONE`): packets start at the IP
/// header.
#[classifier]
pub fn eg_tc_l3(ctx: TcContext) -> i32 {
    tc(&Tc::<false>(&ctx), Side::Ingress)
}

/// Which side of the VM's device the TC program sits on.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The VM's frames arrive: a reply goes out of the device, to the VM.
    Ingress,
    /// The VM's frames leave: a reply is received by the device, which
    /// queues it to the VM.
    Egress,
}

#[inline(always)]
fn tc<const L2: bool>(hook: &Tc<'_, L2>, side: Side) -> i32 {
    match guard(hook) {
        // Under tcx, TC_ACT_UNSPEC is TCX_NEXT: let any program after ours
        // (another tool's) see the packet too, instead of ending the chain.
        Action::Pass => TC_ACT_UNSPEC,
        Action::Drop => TC_ACT_SHOT as i32,
        Action::Reply => {
            let flags = match side {
                Side::Ingress => 0,
                Side::Egress => BPF_F_INGRESS as u64,
            };
            // SAFETY: a plain helper call; it returns TC_ACT_REDIRECT.
            unsafe { bpf_redirect(hook.ifindex(), flags) as i32 }
        }
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
