//! Crafting frames for tests, TestRun tables, benchmarks and the fuzzer's
//! seed corpus: well-formed by default, with knobs for every shape the
//! parser must handle (VLAN stacks, IPv4 options, IPv6 extension headers,
//! fragments) and for breaking them.
//!
//! Host only (feature `craft`, or this crate's own tests).

#![allow(
    clippy::return_self_not_must_use,
    reason = "a builder: its methods are always chained"
)]

extern crate alloc;
extern crate std;

use alloc::vec::Vec;

use crate::parse::{
    ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP, TCP_SYN,
};

/// MAC of the VM side in crafted frames.
pub const VM_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x02];
/// MAC of the host side in crafted frames.
pub const HOST_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

#[derive(Clone, Debug)]
enum Ip {
    V4 { src: [u8; 4], dst: [u8; 4] },
    V6 { src: [u8; 16], dst: [u8; 16] },
}

#[derive(Clone, Debug)]
enum L4 {
    Tcp {
        src: u16,
        dst: u16,
        flags: u8,
        seq: u32,
        option_words: u8,
    },
    Udp {
        src: u16,
        dst: u16,
    },
    Raw {
        proto: u8,
    },
}

/// A frame under construction.
#[derive(Clone, Debug)]
pub struct Frame {
    src_mac: [u8; 6],
    dst_mac: [u8; 6],
    vlans: Vec<(u16, u16)>,
    ethertype: Option<u16>,
    ip: Ip,
    ipv4_option_words: u8,
    ipv4_auth_words: u8,
    ipv6_ext: Vec<(u8, usize)>,
    ipv6_ext_after_fragment: Vec<(u8, usize)>,
    fragment: Option<(u32, u16, bool)>,
    l4: L4,
    payload: Vec<u8>,
    truncate: Option<usize>,
}

impl Frame {
    fn new(ip: Ip, l4: L4) -> Self {
        Self {
            src_mac: VM_MAC,
            dst_mac: HOST_MAC,
            vlans: Vec::new(),
            ethertype: None,
            ip,
            ipv4_option_words: 0,
            ipv4_auth_words: 0,
            ipv6_ext: Vec::new(),
            ipv6_ext_after_fragment: Vec::new(),
            fragment: None,
            l4,
            payload: Vec::new(),
            truncate: None,
        }
    }

    /// A TCP SYN over IPv4.
    pub fn tcp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Self {
        Self::new(
            Ip::V4 { src, dst },
            L4::Tcp {
                src: sport,
                dst: dport,
                flags: TCP_SYN,
                seq: DEFAULT_SEQ,
                option_words: 0,
            },
        )
    }

    /// A TCP SYN over IPv6.
    pub fn tcp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        Self::new(
            Ip::V6 { src, dst },
            L4::Tcp {
                src: sport,
                dst: dport,
                flags: TCP_SYN,
                seq: DEFAULT_SEQ,
                option_words: 0,
            },
        )
    }

    /// A UDP datagram over IPv4.
    pub fn udp4(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Self {
        Self::new(
            Ip::V4 { src, dst },
            L4::Udp {
                src: sport,
                dst: dport,
            },
        )
    }

    /// A UDP datagram over IPv6.
    pub fn udp6(src: [u8; 16], dst: [u8; 16], sport: u16, dport: u16) -> Self {
        Self::new(
            Ip::V6 { src, dst },
            L4::Udp {
                src: sport,
                dst: dport,
            },
        )
    }

    /// An ARP request (not IP).
    pub fn arp() -> Vec<u8> {
        let mut f = Vec::with_capacity(42);
        f.extend_from_slice(&[0xff; 6]);
        f.extend_from_slice(&VM_MAC);
        f.extend_from_slice(&0x0806u16.to_be_bytes());
        f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        f.extend_from_slice(&VM_MAC);
        f.extend_from_slice(&[10, 77, 1, 2]);
        f.extend_from_slice(&[0; 6]);
        f.extend_from_slice(&[10, 77, 1, 1]);
        f
    }

    /// TCP flags (default SYN).
    pub fn flags(mut self, flags: u8) -> Self {
        if let L4::Tcp { flags: f, .. } = &mut self.l4 {
            *f = flags;
        }
        self
    }

    /// TCP sequence number (default [`DEFAULT_SEQ`]).
    pub fn seq(mut self, seq: u32) -> Self {
        if let L4::Tcp { seq: s, .. } = &mut self.l4 {
            *s = seq;
        }
        self
    }

    /// TCP options: `words` 32-bit words of NOP options (data offset 5 + words).
    pub fn tcp_options(mut self, words: u8) -> Self {
        if let L4::Tcp { option_words, .. } = &mut self.l4 {
            *option_words = words;
        }
        self
    }

    /// Source and destination MAC addresses (default [`VM_MAC`] to [`HOST_MAC`]).
    pub fn macs(mut self, src: [u8; 6], dst: [u8; 6]) -> Self {
        self.src_mac = src;
        self.dst_mac = dst;
        self
    }

    /// An IPv4 authentication header of `words` 32-bit words (its length
    /// field says `words - 2`) between the IPv4 header and the transport.
    pub fn ipv4_auth(mut self, words: u8) -> Self {
        self.ipv4_auth_words = words;
        self
    }

    /// Adds an IPv6 extension header after the fragment header (in the
    /// fragmentable part), see [`Frame::ipv6_ext`].
    pub fn ipv6_ext_after_fragment(mut self, kind: u8, len: usize) -> Self {
        self.ipv6_ext_after_fragment.push((kind, len));
        self
    }

    /// Replaces the transport with `proto` and no header (the payload
    /// follows the IP header directly).
    pub fn raw_proto(mut self, proto: u8) -> Self {
        self.l4 = L4::Raw { proto };
        self
    }

    /// Adds a VLAN tag with TPID `tpid` (outermost first).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid));
        self
    }

    /// An 802.1Q tag.
    pub fn dot1q(self, vid: u16) -> Self {
        self.vlan(ETH_P_8021Q, vid)
    }

    /// An 802.1ad (QinQ outer) tag.
    pub fn dot1ad(self, vid: u16) -> Self {
        self.vlan(ETH_P_8021AD, vid)
    }

    /// Overrides the EtherType after the tags (to forge mismatches).
    pub fn ethertype(mut self, ethertype: u16) -> Self {
        self.ethertype = Some(ethertype);
        self
    }

    /// IPv4 options: `words` 32-bit words of NOP options (IHL = 5 + words).
    pub fn ipv4_options(mut self, words: u8) -> Self {
        self.ipv4_option_words = words;
        self
    }

    /// Adds an IPv6 extension header of type `kind` (0 hop-by-hop, 43
    /// routing, 60 destination options, 51 AH, ...) of `len` bytes (a
    /// multiple of 8; of 4 for AH).
    pub fn ipv6_ext(mut self, kind: u8, len: usize) -> Self {
        self.ipv6_ext.push((kind, len));
        self
    }

    /// Makes this a fragment: identification, offset in 8-byte units,
    /// more-fragments flag. For IPv6 a fragment header is appended after the
    /// other extension headers.
    pub fn fragment(mut self, id: u32, offset: u16, more: bool) -> Self {
        self.fragment = Some((id, offset, more));
        self
    }

    pub fn payload(mut self, payload: &[u8]) -> Self {
        self.payload = payload.to_vec();
        self
    }

    /// Cuts the finished frame to `len` bytes (the length fields still say
    /// what they would have said).
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    fn l4_bytes(&self, pseudo: &[u8], later_fragment: bool) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        let proto = match self.l4 {
            L4::Tcp {
                src,
                dst,
                flags,
                seq,
                option_words,
            } => {
                if !later_fragment {
                    out.extend_from_slice(&src.to_be_bytes());
                    out.extend_from_slice(&dst.to_be_bytes());
                    out.extend_from_slice(&seq.to_be_bytes());
                    out.extend_from_slice(&0u32.to_be_bytes()); // ack
                    out.push((5 + option_words) << 4);
                    out.push(flags);
                    out.extend_from_slice(&64240u16.to_be_bytes());
                    out.extend_from_slice(&[0, 0, 0, 0]); // checksum, urgent
                    for _ in 0..option_words {
                        out.extend_from_slice(&[1, 1, 1, 1]); // NOP options
                    }
                }
                IPPROTO_TCP
            }
            L4::Udp { src, dst } => {
                if !later_fragment {
                    let len = (8 + self.payload.len()) as u16;
                    out.extend_from_slice(&src.to_be_bytes());
                    out.extend_from_slice(&dst.to_be_bytes());
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(&[0, 0]);
                }
                IPPROTO_UDP
            }
            L4::Raw { proto } => proto,
        };
        let header_len = out.len();
        out.extend_from_slice(&self.payload);
        if !later_fragment && header_len > 0 {
            let checksum_at = if proto == IPPROTO_TCP { 16 } else { 6 };
            let mut sum_input = Vec::from(pseudo);
            sum_input.extend_from_slice(&[0, proto]);
            sum_input.extend_from_slice(&(out.len() as u16).to_be_bytes());
            sum_input.extend_from_slice(&out);
            let sum = checksum(&sum_input);
            out[checksum_at..checksum_at + 2].copy_from_slice(&sum.to_be_bytes());
        }
        (proto, out)
    }

    /// Appends the IPv4 header (and what follows it) to `f`.
    fn ipv4_bytes(&self, f: &mut Vec<u8>, src: [u8; 4], dst: [u8; 4], later: bool) {
        f.extend_from_slice(&self.ethertype.unwrap_or(ETH_P_IPV4).to_be_bytes());
        let mut pseudo = Vec::from(&src[..]);
        pseudo.extend_from_slice(&dst);
        let (l4_proto, mut l4) = self.l4_bytes(&pseudo, later);
        let mut proto = l4_proto;
        if self.ipv4_auth_words > 0 && !later {
            let mut ah = alloc::vec![0u8; self.ipv4_auth_words as usize * 4];
            ah[0] = l4_proto;
            ah[1] = self.ipv4_auth_words.saturating_sub(2);
            ah[4..8].copy_from_slice(&0x100u32.to_be_bytes()); // SPI
            ah.extend_from_slice(&l4);
            l4 = ah;
        }
        if self.ipv4_auth_words > 0 {
            proto = crate::parse::IPPROTO_AH;
        }
        let ihl = 5 + self.ipv4_option_words as usize;
        let total = ihl * 4 + l4.len();
        let (id, frag) = match self.fragment {
            Some((id, offset, more)) => {
                (id as u16, (offset & 0x1fff) | if more { 0x2000 } else { 0 })
            }
            None => (0x1234, 0x4000), // DF
        };
        let start = f.len();
        f.push(0x40 | (ihl as u8 & 0x0f));
        f.push(0);
        f.extend_from_slice(&(total as u16).to_be_bytes());
        f.extend_from_slice(&id.to_be_bytes());
        f.extend_from_slice(&frag.to_be_bytes());
        f.push(64);
        f.push(proto);
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        for _ in 0..self.ipv4_option_words {
            f.extend_from_slice(&[1, 1, 1, 1]); // NOP options
        }
        let sum = checksum(&f[start..start + ihl * 4]);
        f[start + 10..start + 12].copy_from_slice(&sum.to_be_bytes());
        f.extend_from_slice(&l4);
    }

    /// Appends the IPv6 header, its extension headers and what follows to `f`.
    fn ipv6_bytes(&self, f: &mut Vec<u8>, src: [u8; 16], dst: [u8; 16], later: bool) {
        f.extend_from_slice(&self.ethertype.unwrap_or(ETH_P_IPV6).to_be_bytes());
        let mut pseudo = Vec::from(&src[..]);
        pseudo.extend_from_slice(&dst);
        let (proto, l4) = self.l4_bytes(&pseudo, later);
        let mut chain: Vec<(u8, usize)> = self.ipv6_ext.clone();
        if self.fragment.is_some() {
            chain.push((44, 8));
        }
        if !later {
            chain.extend_from_slice(&self.ipv6_ext_after_fragment);
        }
        let mut ext = Vec::new();
        for (i, &(kind, len)) in chain.iter().enumerate() {
            let next = chain.get(i + 1).map_or(proto, |&(k, _)| k);
            let mut h = alloc::vec![0u8; len.max(8)];
            h[0] = next;
            match kind {
                44 => {
                    if let Some((id, offset, more)) = self.fragment {
                        let of = (offset << 3) | u16::from(more);
                        h[2..4].copy_from_slice(&of.to_be_bytes());
                        h[4..8].copy_from_slice(&id.to_be_bytes());
                    }
                }
                51 => h[1] = (len / 4 - 2) as u8,
                _ => {
                    h[1] = (len / 8 - 1) as u8;
                    // PadN filling the rest of an options header.
                    if matches!(kind, 0 | 60) && len > 2 {
                        h[2] = 1;
                        h[3] = (len - 4) as u8;
                    }
                }
            }
            ext.extend_from_slice(&h);
        }
        let first = chain.first().map_or(proto, |&(k, _)| k);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&((ext.len() + l4.len()) as u16).to_be_bytes());
        f.push(first);
        f.push(64);
        f.extend_from_slice(&src);
        f.extend_from_slice(&dst);
        f.extend_from_slice(&ext);
        f.extend_from_slice(&l4);
    }

    /// The frame's bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut f = Vec::with_capacity(128);
        f.extend_from_slice(&self.dst_mac);
        f.extend_from_slice(&self.src_mac);
        for &(tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
        }
        let later = self.fragment.is_some_and(|(_, offset, _)| offset != 0);
        match self.ip {
            Ip::V4 { src, dst } => self.ipv4_bytes(&mut f, src, dst, later),
            Ip::V6 { src, dst } => self.ipv6_bytes(&mut f, src, dst, later),
        }
        if let Some(len) = self.truncate {
            f.truncate(len);
        }
        f
    }
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in data.chunks(2) {
        let word = if chunk.len() == 2 {
            u16::from_be_bytes([chunk[0], chunk[1]])
        } else {
            u16::from_be_bytes([chunk[0], 0])
        };
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The TCP sequence number of crafted segments, unless set.
pub const DEFAULT_SEQ: u32 = 0x1000_0000;

/// Addresses used across the tests.
pub mod addr {
    pub const VM4: [u8; 4] = [10, 77, 1, 2];
    pub const INTERNET4: [u8; 4] = [198, 51, 100, 10];
    pub const RELAY4: [u8; 4] = [198, 51, 100, 25];
    pub const VM6: [u8; 16] = [0xfd, 0x77, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    pub const INTERNET6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    pub const RELAY6: [u8; 16] = [
        0x20, 0x01, 0x0d, 0xb8, 0x01, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x25,
    ];
}
