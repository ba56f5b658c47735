//! Structure-aware: frames built from a grammar of the shapes the parser
//! handles (VLAN stacks, IPv4 options and AH, IPv6 extension chains,
//! fragments, TCP options, payloads), then cut short and corrupted at a few
//! bytes, and held to the same check as `parse` (see
//! `egress_guard_common::oracle`). Random bytes rarely make a valid IPv6
//! chain eight headers deep; this target starts from valid ones.
#![no_main]

use arbitrary::Arbitrary;
use egress_guard_common::craft::Frame;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Transport {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        option_words: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Raw {
        proto: u8,
    },
}

#[derive(Arbitrary, Debug)]
struct Shape {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    /// (TPID choice, VID)
    vlans: Vec<(u8, u16)>,
    ipv4_option_words: u8,
    ipv4_auth_words: u8,
    /// (kind choice, length in 8-byte units)
    ext: Vec<(u8, u8)>,
    ext_after_fragment: Vec<(u8, u8)>,
    fragment: Option<(u32, u16, bool)>,
    transport: Transport,
    payload: Vec<u8>,
    truncate: Option<u16>,
    /// (offset, value) bytes written over the finished frame.
    corrupt: Vec<(u16, u8)>,
}

const TPIDS: [u16; 4] = [0x8100, 0x88a8, 0x9100, 0x0800];
const EXT: [u8; 7] = [0, 43, 60, 51, 135, 139, 44];

fn build(s: &Shape) -> Vec<u8> {
    let mut f = match (s.v6, &s.transport) {
        (false, Transport::Tcp { sport, dport, .. }) => Frame::tcp4(
            s.src[..4].try_into().unwrap(),
            s.dst[..4].try_into().unwrap(),
            *sport,
            *dport,
        ),
        (true, Transport::Tcp { sport, dport, .. }) => Frame::tcp6(s.src, s.dst, *sport, *dport),
        (false, Transport::Udp { sport, dport }) => Frame::udp4(
            s.src[..4].try_into().unwrap(),
            s.dst[..4].try_into().unwrap(),
            *sport,
            *dport,
        ),
        (true, Transport::Udp { sport, dport }) => Frame::udp6(s.src, s.dst, *sport, *dport),
        (false, Transport::Raw { proto }) => Frame::tcp4(
            s.src[..4].try_into().unwrap(),
            s.dst[..4].try_into().unwrap(),
            0,
            0,
        )
        .raw_proto(*proto),
        (true, Transport::Raw { proto }) => Frame::tcp6(s.src, s.dst, 0, 0).raw_proto(*proto),
    };
    if let Transport::Tcp {
        flags,
        option_words,
        ..
    } = s.transport
    {
        f = f.flags(flags).tcp_options(option_words % 11);
    }
    for &(tpid, vid) in s.vlans.iter().take(10) {
        f = f.vlan(TPIDS[tpid as usize % TPIDS.len()], vid);
    }
    if s.v6 {
        for &(kind, len) in s.ext.iter().take(10) {
            let kind = EXT[kind as usize % (EXT.len() - 1)];
            let len = if kind == 51 {
                8 + 4 * (len as usize % 8)
            } else {
                8 * (1 + len as usize % 4)
            };
            f = f.ipv6_ext(kind, len);
        }
        for &(kind, len) in s.ext_after_fragment.iter().take(4) {
            let kind = EXT[kind as usize % EXT.len()];
            f = f.ipv6_ext_after_fragment(kind, 8 * (1 + len as usize % 3));
        }
    } else {
        f = f.ipv4_options(s.ipv4_option_words % 11);
        if s.ipv4_auth_words % 4 != 0 {
            f = f.ipv4_auth(2 + s.ipv4_auth_words % 8);
        }
    }
    if let Some((id, offset, more)) = s.fragment {
        f = f.fragment(id, offset % 256, more);
    }
    f = f.payload(&s.payload[..s.payload.len().min(512)]);
    let mut frame = f.build();
    if let Some(len) = s.truncate {
        frame.truncate(len as usize);
    }
    for &(off, value) in s.corrupt.iter().take(4) {
        if let Some(b) = frame.get_mut(off as usize) {
            *b = value;
        }
    }
    frame
}

fuzz_target!(|shape: Shape| {
    let frame = build(&shape);
    if let Err(disagreement) = egress_guard_common::oracle::check(&frame) {
        panic!("{disagreement}\n{shape:?}\nframe: {frame:02x?}");
    }
});
