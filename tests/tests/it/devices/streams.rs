//! What the device tests write, and the judgement of what a capture saw.
//!
//! A [`Stream`] is one segment or GSO super-segment a VM writes into its
//! device, with its own source port, so that everything that arrives of it
//! is told apart by (source address, source port, destination port). What
//! arrived is read back with etherparse, an independent parser: a held
//! stream must have no segment at all; a passing one must arrive whole: the
//! expected number of segments, every TCP checksum valid, and its payload,
//! reassembled by sequence number, byte for byte what was written.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{Context as _, Result};
use egress_guard_tests::netns::{
    VmDevice,
    vmframe::{Offload, Segment},
};
use etherparse::{NetSlice, SlicedPacket, TransportSlice};

/// One thing a VM writes.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The device it is written into (the VM's interface).
    pub device: String,
    pub segment: Segment,
    pub offload: Offload,
    /// Whether the agent must hold it back.
    pub held: bool,
    /// For messages: "GSO 64000 B to 25 over IPv6" and the like.
    pub label: String,
}

type Key = (IpAddr, u16, u16);

impl Stream {
    fn key(&self) -> Key {
        (self.segment.src, self.segment.sport, self.segment.dport)
    }

    /// Segments expected at the capture.
    pub fn expected_segments(&self) -> usize {
        self.segment.segments(self.offload)
    }

    /// Writes it into `dev` as a VMM does: with a `virtio_net_hdr` on a tap
    /// or macvtap (scattered as `scatter` says), bare on an L3 tun.
    pub fn write(&self, dev: &VmDevice, peer_mac: Option<[u8; 6]>, scatter: bool) -> Result<()> {
        let Some(mac) = dev.mac() else {
            return Ok(dev.write(&self.segment.ip_packet())?);
        };
        // On a tap the guest sends to the host's side (the tap's MAC); on a
        // macvtap it sends from the macvtap's MAC to the peer behind it.
        let (src, dst) = match peer_mac {
            Some(peer) => (mac, peer),
            None => ([0x02, 0x00, 0x00, 0x00, 0x00, 0x42], mac),
        };
        let (hdr, frame) = self.segment.vnet(src, dst, self.offload);
        if scatter {
            // As a guest's scatter-gather list: the headers, then 4 KiB
            // pages of payload.
            let head = frame.len() - self.segment.payload.len();
            let mut parts: Vec<&[u8]> = vec![&frame[..head]];
            parts.extend(frame[head..].chunks(4096));
            dev.write_vnet(&hdr, &parts)?;
        } else {
            dev.write_vnet(&hdr, &[&frame])?;
        }
        Ok(())
    }
}

/// The streams of one VM: for each family, each of `shapes` to each port.
pub struct Plan {
    pub device: String,
    pub src4: Ipv4Addr,
    pub src6: Ipv6Addr,
    pub dst4: Ipv4Addr,
    pub dst6: Ipv6Addr,
    /// Whether its traffic to port 25 is held back.
    pub blocked: bool,
}

/// The shape of a stream.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// A SYN, checksum filled in, no offload.
    Syn,
    /// A data segment of this many bytes, checksum filled in.
    Data(usize),
    /// A data segment of this many bytes with `NEEDS_CSUM`.
    Partial(usize),
    /// A GSO super-frame of this many bytes.
    Gso(usize),
}

impl Plan {
    /// Streams for `shapes` × `ports` × IPv4 and IPv6; source ports from
    /// `first_port` on (one each), sequence numbers apart.
    pub fn streams(&self, shapes: &[Shape], ports: &[u16], first_port: u16) -> Vec<Stream> {
        let mut out = Vec::new();
        let mut sport = first_port;
        for v6 in [false, true] {
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (self.src6.into(), self.dst6.into())
            } else {
                (self.src4.into(), self.dst4.into())
            };
            for &shape in shapes {
                for &dport in ports {
                    let seq = u32::from(sport).wrapping_mul(1_000_003);
                    let tag = u32::from(sport);
                    let pattern = egress_guard_tests::netns::vmframe::pattern;
                    let (segment, offload, what) = match shape {
                        Shape::Syn => (
                            Segment::syn(src, dst, sport, dport, seq),
                            Offload::None,
                            "SYN".to_owned(),
                        ),
                        Shape::Data(n) => (
                            Segment::data(src, dst, sport, dport, seq, pattern(tag, n)),
                            Offload::None,
                            format!("data {n} B"),
                        ),
                        Shape::Partial(n) => (
                            Segment::data(src, dst, sport, dport, seq, pattern(tag, n)),
                            Offload::Checksum,
                            format!("NEEDS_CSUM data {n} B"),
                        ),
                        Shape::Gso(n) => {
                            let mss = if v6 { 1440 } else { 1460 };
                            (
                                Segment::data(src, dst, sport, dport, seq, pattern(tag, n)),
                                Offload::Gso { mss },
                                format!("GSO {n} B (mss {mss})"),
                            )
                        }
                    };
                    out.push(Stream {
                        device: self.device.clone(),
                        label: format!(
                            "{} {what} to port {dport} over {}",
                            self.device,
                            if v6 { "IPv6" } else { "IPv4" }
                        ),
                        held: self.blocked && dport == 25,
                        segment,
                        offload,
                    });
                    sport += 1;
                }
            }
        }
        out
    }
}

/// What arrived of one stream.
#[derive(Debug, Default)]
struct Arrived {
    segments: usize,
    bad_checksums: usize,
    syns: usize,
    /// Payloads by sequence number.
    data: Vec<(u32, Vec<u8>)>,
}

/// What a capture saw, by stream.
#[derive(Debug, Default)]
pub struct Seen {
    by_key: BTreeMap<Key, Arrived>,
}

impl Seen {
    /// Reads every TCP frame of `frames` (Ethernet frames).
    pub fn parse(frames: &[Vec<u8>]) -> Self {
        let mut seen = Self::default();
        for frame in frames {
            let Ok(p) = SlicedPacket::from_ethernet(frame) else {
                continue;
            };
            let (Some(net), Some(TransportSlice::Tcp(tcp))) = (&p.net, &p.transport) else {
                continue;
            };
            let (src, expected) = match net {
                NetSlice::Ipv4(ip) => {
                    let h = ip.header();
                    let c = tcp.calc_checksum_ipv4(h.source(), h.destination());
                    (IpAddr::from(h.source_addr()), c.ok())
                }
                NetSlice::Ipv6(ip) => {
                    let h = ip.header();
                    let c = tcp.calc_checksum_ipv6(h.source(), h.destination());
                    (IpAddr::from(h.source_addr()), c.ok())
                }
                NetSlice::Arp(_) => continue,
            };
            let a = seen
                .by_key
                .entry((src, tcp.source_port(), tcp.destination_port()))
                .or_default();
            a.segments += 1;
            if expected != Some(tcp.checksum()) {
                a.bad_checksums += 1;
            }
            if tcp.syn() {
                a.syns += 1;
            }
            if !tcp.payload().is_empty() {
                a.data.push((tcp.sequence_number(), tcp.payload().to_vec()));
            }
        }
        seen
    }

    /// Whether every stream that should pass has arrived in full (what a
    /// capture waits for).
    pub fn complete(&self, streams: &[Stream]) -> bool {
        streams.iter().filter(|s| !s.held).all(|s| {
            self.by_key
                .get(&s.key())
                .is_some_and(|a| a.segments >= s.expected_segments())
        })
    }

    /// What is wrong, one line each: a held stream with anything arrived, a
    /// passing one not arrived whole.
    pub fn problems(&self, streams: &[Stream]) -> Vec<String> {
        streams
            .iter()
            .filter_map(|s| self.problem(s).map(|p| format!("{}: {p}", s.label)))
            .collect()
    }

    fn problem(&self, s: &Stream) -> Option<String> {
        let empty = Arrived::default();
        let a = self.by_key.get(&s.key()).unwrap_or(&empty);
        let bytes: usize = a.data.iter().map(|(_, d)| d.len()).sum();
        if s.held {
            return (a.segments > 0).then(|| {
                format!(
                    "ESCAPED: {} segment(s), {bytes} payload bytes reached the capture; it must be held back",
                    a.segments
                )
            });
        }
        let mut out = String::new();
        if a.segments != s.expected_segments() {
            let _ = write!(
                out,
                "{} segment(s) arrived, expected {}; ",
                a.segments,
                s.expected_segments()
            );
        }
        if a.bad_checksums > 0 {
            let _ = write!(out, "{} with a wrong TCP checksum; ", a.bad_checksums);
        }
        if s.segment.payload.is_empty() {
            if a.syns == 0 && a.segments > 0 {
                out.push_str("no SYN among them; ");
            }
        } else if let Err(e) = reassemble(s, &a.data) {
            let _ = write!(out, "payload not intact ({bytes} bytes arrived): {e:#}; ");
        }
        (!out.is_empty()).then(|| out.trim_end_matches("; ").to_owned())
    }

    /// Segments and payload bytes that arrived of `streams`.
    pub fn totals(&self, streams: &[Stream]) -> (usize, usize) {
        streams
            .iter()
            .filter_map(|s| self.by_key.get(&s.key()))
            .fold((0, 0), |(n, b), a| {
                (
                    n + a.segments,
                    b + a.data.iter().map(|(_, d)| d.len()).sum::<usize>(),
                )
            })
    }
}

/// Puts the payloads in sequence order and checks they are the stream's
/// payload exactly: no gap, no overlap, no byte changed.
fn reassemble(s: &Stream, data: &[(u32, Vec<u8>)]) -> Result<()> {
    let mut parts: Vec<&(u32, Vec<u8>)> = data.iter().collect();
    parts.sort_by_key(|(seq, _)| seq.wrapping_sub(s.segment.seq));
    let mut got = Vec::with_capacity(s.segment.payload.len());
    for (seq, bytes) in parts {
        let at = seq.wrapping_sub(s.segment.seq) as usize;
        anyhow::ensure!(
            at == got.len(),
            "a segment at offset {at} where offset {} was next",
            got.len()
        );
        got.extend_from_slice(bytes);
    }
    anyhow::ensure!(
        got.len() == s.segment.payload.len(),
        "{} of {} bytes",
        got.len(),
        s.segment.payload.len()
    );
    let first_diff = got.iter().zip(&s.segment.payload).position(|(a, b)| a != b);
    first_diff
        .map_or(Ok(()), |i| Err(anyhow::anyhow!("byte {i} differs")))
        .context("comparing with what was written")
}
