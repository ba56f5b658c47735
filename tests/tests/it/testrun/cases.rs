//! The vocabulary of the TestRun cases: a step (one packet and what must
//! become of it), a case (steps in order), and the frames they are made of.

#[allow(
    clippy::wildcard_imports,
    reason = "the TestRun vocabulary, shared by its modules"
)]
use super::*;

/// One packet of a case, what the programs must do with it on a blocked
/// interface, and the reason it is counted under.
pub(super) struct Step {
    pub(super) frame: Vec<u8>,
    pub(super) verdict: Verdict,
    pub(super) counted: Option<usize>,
}

/// A packet, or a sequence of fragments run in order.
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) steps: Vec<Step>,
}

pub(super) const HELD: Option<usize> = Some(reason::POLICY);
pub(super) const MALFORMED: Option<usize> = Some(reason::MALFORMED);
pub(super) const ORPHAN: Option<usize> = Some(reason::ORPHAN_FRAGMENT);

pub(super) fn pass(frame: Vec<u8>) -> Step {
    Step {
        frame,
        verdict: Verdict::Pass,
        counted: None,
    }
}

pub(super) fn drop(frame: Vec<u8>, why: Option<usize>) -> Step {
    Step {
        frame,
        verdict: Verdict::Drop,
        counted: why,
    }
}

pub(super) fn one(name: &'static str, step: Step) -> Case {
    Case {
        name,
        steps: vec![step],
    }
}

pub(super) fn seq(name: &'static str, steps: Vec<Step>) -> Case {
    Case { name, steps }
}

/// Sets the IPv4 total length (at its usual offset in an untagged frame).
pub(super) fn with_total_len(mut f: Vec<u8>, len: u16) -> Vec<u8> {
    f[16..18].copy_from_slice(&len.to_be_bytes());
    f
}

/// A later fragment: `offset` in 8-byte units, `len` bytes of payload.
pub(super) fn later4(id: u32, dport: u16, offset: u16, more: bool) -> Vec<u8> {
    Frame::tcp4(VM4, INTERNET4, 40000, dport)
        .fragment(id, offset, more)
        .payload(&[0x5a; 32])
        .build()
}

pub(super) fn later6(id: u32, offset: u16, more: bool) -> Vec<u8> {
    Frame::tcp6(VM6, INTERNET6, 40000, 25)
        .fragment(id, offset, more)
        .payload(&[0x5a; 32])
        .build()
}

/// A first fragment carrying a whole TCP header and 16 bytes of data.
pub(super) fn first4(id: u32, dst: [u8; 4], dport: u16) -> Vec<u8> {
    Frame::tcp4(VM4, dst, 40000, dport)
        .fragment(id, 0, true)
        .payload(&[0x5a; 16])
        .build()
}

pub(super) fn first6(id: u32, dport: u16) -> Vec<u8> {
    Frame::tcp6(VM6, INTERNET6, 40000, dport)
        .fragment(id, 0, true)
        .payload(&[0x5a; 16])
        .build()
}

pub(super) fn vlans(mut f: Frame, n: usize) -> Frame {
    for i in 0..n {
        f = if i % 2 == 0 {
            f.dot1ad(100 + i as u16)
        } else {
            f.dot1q(200 + i as u16)
        };
    }
    f
}

pub(super) fn ext6(mut f: Frame, n: usize) -> Frame {
    // Destination options, 8 bytes each (the walk treats every kind alike).
    for _ in 0..n {
        f = f.ipv6_ext(60, 8);
    }
    f
}
