//! Large policies: correct, and (in release, `--ignored`) fast.

use std::{fmt::Write as _, time::Instant};

use super::{eval, ok};
use crate::policy::Verdict;

/// A policy with `n` VMs over `n / 10` subscriptions of every kind.
pub fn big_policy(n: usize) -> String {
    let subs = (n / 10).max(1);
    let mut y = String::with_capacity(n * 160);
    y.push_str("version: 1\nenforcement:\n  attach: [\"tap*\"]\nsubscriptions:\n");
    for s in 0..subs {
        let _ = match s % 4 {
            0 => writeln!(
                y,
                "  - id: sub-{s}\n    offer: msdn\n    created: 2019-04-02"
            ),
            1 => writeln!(
                y,
                "  - id: sub-{s}\n    offer: pay-as-you-go\n    created: 2020-05-01\n    exemption:\n      granted: 2021-01-10T12:00:00Z"
            ),
            2 => writeln!(
                y,
                "  - id: sub-{s}\n    offer: enterprise-agreement\n    created: 2020-05-01"
            ),
            _ => writeln!(
                y,
                "  - id: sub-{s}\n    offer: pay-as-you-go\n    created: 2020-05-01\n    exemption:\n      granted: 2021-01-10T12:00:00Z\n      revoked: 2030-01-01T00:00:00Z"
            ),
        };
    }
    y.push_str("vms:\n");
    for v in 0..n {
        let _ = writeln!(
            y,
            "  - name: vm-{v}\n    subscription: sub-{}\n    interface: tap{v}\n    addresses: [10.{}.{}.{}]\n    started: 2021-02-01T00:00:00Z",
            v % subs,
            v >> 16 & 255,
            v >> 8 & 255,
            v & 255
        );
    }
    y
}

#[test]
fn thousands_of_vms() {
    let policy = ok(&big_policy(4000));
    let d = eval(&policy, "2026-01-01T00:00:00Z");
    assert_eq!(d.vms.len(), 4000);
    // Subscriptions 0 mod 4 (msdn) block; the rest allow.
    assert_eq!(d.blocked(), 1000);
    assert_eq!(d.next_change, Some(super::t("2030-01-01T00:00:00Z")));
    assert_eq!(
        d.interface("tap3999").map(|i| i.verdict),
        Some(Verdict::Allow)
    );
    assert_eq!(d.interface("tap4000").map(|i| i.vm.is_none()), Some(true));
}

/// `cargo test --release -p egress-guard --lib policy::tests::scale -- --ignored --nocapture`
#[test]
#[ignore = "measures the process's heap and RSS: run alone (other tests allocate meanwhile), in release"]
fn hundred_thousand_vms() {
    let text = big_policy(100_000);
    let text = text.as_str().to_owned(); // no spare capacity
    let size = text.len();
    let heap_before = heap_in_use();
    let rss_before = rss_kib();
    let start = Instant::now();
    let policy = ok(&text);
    let parsed = start.elapsed();
    let peak = peak_kib().saturating_sub(rss_before) * 1024;
    let held = heap_in_use().saturating_sub(heap_before);
    println!(
        "parse of {size} bytes, {} VMs: {parsed:?}; the policy holds {held} bytes ({}.{} times the file), resident memory peaked {peak} bytes above the start ({}.{} times)",
        policy.vms.len(),
        held * 10 / size / 10,
        held * 10 / size % 10,
        peak * 10 / size / 10,
        peak * 10 / size % 10,
    );
    let start = Instant::now();
    let d = eval(&policy, "2026-01-01T00:00:00Z");
    let evaluated = start.elapsed();
    println!("evaluate: {evaluated:?}");
    assert_eq!(d.vms.len(), 100_000);
    assert!(held < 4 * size, "the policy holds {held} bytes");
    assert!(peak < 5 * size, "parse peaked at {peak} bytes");
    // (Times are printed, not asserted: BENCHMARKS.md section 4 measures them.)
}

/// Resident memory now, in KiB (from /proc/self/status); resets the peak
/// that [`peak_kib`] reads.
fn rss_kib() -> usize {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    status_kib("VmRSS:")
}

/// Peak resident memory since [`rss_kib`], in KiB.
fn peak_kib() -> usize {
    status_kib("VmHWM:")
}

fn status_kib(field: &str) -> usize {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the allocator has handed out and not had back (glibc).
fn heap_in_use() -> usize {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let m = unsafe { libc::mallinfo2() };
    m.uordblks + m.hblkhd
}
