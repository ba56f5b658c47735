//! Frames as a VMM writes them into a tap: a `virtio_net_hdr` followed by an
//! Ethernet frame (IPv4 or IPv6, TCP), and bare IP packets for an L3 tun.
//!
//! - [`Segment`] describes one TCP segment or super-segment: addresses,
//!   ports, sequence number, flags and payload.
//! - [`Segment::vnet`] makes it as a guest's virtio-net driver hands it over
//!   with an [`Offload`]: whole (checksum filled in), `NEEDS_CSUM` (the TCP
//!   checksum field holds the pseudo-header sum, the device completes it), or
//!   a GSO super-frame (`NEEDS_CSUM` plus `gso_type` TCPv4/TCPv6, `gso_size`,
//!   `hdr_len`), up to 64 KB.
//! - [`Segment::ethernet`] and [`Segment::ip_packet`] make it whole, with
//!   every checksum filled in.
//!
//! Invariants: headers have no options (IPv4 IHL 5, TCP data offset 5), so
//! `hdr_len` is 14 + 20 or 40 + 20; the IPv4 total length and the IPv6
//! payload length cover the whole super-segment, and the partial TCP checksum
//! is taken over that whole length, as Linux's TCP stack writes them for TSO
//! (the segmenter adjusts both per segment).

use std::net::IpAddr;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`.
pub const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const VIRTIO_NET_HDR_GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const VIRTIO_NET_HDR_GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_TCPV6`.
pub const VIRTIO_NET_HDR_GSO_TCPV6: u8 = 4;
/// The header size QEMU sets with `TUNSETVNETHDRSZ`:
/// `virtio_net_hdr_mrg_rxbuf` (the 10-byte header and `num_buffers`).
pub const VNET_HDR_LEN: usize = 12;

/// TCP flags.
pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

const ETH_HLEN: usize = 14;
const TCP_HLEN: usize = 20;
/// Where the checksum sits in a TCP header.
const TCP_CSUM_OFFSET: u16 = 16;

/// A `virtio_net_hdr` (little-endian, as on x86 and for virtio 1.0).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    pub hdr_len: u16,
    pub gso_size: u16,
    pub csum_start: u16,
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    /// The header as written before a frame: [`VNET_HDR_LEN`] bytes, the
    /// last two (`num_buffers`) zero.
    pub fn to_bytes(&self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// How a guest's driver hands a segment to the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Offload {
    /// Checksums filled in, no flags.
    None,
    /// `NEEDS_CSUM`: the TCP checksum field holds the pseudo-header sum.
    Checksum,
    /// A GSO super-frame cut into `mss`-byte segments by the host
    /// (`NEEDS_CSUM` as well).
    Gso { mss: u16 },
}

/// One TCP segment, or super-segment when sent with [`Offload::Gso`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub flags: u8,
    pub payload: Vec<u8>,
}

impl Segment {
    /// A SYN (no payload).
    pub fn syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16, seq: u32) -> Self {
        Self {
            src,
            dst,
            sport,
            dport,
            seq,
            flags: TCP_SYN,
            payload: Vec::new(),
        }
    }

    /// A data segment (ACK|PSH) carrying `payload`.
    pub fn data(
        src: IpAddr,
        dst: IpAddr,
        sport: u16,
        dport: u16,
        seq: u32,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            flags: TCP_ACK | TCP_PSH,
            payload,
            ..Self::syn(src, dst, sport, dport, seq)
        }
    }

    fn is_v6(&self) -> bool {
        self.dst.is_ipv6()
    }

    fn ip_hlen(&self) -> usize {
        if self.is_v6() { 40 } else { 20 }
    }

    /// The bare IP packet, checksums filled in (what an L3 tun carries).
    ///
    /// # Panics
    /// When the addresses are of different families, or the packet is
    /// longer than an IP length field can say.
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut p = self.ip_and_tcp();
        let l3 = self.ip_hlen();
        let sum = self.pseudo_sum() + ones_sum(&p[l3..]);
        p[l3 + 16..l3 + 18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        p
    }

    /// The Ethernet frame, checksums filled in.
    pub fn ethernet(&self, src_mac: [u8; 6], dst_mac: [u8; 6]) -> Vec<u8> {
        self.frame(src_mac, dst_mac, &self.ip_packet())
    }

    /// The `virtio_net_hdr` and the Ethernet frame a guest's virtio-net
    /// driver hands over for this segment with `offload`.
    pub fn vnet(
        &self,
        src_mac: [u8; 6],
        dst_mac: [u8; 6],
        offload: Offload,
    ) -> (VirtioNetHdr, Vec<u8>) {
        if offload == Offload::None {
            return (VirtioNetHdr::default(), self.ethernet(src_mac, dst_mac));
        }
        let mut p = self.ip_and_tcp();
        let l3 = self.ip_hlen();
        // The partial checksum: the pseudo-header sum, not complemented.
        p[l3 + 16..l3 + 18].copy_from_slice(&fold(self.pseudo_sum()).to_be_bytes());
        let csum_start = (ETH_HLEN + l3) as u16;
        let mut hdr = VirtioNetHdr {
            flags: VIRTIO_NET_HDR_F_NEEDS_CSUM,
            gso_type: VIRTIO_NET_HDR_GSO_NONE,
            hdr_len: csum_start + TCP_HLEN as u16,
            gso_size: 0,
            csum_start,
            csum_offset: TCP_CSUM_OFFSET,
        };
        if let Offload::Gso { mss } = offload {
            hdr.gso_type = if self.is_v6() {
                VIRTIO_NET_HDR_GSO_TCPV6
            } else {
                VIRTIO_NET_HDR_GSO_TCPV4
            };
            hdr.gso_size = mss;
        }
        (hdr, self.frame(src_mac, dst_mac, &p))
    }

    /// How many segments arrive once the host cut it at `offload`'s MSS.
    pub fn segments(&self, offload: Offload) -> usize {
        match offload {
            Offload::Gso { mss } if !self.payload.is_empty() => {
                self.payload.len().div_ceil(usize::from(mss))
            }
            _ => 1,
        }
    }

    fn frame(&self, src_mac: [u8; 6], dst_mac: [u8; 6], packet: &[u8]) -> Vec<u8> {
        let mut f = Vec::with_capacity(ETH_HLEN + packet.len());
        f.extend_from_slice(&dst_mac);
        f.extend_from_slice(&src_mac);
        f.extend_from_slice(&(if self.is_v6() { 0x86dd_u16 } else { 0x0800 }).to_be_bytes());
        f.extend_from_slice(packet);
        f
    }

    /// The sum of the pseudo-header over the whole TCP length.
    fn pseudo_sum(&self) -> u32 {
        let tcp_len = (TCP_HLEN + self.payload.len()) as u32;
        let addrs = match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => ones_sum(&s.octets()) + ones_sum(&d.octets()),
            (IpAddr::V6(s), IpAddr::V6(d)) => ones_sum(&s.octets()) + ones_sum(&d.octets()),
            _ => panic!(
                "a segment from {} to {}: mixed families",
                self.src, self.dst
            ),
        };
        addrs + 6 + (tcp_len >> 16) + (tcp_len & 0xffff)
    }

    /// The IP header (IPv4 checksum filled in) and TCP header with a zero
    /// checksum, and the payload.
    fn ip_and_tcp(&self) -> Vec<u8> {
        let tcp_len = TCP_HLEN + self.payload.len();
        let mut p = Vec::with_capacity(self.ip_hlen() + tcp_len);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let total = u16::try_from(20 + tcp_len).expect("IPv4 packet over 64 KiB");
                p.extend_from_slice(&[0x45, 0]);
                p.extend_from_slice(&total.to_be_bytes());
                // IP ID from the sequence number; DF set.
                p.extend_from_slice(&(self.seq as u16).to_be_bytes());
                p.extend_from_slice(&[0x40, 0, 64, 6, 0, 0]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
                let csum = !fold(ones_sum(&p[..20]));
                p[10..12].copy_from_slice(&csum.to_be_bytes());
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let len = u16::try_from(tcp_len).expect("IPv6 payload over 64 KiB");
                p.extend_from_slice(&[0x60, 0, 0, 0]);
                p.extend_from_slice(&len.to_be_bytes());
                p.extend_from_slice(&[6, 64]);
                p.extend_from_slice(&s.octets());
                p.extend_from_slice(&d.octets());
            }
            _ => panic!(
                "a segment from {} to {}: mixed families",
                self.src, self.dst
            ),
        }
        p.extend_from_slice(&self.sport.to_be_bytes());
        p.extend_from_slice(&self.dport.to_be_bytes());
        p.extend_from_slice(&self.seq.to_be_bytes());
        let ack = u32::from(self.flags & TCP_ACK != 0);
        p.extend_from_slice(&ack.to_be_bytes());
        p.extend_from_slice(&[5 << 4, self.flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend_from_slice(&self.payload);
        p
    }
}

/// A payload whose bytes depend on `tag` and their offset, so that a
/// reassembled stream shows any byte out of place.
pub fn pattern(tag: u32, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let x = (i as u32).wrapping_mul(2_654_435_761) ^ tag.wrapping_mul(40_503);
            (x >> 13) as u8
        })
        .collect()
}

/// The ones'-complement sum of `bytes` as big-endian 16-bit words, unfolded.
fn ones_sum(bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    let mut sum: u32 = chunks
        .by_ref()
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .fold(0, |a, w| {
            let s = a + w;
            (s & 0xffff) + (s >> 16)
        });
    if let [last] = chunks.remainder() {
        sum += u32::from(*last) << 8;
    }
    sum
}

fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> (IpAddr, IpAddr) {
        ("10.0.0.2".parse().unwrap(), "10.0.0.1".parse().unwrap())
    }

    #[test]
    fn a_whole_packet_sums_to_zero_with_its_pseudo_header() {
        for (src, dst) in [v4(), ("fd::2".parse().unwrap(), "fd::1".parse().unwrap())] {
            let seg = Segment::data(src, dst, 1000, 25, 7, pattern(1, 999));
            let p = seg.ip_packet();
            let l3 = seg.ip_hlen();
            assert_eq!(fold(seg.pseudo_sum() + ones_sum(&p[l3..])), 0xffff);
            if src.is_ipv4() {
                assert_eq!(fold(ones_sum(&p[..20])), 0xffff);
            }
        }
    }

    #[test]
    fn a_partial_checksum_completes_to_the_whole_one() {
        let (src, dst) = v4();
        let seg = Segment::data(src, dst, 1000, 25, 7, pattern(2, 1001));
        let whole = seg.ethernet([2; 6], [4; 6]);
        let (hdr, mut partial) = seg.vnet([2; 6], [4; 6], Offload::Checksum);
        assert_eq!(hdr.flags, VIRTIO_NET_HDR_F_NEEDS_CSUM);
        // What the device does: sum from csum_start, complement, store.
        let start = usize::from(hdr.csum_start);
        let at = start + usize::from(hdr.csum_offset);
        let csum = !fold(ones_sum(&partial[start..]));
        partial[at..at + 2].copy_from_slice(&csum.to_be_bytes());
        assert_eq!(partial, whole);
    }

    #[test]
    fn a_gso_super_frame_says_how_it_is_cut() {
        let (src, dst) = v4();
        let seg = Segment::data(src, dst, 1000, 25, 7, pattern(3, 64_000));
        let (hdr, frame) = seg.vnet([2; 6], [4; 6], Offload::Gso { mss: 1460 });
        assert_eq!(hdr.gso_type, VIRTIO_NET_HDR_GSO_TCPV4);
        assert_eq!((hdr.gso_size, hdr.hdr_len, hdr.csum_start), (1460, 54, 34));
        assert_eq!(frame.len(), 14 + 20 + 20 + 64_000);
        assert_eq!(u16::from_be_bytes([frame[16], frame[17]]), 64_040);
        assert_eq!(seg.segments(Offload::Gso { mss: 1460 }), 44);
        assert_eq!(hdr.to_bytes()[..4], [1, 1, 54, 0]);
    }
}
