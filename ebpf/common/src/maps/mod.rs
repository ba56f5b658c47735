//! The BPF maps shared by the kernel programs and the agent.
//!
//! Every value type is `#[repr(C)]` with explicit padding, so that its layout is
//! the same in the kernel object and in the agent, and no byte of it is
//! uninitialised when the agent writes it.
//!
//! Map names are at most 15 bytes (the kernel's `BPF_OBJ_NAME_LEN` less the NUL).
//!
//! | map | type | key | value | written by |
//! |---|---|---|---|---|
//! | [`IFACE_SLOTS`] | array[65536], mmapable | ingress ifindex (`u32`) below [`IFACE_SLOT_COUNT`] | [`IfaceEntry`] | agent |
//! | [`IFACES`] | hash | ingress ifindex (`u32`) from [`IFACE_SLOT_COUNT`] on | [`IfaceEntry`] | agent |
//! | [`CONFIG`] | array[1] | `0u32` | [`Config`] | agent |
//! | [`PORTS`] | array[1024] | port / 64 | bitmap word (`u64`) | agent |
//! | [`ALLOW_V4`] | LPM trie | prefix + `[u8; 4]` | `u8` (1) | agent |
//! | [`ALLOW_V6`] | LPM trie | prefix + `[u8; 16]` | `u8` (1) | agent |
//! | [`COUNTERS`] | per-CPU hash | VM key (`u64`) | [`VmStats`] | kernel |
//! | [`FRAGS`] | LRU hash | [`FragKey`] | [`FragEntry`] | kernel |
//! | [`REPLY_RATE`] | LRU hash | VM key (`u64`) | next reply time (`u64`, ns) | kernel |
//! | [`EVENTS`] | ring buffer | - | [`AttemptEvent`] records | kernel (read by the agent) |
//! | [`EVENT_RATE`] | LRU hash | VM key (`u64`) | next event time (`u64`, ns) | kernel |

/// Version of the layout of every map in this module. Pinned maps live in a
/// directory named after it, so an agent never reuses a pinned map whose layout
/// it does not know. Bump it whenever a type, a key, a map type or a map's
/// meaning here changes.
pub const LAYOUT_VERSION: u32 = 3;

/// Ingress ifindex (below [`IFACE_SLOT_COUNT`]) -> what to do with packets
/// arriving there: an array the programs index directly, the agent writes
/// through a mapping of it. An entry whose verdict is 0 is no entry.
pub const IFACE_SLOTS: &str = "EG_IFACE_SLOTS";
/// Ingress ifindex (from [`IFACE_SLOT_COUNT`] on) -> what to do with
/// packets arriving there. Interface indexes grow as interfaces come and go
/// (a VM start is a new tap); those beyond the array are looked up here.
pub const IFACES: &str = "EG_IFACES";
/// Global settings of the policy in force (one entry, index 0).
pub const CONFIG: &str = "EG_CONFIG";
/// Held TCP destination ports, as a 65536-bit bitmap in 1024 `u64` words.
pub const PORTS: &str = "EG_PORTS";
/// IPv4 destinations the held ports are never held back towards.
pub const ALLOW_V4: &str = "EG_ALLOW_V4";
/// IPv6 destinations the held ports are never held back towards.
pub const ALLOW_V6: &str = "EG_ALLOW_V6";
/// Per-VM, per-reason counters of what was held back.
pub const COUNTERS: &str = "EG_COUNTERS";

/// The verdicts of fragmented datagrams, decided on their first fragment
/// and followed by their later fragments.
pub const FRAGS: &str = "EG_FRAGS";
/// Per-VM state of the reply rate limit (the `reset` and `icmp` actions).
pub const REPLY_RATE: &str = "EG_REPLY_RATE";

/// Blocked connection attempts, one [`AttemptEvent`] a record, for the
/// agent to log.
pub const EVENTS: &str = "EG_EVENTS";
/// Per-VM state of the event rate limit.
pub const EVENT_RATE: &str = "EG_EVENT_RATE";

/// Every shared map, in the order the agent checks and pins them.
pub const ALL: [&str; 11] = [
    IFACE_SLOTS,
    IFACES,
    CONFIG,
    PORTS,
    ALLOW_V4,
    ALLOW_V6,
    COUNTERS,
    FRAGS,
    REPLY_RATE,
    EVENTS,
    EVENT_RATE,
];

/// Entries of [`IFACE_SLOTS`]: interfaces with a smaller ifindex cost the
/// programs an array lookup, not a hash lookup. 1 MiB.
pub const IFACE_SLOT_COUNT: u32 = 65536;

/// Number of `u64` words in the [`PORTS`] bitmap.
pub const PORT_WORDS: u32 = 1024;

/// Default capacity of [`IFACES`]; the agent sizes it from the policy.
pub const DEFAULT_IFACES_CAPACITY: u32 = 4096;
/// Default capacity of [`COUNTERS`]; the agent sizes it from the policy.
pub const DEFAULT_COUNTERS_CAPACITY: u32 = 4096;
/// Capacity of each allowed-destination trie.
pub const ALLOW_CAPACITY: u32 = 16384;
/// Fragmented datagrams remembered at once (LRU: a flood of fragments evicts
/// the oldest, whose later fragments are then held back as orphans).
pub const FRAGS_CAPACITY: u32 = 32768;
/// VMs whose reply rate is tracked at once (LRU: a VM evicted starts again
/// with a full burst).
pub const REPLY_RATE_CAPACITY: u32 = 16384;

/// The word of the [`PORTS`] bitmap that holds `port`, and the bit in it.
#[inline(always)]
pub const fn port_slot(port: u16) -> (u32, u64) {
    ((port >> 6) as u32, 1u64 << (port & 63))
}

/// Verdict stored in [`IfaceEntry::verdict`]. Any other value, and an
/// interface with no entry, is treated as [`VERDICT_BLOCK`].
pub const VERDICT_ALLOW: u32 = 1;
/// The VM behind this interface is held back on the held ports.
pub const VERDICT_BLOCK: u32 = 2;

/// What the programs do with packets arriving on one interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct IfaceEntry {
    /// The VM (or unknown interface) this interface belongs to; the key of
    /// its [`COUNTERS`] entry. Stable across interface re-creation.
    pub vm_key: u64,
    /// [`VERDICT_ALLOW`] or [`VERDICT_BLOCK`].
    pub verdict: u32,
    /// Reserved, zero.
    pub flags: u32,
}

/// `Config::mode`: hold back what the policy says.
pub const MODE_ENFORCE: u32 = 0;
/// `Config::mode`: count and report what would be held back, hold nothing.
pub const MODE_AUDIT: u32 = 1;

/// `Config::action`: drop the packet.
pub const ACTION_DROP: u32 = 0;
/// `Config::action`: answer a SYN with a TCP RST, drop other segments.
pub const ACTION_RESET: u32 = 1;
/// `Config::action`: answer with ICMP / ICMPv6 administratively prohibited.
pub const ACTION_ICMP: u32 = 2;

/// Replies (RST or ICMP) a VM gets per second at most, on average...
pub const DEFAULT_REPLY_RATE: u64 = 20;
/// ... and in a burst.
pub const DEFAULT_REPLY_BURST: u32 = 40;

/// Global settings, in [`CONFIG`] at index 0.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Config {
    /// [`MODE_ENFORCE`] or [`MODE_AUDIT`].
    pub mode: u32,
    /// [`ACTION_DROP`], [`ACTION_RESET`] or [`ACTION_ICMP`].
    pub action: u32,
    /// Generation of the policy in force (for `status` and metrics).
    pub generation: u64,
    /// One reply per this many nanoseconds per VM, on average (0: no
    /// replies at all, the held-back packets are only dropped).
    pub reply_interval_ns: u64,
    /// How many replies a VM may get in a burst beyond that rate.
    pub reply_burst: u32,
    /// Reserved, zero.
    pub reserved: u32,
}

impl Config {
    /// The reply rate limit for `per_second` replies a second on average
    /// and `burst` at once.
    #[must_use]
    pub const fn with_reply_rate(mut self, per_second: u64, burst: u32) -> Self {
        // Rate 0: no replies at all.
        self.reply_interval_ns = match 1_000_000_000u64.checked_div(per_second) {
            Some(interval) => interval,
            None => 0,
        };
        self.reply_burst = burst;
        self
    }
}

/// `IpVersion` values in [`FragKey::version`].
pub const FRAG_V4: u8 = 4;
pub const FRAG_V6: u8 = 6;

/// One fragmented datagram: what its receiver reassembles it by (source,
/// destination, identification and, for IPv4, protocol), scoped to the
/// interface it came in on.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Hash)]
pub struct FragKey {
    /// The ingress ifindex: a datagram's verdict belongs to the VM whose
    /// interface sent its first fragment.
    pub ifindex: u32,
    /// The identification (16 bits in IPv4, 32 in IPv6).
    pub id: u32,
    /// Source address (IPv4 in the first 4 bytes, the rest zero).
    pub src: [u8; 16],
    /// Destination address (IPv4 in the first 4 bytes, the rest zero).
    pub dst: [u8; 16],
    /// [`FRAG_V4`] or [`FRAG_V6`].
    pub version: u8,
    /// IPv4's protocol field. Zero for IPv6, whose receivers reassemble by
    /// addresses and identification alone (RFC 8200 4.5).
    pub proto: u8,
    /// Reserved, zero.
    pub pad: [u8; 2],
}

/// `FragEntry::verdict`: the datagram passes.
pub const FRAG_PASS: u8 = 1;
/// `FragEntry::verdict`: the datagram is held back, every fragment of it.
pub const FRAG_HELD: u8 = 2;

/// What was decided about a fragmented datagram.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FragEntry {
    /// When it was decided (`bpf_ktime_get_ns`). An entry older than
    /// [`FRAG_LIFETIME_NS`] is stale: its datagram's receiver has given up
    /// reassembling it, and its identification may be in use again.
    pub seen_ns: u64,
    /// Bytes of the fragmentable part that hold headers (up to the end of
    /// the TCP header). A later fragment that starts inside them overlaps
    /// them.
    pub header_end: u16,
    /// [`FRAG_PASS`] or [`FRAG_HELD`].
    pub verdict: u8,
    /// For [`FRAG_HELD`]: the reason its fragments are counted under.
    pub reason: u8,
    /// Reserved, zero.
    pub pad: u32,
}

/// How long a datagram's verdict is kept: the longest reassembly timeout of
/// common receivers (Linux: 30 s for IPv4, 60 s for IPv6).
pub const FRAG_LIFETIME_NS: u64 = 60_000_000_000;

/// Why a packet was counted: the index into [`Counters`].
pub mod reason {
    /// A TCP segment to a held port from a blocked VM.
    pub const POLICY: usize = 0;
    /// Could be such a segment, but could not be parsed far enough to tell.
    pub const MALFORMED: usize = 1;
    /// A later IP fragment of TCP whose first fragment is not known.
    pub const ORPHAN_FRAGMENT: usize = 2;
    /// Would have been held back, but the policy is in audit mode.
    pub const AUDIT: usize = 3;
    /// A TCP RST was sent back to the VM.
    pub const RESET_SENT: usize = 4;
    /// An ICMP unreachable was sent back to the VM.
    pub const ICMP_SENT: usize = 5;
    /// A reply was not sent because the VM exceeded its reply rate.
    pub const RATE_LIMITED: usize = 6;
    /// Number of reasons (one spare slot).
    pub const COUNT: usize = 8;
    /// Every reason the programs count under, in index order (the spare
    /// slot is not one).
    pub const COUNTED: [usize; 7] = [
        POLICY,
        MALFORMED,
        ORPHAN_FRAGMENT,
        AUDIT,
        RESET_SENT,
        ICMP_SENT,
        RATE_LIMITED,
    ];
    /// The reasons under which a packet was actually held back: `status`'s
    /// "held back" total. (Audit counts what would have been; the reply
    /// reasons count replies, whose segments are also under `POLICY`.)
    pub const HELD_BACK: [usize; 3] = [POLICY, MALFORMED, ORPHAN_FRAGMENT];
    /// Names used by `status` and metrics, by index.
    pub const NAMES: [&str; COUNT] = [
        "policy",
        "malformed",
        "orphan-fragment",
        "audit",
        "reset-sent",
        "icmp-sent",
        "rate-limited",
        "reserved",
    ];
}

/// Packets and bytes per reason, for one VM, on one CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    pub packets: [u64; reason::COUNT],
    pub bytes: [u64; reason::COUNT],
}

impl Counters {
    /// Adds `other` into `self` (the agent sums the per-CPU values).
    pub fn add(&mut self, other: &Counters) {
        for i in 0..reason::COUNT {
            self.packets[i] = self.packets[i].wrapping_add(other.packets[i]);
            self.bytes[i] = self.bytes[i].wrapping_add(other.bytes[i]);
        }
    }
}

/// Bytes of the [`EVENTS`] ring buffer: about 3,600 events (each takes 72
/// bytes with the kernel's record header) wait there while the agent is
/// slow or not running.
pub const EVENTS_BYTES: u32 = 256 * 1024;
/// Events a VM may send on average: one per this many nanoseconds (2 a
/// second)...
pub const EVENT_INTERVAL_NS: u64 = 500_000_000;
/// ... and at once, beyond that rate.
pub const EVENT_BURST: u64 = 10;
/// VMs whose event rate is tracked at once (LRU: a VM evicted starts again
/// with a full burst).
pub const EVENT_RATE_CAPACITY: u32 = 16384;

/// `AttemptEvent::family`.
pub const FAMILY_V4: u8 = 4;
pub const FAMILY_V6: u8 = 6;

/// `AttemptEvent::flags`: the policy is in audit mode, the SYN passed.
pub const EVENT_AUDIT: u8 = 1;

/// One blocked connection attempt: a TCP SYN (without ACK) to a held port
/// from a blocked VM, as the programs saw it. Addresses and ports are in
/// network byte order as they were in the packet; IPv4 addresses take the
/// first 4 bytes, the rest is zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct AttemptEvent {
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) when the SYN arrived.
    pub ts_ns: u64,
    /// The VM's key (as in [`IfaceEntry::vm_key`]).
    pub vm_key: u64,
    /// The ingress ifindex.
    pub ifindex: u32,
    /// Source port, network byte order.
    pub src_port: [u8; 2],
    /// Destination port, network byte order.
    pub dst_port: [u8; 2],
    pub src: [u8; 16],
    pub dst: [u8; 16],
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
    /// [`EVENT_AUDIT`] or 0.
    pub flags: u8,
    /// Reserved, zero.
    pub pad: [u8; 6],
}

/// Per VM, on one CPU: its blocked connection attempts and what became of
/// the events about them. `attempts == events + rate_limited + ring_full`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Attempts {
    /// SYNs to a held port from the blocked VM (in audit mode: that would
    /// have been held back).
    pub attempts: u64,
    /// Events written to [`EVENTS`].
    pub events: u64,
    /// Events not sent: the VM was over its event rate.
    pub rate_limited: u64,
    /// Events not sent: the ring buffer was full (the agent was slow, or not
    /// running).
    pub ring_full: u64,
}

/// Everything the programs keep about one VM on one CPU, in one per-CPU
/// hash entry ([`COUNTERS`]): a held-back packet makes one lookup for all of
/// it.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct VmStats {
    pub counters: Counters,
    pub attempts: Attempts,
    /// This CPU's filter in front of the VM's event rate limit (a GCRA, as
    /// [`EVENT_RATE`]'s): the earliest time (ns, the coarse monotonic clock)
    /// the next event is due from this CPU. An event must pass it and then
    /// the VM's shared limit: a flood on one CPU is turned away here without
    /// a lookup of the shared state.
    pub event_due_ns: u64,
    /// The same, in front of [`REPLY_RATE`].
    pub reply_due_ns: u64,
}

impl Attempts {
    /// Adds `other` into `self` (the agent sums the per-CPU values).
    pub fn add(&mut self, other: &Attempts) {
        self.attempts = self.attempts.wrapping_add(other.attempts);
        self.events = self.events.wrapping_add(other.events);
        self.rate_limited = self.rate_limited.wrapping_add(other.rate_limited);
        self.ring_full = self.ring_full.wrapping_add(other.ring_full);
    }

    /// Events not delivered, for either cause.
    pub fn lost(&self) -> u64 {
        self.rate_limited.wrapping_add(self.ring_full)
    }
}

#[cfg(feature = "user")]
pub mod user;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_names_fit_the_kernel_limit() {
        for name in ALL {
            assert!(name.len() <= 15, "{name} is longer than 15 bytes");
        }
    }

    #[test]
    fn layouts_have_no_implicit_padding() {
        assert_eq!(core::mem::size_of::<IfaceEntry>(), 16);
        assert_eq!(core::mem::size_of::<Config>(), 32);
        assert_eq!(core::mem::size_of::<FragKey>(), 44);
        assert_eq!(core::mem::size_of::<FragEntry>(), 16);
        assert_eq!(core::mem::size_of::<Counters>(), 16 * reason::COUNT);
        assert_eq!(core::mem::size_of::<AttemptEvent>(), 64);
        assert_eq!(core::mem::align_of::<AttemptEvent>(), 8);
        assert_eq!(core::mem::size_of::<Attempts>(), 32);
        assert_eq!(
            core::mem::size_of::<VmStats>(),
            16 * reason::COUNT + 32 + 16
        );
    }

    #[test]
    fn port_slots_cover_every_port_once() {
        assert_eq!(port_slot(0), (0, 1));
        assert_eq!(port_slot(25), (0, 1 << 25));
        assert_eq!(port_slot(64), (1, 1));
        assert_eq!(port_slot(587), (9, 1 << (587 - 576)));
        assert_eq!(port_slot(u16::MAX), (PORT_WORDS - 1, 1 << 63));
    }
}
