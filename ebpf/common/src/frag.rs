//! Fragment tracking: what a fragment's datagram was decided to be, and what
//! to remember, as pure functions of the remembered entry (the kernel
//! programs do the map lookups and updates around them).
//!
//! The rules:
//!
//! - **The first fragment decides.** It holds the whole transport header (a
//!   first fragment that does not is held back), so it is judged like a whole
//!   packet, and the verdict is remembered for its datagram (source,
//!   destination, identification, IPv4 protocol, interface).
//! - **Held once, held for the datagram.** A datagram with a held fragment is
//!   held from then on: a duplicate or overlapping first fragment that would
//!   pass is held too, and so is every later fragment. A verdict to pass is
//!   replaced by one to hold, never the reverse.
//! - **Later fragments follow.** A later fragment of a passing datagram
//!   passes, unless it starts inside the headers its first fragment carried
//!   (it overlaps them: RFC 1858, RFC 5722); then it and its datagram are
//!   held.
//! - **Orphans are held.** A later fragment whose datagram is unknown (its
//!   first fragment has not been seen, or is forgotten) is held back when it
//!   may belong to TCP, and its datagram with it (it cannot be reassembled
//!   without it anyway).
//! - **Verdicts expire** after [`FRAG_LIFETIME_NS`], when every receiver has
//!   given up reassembling the datagram, so that a reused identification
//!   starts afresh.
//!
//! Ports only ever come from an offset-0 fragment (a fragment offset counts
//! in 8-byte units, and the ports are the first 4 bytes of the TCP header),
//! and every offset-0 fragment is judged on its own. No order, overlap or
//! duplication of later fragments can therefore turn a held datagram into a
//! passing one at the receiver: the rules above only make sure that the rest
//! of a held datagram is not sent on for nothing, and that a receiver whose
//! reassembly lets later data overwrite earlier headers gets nothing to work
//! with.

use crate::maps::{FRAG_HELD, FRAG_LIFETIME_NS, FRAG_PASS, FragEntry};

/// In place of a reason (`reason::*` as `u8`): the fragment passes.
pub const PASSES: u8 = u8::MAX;

/// What to do with a fragment, and what to remember about its datagram.
/// (Plain fields, every one set on every path: see `parse::Parsed`.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FragOutcome {
    /// The reason to hold the fragment back under, or [`PASSES`].
    pub held: u8,
    /// Whether to write [`FragOutcome::entry`] for the datagram (otherwise
    /// leave it as it is).
    pub store: bool,
    pub entry: FragEntry,
}

impl FragOutcome {
    #[inline(always)]
    const fn keep(held: u8) -> Self {
        Self {
            held,
            store: false,
            entry: FragEntry {
                seen_ns: 0,
                header_end: 0,
                verdict: 0,
                reason: 0,
                pad: 0,
            },
        }
    }

    #[inline(always)]
    const fn hold(now: u64, reason: u8) -> Self {
        Self {
            held: reason,
            store: true,
            entry: FragEntry {
                seen_ns: now,
                header_end: 0,
                verdict: FRAG_HELD,
                reason,
                pad: 0,
            },
        }
    }
}

/// Whether `entry` still stands at `now`.
#[inline(always)]
pub fn is_live(entry: &FragEntry, now: u64) -> bool {
    now.wrapping_sub(entry.seen_ns) < FRAG_LIFETIME_NS
}

/// A first fragment (offset 0, more to come), judged on its own as held
/// (`held`: a reason) or passing ([`PASSES`]), whose headers take
/// `header_end` bytes of the fragmentable part.
#[inline(always)]
pub fn first_fragment(
    existing: Option<&FragEntry>,
    now: u64,
    held: u8,
    header_end: u16,
) -> FragOutcome {
    let live = existing.filter(|e| is_live(e, now));
    if let Some(e) = live
        && e.verdict == FRAG_HELD
    {
        // Held once, held for the datagram.
        return FragOutcome::keep(e.reason);
    }
    if held != PASSES {
        return FragOutcome::hold(now, held);
    }
    // A duplicate first fragment that passes too: keep the widest header
    // region, so that the overlap check covers both.
    let header_end = match live {
        Some(e) if e.header_end > header_end => e.header_end,
        _ => header_end,
    };
    FragOutcome {
        held: PASSES,
        store: true,
        entry: FragEntry {
            seen_ns: now,
            header_end,
            verdict: FRAG_PASS,
            reason: 0,
            pad: 0,
        },
    }
}

/// A later fragment starting `offset` bytes into the fragmentable part.
/// `orphan`: the reason to hold it under when its datagram is unknown
/// ([`PASSES`]: let it pass, it cannot carry a held segment).
/// `overlap`: the reason to hold it under when it overlaps the headers.
#[inline(always)]
pub fn later_fragment(
    existing: Option<&FragEntry>,
    now: u64,
    offset: u16,
    orphan: u8,
    overlap: u8,
) -> FragOutcome {
    match existing.filter(|e| is_live(e, now)) {
        Some(e) if e.verdict == FRAG_HELD => FragOutcome::keep(e.reason),
        Some(e) => {
            if offset < e.header_end {
                FragOutcome::hold(now, overlap)
            } else {
                FragOutcome::keep(PASSES)
            }
        }
        None if orphan != PASSES => FragOutcome::hold(now, orphan),
        None => FragOutcome::keep(PASSES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: u8 = 0;
    const MALFORMED: u8 = 1;
    const ORPHAN: u8 = 2;
    const T: u64 = 1_000_000_000_000;

    fn pass(now: u64, header_end: u16) -> FragEntry {
        FragEntry {
            seen_ns: now,
            header_end,
            verdict: FRAG_PASS,
            reason: 0,
            pad: 0,
        }
    }

    fn stored(outcome: FragOutcome) -> FragEntry {
        assert!(outcome.store, "{outcome:?} should store an entry");
        outcome.entry
    }

    #[test]
    fn the_first_fragment_decides_and_later_ones_follow() {
        let first = first_fragment(None, T, PASSES, 20);
        assert_eq!(first.held, PASSES);
        let entry = stored(first);
        assert_eq!(entry, pass(T, 20));
        let later = later_fragment(Some(&entry), T + 1, 1480, ORPHAN, MALFORMED);
        assert_eq!((later.held, later.store), (PASSES, false));

        let held = first_fragment(None, T, POLICY, 20);
        assert_eq!(held.held, POLICY);
        let entry = stored(held);
        let later = later_fragment(Some(&entry), T + 1, 1480, ORPHAN, MALFORMED);
        assert_eq!(later.held, POLICY);
    }

    #[test]
    fn held_once_held_for_the_datagram() {
        let held = stored(first_fragment(None, T, POLICY, 20));
        // A duplicate first fragment that would pass on its own.
        let dup = first_fragment(Some(&held), T + 5, PASSES, 20);
        assert_eq!((dup.held, dup.store), (POLICY, false));
        // A passing datagram turns held when a held first fragment comes.
        let passing = pass(T, 20);
        let now_held = first_fragment(Some(&passing), T + 5, POLICY, 20);
        assert_eq!(now_held.held, POLICY);
        assert_eq!(stored(now_held).verdict, FRAG_HELD);
    }

    #[test]
    fn a_later_fragment_inside_the_headers_overlaps_them() {
        let passing = pass(T, 28);
        let overlap = later_fragment(Some(&passing), T + 1, 8, ORPHAN, MALFORMED);
        assert_eq!(overlap.held, MALFORMED);
        let after = later_fragment(Some(&stored(overlap)), T + 2, 1480, PASSES, MALFORMED);
        assert_eq!(after.held, MALFORMED, "the rest of the datagram follows");
        // Duplicate passing first fragments keep the widest header region.
        let widened = stored(first_fragment(Some(&passing), T + 1, PASSES, 20));
        assert_eq!(widened.header_end, 28);
    }

    #[test]
    fn orphans_are_held_when_they_may_be_tcp() {
        let orphan = later_fragment(None, T, 1480, ORPHAN, MALFORMED);
        assert_eq!(orphan.held, ORPHAN);
        // The first fragment, out of order, finds its datagram held.
        let first = first_fragment(Some(&stored(orphan)), T + 1, PASSES, 20);
        assert_eq!(first.held, ORPHAN);
        let free = later_fragment(None, T, 1480, PASSES, MALFORMED);
        assert_eq!((free.held, free.store), (PASSES, false));
    }

    #[test]
    fn verdicts_expire() {
        let held = stored(first_fragment(None, T, POLICY, 20));
        let later = T + FRAG_LIFETIME_NS;
        let reused = first_fragment(Some(&held), later, PASSES, 20);
        assert_eq!(reused.held, PASSES);
        assert_eq!(stored(reused).seen_ns, later);
        // A stale passing entry does not vouch for an orphan.
        let stale = pass(T, 20);
        assert_eq!(
            later_fragment(Some(&stale), later, 1480, ORPHAN, MALFORMED).held,
            ORPHAN
        );
    }
}
