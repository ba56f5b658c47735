//! The maps, as the kernel programs declare them. Their layouts and meanings
//! are in `egress_guard_common::maps`; the agent pins them and sizes the hash
//! maps from the policy at load time.

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, PerCpuHashMap},
};
use egress_guard_common::maps::{
    ALLOW_CAPACITY, Config, DEFAULT_COUNTERS_CAPACITY, DEFAULT_IFACES_CAPACITY, FRAGS_CAPACITY,
    FragEntry, FragKey, IFACE_SLOT_COUNT, IfaceEntry, PORT_WORDS, REPLY_RATE_CAPACITY, VmStats,
};

use crate::pending::Pending;

/// The entries of interfaces whose ifindex is below `IFACE_SLOT_COUNT`,
/// indexed by it. Mmapable: the agent writes and scans it in place.
#[map(name = "EG_IFACE_SLOTS")]
pub static IFACE_SLOTS: Array<IfaceEntry> =
    Array::with_max_entries(IFACE_SLOT_COUNT, BPF_F_MMAPABLE);

/// The entries of interfaces with a larger ifindex.
///
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

/// Each VM's record (`stats::Stats`): counters, attempts, rate-limit
/// filters. Entries are created by the programs on a VM's first held-back
/// packet, so only VMs that tried cost memory (per CPU).
#[map(name = "EG_COUNTERS")]
pub static COUNTERS: PerCpuHashMap<u64, VmStats> =
    PerCpuHashMap::with_max_entries(DEFAULT_COUNTERS_CAPACITY, BPF_F_NO_PREALLOC);

/// The verdicts of fragmented datagrams (see `egress_guard_common::frag`).
/// Touched only by fragments. LRU: under a flood of fragments the oldest
/// datagrams are forgotten, and their later fragments held back as orphans.
#[map(name = "EG_FRAGS")]
pub static FRAGS: LruHashMap<FragKey, FragEntry> = LruHashMap::with_max_entries(FRAGS_CAPACITY, 0);

/// Per VM: the earliest time (ns) the next reply is due, for the reply rate
/// limit (a GCRA). Touched only when a reply is about to be sent.
#[map(name = "EG_REPLY_RATE")]
pub static REPLY_RATE: LruHashMap<u64, u64> = LruHashMap::with_max_entries(REPLY_RATE_CAPACITY, 0);

/// Per CPU: where values go through memory so that the verifier forgets
/// what it knew of them (see `guard::fence` and `PacketBytes::forget`).
#[repr(C)]
pub struct Scratch {
    /// The fast path's classification, as the slow path reads it back.
    pub pending: Pending,
    /// The parser's fence word.
    pub fence: u64,
}

/// One [`Scratch`] per CPU. Private to the programs: not pinned, not shared
/// with the agent.
#[map(name = "EG_SCRATCH")]
pub static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(1, 0);
