//! The host's side of the map ABI (the `user` feature): the one place that
//! decodes what the programs write and encodes what the agent writes.
//! Nothing outside this crate reads a byte offset of the ABI or compares a
//! bare code: it uses the types here.
//!
//! - `aya::Pod` for every map value, so aya reads and writes them whole;
//! - [`AttemptEvent::from_bytes`] for ring-buffer records;
//! - [`Verdict`], [`Mode`], [`Action`]: the codes of [`IfaceEntry::verdict`],
//!   [`Config::mode`] and [`Config::action`] as types;
//! - [`Reason`]: a counter's index with its name;
//! - [`fingerprint`]: the sizes and offsets of every type, which a test
//!   holds to [`LAYOUT_VERSION`](super::LAYOUT_VERSION).

use std::{format, string::String, vec::Vec};

use super::{
    ACTION_DROP, ACTION_ICMP, ACTION_RESET, AttemptEvent, Attempts, Config, Counters, FragEntry,
    FragKey, IfaceEntry, MODE_AUDIT, MODE_ENFORCE, VERDICT_ALLOW, VERDICT_BLOCK, VmStats, reason,
};

// SAFETY: plain #[repr(C)] integers and arrays with explicit padding; every
// bit pattern is a valid value.
unsafe impl aya::Pod for IfaceEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for Counters {}
// SAFETY: as above.
unsafe impl aya::Pod for FragKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FragEntry {}
// SAFETY: as above.
unsafe impl aya::Pod for AttemptEvent {}
// SAFETY: as above.
unsafe impl aya::Pod for Attempts {}
// SAFETY: as above.
unsafe impl aya::Pod for VmStats {}

impl AttemptEvent {
    /// One ring-buffer record; `None` unless it is exactly one event.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != core::mem::size_of::<Self>() {
            return None;
        }
        // SAFETY: the length is checked, the read is unaligned, and every
        // bit pattern is a valid `AttemptEvent` (see the `Pod` impl).
        Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<Self>()) })
    }

    /// Its bytes as the programs write them (for tests and replays).
    pub fn to_bytes(&self) -> Vec<u8> {
        // SAFETY: a #[repr(C)] value with no implicit padding, read as bytes.
        unsafe {
            core::slice::from_raw_parts(
                core::ptr::from_ref(self).cast::<u8>(),
                core::mem::size_of::<Self>(),
            )
        }
        .to_vec()
    }

    /// Whether the SYN passed because the policy is in audit mode.
    pub fn is_audit(&self) -> bool {
        self.flags & super::EVENT_AUDIT != 0
    }
}

/// An interface's verdict, as [`IfaceEntry::verdict`] holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Block,
}

impl Verdict {
    pub fn code(self) -> u32 {
        match self {
            Verdict::Allow => VERDICT_ALLOW,
            Verdict::Block => VERDICT_BLOCK,
        }
    }

    /// What the programs make of `code`: any value but allow is block.
    pub fn from_code(code: u32) -> Self {
        if code == VERDICT_ALLOW {
            Verdict::Allow
        } else {
            Verdict::Block
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Block => "block",
        }
    }
}

/// [`Config::mode`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Enforce,
    Audit,
}

impl Mode {
    pub fn code(self) -> u32 {
        match self {
            Mode::Enforce => MODE_ENFORCE,
            Mode::Audit => MODE_AUDIT,
        }
    }
}

/// [`Config::action`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Drop,
    Reset,
    Icmp,
}

impl Action {
    pub fn code(self) -> u32 {
        match self {
            Action::Drop => ACTION_DROP,
            Action::Reset => ACTION_RESET,
            Action::Icmp => ACTION_ICMP,
        }
    }
}

/// A counter's index in [`Counters`], with its name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reason(usize);

impl Reason {
    /// Every reason the programs count under, in index order.
    pub fn all() -> impl Iterator<Item = Reason> {
        reason::COUNTED.into_iter().map(Reason)
    }

    /// Whether a packet counted under it was held back (not: would have
    /// been, or a reply).
    pub fn is_held_back(self) -> bool {
        reason::HELD_BACK.contains(&self.0)
    }

    pub fn index(self) -> usize {
        self.0
    }

    pub fn name(self) -> &'static str {
        reason::NAMES[self.0]
    }
}

impl Counters {
    /// Packets and bytes held back, over [`reason::HELD_BACK`].
    pub fn held_back(&self) -> (u64, u64) {
        reason::HELD_BACK.iter().fold((0, 0), |(p, b), &r| {
            (
                p.wrapping_add(self.packets[r]),
                b.wrapping_add(self.bytes[r]),
            )
        })
    }
}

/// `Type size field@offset ...`: one line of [`fingerprint`].
macro_rules! layout {
    ($ty:ident $(, $field:ident)* $(; $extra:expr)?) => {{
        let mut line = format!("{} {}", stringify!($ty), core::mem::size_of::<$ty>());
        $(line.push_str(&format!(
            " {}@{}",
            stringify!($field),
            core::mem::offset_of!($ty, $field)
        ));)*
        $(line.push_str(&$extra);)?
        line
    }};
}

/// The size of every ABI type and the offset of each of its fields, as one
/// line each. A layout change shows here; a test holds it to the layout
/// version (`maps::tests`).
pub fn fingerprint() -> String {
    let lines = [
        layout!(IfaceEntry, vm_key, verdict, flags),
        layout!(
            Config,
            mode,
            action,
            generation,
            reply_interval_ns,
            reply_burst
        ),
        layout!(FragKey, ifindex, id, src, dst, version, proto),
        layout!(FragEntry, seen_ns, header_end, verdict, reason),
        layout!(Counters, packets, bytes; format!(" reasons {}", reason::COUNT)),
        layout!(
            AttemptEvent,
            ts_ns,
            vm_key,
            ifindex,
            src_port,
            dst_port,
            src,
            dst,
            family,
            flags
        ),
        layout!(Attempts, attempts, events, rate_limited, ring_full),
        layout!(VmStats, counters, attempts, event_due_ns, reply_due_ns),
    ];
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maps::LAYOUT_VERSION;

    /// The layout [`LAYOUT_VERSION`] names. Change a type of the ABI and
    /// this fails: bump `LAYOUT_VERSION` (pinned maps of the old layout are
    /// then never reused) and record the new fingerprint here with it.
    const RECORDED: (u32, &str) = (
        3,
        "IfaceEntry 16 vm_key@0 verdict@8 flags@12
Config 32 mode@0 action@4 generation@8 reply_interval_ns@16 reply_burst@24
FragKey 44 ifindex@0 id@4 src@8 dst@24 version@40 proto@41
FragEntry 16 seen_ns@0 header_end@8 verdict@10 reason@11
Counters 128 packets@0 bytes@64 reasons 8
AttemptEvent 64 ts_ns@0 vm_key@8 ifindex@16 src_port@20 dst_port@22 src@24 dst@40 family@56 flags@57
Attempts 32 attempts@0 events@8 rate_limited@16 ring_full@24
VmStats 176 counters@0 attempts@128 event_due_ns@160 reply_due_ns@168",
    );

    #[test]
    fn the_layout_version_moves_with_the_layout() {
        let now = fingerprint();
        assert_eq!(
            (LAYOUT_VERSION, now.as_str()),
            RECORDED,
            "the map ABI changed: bump maps::LAYOUT_VERSION and record this fingerprint with it:\n{now}"
        );
    }

    #[test]
    fn an_event_decodes_from_the_bytes_the_programs_write() {
        let event = AttemptEvent {
            ts_ns: 7,
            vm_key: 0x1122_3344_5566_7788,
            ifindex: 70_000,
            src_port: 40_000u16.to_be_bytes(),
            dst_port: 25u16.to_be_bytes(),
            src: [1; 16],
            dst: [2; 16],
            family: super::super::FAMILY_V6,
            flags: super::super::EVENT_AUDIT,
            pad: [0; 6],
        };
        let bytes = event.to_bytes();
        assert_eq!(bytes.len(), 64);
        assert_eq!(AttemptEvent::from_bytes(&bytes), Some(event));
        assert!(event.is_audit());
        assert_eq!(AttemptEvent::from_bytes(&bytes[..63]), None);
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(AttemptEvent::from_bytes(&longer), None);
    }

    #[test]
    fn codes_round_trip_and_unknown_verdicts_block() {
        for v in [Verdict::Allow, Verdict::Block] {
            assert_eq!(Verdict::from_code(v.code()), v);
        }
        assert_eq!(Verdict::from_code(0), Verdict::Block);
        assert_eq!(Verdict::from_code(99), Verdict::Block);
        assert_ne!(Mode::Enforce.code(), Mode::Audit.code());
        let actions = [Action::Drop, Action::Reset, Action::Icmp].map(Action::code);
        assert_eq!(actions, [ACTION_DROP, ACTION_RESET, ACTION_ICMP]);
    }

    #[test]
    fn held_back_is_the_policy_malformed_and_orphan_counters() {
        let names: Vec<&str> = Reason::all()
            .filter(|r| r.is_held_back())
            .map(Reason::name)
            .collect();
        assert_eq!(names, ["policy", "malformed", "orphan-fragment"]);
        assert_eq!(Reason::all().count(), 7);
        let mut c = Counters::default();
        for r in Reason::all() {
            c.packets[r.index()] = 1;
            c.bytes[r.index()] = 10;
        }
        assert_eq!(c.held_back(), (3, 30));
    }
}
