//! The differential check of the parser against an independent one
//! (etherparse), shared by the fuzzer (`ebpf/common/fuzz`) and the
//! replay of its regression corpus in this crate's tests.
//!
//! Both answer one question about a frame from a blocked interface: is it a
//! TCP segment to a held port? [`check`] holds the parser to two rules
//! wherever etherparse has an answer:
//!
//! - **never fail open**: a frame etherparse reads as a TCP segment to a held
//!   port is held back (as such a segment, or as unparseable);
//! - **never hold back what is legitimate**: a frame etherparse reads whole as
//!   something else (another port, UDP, ICMP, not IP) passes.
//!
//! The parser is deliberately stricter than etherparse on shapes no
//! legitimate sender makes, which it holds back whatever follows them
//! ([`DELIBERATELY_HELD`]).
//!
//! Where etherparse has no answer, nothing is compared: it rejects the frame
//! (truncated, inconsistent lengths), stops before the end of the headers
//! (more than 3 VLAN tags, a repeated IPv6 extension header, an unknown one),
//! the datagram is a fragment (the verdict then depends on fragment state),
//! or it is inside MACsec (a tunnel, like GRE or IP-in-IP, which the parser
//! does not open and etherparse only opens for MACsec).
//!
//! Host only (feature `oracle`, or this crate's tests).

extern crate std;

use std::{format, string::String};

use etherparse::{EtherType, IpNumber, LinkExtSlice, NetSlice, SlicedPacket, TransportSlice};

use crate::{
    classify::{ClassKind, classify},
    parse::{Malformed, is_ipv6_extension, parse},
};

/// The held port the check uses.
pub const HELD_PORT: u16 = 25;

/// Why the parser holds back frames that etherparse may read whole, on
/// purpose:
///
/// - [`Malformed::NestedFragment`]: a second IPv6 fragment header (RFC 8200
///   4.1 allows one). A receiver that reassembles twice could be handed a
///   TCP header the parser never saw.
/// - [`Malformed::Ipv6ChainTooLong`], [`Malformed::VlanTooDeep`],
///   [`Malformed::TooLong`]: beyond the walk's bounds (8 extension headers,
///   8 tags, headers within 2 KiB), whatever follows cannot be seen: held.
pub const DELIBERATELY_HELD: [Malformed; 4] = [
    Malformed::NestedFragment,
    Malformed::Ipv6ChainTooLong,
    Malformed::VlanTooDeep,
    Malformed::TooLong,
];

/// What etherparse makes of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reference {
    /// A whole, unfragmented TCP segment to this destination port.
    TcpTo(u16),
    /// Read whole, and not TCP (or not IP).
    NotTcp,
    /// No answer (see the module documentation).
    Unknown,
}

/// etherparse's reading of `frame`.
pub fn reference(frame: &[u8]) -> Reference {
    let Ok(p) = SlicedPacket::from_ethernet(frame) else {
        return Reference::Unknown;
    };
    if p.link_exts
        .iter()
        .any(|e| matches!(e, LinkExtSlice::Macsec(_)))
    {
        return Reference::Unknown;
    }
    let ip = match &p.net {
        Some(NetSlice::Ipv4(ip)) => ip.payload(),
        Some(NetSlice::Ipv6(ip)) => ip.payload(),
        Some(NetSlice::Arp(_)) => return Reference::NotTcp,
        None => {
            // Where etherparse stopped: after its last VLAN tag, or the
            // Ethernet header.
            let ether_type = match p.link_exts.last() {
                Some(ext) => ext.ether_payload().map(|e| e.ether_type),
                None => p
                    .link
                    .as_ref()
                    .and_then(etherparse::LinkSlice::ether_payload)
                    .map(|e| e.ether_type),
            };
            return match ether_type {
                Some(
                    EtherType::IPV4
                    | EtherType::IPV6
                    | EtherType::VLAN_TAGGED_FRAME
                    | EtherType::PROVIDER_BRIDGING
                    | EtherType::VLAN_DOUBLE_TAGGED_FRAME,
                ) => Reference::Unknown,
                _ => Reference::NotTcp,
            };
        }
    };
    if ip.fragmented {
        return Reference::Unknown;
    }
    match &p.transport {
        Some(TransportSlice::Tcp(tcp)) => Reference::TcpTo(tcp.destination_port()),
        Some(_) => Reference::NotTcp,
        None => {
            let next = ip.ip_number;
            if next == IpNumber::TCP
                || next == IpNumber::AUTHENTICATION_HEADER
                || is_ipv6_extension(next.0)
            {
                // TCP it could not read, or a header chain it did not follow.
                Reference::Unknown
            } else {
                Reference::NotTcp
            }
        }
    }
}

/// Checks the parser against etherparse on `frame`; the error says how they
/// disagree.
pub fn check(frame: &[u8]) -> Result<(), String> {
    let ours = classify(frame, &parse(frame), |port| port == HELD_PORT);
    if ours.why.is_some_and(|why| DELIBERATELY_HELD.contains(&why)) {
        return Ok(());
    }
    let held = matches!(
        ours.kind,
        ClassKind::HeldPort | ClassKind::Unparseable | ClassKind::LaterFragment
    );
    match reference(frame) {
        Reference::TcpTo(HELD_PORT) if !held => Err(format!(
            "etherparse reads a TCP segment to port {HELD_PORT}, the parser lets it pass: {ours:?}"
        )),
        Reference::TcpTo(port) if port != HELD_PORT && ours.kind != ClassKind::Pass => Err(
            format!("etherparse reads TCP to port {port}, the parser holds it: {ours:?}"),
        ),
        Reference::NotTcp if ours.kind != ClassKind::Pass => Err(format!(
            "etherparse reads no TCP segment, the parser holds it: {ours:?}"
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::{fs, path::Path, vec::Vec};

    use super::*;
    use crate::craft::{Frame, addr::*};

    #[test]
    fn the_oracle_reads_the_plain_shapes() {
        let syn = Frame::tcp4(VM4, INTERNET4, 40000, 25).build();
        assert_eq!(reference(&syn), Reference::TcpTo(25));
        let udp = Frame::udp6(VM6, INTERNET6, 40000, 25).build();
        assert_eq!(reference(&udp), Reference::NotTcp);
        assert_eq!(reference(&Frame::arp()), Reference::NotTcp);
        let later = Frame::tcp4(VM4, INTERNET4, 40000, 25)
            .fragment(1, 8, false)
            .payload(&[0; 8])
            .build();
        assert_eq!(reference(&later), Reference::Unknown);
        let mut deep = Frame::tcp4(VM4, INTERNET4, 40000, 25);
        for vid in 0..4 {
            deep = deep.dot1q(vid);
        }
        assert_eq!(reference(&deep.build()), Reference::Unknown);
        for frame in [syn, udp, later, deep.build()] {
            check(&frame).unwrap();
        }
    }

    fn files(dir: &str) -> Vec<std::path::PathBuf> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(
            files.len() >= 40,
            "only {} files in {}",
            files.len(),
            dir.display()
        );
        files
    }

    /// The fuzzer's inputs replayed on stable Rust: the named seeds and
    /// regressions (`fuzz/regressions/parse`) and its minimized corpus
    /// (`fuzz/corpus/parse`) must all pass the check.
    #[test]
    fn the_fuzz_corpus_and_regressions_pass_the_check() {
        let regressions = files("fuzz/regressions/parse");
        assert!(
            regressions.iter().any(|f| f
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("regression-")),
            "the regressions are there"
        );
        for file in regressions.iter().chain(&files("fuzz/corpus/parse")) {
            let frame = fs::read(file).unwrap();
            if let Err(e) = check(&frame) {
                panic!("{}: {e}", file.display());
            }
        }
    }
}
