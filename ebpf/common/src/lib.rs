//! What the egress-guard kernel programs and the agent share.
//!
//! - [`maps`]: the names and the key/value layouts of every BPF map, and the
//!   codes stored in them. This is the ABI between the kernel side and the
//!   agent; [`maps::LAYOUT_VERSION`] names it.
//! - [`bytes`]: byte access to a packet ([`bytes::PacketBytes`]), at the
//!   bottom: everything else reads packets through it.
//! - [`parse`]: the packet parser. The XDP program, the TC program and the host
//!   (unit tests, fuzzing) all run this one parser over their own
//!   [`parse::PacketBytes`] implementation.
//! - [`classify`]: the pure part of the verdict on a parsed packet.
//! - [`frag`]: fragment tracking, the pure part (what a fragment's datagram
//!   was decided to be, and what to remember).
//! - [`rate`]: the rate limits' arithmetic (GCRA).
//! - [`reply`]: the bytes and checksums of the `reset` and `icmp` replies.
//! - `oracle` (host only): the differential check of the parser against
//!   etherparse, which the fuzzer runs.
//!
//! The crate is `no_std`. The `user` feature adds the host-only parts
//! (`aya::Pod` impls) that the agent needs.
#![cfg_attr(not(test), no_std)]

#[cfg(all(feature = "user", not(test)))]
extern crate std;

pub mod bytes;
pub mod classify;
#[cfg(any(test, feature = "craft"))]
pub mod craft;
pub mod frag;
pub mod maps;
#[cfg(any(test, feature = "oracle"))]
pub mod oracle;
pub mod parse;
pub mod rate;
pub mod reply;
