//! The smoke run's checks: every benchmark asked for gave results, and
//! every figure is finite and, where it must be, positive. Timings are
//! never compared with their goals here.

use crate::{
    Bench, Results,
    flood::{self, Holder},
    throughput,
};

/// What is not sane in the results: a benchmark that was asked for and
/// gave nothing, a figure that is not finite, or not positive where it must
/// be. Timings are never compared with their goals here.
pub fn sanity(r: &Results) -> Vec<String> {
    let mut bad = Vec::new();
    let mut missing = |bench: Bench, ran: bool| {
        if r.requested.contains(&bench) && !ran {
            bad.push(format!("{bench:?}: asked for, but no result"));
        }
    };
    missing(Bench::Datapath, r.datapath.is_some());
    missing(Bench::Throughput, r.throughput.is_some());
    missing(Bench::Drop, r.flood.is_some());
    missing(
        Bench::Control,
        r.control.as_ref().is_some_and(|c| !c.is_empty()),
    );
    missing(Bench::Churn, r.churn.is_some());
    missing(Bench::Taps, r.hv.is_some());
    if let Some(ch) = &r.churn
        && ch.from_exists_ms.len() != ch.params.creations
    {
        bad.push(format!(
            "churn: {} windows for {} creations",
            ch.from_exists_ms.len(),
            ch.params.creations
        ));
    }
    for (what, v, strictly) in sane_figures(r) {
        let ok = v.is_finite() && if strictly { v > 0.0 } else { v >= 0.0 };
        if !ok {
            bad.push(format!("{what}: {v}"));
        }
    }
    bad
}

/// Every figure the smoke run checks: (what, value, whether it must be > 0;
/// else >= 0 is enough).
fn sane_figures(r: &Results) -> Vec<(String, f64, bool)> {
    let mut figures: Vec<(String, f64, bool)> = Vec::new();
    if let Some(d) = &r.datapath {
        figures.push(("datapath: empty XDP ns".into(), d.empty_xdp_ns, true));
        figures.push(("datapath: empty TC ns".into(), d.empty_tc_ns, true));
        for c in &d.classes {
            figures.push((format!("datapath {}: XDP ns", c.name), c.xdp.ns, true));
            figures.push((format!("datapath {}: TC ns", c.name), c.tc.ns, true));
            // A difference: noise may make it negative, but it must exist.
            figures.push((
                format!("datapath {}: XDP added", c.name),
                c.xdp.added_ns.abs(),
                false,
            ));
            figures.push((
                format!("datapath {}: TC added", c.name),
                c.tc.added_ns.abs(),
                false,
            ));
        }
    }
    if let Some(t) = &r.throughput {
        for hook in throughput::HOOKS {
            let h = t.hooks.get(&hook);
            let label = hook.label();
            let get = |f: fn(&throughput::HookThroughput) -> f64| h.map_or(f64::NAN, f);
            figures.push((
                format!("throughput {label}: blocked VM"),
                get(throughput::HookThroughput::blocked),
                true,
            ));
            figures.push((
                format!("throughput {label}: exempt VM"),
                get(throughput::HookThroughput::exempt),
                true,
            ));
            figures.push((
                format!("throughput {label}: share"),
                get(throughput::HookThroughput::blocked_share),
                true,
            ));
        }
    }
    if let Some(f) = &r.flood {
        for holder in Holder::ALL {
            let h = f.holders.get(&holder);
            let label = holder.label();
            let get = |f: fn(&flood::HolderResult) -> f64| h.map_or(f64::NAN, f);
            figures.push((
                format!("drop {label}: per CPU-second"),
                get(flood::HolderResult::per_cpu_second),
                true,
            ));
            figures.push((
                format!("drop {label}: offered pps"),
                get(flood::HolderResult::offered_pps),
                true,
            ));
            figures.push((
                format!("drop {label}: exempt SYNs sent"),
                h.map_or(f64::NAN, |h| h.exempt_sent() as f64),
                true,
            ));
        }
    }
    for s in r.control.iter().flatten() {
        let n = s.vms;
        figures.push((format!("control {n}: check"), s.check(), true));
        figures.push((format!("control {n}: ready"), s.ready(), true));
        figures.push((format!("control {n}: change"), s.change_e2e(), true));
        figures.push((format!("control {n}: apply"), s.change_apply(), true));
        figures.push((format!("control {n}: peak RSS"), s.peak_rss_mib, true));
        figures.push((format!("idle {n}: CPU"), s.idle_cpu_pct, false));
    }
    if let Some(ch) = &r.churn {
        figures.push(("churn: median".into(), ch.median(), false));
        figures.push(("churn: p99".into(), ch.p99(), false));
    }
    if let Some(hv) = &r.hv {
        crate::hv::report::sane_figures(hv, &mut figures);
    }
    figures
}
