//! Fixed results for the report's golden tests: every benchmark but the
//! hypervisor devices (whose section has its own template tests), with
//! figures chosen so that each goal is met in one fixture and missed in
//! another, and a third with only some benchmarks run.

#![allow(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    reason = "fixed positive figures far below 2^52"
)]

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use crate::{
    Bench, Mode, Results, churn, control,
    datapath::{self, ClassResult, Cost, DatapathResult, Origin},
    flood::{self, FloodResult, Holder, HolderResult, Window},
    lab::Hook,
    machine::Machine,
    throughput::{self, HookThroughput, ThroughputResult},
};

fn cost(ns: f64, empty: f64, best: f64) -> Cost {
    Cost {
        ns,
        empty_ns: empty,
        added_ns: ns - empty,
        best_added_ns: best,
        kernel_ns: ns.round(),
        kernel_empty_ns: empty.round(),
        retval: 2,
    }
}

/// The TestRun classes the report quotes, with ns added scaled by `k`.
fn datapath(k: f64) -> DatapathResult {
    let classes = [
        ("exempt VM", "TCP SYN to 25", Origin::Exempt, false, 2.0),
        ("non-IP", "ARP request", Origin::Blocked, false, 3.5),
        (
            "TCP, another port",
            "TCP SYN to 443",
            Origin::Blocked,
            false,
            7.25,
        ),
        (
            "TCP to 25, allowed destination",
            "TCP SYN to 25 at the relay",
            Origin::Blocked,
            false,
            9.0,
        ),
        (
            "TCP to 25, held back",
            "TCP SYN to 25",
            Origin::Blocked,
            true,
            18.5,
        ),
        (
            "first fragment",
            "IPv4 first fragment to 25",
            Origin::Blocked,
            true,
            21.0,
        ),
        (
            "later fragment",
            "IPv4 later fragment",
            Origin::Blocked,
            true,
            6.0,
        ),
        (
            "IPv6, 3 extension headers, to 25",
            "IPv6 SYN to 25",
            Origin::Blocked,
            true,
            23.0,
        ),
        (
            "VLAN-tagged, to 25",
            "802.1Q SYN to 25",
            Origin::Blocked,
            true,
            19.75,
        ),
    ];
    DatapathResult {
        params: datapath::Params {
            repeat: 1_000_000,
            rounds: 21,
        },
        classes: classes
            .into_iter()
            .enumerate()
            .map(|(i, (name, frame, from, held, added))| ClassResult {
                name,
                frame,
                from,
                frame_len: 60 + 14 * i,
                held,
                xdp: cost(11.5 + added * k, 11.5, added * k - 0.4),
                tc: cost(12.25 + added * k * 1.1, 12.25, added * k * 1.1 - 0.3),
            })
            .collect(),
        empty_xdp_ns: 11.5,
        empty_tc_ns: 12.25,
        load_s: 0.412,
    }
}

/// Throughput with the hooks' shares of no agent (blocked, exempt).
fn throughput(shares: [(Hook, f64, f64); 3]) -> ThroughputResult {
    let mut hooks = BTreeMap::new();
    hooks.insert(
        Hook::None,
        HookThroughput {
            actual: String::new(),
            blocked_gbps: vec![30.1, 28.7, 31.4],
            exempt_gbps: vec![29.9, 30.5, 27.2],
            blocked_ratio: vec![1.0, 1.0, 1.0],
            exempt_ratio: vec![1.0, 1.0, 1.0],
        },
    );
    for (hook, b, e) in shares {
        hooks.insert(
            hook,
            HookThroughput {
                actual: format!("{}/{}", hook.policy_value(), hook.policy_value()),
                blocked_gbps: vec![30.0 * b, 29.0 * b, 31.0 * b],
                exempt_gbps: vec![30.0 * e, 28.5 * e],
                blocked_ratio: vec![b - 0.01, b, b + 0.02],
                exempt_ratio: vec![e, e + 0.004],
            },
        );
    }
    ThroughputResult {
        params: throughput::Params {
            seconds: 3,
            omit: 1,
            rounds: 6,
        },
        hooks,
        commands: vec![
            "ip netns exec egt-4242-3-vm-blk iperf3 -c 10.99.0.2 -p 5201 -t 3 -O 1 -A 0,0 -J"
                .to_owned(),
            "ip netns exec egt-4242-4-vm-ex iperf3 -c 10.99.0.2 -p 25 -t 3 -O 1 -A 0,0 -J"
                .to_owned(),
        ],
    }
}

/// A flood in which each holder holds back `per_s` million a softirq
/// CPU-second, and the exempt VM loses `lost` SYNs under egress-guard tc.
fn flood(per_s: [(Holder, f64); 5], lost: u64, capture_drops: u64) -> FloodResult {
    let best_nft = per_s
        .iter()
        .filter(|(h, _)| h.is_nft())
        .map(|(_, x)| *x)
        .fold(0.0, f64::max);
    let holders = per_s
        .into_iter()
        .map(|(holder, m)| {
            let window = |softirq_s: f64| Window {
                seconds: 4.0,
                offered: 9_000_000,
                held: (m * 1e6 * softirq_s).round() as u64,
                softirq_s,
                system_s: 3.5,
                exempt_sent: 2_000,
                exempt_lost: if holder == Holder::Guard(Hook::Tc) {
                    lost
                } else {
                    0
                },
                capture_drops: if holder == Holder::NftForward {
                    capture_drops
                } else {
                    0
                },
            };
            (
                holder,
                HolderResult {
                    actual_hook: match holder {
                        Holder::Guard(h) => h.policy_value().to_owned(),
                        _ => String::new(),
                    },
                    windows: vec![window(1.5), window(2.0)],
                    vs_best_nft: vec![m / best_nft, m / best_nft * 1.05],
                },
            )
        })
        .collect();
    FloodResult {
        params: flood::Params {
            seconds: 4.0,
            warmup: 1.0,
            rounds: 5,
            exempt_rate: 500,
        },
        holders,
        commands: vec![format!(
            "ip netns exec egt-4242-1-vm-blk trafgen -i {}/egt-4242-2-bench/syn-flood.trafgen -o eth0 -P 1 -q",
            std::env::temp_dir().display()
        )],
        trafgen_config: "{ 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, ... }\n".to_owned(),
    }
}

fn size(vms: usize, slow: f64) -> control::SizeResult {
    control::SizeResult {
        vms,
        policy_bytes: vms * 61,
        check_s: vec![0.0004 * vms as f64 * slow, 0.0005 * vms as f64 * slow],
        ready_s: vec![0.3 + 0.000_006 * vms as f64 * slow],
        change_e2e_ms: vec![104.0 + 0.0004 * vms as f64 * slow, 108.0],
        change_work_ms: vec![4.0 + 0.0004 * vms as f64 * slow, 8.0],
        change_apply_ms: vec![0.5 + 0.000_05 * vms as f64 * slow],
        ready_rss_mib: 9.5 + 0.0002 * vms as f64 * slow,
        peak_rss_mib: 11.25 + 0.0003 * vms as f64 * slow,
        idle_seconds: 60.0,
        idle_cpu_pct: 0.0123 * slow,
    }
}

fn churn(median_ms: f64) -> churn::ChurnResult {
    let from_exists_ms: Vec<f64> = (0..20)
        .map(|i| median_ms * (0.5 + f64::from(i) / 19.0))
        .collect();
    churn::ChurnResult {
        params: churn::Params { creations: 20 },
        from_return_ms: from_exists_ms
            .iter()
            .map(|x| (x - median_ms * 0.7).max(0.0))
            .collect(),
        before_return: 6,
        from_exists_ms,
        command: "ip -n egt-4242-9-hv link add tapx0 type veth peer name qpeer0".to_owned(),
    }
}

fn results(mode: Mode, requested: Vec<Bench>) -> Results {
    Results {
        mode,
        nice: -10,
        requested,
        machine: Machine {
            cpu_model: "Intel Xeon Processor (Cascadelake)".to_owned(),
            cpus: 2,
            virtualised: true,
            kernel: "6.18.0-1-amd64".to_owned(),
            memory_gib: 23.4,
            commit: "0123456789ab".to_owned(),
            load_at_start: (1.23, 0.98),
            busy_before: 0.12,
        },
        started: chrono::DateTime::from_timestamp(1_790_000_000, 0).unwrap_or_default(),
        took: Duration::from_secs(1_234),
        steal_share: 0.034,
        datapath: None,
        throughput: None,
        flood: None,
        control: None,
        control_params: control::Params {
            sizes: vec![1_000, 100_000],
            check_repeats: 3,
            start_repeats: 3,
            changes: 5,
            idle_seconds: 60.0,
        },
        churn: None,
        hv: None,
        workspace: PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.."),
    }
}

/// The drop benchmark's figures (M per softirq CPU-second), in the order
/// of `Holder::ALL`.
fn holders(m: [f64; 5]) -> [(Holder, f64); 5] {
    std::array::from_fn(|i| (Holder::ALL[i], m[i]))
}

/// Every benchmark but the hypervisor devices run, with the hooks'
/// throughput shares (tc, xdp-generic, xdp), the drop figures, the
/// exempt SYNs lost and missed by the capture, the control plane's
/// slowness and the churn median.
struct Run {
    mode: Mode,
    datapath_scale: f64,
    shares: [(f64, f64); 3],
    drop: [f64; 5],
    lost: (u64, u64),
    sizes: [usize; 2],
    slow: f64,
    churn_ms: f64,
}

fn all_run(run: &Run) -> Results {
    let all = vec![
        Bench::Datapath,
        Bench::Throughput,
        Bench::Drop,
        Bench::Control,
        Bench::Churn,
    ];
    let mut r = results(run.mode, all);
    r.datapath = Some(datapath(run.datapath_scale));
    let [tc, generic, native] = run.shares;
    r.throughput = Some(throughput([
        (Hook::Tc, tc.0, tc.1),
        (Hook::XdpGeneric, generic.0, generic.1),
        (Hook::Xdp, native.0, native.1),
    ]));
    r.flood = Some(flood(holders(run.drop), run.lost.0, run.lost.1));
    r.control = Some(run.sizes.iter().map(|n| size(*n, run.slow)).collect());
    r.churn = Some(churn(run.churn_ms));
    r
}

/// Every goal met; `tc` ties with the best other hook.
pub fn all_met() -> Results {
    all_run(&Run {
        mode: Mode::Full,
        datapath_scale: 0.4,
        shares: [(0.99, 0.985), (0.97, 0.96), (0.52, 0.55)],
        drop: [1.1, 2.4, 3.0, 0.9, 1.4],
        lost: (0, 0),
        sizes: [1_000, 100_000],
        slow: 1.0,
        churn_ms: 2.5,
    })
}

/// Every goal missed; `tc` well ahead on allowed traffic, `xdp-generic`
/// far ahead on drops.
pub fn all_missed() -> Results {
    let mut r = all_run(&Run {
        mode: Mode::Quick,
        datapath_scale: 2.2,
        shares: [(0.91, 0.9), (0.61, 0.58), (0.42, 0.45)],
        drop: [1.1, 4.4, 1.6, 0.9, 1.5],
        lost: (3, 7),
        sizes: [10_000, 100_000],
        slow: 30.0,
        churn_ms: 14.0,
    });
    r.machine.busy_before = 0.31;
    r.machine.virtualised = false;
    r
}

/// Only some benchmarks run: `xdp` keeps more allowed traffic than `tc`.
pub fn partial() -> Results {
    let mut r = results(
        Mode::Smoke,
        vec![Bench::Datapath, Bench::Throughput, Bench::Churn],
    );
    r.machine.busy_before = 0.01;
    r.datapath = Some(datapath(1.0));
    r.throughput = Some(throughput([
        (Hook::Tc, 0.8, 0.82),
        (Hook::XdpGeneric, 0.7, 0.71),
        (Hook::Xdp, 0.9, 0.93),
    ]));
    r.churn = Some(churn(3.0));
    r
}

/// Only the churn benchmark, its goal met: no goal missed.
pub fn churn_only() -> Results {
    let mut r = results(Mode::Full, vec![Bench::Churn]);
    r.churn = Some(churn(2.5));
    r
}
