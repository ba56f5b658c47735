//! Writes the fuzzer's named inputs to `fuzz/regressions/parse/`: one
//! `seed-<shape>` per packet shape the parser handles, and one
//! `regression-<what>` per disagreement the fuzzer found (rebuilt here, so
//! that each says what it is). Run it again after adding one:
//! `cargo run -p egress-guard-common --features craft --example fuzz_seeds`.
//! (`fuzz/corpus/parse/` is the fuzzer's own, minimized corpus.)

use std::{fs, path::Path};

use egress_guard_common::craft::{
    Frame,
    addr::{INTERNET4, INTERNET6, RELAY4, RELAY6, VM4, VM6},
};

#[allow(clippy::too_many_lines, reason = "one list, one line a shape")]
fn main() -> std::io::Result<()> {
    let tcp4 = |dport| Frame::tcp4(VM4, INTERNET4, 40000, dport);
    let tcp6 = |dport| Frame::tcp6(VM6, INTERNET6, 40000, dport);
    let mut seeds: Vec<(&str, Vec<u8>)> = vec![
        ("tcp4-syn-25", tcp4(25).build()),
        ("tcp4-syn-587", tcp4(587).build()),
        ("tcp6-syn-25", tcp6(25).build()),
        ("tcp6-syn-443", tcp6(443).build()),
        (
            "tcp4-ack-data-25",
            tcp4(25).flags(0x10).payload(b"EHLO x\r\n").build(),
        ),
        (
            "tcp4-tfo-25",
            tcp4(25).tcp_options(3).payload(&[b'x'; 40]).build(),
        ),
        (
            "tcp4-reply-from-25",
            Frame::tcp4(VM4, INTERNET4, 25, 40000).flags(0x12).build(),
        ),
        ("udp4-25", Frame::udp4(VM4, INTERNET4, 40000, 25).build()),
        ("udp6-25", Frame::udp6(VM6, INTERNET6, 40000, 25).build()),
        ("arp", Frame::arp()),
        (
            "icmp4",
            tcp4(25).raw_proto(1).payload(&[8, 0, 0, 0]).build(),
        ),
        ("ipip", tcp4(25).raw_proto(4).payload(&[0x45; 24]).build()),
        ("dot1q-25", tcp4(25).dot1q(10).build()),
        ("qinq-6-25", tcp6(25).dot1ad(10).dot1q(20).build()),
        ("qinq-9100-25", tcp4(25).vlan(0x9100, 7).dot1q(8).build()),
        ("vlan3-587", tcp4(587).dot1ad(1).dot1q(2).dot1q(3).build()),
        ("ihl15-25", tcp4(25).ipv4_options(10).build()),
        ("ihl15-587", tcp4(587).ipv4_options(10).build()),
        ("ihl6-25", tcp4(25).ipv4_options(1).build()),
        ("ah4-25", tcp4(25).ipv4_auth(6).build()),
        ("ah4-587", tcp4(587).ipv4_auth(6).build()),
        ("ah6-25", tcp6(25).ipv6_ext(51, 16).build()),
        (
            "ext6-hop-rt-dst-25",
            tcp6(25)
                .ipv6_ext(0, 8)
                .ipv6_ext(43, 24)
                .ipv6_ext(60, 16)
                .build(),
        ),
        (
            "ext6-hop-dst-443",
            tcp6(443).ipv6_ext(0, 8).ipv6_ext(60, 8).build(),
        ),
        ("ext6-none", tcp6(25).raw_proto(59).build()),
        ("ext6-atomic-25", tcp6(25).fragment(7, 0, false).build()),
        (
            "frag4-first-25",
            tcp4(25).fragment(1, 0, true).payload(&[0; 16]).build(),
        ),
        (
            "frag4-first-443",
            tcp4(443).fragment(2, 0, true).payload(&[0; 16]).build(),
        ),
        (
            "frag4-later-tcp",
            tcp4(25).fragment(3, 4, false).payload(&[0; 32]).build(),
        ),
        (
            "frag4-later-udp",
            Frame::udp4(VM4, INTERNET4, 40000, 53)
                .fragment(4, 4, false)
                .payload(&[0; 24])
                .build(),
        ),
        (
            "frag6-first-25",
            tcp6(25).fragment(5, 0, true).payload(&[0; 16]).build(),
        ),
        (
            "frag6-later",
            tcp6(25).fragment(6, 4, false).payload(&[0; 32]).build(),
        ),
        (
            "frag6-first-ext-after-25",
            tcp6(25)
                .fragment(8, 0, true)
                .ipv6_ext_after_fragment(60, 16)
                .build(),
        ),
        (
            "frag6-nested",
            tcp6(443)
                .fragment(9, 0, true)
                .ipv6_ext_after_fragment(44, 8)
                .build(),
        ),
        ("lldp", tcp4(25).ethertype(0x88cc).build()),
        ("relay4-25", Frame::tcp4(VM4, RELAY4, 40000, 25).build()),
        ("relay6-25", Frame::tcp6(VM6, RELAY6, 40000, 25).build()),
        ("short-ip4", tcp4(25).truncate(30).build()),
        ("short-tcp4", tcp4(25).truncate(36).build()),
        ("short-ip6", tcp6(25).truncate(50).build()),
        ("short-vlan", tcp4(25).dot1q(5).truncate(16).build()),
        ("eth-only", tcp4(25).truncate(14).build()),
    ];
    let mut vlan8 = tcp4(25);
    let mut vlan9 = tcp4(587);
    for i in 0..9u16 {
        if i < 8 {
            vlan8 = vlan8.dot1q(i);
        }
        vlan9 = vlan9.dot1ad(i);
    }
    seeds.push(("vlan8-25", vlan8.build()));
    seeds.push(("vlan9-587", vlan9.build()));
    let mut ext8 = tcp6(443);
    let mut ext9 = tcp6(443);
    for i in 0..9 {
        if i < 8 {
            ext8 = ext8.ipv6_ext(60, 8);
        }
        ext9 = ext9.ipv6_ext(0, 8);
    }
    seeds.push(("ext6-8-443", ext8.build()));
    seeds.push(("ext6-9-443", ext9.build()));
    let mut padded = tcp4(587).payload(&[0; 12]).build();
    padded[16..18].copy_from_slice(&40u16.to_be_bytes());
    seeds.push(("padding4-587", padded));
    let mut bad_ihl = tcp4(25).build();
    bad_ihl[14] = 0x43;
    seeds.push(("ihl3", bad_ihl));

    // What the fuzzer found. Both are shapes the parser holds back on
    // purpose although etherparse reads them as neither TCP nor malformed
    // (`oracle::DELIBERATELY_HELD`).
    let mut regressions: Vec<(&str, Vec<u8>)> = Vec::new();
    // Two IPv6 fragment headers, both atomic, then protocol 124.
    let mut nested = Frame::tcp6(VM6, INTERNET6, 40000, 443)
        .fragment(0, 0, false)
        .ipv6_ext_after_fragment(44, 8)
        .build();
    nested[62] = 124;
    regressions.push(("nested-atomic-fragments", nested));
    // Nine destination-options headers, then no TCP.
    let mut long = tcp6(443);
    for _ in 0..9 {
        long = long.ipv6_ext(60, 8);
    }
    let long = long.raw_proto(4).payload(&[0x45; 20]).build();
    regressions.push(("ipv6-chain-too-long", long));

    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions/parse");
    fs::create_dir_all(&dir)?;
    for (name, frame) in &seeds {
        fs::write(dir.join(format!("seed-{name}")), frame)?;
    }
    for (name, frame) in &regressions {
        fs::write(dir.join(format!("regression-{name}")), frame)?;
    }
    println!(
        "wrote {} seeds and {} regressions to {}",
        seeds.len(),
        regressions.len(),
        dir.display()
    );
    Ok(())
}
