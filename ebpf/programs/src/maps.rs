//! The maps, as the kernel programs declare them. Their layouts and meanings
//! are in `egress_guard_common::maps`; the agent pins them and sizes the hash
//! maps from the policy at load time.

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{Array, HashMap, LpmTrie, PerCpuHashMap},
};
use egress_guard_common::maps::{
    ALLOW_CAPACITY, Config, Counters, DEFAULT_COUNTERS_CAPACITY, DEFAULT_IFACES_CAPACITY,
    IfaceEntry, PORT_WORDS,
};

/// Not preallocated: an entry replaced by the agent is freed only after an RCU
/// grace period, so a program that looked it up never reads a recycled
/// element (preallocated hash maps reuse them at once).
#[map(name = "EG_IFACES")]
pub static IFACES: HashMap<u32, IfaceEntry> =
    HashMap::with_max_entries(DEFAULT_IFACES_CAPACITY, BPF_F_NO_PREALLOC);

#[map(name = "EG_CONFIG")]
pub static CONFIG: Array<Config> = Array::with_max_entries(1, 0);

#[map(name = "EG_PORTS")]
pub static PORTS: Array<u64> = Array::with_max_entries(PORT_WORDS, 0);

#[map(name = "EG_ALLOW_V4")]
pub static ALLOW_V4: LpmTrie<[u8; 4], u8> = LpmTrie::with_max_entries(ALLOW_CAPACITY, 0);

#[map(name = "EG_ALLOW_V6")]
pub static ALLOW_V6: LpmTrie<[u8; 16], u8> = LpmTrie::with_max_entries(ALLOW_CAPACITY, 0);

/// Entries are created by the programs on a VM's first held-back packet, so
/// only VMs that tried cost memory (per CPU).
#[map(name = "EG_COUNTERS")]
pub static COUNTERS: PerCpuHashMap<u64, Counters> =
    PerCpuHashMap::with_max_entries(DEFAULT_COUNTERS_CAPACITY, BPF_F_NO_PREALLOC);
