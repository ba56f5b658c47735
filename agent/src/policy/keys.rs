//! The hashes a policy is known by: the sha256 of a file's bytes, and the
//! FNV-1a 64 keys of VMs and interfaces.
//!
//! Invariants: the keys are stable across runs and builds (the kernel's
//! per-VM counters are keyed by them, and survive a restart of the agent);
//! a VM's key and an interface's never meet, as they hash different
//! prefixes (`"vm:"`, `"if:"`).

use std::fmt;

use sha2::{Digest, Sha256};

/// The sha256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = String::with_capacity(64);
    for b in digest {
        use fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv1a64(parts: &[&[u8]]) -> u64 {
    let mut h = FNV_OFFSET;
    for part in parts {
        for b in *part {
            h ^= u64::from(*b);
            h = h.wrapping_mul(FNV_PRIME);
        }
    }
    h
}

/// Stable across runs and builds (FNV-1a 64 of `"vm:" + name`); keys the
/// per-VM counters in the kernel.
pub fn vm_key(name: &str) -> u64 {
    fnv1a64(&[b"vm:", name.as_bytes()])
}

/// Same for an interface that belongs to no VM (FNV-1a 64 of `"if:" + ifname`).
pub fn unknown_key(ifname: &str) -> u64 {
    fnv1a64(&[b"if:", ifname.as_bytes()])
}

/// The hash an interface name is found by in the policy's tables.
pub(crate) fn name_hash(name: &str) -> u64 {
    fnv1a64(&[name.as_bytes()])
}
