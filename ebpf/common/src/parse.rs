//! The packet parser shared by the XDP program, the TC program and the host.
//!
//! It answers one question about a frame: is it (or could it be) a TCP segment,
//! and to which port? It walks
//!
//! - Ethernet, then up to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad tags;
//! - IPv4 with options (the transport header starts at IHL x 4);
//! - IPv6 and up to [`MAX_IPV6_EXT_HEADERS`] extension headers;
//! - the TCP ports and flags.
//!
//! It never fails open: whatever could carry IP but cannot be followed far
//! enough to know what it carries comes back as [`Parsed::Malformed`], and the
//! caller holds that back on a blocked interface.
//!
//! The parser reads the packet only through [`PacketBytes`], so that each hook
//! supplies its own access (direct packet access in XDP, direct access or
//! `bpf_skb_load_bytes` in TC, a slice on the host). Every offset it asks for is
//! below [`MAX_HEADER_OFFSET`], which keeps the verifier's range tracking
//! simple. Everything is `#[inline(always)]`: the kernel programs are one
//! function each.

/// 802.1Q / 802.1ad tags walked before giving up (and holding back).
pub const MAX_VLAN_TAGS: usize = 8;
/// IPv6 extension headers walked before giving up (and holding back).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;
/// No header is looked for beyond this offset. A header chain that long is
/// [`Malformed::TooLong`].
pub const MAX_HEADER_OFFSET: usize = 2048;

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
/// Pre-standard QinQ outer tag, still emitted by some switches.
pub const ETH_P_QINQ_9100: u16 = 0x9100;

pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_ICMPV6: u8 = 58;

/// IPv6 next-header values that are extension headers of the generic
/// (next header, length in 8-octet units beyond the first) shape.
const IPV6_HOP_BY_HOP: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AUTH: u8 = 51;
const IPV6_DEST_OPTS: u8 = 60;
const IPV6_MOBILITY: u8 = 135;
const IPV6_HIP: u8 = 139;
const IPV6_SHIM6: u8 = 140;
const IPV6_EXPERIMENT1: u8 = 253;
const IPV6_EXPERIMENT2: u8 = 254;

/// Byte access to a packet, as each hook provides it.
pub trait PacketBytes {
    /// Length of the whole packet as the hook sees it, from the Ethernet
    /// header on.
    fn packet_len(&self) -> usize;

    /// The `N` bytes at `off`, or `None` when the packet ends before
    /// `off + N` (or `off` is beyond [`MAX_HEADER_OFFSET`]).
    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]>;
}

impl PacketBytes for [u8] {
    fn packet_len(&self) -> usize {
        self.len()
    }

    fn bytes<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        if off > MAX_HEADER_OFFSET {
            return None;
        }
        let end = off.checked_add(N)?;
        self.get(off..end)?.try_into().ok()
    }
}

/// What a frame is, as far as the held ports are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...), or too short to hold an Ethernet
    /// header: never a TCP segment.
    NotIp,
    /// An IPv4 or IPv6 packet, followed to its transport header.
    Ip(IpPacket),
    /// Could carry IP, but could not be followed far enough to tell what.
    Malformed(Malformed),
}

/// Why a frame could not be followed. Each of these is held back when it comes
/// from a blocked interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// More VLAN tags than [`MAX_VLAN_TAGS`].
    VlanTooDeep,
    /// The frame ends inside a VLAN tag.
    VlanTruncated,
    /// The frame ends inside the IP header.
    IpTruncated,
    /// The IP version field does not match the EtherType.
    IpBadVersion,
    /// IPv4 IHL below 5.
    Ipv4BadIhl,
    /// The IP length field contradicts the header length or the frame.
    IpBadLength,
    /// More IPv6 extension headers than [`MAX_IPV6_EXT_HEADERS`].
    Ipv6ChainTooLong,
    /// The frame ends inside an IPv6 extension header.
    Ipv6ExtTruncated,
    /// The headers go on past [`MAX_HEADER_OFFSET`].
    TooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IpVersion {
    V4,
    V6,
}

/// An IP packet, as far as the parser followed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub version: IpVersion,
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_off: u16,
    /// Transport protocol: IPv4's protocol field, or the IPv6 next header
    /// that ends the extension-header chain.
    pub proto: u8,
    /// Offset of the transport header (or, in a later fragment, of the
    /// fragment's payload).
    pub l4_off: u16,
    pub fragment: Fragment,
    pub transport: Transport,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not fragmented (an IPv6 atomic fragment counts as not fragmented,
    /// RFC 6946).
    None,
    /// Offset 0, more fragments follow: it carries the transport header.
    First { id: u32 },
    /// Offset above 0: no transport header here.
    Later { id: u32 },
}

/// The transport header, when the protocol is TCP and the packet holds one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// A TCP header; `flags` is `None` when the packet ends after the ports.
    Tcp(Tcp),
    /// TCP, but the packet ends before the ports can be read.
    TcpTruncated,
    /// Not TCP, or a later fragment (which holds no transport header).
    Other,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tcp {
    pub src_port: u16,
    pub dst_port: u16,
    /// The flags byte (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, ...),
    /// when the packet is long enough to hold it.
    pub flags: Option<u8>,
    /// The whole 20-byte fixed TCP header is in the packet.
    pub complete: bool,
}

pub const TCP_SYN: u8 = 0x02;
pub const TCP_ACK: u8 = 0x10;

impl IpPacket {
    /// The TCP header, if this packet holds one.
    #[inline(always)]
    pub fn tcp(&self) -> Option<Tcp> {
        match self.transport {
            Transport::Tcp(tcp) => Some(tcp),
            _ => None,
        }
    }
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// Parses a frame that starts with its Ethernet header.
#[inline(always)]
pub fn parse<P: PacketBytes + ?Sized>(pkt: &P) -> Parsed {
    let Some(ethertype) = pkt.bytes::<2>(12) else {
        return Parsed::NotIp;
    };
    let mut ethertype = be16(ethertype);
    let mut off = ETH_HLEN;

    let mut tags = 0;
    while is_vlan(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Parsed::Malformed(Malformed::VlanTooDeep);
        }
        // A tag: 2 bytes of TCI, then the next EtherType.
        let Some(next) = pkt.bytes::<2>(off + 2) else {
            return Parsed::Malformed(Malformed::VlanTruncated);
        };
        ethertype = be16(next);
        off += 4;
        tags += 1;
    }

    match ethertype {
        ETH_P_IPV4 => parse_ipv4(pkt, off),
        ETH_P_IPV6 => parse_ipv6(pkt, off),
        _ => Parsed::NotIp,
    }
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD || ethertype == ETH_P_QINQ_9100
}

#[inline(always)]
fn parse_ipv4<P: PacketBytes + ?Sized>(pkt: &P, off: usize) -> Parsed {
    // Version/IHL, TOS, total length, ID, flags/fragment offset, TTL, protocol.
    let Some(h) = pkt.bytes::<10>(off) else {
        return Parsed::Malformed(Malformed::IpTruncated);
    };
    if h[0] >> 4 != 4 {
        return Parsed::Malformed(Malformed::IpBadVersion);
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < 20 {
        return Parsed::Malformed(Malformed::Ipv4BadIhl);
    }
    // The whole header, options included, must be in the frame.
    if pkt.bytes::<1>(off + ihl - 1).is_none() {
        return Parsed::Malformed(Malformed::IpTruncated);
    }
    let total_len = be16([h[2], h[3]]) as usize;
    let frame_ip_len = pkt.packet_len().saturating_sub(off);
    // Total length 0 is how IPv4 BIG TCP marks a super-packet over 64 KiB.
    let big_tcp = total_len == 0 && frame_ip_len > 0xffff;
    if !big_tcp && (total_len < ihl || total_len > frame_ip_len) {
        return Parsed::Malformed(Malformed::IpBadLength);
    }

    let id = be16([h[4], h[5]]) as u32;
    let frag = be16([h[6], h[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let frag_offset = frag & 0x1fff;
    let fragment = if frag_offset != 0 {
        Fragment::Later { id }
    } else if more_fragments {
        Fragment::First { id }
    } else {
        Fragment::None
    };

    ip_packet(pkt, IpVersion::V4, off, h[9], off + ihl, fragment)
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(pkt: &P, off: usize) -> Parsed {
    // Version/class/flow, payload length, next header (the addresses follow).
    let Some(h) = pkt.bytes::<7>(off) else {
        return Parsed::Malformed(Malformed::IpTruncated);
    };
    if h[0] >> 4 != 6 {
        return Parsed::Malformed(Malformed::IpBadVersion);
    }
    if pkt.bytes::<1>(off + 39).is_none() {
        return Parsed::Malformed(Malformed::IpTruncated);
    }
    let payload_len = be16([h[4], h[5]]) as usize;
    let frame_payload_len = pkt.packet_len().saturating_sub(off + 40);
    // Payload length 0 is how IPv6 BIG TCP (and jumbograms) mark over 64 KiB.
    let big = payload_len == 0 && frame_payload_len > 0xffff;
    if !big && payload_len > frame_payload_len {
        return Parsed::Malformed(Malformed::IpBadLength);
    }

    let mut next = h[6];
    let mut l4 = off + 40;
    let mut fragment = Fragment::None;
    let mut walked = 0;
    loop {
        let len = match next {
            IPV6_HOP_BY_HOP | IPV6_ROUTING | IPV6_DEST_OPTS | IPV6_MOBILITY | IPV6_HIP
            | IPV6_SHIM6 | IPV6_EXPERIMENT1 | IPV6_EXPERIMENT2 => {
                let Some(e) = pkt.bytes::<2>(l4) else {
                    return Parsed::Malformed(Malformed::Ipv6ExtTruncated);
                };
                next = e[0];
                (e[1] as usize + 1) * 8
            }
            IPV6_AUTH => {
                let Some(e) = pkt.bytes::<2>(l4) else {
                    return Parsed::Malformed(Malformed::Ipv6ExtTruncated);
                };
                next = e[0];
                (e[1] as usize + 2) * 4
            }
            IPV6_FRAGMENT => {
                // Next header, reserved, offset (13 bits) / M, identification.
                let Some(e) = pkt.bytes::<8>(l4) else {
                    return Parsed::Malformed(Malformed::Ipv6ExtTruncated);
                };
                next = e[0];
                let offset_flags = be16([e[2], e[3]]);
                let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                if offset_flags >> 3 != 0 {
                    fragment = Fragment::Later { id };
                } else if offset_flags & 1 != 0 {
                    fragment = Fragment::First { id };
                }
                8
            }
            _ => break,
        };
        walked += 1;
        l4 += len;
        if l4 > MAX_HEADER_OFFSET {
            return Parsed::Malformed(Malformed::TooLong);
        }
        if matches!(fragment, Fragment::Later { .. }) {
            // A later fragment holds no further headers, only payload.
            break;
        }
        if walked == MAX_IPV6_EXT_HEADERS {
            if is_ipv6_extension(next) {
                return Parsed::Malformed(Malformed::Ipv6ChainTooLong);
            }
            break;
        }
    }

    ip_packet(pkt, IpVersion::V6, off, next, l4, fragment)
}

/// Whether `next` is an IPv6 extension header the parser walks.
#[inline(always)]
pub fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        IPV6_HOP_BY_HOP
            | IPV6_ROUTING
            | IPV6_FRAGMENT
            | IPV6_AUTH
            | IPV6_DEST_OPTS
            | IPV6_MOBILITY
            | IPV6_HIP
            | IPV6_SHIM6
            | IPV6_EXPERIMENT1
            | IPV6_EXPERIMENT2
    )
}

#[inline(always)]
fn ip_packet<P: PacketBytes + ?Sized>(
    pkt: &P,
    version: IpVersion,
    l3_off: usize,
    proto: u8,
    l4_off: usize,
    fragment: Fragment,
) -> Parsed {
    if l4_off > MAX_HEADER_OFFSET {
        return Parsed::Malformed(Malformed::TooLong);
    }
    let transport = if proto != IPPROTO_TCP || matches!(fragment, Fragment::Later { .. }) {
        Transport::Other
    } else {
        parse_tcp(pkt, l4_off)
    };
    Parsed::Ip(IpPacket {
        version,
        l3_off: l3_off as u16,
        proto,
        l4_off: l4_off as u16,
        fragment,
        transport,
    })
}

#[inline(always)]
fn parse_tcp<P: PacketBytes + ?Sized>(pkt: &P, off: usize) -> Transport {
    let Some(ports) = pkt.bytes::<4>(off) else {
        return Transport::TcpTruncated;
    };
    let flags = pkt.bytes::<1>(off + 13).map(|b| b[0]);
    let complete = pkt.bytes::<1>(off + 19).is_some();
    Transport::Tcp(Tcp {
        src_port: be16([ports[0], ports[1]]),
        dst_port: be16([ports[2], ports[3]]),
        flags,
        complete,
    })
}

/// The IPv4 destination address of `ip` (which must be IPv4).
#[inline(always)]
pub fn ipv4_dst<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> Option<[u8; 4]> {
    pkt.bytes::<4>(ip.l3_off as usize + 16)
}

/// The IPv4 source address of `ip` (which must be IPv4).
#[inline(always)]
pub fn ipv4_src<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> Option<[u8; 4]> {
    pkt.bytes::<4>(ip.l3_off as usize + 12)
}

/// The IPv6 destination address of `ip` (which must be IPv6).
#[inline(always)]
pub fn ipv6_dst<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> Option<[u8; 16]> {
    pkt.bytes::<16>(ip.l3_off as usize + 24)
}

/// The IPv6 source address of `ip` (which must be IPv6).
#[inline(always)]
pub fn ipv6_src<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> Option<[u8; 16]> {
    pkt.bytes::<16>(ip.l3_off as usize + 8)
}

#[cfg(test)]
mod tests;
