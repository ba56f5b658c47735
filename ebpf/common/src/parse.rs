//! The packet parser shared by the XDP program, the TC program and the host.
//!
//! It answers one question about a frame: is it (or could it be) a TCP segment,
//! and to which port? It walks
//!
//! - Ethernet, then up to [`MAX_VLAN_TAGS`] 802.1Q / 802.1ad tags ([`parse`]);
//!   an L3 device's packets start at the IP header instead ([`parse_l3`]);
//! - IPv4 with options (the transport header starts at IHL x 4), and an
//!   authentication header after it;
//! - IPv6 and up to [`MAX_IPV6_EXT_HEADERS`] extension headers;
//! - the TCP ports.
//!
//! Everything it reads lies inside the IP datagram as its own length fields
//! bound it (IPv4 total length, IPv6 payload length), not merely inside the
//! frame: bytes past the datagram (Ethernet padding) are never taken for
//! headers, just as the receiver would not.
//!
//! It never fails open: whatever could carry IP but cannot be followed far
//! enough to know what it carries comes back as [`ParsedKind::Malformed`]
//! (the datagram itself cannot be identified) or as
//! [`TransportKind::Unfollowable`] (the datagram is identified, its header
//! chain is not), and the caller holds that back on a blocked interface.
//!
//! The parser reads the packet only through [`PacketBytes`], so that each hook
//! supplies its own access (direct packet access in XDP and TC, a slice on the
//! host). Every offset it asks for is at most [`MAX_HEADER_OFFSET`], which
//! keeps the verifier's range tracking simple. Everything is
//! `#[inline(always)]`: the kernel programs are one function each.

/// 802.1Q / 802.1ad tags walked before giving up (and holding back).
pub const MAX_VLAN_TAGS: usize = 8;
/// IPv6 extension headers walked before giving up (and holding back).
pub const MAX_IPV6_EXT_HEADERS: usize = 8;
pub use crate::bytes::{MAX_HEADER_OFFSET, MAX_READ, PacketBytes, bytes_within};

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86DD;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88A8;
/// Pre-standard QinQ outer tag, still emitted by some switches.
pub const ETH_P_QINQ_9100: u16 = 0x9100;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_AH: u8 = 51;
pub const IPPROTO_ICMPV6: u8 = 58;

pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const TCP_HLEN: usize = 20;

/// IPv6 next-header values that are extension headers (RFC 7045), all of the
/// (next header, length) shape.
pub const IPV6_HOP_BY_HOP: u8 = 0;
pub const IPV6_ROUTING: u8 = 43;
pub const IPV6_FRAGMENT: u8 = 44;
pub const IPV6_AUTH: u8 = IPPROTO_AH;
pub const IPV6_DEST_OPTS: u8 = 60;
pub const IPV6_MOBILITY: u8 = 135;
pub const IPV6_HIP: u8 = 139;
pub const IPV6_SHIM6: u8 = 140;
pub const IPV6_EXPERIMENT1: u8 = 253;
pub const IPV6_EXPERIMENT2: u8 = 254;

/// What a frame is, as far as the held ports are concerned.
///
/// The parser's results are plain structs whose every field is set on every
/// path (enums only as field-less tags): in the kernel programs, the
/// undefined payload of an enum variant that carries none can end up copied
/// between registers where paths merge, and the verifier refuses to read a
/// register that was never written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parsed {
    pub kind: ParsedKind,
    /// For [`ParsedKind::Malformed`]: why.
    pub why: Option<Malformed>,
    /// For [`ParsedKind::Ip`]: the datagram ([`IpPacket::EMPTY`] otherwise).
    pub ip: IpPacket,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ParsedKind {
    /// Not IPv4 or IPv6 (ARP, LLDP, ...), or too short to hold an Ethernet
    /// header: never a TCP segment.
    NotIp,
    /// An IPv4 or IPv6 datagram, identified (addresses, fragment) and
    /// followed as far as its headers allow (see [`IpPacket::transport`]).
    Ip,
    /// Could carry IP, but the IP header itself cannot be trusted.
    Malformed,
}

impl Parsed {
    pub const NOT_IP: Self = Self {
        kind: ParsedKind::NotIp,
        why: None,
        ip: IpPacket::EMPTY,
    };

    #[inline(always)]
    pub const fn malformed(why: Malformed) -> Self {
        Self {
            kind: ParsedKind::Malformed,
            why: Some(why),
            ip: IpPacket::EMPTY,
        }
    }

    #[inline(always)]
    pub const fn ip(ip: IpPacket) -> Self {
        Self {
            kind: ParsedKind::Ip,
            why: None,
            ip,
        }
    }

    /// The datagram, if the frame is IP.
    #[inline(always)]
    pub fn datagram(&self) -> Option<&IpPacket> {
        (self.kind == ParsedKind::Ip).then_some(&self.ip)
    }
}

/// Why a frame could not be followed. Each of these is held back when it comes
/// from a blocked interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
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
    /// The datagram ends inside an extension or authentication header.
    ExtTruncated,
    /// An authentication header whose length field is impossible (0), or a
    /// second one after IPv4's.
    AuthBad,
    /// A second IPv6 fragment header.
    NestedFragment,
    /// The datagram ends inside the TCP header (before the ports, or, in a
    /// first fragment, before the header's end: RFC 1858, RFC 7112).
    TcpTruncated,
    /// A TCP data offset below 5.
    TcpBadOffset,
    /// The headers go on past [`MAX_HEADER_OFFSET`].
    TooLong,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum IpVersion {
    V4,
    V6,
}

/// Where a packet sits in a fragmented datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FragKind {
    /// Not fragmented (an IPv6 atomic fragment counts as not fragmented,
    /// RFC 6946).
    None,
    /// Offset 0, more fragments follow: it carries the transport header.
    First,
    /// Offset above 0: no transport header here.
    Later,
}

/// What follows the IP headers, as far as it matters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum TransportKind {
    /// TCP, with its ports inside the datagram ([`IpPacket::ports`]).
    Tcp,
    /// Not TCP (UDP, ICMP, ESP, no next header, ...).
    Other,
    /// A later fragment: payload only.
    Payload,
    /// The header chain or the TCP ports are not (all) in this datagram
    /// ([`IpPacket::why`]).
    Unfollowable,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Ports {
    pub src: u16,
    pub dst: u16,
}

/// An IP datagram, as far as the parser followed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpPacket {
    pub version: IpVersion,
    /// Offset of the IP header (after Ethernet and VLAN tags).
    pub l3_off: u16,
    /// Offset of the transport header (or, in a later fragment, of the
    /// fragment's payload; or, when the chain could not be followed, of the
    /// header it stopped at).
    pub l4_off: u16,
    /// Where the datagram ends in the frame, as its length field says (the
    /// frame's end for BIG TCP super-packets and IPv6 jumbograms).
    pub ip_end: u32,
    /// Protocol at the end of the header chain (in a later IPv6 fragment: the
    /// fragment header's next header).
    pub proto: u8,
    /// IPv4's protocol field (what an IPv4 receiver reassembles by), or 0
    /// for IPv6.
    pub key_proto: u8,
    pub fragment: FragKind,
    /// The fragment identification (0 when not fragmented).
    pub frag_id: u32,
    /// A later fragment's offset in bytes (0 otherwise).
    pub frag_offset: u16,
    /// Offset of the fragmentable part: right after the IPv4 header, or
    /// after the IPv6 fragment header. 0 when not fragmented.
    pub frag_start: u16,
    /// An IPv6 routing header with segments left: the destination address is
    /// not the final destination. (IPv4 source-route options are looked for
    /// only where it matters, by [`ipv4_source_routed`].)
    pub routed: bool,
    pub transport: TransportKind,
    /// For [`TransportKind::Tcp`]: the ports (0 otherwise).
    pub ports: Ports,
    /// For [`TransportKind::Unfollowable`]: why.
    pub why: Option<Malformed>,
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

impl IpPacket {
    /// No datagram: every field zero.
    pub const EMPTY: Self = Self {
        version: IpVersion::V4,
        l3_off: 0,
        l4_off: 0,
        ip_end: 0,
        proto: 0,
        key_proto: 0,
        fragment: FragKind::None,
        frag_id: 0,
        frag_offset: 0,
        frag_start: 0,
        routed: false,
        transport: TransportKind::Payload,
        ports: Ports { src: 0, dst: 0 },
        why: None,
    };

    /// The TCP ports, if this datagram holds them.
    #[inline(always)]
    pub fn tcp_ports(&self) -> Option<Ports> {
        (self.transport == TransportKind::Tcp).then_some(self.ports)
    }

    /// Marks the chain as not followable.
    #[inline(always)]
    fn unfollowable(&mut self, why: Malformed) {
        self.transport = TransportKind::Unfollowable;
        self.why = Some(why);
    }

    /// Bytes of IP headers: IPv4 options or IPv6 extension headers included.
    #[inline(always)]
    pub fn ip_header_len(&self) -> usize {
        self.l4_off as usize - self.l3_off as usize
    }

    /// No IPv4 options, no IPv6 extension headers.
    #[inline(always)]
    pub fn plain(&self) -> bool {
        let base = match self.version {
            IpVersion::V4 => IPV4_HLEN,
            IpVersion::V6 => IPV6_HLEN,
        };
        self.ip_header_len() == base
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
        return Parsed::NOT_IP;
    };
    let mut ethertype = be16(ethertype);
    let mut off = ETH_HLEN;

    let mut tags = 0;
    while is_vlan(ethertype) {
        if tags == MAX_VLAN_TAGS {
            return Parsed::malformed(Malformed::VlanTooDeep);
        }
        // A tag: 2 bytes of TCI, then the next EtherType.
        let Some(next) = pkt.bytes::<2>(off + 2) else {
            return Parsed::malformed(Malformed::VlanTruncated);
        };
        ethertype = be16(next);
        off += 4;
        tags += 1;
    }
    // Every tag depth continues from here as one path (see
    // `PacketBytes::forget`): an offset below 64, and an EtherType.
    let off = pkt.forget(off) & 0x3f;
    let ethertype = pkt.forget(ethertype as usize) as u16;

    match ethertype {
        ETH_P_IPV4 => parse_ipv4(pkt, off),
        ETH_P_IPV6 => parse_ipv6(pkt, off),
        _ => Parsed::NOT_IP,
    }
}

/// Parses a packet that starts at its IP header, as an L3 device (a tun in
/// `IFF_TUN` mode, `ARPHRD_NONE`) carries it, of the family `ethertype`
/// names: the skb's protocol, which tun sets from the IP version nibble (or
/// the packet information header) and by which the stack will route it.
/// Anything else is not IP to the stack, and passes as such.
#[inline(always)]
pub fn parse_l3<P: PacketBytes + ?Sized>(pkt: &P, ethertype: u16) -> Parsed {
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(pkt, 0),
        ETH_P_IPV6 => parse_ipv6(pkt, 0),
        _ => Parsed::NOT_IP,
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
        return Parsed::malformed(Malformed::IpTruncated);
    };
    if h[0] >> 4 != 4 {
        return Parsed::malformed(Malformed::IpBadVersion);
    }
    let ihl = ((h[0] & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return Parsed::malformed(Malformed::Ipv4BadIhl);
    }
    let total_len = be16([h[2], h[3]]) as usize;
    let frame_ip_len = pkt.packet_len().saturating_sub(off);
    // Total length 0 is how IPv4 BIG TCP marks a super-packet over 64 KiB.
    let big_tcp = total_len == 0 && frame_ip_len > 0xffff;
    let ip_len = if big_tcp { frame_ip_len } else { total_len };
    if ip_len < ihl || ip_len > frame_ip_len {
        return Parsed::malformed(Malformed::IpBadLength);
    }
    let ip_end = off + ip_len;

    let frag = be16([h[6], h[7]]);
    let more_fragments = frag & 0x2000 != 0;
    let offset = (frag & 0x1fff) << 3;
    let l4 = off + ihl;

    let mut packet = IpPacket {
        version: IpVersion::V4,
        l3_off: off as u16,
        l4_off: l4 as u16,
        ip_end: ip_end as u32,
        proto: h[9],
        key_proto: h[9],
        frag_id: be16([h[4], h[5]]) as u32,
        ..IpPacket::EMPTY
    };
    if offset != 0 || more_fragments {
        packet.frag_start = l4 as u16;
        packet.frag_offset = offset;
        packet.fragment = if offset != 0 {
            FragKind::Later
        } else {
            FragKind::First
        };
    } else {
        packet.frag_id = 0;
    }
    if packet.fragment == FragKind::Later {
        return Parsed::ip(packet);
    }
    // An authentication header (RFC 4302) between IPv4 and the transport:
    // walk it, as the receiver does.
    let mut l4 = l4;
    if packet.proto == IPPROTO_AH {
        let Some(ah) = bytes_within::<P, 2>(pkt, l4, ip_end) else {
            packet.unfollowable(Malformed::ExtTruncated);
            return Parsed::ip(packet);
        };
        if ah[1] == 0 || ah[0] == IPPROTO_AH {
            packet.unfollowable(Malformed::AuthBad);
            return Parsed::ip(packet);
        }
        packet.proto = ah[0];
        l4 += (ah[1] as usize + 2) * 4;
        packet.l4_off = l4 as u16;
    }
    transport(pkt, &mut packet);
    Parsed::ip(packet)
}

#[inline(always)]
fn parse_ipv6<P: PacketBytes + ?Sized>(pkt: &P, off: usize) -> Parsed {
    // Version/class/flow, payload length, next header (the addresses follow).
    let Some(h) = pkt.bytes::<7>(off) else {
        return Parsed::malformed(Malformed::IpTruncated);
    };
    if h[0] >> 4 != 6 {
        return Parsed::malformed(Malformed::IpBadVersion);
    }
    let frame_len = pkt.packet_len();
    if off + IPV6_HLEN > frame_len {
        return Parsed::malformed(Malformed::IpTruncated);
    }
    let payload_len = be16([h[4], h[5]]) as usize;
    // Payload length 0 is how IPv6 BIG TCP and jumbograms mark a datagram
    // over 64 KiB: the frame says where it ends.
    let ip_end = if payload_len == 0 {
        frame_len
    } else {
        off + IPV6_HLEN + payload_len
    };
    if ip_end > frame_len {
        return Parsed::malformed(Malformed::IpBadLength);
    }

    let mut packet = IpPacket {
        version: IpVersion::V6,
        l3_off: off as u16,
        l4_off: (off + IPV6_HLEN) as u16,
        ip_end: ip_end as u32,
        proto: h[6],
        ..IpPacket::EMPTY
    };
    if let Err(why) = walk_ipv6_extensions(pkt, &mut packet) {
        packet.unfollowable(why);
        return Parsed::ip(packet);
    }
    if packet.fragment != FragKind::Later {
        transport(pkt, &mut packet);
    }
    Parsed::ip(packet)
}

/// Walks the IPv6 extension headers from `packet.l4_off`, leaving
/// `packet.l4_off` and `packet.proto` at the first header that is not one
/// (or, in a later fragment, at the fragment's payload).
#[inline(always)]
fn walk_ipv6_extensions<P: PacketBytes + ?Sized>(
    pkt: &P,
    packet: &mut IpPacket,
) -> Result<(), Malformed> {
    let end = packet.ip_end as usize;
    let mut next = packet.proto;
    let mut l4 = packet.l4_off as usize;
    for _ in 0..MAX_IPV6_EXT_HEADERS {
        // Each header starts one path, whatever came before it (see
        // `PacketBytes::forget`).
        l4 = pkt.forget(l4) & 0xfff;
        next = pkt.forget(next as usize) as u8;
        if !is_ipv6_extension(next) {
            break;
        }
        if next == IPV6_FRAGMENT {
            if packet.frag_start != 0 {
                return Err(Malformed::NestedFragment);
            }
            // Next header, reserved, offset (13 bits) / M, identification.
            let e = bytes_within::<P, 8>(pkt, l4, end).ok_or(Malformed::ExtTruncated)?;
            next = e[0];
            l4 += 8;
            packet.frag_start = l4 as u16;
            let offset_flags = be16([e[2], e[3]]);
            let offset = offset_flags & 0xfff8;
            let id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
            if offset != 0 {
                // A later fragment holds no further headers, only payload.
                packet.fragment = FragKind::Later;
                packet.frag_id = id;
                packet.frag_offset = offset;
                packet.proto = next;
                packet.l4_off = l4 as u16;
                return Ok(());
            }
            if offset_flags & 1 != 0 {
                packet.fragment = FragKind::First;
                packet.frag_id = id;
            }
            continue;
        }
        // Next header, length, and (for a routing header) type and segments
        // left.
        let e = bytes_within::<P, 4>(pkt, l4, end).ok_or(Malformed::ExtTruncated)?;
        let len = if next == IPV6_AUTH {
            if e[1] == 0 {
                return Err(Malformed::AuthBad);
            }
            (e[1] as usize + 2) * 4
        } else {
            (e[1] as usize + 1) * 8
        };
        if next == IPV6_ROUTING && e[3] != 0 {
            packet.routed = true;
        }
        next = e[0];
        l4 += len;
        if l4 > MAX_HEADER_OFFSET {
            return Err(Malformed::TooLong);
        }
    }
    packet.proto = next;
    packet.l4_off = l4 as u16;
    if is_ipv6_extension(next) {
        return Err(Malformed::Ipv6ChainTooLong);
    }
    Ok(())
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

/// The transport header of `packet`, at its `l4_off`.
#[inline(always)]
fn transport<P: PacketBytes + ?Sized>(pkt: &P, packet: &mut IpPacket) {
    if packet.proto != IPPROTO_TCP {
        packet.transport = TransportKind::Other;
        return;
    }
    let l4 = packet.l4_off as usize;
    if l4 > MAX_HEADER_OFFSET {
        packet.unfollowable(Malformed::TooLong);
        return;
    }
    match bytes_within::<P, 4>(pkt, l4, packet.ip_end as usize) {
        Some(p) => {
            packet.transport = TransportKind::Tcp;
            packet.ports = Ports {
                src: be16([p[0], p[1]]),
                dst: be16([p[2], p[3]]),
            };
        }
        None => packet.unfollowable(Malformed::TcpTruncated),
    }
}

/// The fields of a TCP header the programs act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpHeader {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// The header's length in bytes (data offset x 4), 20 to 60.
    pub header_len: u16,
    pub flags: u8,
    /// `Some` when the header is not whole in the datagram (every other field
    /// is then 0).
    pub why: Option<Malformed>,
}

impl TcpHeader {
    #[inline(always)]
    const fn broken(why: Malformed) -> Self {
        Self {
            src_port: 0,
            dst_port: 0,
            seq: 0,
            ack: 0,
            header_len: 0,
            flags: 0,
            why: Some(why),
        }
    }

    /// Reads the TCP header of `ip`; it is whole ([`TcpHeader::why`] is
    /// `None`) if all of it, options included, lies inside the datagram. A
    /// data offset below 5 is [`Malformed::TcpBadOffset`].
    #[inline(always)]
    pub fn read<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> Self {
        // Word by word: a long byte array held in registers costs the
        // programs stack (each byte spills on its own).
        let l4 = ip.l4_off as usize;
        let end = ip.ip_end as usize;
        if l4 + 18 > end {
            return Self::broken(Malformed::TcpTruncated);
        }
        // One read at a time (see `reply::swap_macs` in the programs).
        let Some(ports) = pkt.be32(l4) else {
            return Self::broken(Malformed::TcpTruncated);
        };
        let Some(seq) = pkt.be32(l4 + 4) else {
            return Self::broken(Malformed::TcpTruncated);
        };
        let Some(ack) = pkt.be32(l4 + 8) else {
            return Self::broken(Malformed::TcpTruncated);
        };
        let Some(offset_flags) = pkt.be16(l4 + 12) else {
            return Self::broken(Malformed::TcpTruncated);
        };
        let header_len = (offset_flags >> 12) * 4;
        if (header_len as usize) < TCP_HLEN {
            return Self::broken(Malformed::TcpBadOffset);
        }
        if l4 + header_len as usize > end {
            return Self::broken(Malformed::TcpTruncated);
        }
        Self {
            src_port: (ports >> 16) as u16,
            dst_port: ports as u16,
            seq,
            ack,
            header_len,
            flags: offset_flags as u8,
            why: None,
        }
    }

    /// The whole header is in the datagram.
    #[inline(always)]
    pub fn is_whole(&self) -> bool {
        self.why.is_none()
    }
}

/// Whether an IPv4 header may carry a loose or strict source route (RFC
/// 791), which makes its destination address only the first hop: whether any
/// byte of its options is the type of one (0x83, 0x89). A byte of another
/// option's data with that value counts too: the caller then only declines
/// to trust the destination. (Walking the options by their lengths would
/// make the verifier follow every mix of 1-byte and longer options.)
#[inline(always)]
pub fn ipv4_source_routed<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> bool {
    const LSRR: u8 = 0x83;
    const SSRR: u8 = 0x89;
    let end = ip.l4_off as usize;
    let mut off = ip.l3_off as usize + IPV4_HLEN;
    // At most 40 bytes of options, in 4-byte words.
    for _ in 0..10 {
        if off >= end {
            return false;
        }
        let Some(word) = pkt.bytes::<4>(off) else {
            return true;
        };
        if word.iter().any(|&b| b == LSRR || b == SSRR) {
            return true;
        }
        off += 4;
    }
    false
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
    ipv6_addr(pkt, ip.l3_off as usize + 24)
}

/// The IPv6 source address of `ip` (which must be IPv6).
#[inline(always)]
pub fn ipv6_src<P: PacketBytes + ?Sized>(pkt: &P, ip: &IpPacket) -> Option<[u8; 16]> {
    ipv6_addr(pkt, ip.l3_off as usize + 8)
}

/// 16 bytes at `off`, read as four words (see [`TcpHeader::read`]).
///
/// Every word is set on every path (0 when it cannot be read), so that the
/// `None` the caller sees carries no undefined bytes: in the kernel
/// programs the compiler may copy those between registers where paths merge,
/// and the verifier refuses to read a register that was never written.
#[inline(always)]
fn ipv6_addr<P: PacketBytes + ?Sized>(pkt: &P, off: usize) -> Option<[u8; 16]> {
    let mut words = [0u32; 4];
    let mut whole = true;
    for (i, word) in words.iter_mut().enumerate() {
        match pkt.bytes::<4>(off + 4 * i) {
            Some(b) => *word = u32::from_ne_bytes(b),
            None => whole = false,
        }
    }
    // SAFETY: [u32; 4] and [u8; 16] have the same size, and every bit
    // pattern is valid for both; native-endian words keep the memory order.
    let addr = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(words) };
    whole.then_some(addr)
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_l3;
