//! The pure part of the verdict on a packet from a blocked interface: from a
//! [`Parsed`] frame and the set of held ports, what kind of packet this is.
//! The kernel programs add what needs maps (allowed destinations, counters,
//! the action); the host tests and the fuzzer use this as the reference.

use crate::parse::{Fragment, IpPacket, Parsed, Transport};

/// What a packet from a blocked interface is, with respect to the held ports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Class {
    /// Cannot be a TCP segment to a held port: it passes.
    Pass,
    /// A TCP segment (or the first fragment of one) to a held port. Held
    /// back unless its destination is allowed.
    HeldPort(IpPacket),
    /// A later fragment of a TCP datagram. Whether it belongs to a segment to
    /// a held port is only known from its first fragment; without fragment
    /// tracking it is held back unless its destination is allowed.
    TcpLaterFragment(IpPacket),
    /// Could be a TCP segment to a held port, but cannot be parsed far enough
    /// to tell. Held back.
    Unparseable,
}

/// Classifies a parsed frame. `is_held` says whether a TCP destination port
/// is held.
#[inline(always)]
pub fn classify(parsed: &Parsed, is_held: impl Fn(u16) -> bool) -> Class {
    let ip = match parsed {
        Parsed::NotIp => return Class::Pass,
        Parsed::Malformed(_) => return Class::Unparseable,
        Parsed::Ip(ip) => ip,
    };
    match ip.transport {
        Transport::Tcp(tcp) => {
            if is_held(tcp.dst_port) {
                Class::HeldPort(*ip)
            } else {
                Class::Pass
            }
        }
        Transport::TcpTruncated => Class::Unparseable,
        Transport::Other => {
            if ip.proto == crate::parse::IPPROTO_TCP
                && matches!(ip.fragment, Fragment::Later { .. })
            {
                Class::TcpLaterFragment(*ip)
            } else {
                Class::Pass
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{IpVersion, Malformed, Tcp};

    fn ip(transport: Transport, proto: u8, fragment: Fragment) -> Parsed {
        Parsed::Ip(IpPacket {
            version: IpVersion::V4,
            l3_off: 14,
            proto,
            l4_off: 34,
            fragment,
            transport,
        })
    }

    fn tcp_to(port: u16) -> Transport {
        Transport::Tcp(Tcp {
            src_port: 40000,
            dst_port: port,
            flags: Some(0x02),
            complete: true,
        })
    }

    const HELD: fn(u16) -> bool = |p| p == 25 || p == 465;

    #[test]
    fn tcp_to_a_held_port_is_held() {
        let p = ip(tcp_to(25), 6, Fragment::None);
        assert!(matches!(classify(&p, HELD), Class::HeldPort(_)));
        let p = ip(tcp_to(465), 6, Fragment::First { id: 7 });
        assert!(matches!(classify(&p, HELD), Class::HeldPort(_)));
    }

    #[test]
    fn tcp_to_another_port_passes() {
        assert_eq!(
            classify(&ip(tcp_to(587), 6, Fragment::None), HELD),
            Class::Pass
        );
    }

    #[test]
    fn replies_from_a_held_port_pass() {
        let reply = Transport::Tcp(Tcp {
            src_port: 25,
            dst_port: 40000,
            flags: Some(0x12),
            complete: true,
        });
        assert_eq!(classify(&ip(reply, 6, Fragment::None), HELD), Class::Pass);
    }

    #[test]
    fn non_ip_and_non_tcp_pass() {
        assert_eq!(classify(&Parsed::NotIp, HELD), Class::Pass);
        assert_eq!(
            classify(&ip(Transport::Other, 17, Fragment::None), HELD),
            Class::Pass
        );
        assert_eq!(
            classify(&ip(Transport::Other, 17, Fragment::Later { id: 1 }), HELD),
            Class::Pass
        );
    }

    #[test]
    fn what_cannot_be_followed_is_unparseable() {
        let m = Parsed::Malformed(Malformed::VlanTooDeep);
        assert_eq!(classify(&m, HELD), Class::Unparseable);
        let t = ip(Transport::TcpTruncated, 6, Fragment::None);
        assert_eq!(classify(&t, HELD), Class::Unparseable);
    }

    #[test]
    fn later_tcp_fragments_are_flagged() {
        let p = ip(Transport::Other, 6, Fragment::Later { id: 9 });
        assert!(matches!(classify(&p, HELD), Class::TcpLaterFragment(_)));
    }
}
