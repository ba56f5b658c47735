//! `status` for people (a table, `--vm` in full) or for programs (JSON).

use egress_guard_common::maps::user::Reason;

use super::view::{Status, VmStatus};
use crate::{cmd::Format, placement::Coverage, table::columns};

/// Renders a status for people or for programs.
pub fn render(status: &Status, format: Format) -> String {
    match format {
        Format::Json => {
            let mut text = serde_json::to_string_pretty(status).unwrap_or_default();
            text.push('\n');
            text
        }
        Format::Table => table(status),
    }
}

fn table(s: &Status) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "Pin directory: {}", s.pin_dir);
    let _ = match &s.agent.pid {
        Some(pid) => writeln!(out, "Agent:         running (pid {pid})"),
        None => writeln!(
            out,
            "Agent:         not running (enforcement below stays in place)"
        ),
    };
    let _ = match &s.policy {
        Some(p) => writeln!(
            out,
            "Policy:        {} (sha256:{}, generation {}, applied {})",
            p.path.display(),
            p.hash.get(..12).unwrap_or(&p.hash),
            p.generation,
            p.applied_at
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        ),
        None => writeln!(out, "Policy:        none applied"),
    };
    if let Some(r) = &s.rejected {
        let _ = writeln!(
            out,
            "Rejected:      {} at {} (the policy above stays in force):",
            r.path.display(),
            r.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        for line in r.errors.lines() {
            let _ = writeln!(out, "               {line}");
        }
    }

    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .interfaces
        .iter()
        .map(|i| {
            vec![
                i.name.clone().unwrap_or_else(|| "(gone)".into()),
                i.ifindex.to_string(),
                if i.live {
                    i.hook.to_string()
                } else {
                    format!("{} (detached: interface gone)", i.hook)
                },
                match (&i.kind, i.coverage) {
                    (Some(kind), Some(Coverage::Verified) | None) => kind.clone(),
                    (Some(kind), Some(coverage)) => format!("{kind} ({})", coverage.as_str()),
                    (None, _) => "-".into(),
                },
                i.vm.clone().unwrap_or_else(|| "-".into()),
                i.verdict.clone().unwrap_or_else(|| "block".into()),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["INTERFACE", "IFINDEX", "HOOK", "KIND", "VM", "VERDICT"],
        &rows,
    ));

    let _ = writeln!(out);
    let rows: Vec<Vec<String>> = s
        .vms
        .iter()
        .map(|vm| {
            vec![
                vm.name.clone(),
                vm.subscription.clone(),
                vm.interface.clone(),
                vm.verdict.clone(),
                format!("{} pkts / {} B", vm.held_back.packets, vm.held_back.bytes),
                by_reason(vm),
                vm.attempts.total.to_string(),
                vm.reason.clone(),
            ]
        })
        .collect();
    out.push_str(&columns(
        &[
            "VM",
            "SUBSCRIPTION",
            "INTERFACE",
            "VERDICT",
            "HELD BACK",
            "BY REASON (PKTS)",
            "ATTEMPTS",
            "REASON",
        ],
        &rows,
    ));
    for vm in s.vms.iter().filter(|vm| vm.recent_attempts.is_some()) {
        vm_detail(&mut out, vm);
    }
    out
}

/// The non-zero packet counters of a VM: `policy 5, malformed 1`, or `-`.
fn by_reason(vm: &VmStatus) -> String {
    let parts: Vec<String> = Reason::all()
        .filter_map(|r| {
            let name = r.name();
            let n = vm.counters.get(name).map_or(0, |c| c.packets);
            (n > 0).then(|| format!("{name} {n}"))
        })
        .collect();
    if parts.is_empty() {
        "-".to_owned()
    } else {
        parts.join(", ")
    }
}

/// `status --vm`: one VM in full.
fn vm_detail(out: &mut String, vm: &VmStatus) {
    use std::fmt::Write as _;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "VM {} (subscription {}, offer {}, interface {})",
        vm.name, vm.subscription, vm.offer, vm.interface
    );
    let _ = writeln!(
        out,
        "  verdict: {} ({}): {}",
        vm.verdict, vm.reason_code, vm.reason
    );
    let _ = writeln!(out, "  counters:");
    let rows: Vec<Vec<String>> = Reason::all()
        .map(|r| {
            let c = vm.counters.get(r.name()).copied().unwrap_or_default();
            vec![
                format!("    {}", r.name()),
                c.packets.to_string(),
                c.bytes.to_string(),
            ]
        })
        .collect();
    out.push_str(&columns(&["    REASON", "PACKETS", "BYTES"], &rows));
    let a = &vm.attempts;
    let _ = writeln!(
        out,
        "  blocked connection attempts: {} ({} reported to the agent; not reported: {} over the VM's event rate, {} with the ring buffer full)",
        a.total, a.events, a.events_lost.rate_limited, a.events_lost.ring_full
    );
    let recent = vm.recent_attempts.as_deref().unwrap_or_default();
    if recent.is_empty() {
        let _ = writeln!(out, "  last blocked attempts: none recorded");
        return;
    }
    let _ = writeln!(out, "  last blocked attempts, newest first:");
    let rows: Vec<Vec<String>> = recent
        .iter()
        .map(|r| {
            let secs = chrono::SecondsFormat::Secs;
            vec![
                format!("    {}", r.at.to_rfc3339_opts(secs, true)),
                if r.count > 1 {
                    format!("{} (until {})", r.count, r.last.to_rfc3339_opts(secs, true))
                } else {
                    "1".to_owned()
                },
                socket(r.src, r.src_port),
                socket(r.dst, r.dst_port),
                r.interface.clone(),
                if r.audit {
                    "audit: let through"
                } else {
                    "held back"
                }
                .to_owned(),
            ]
        })
        .collect();
    out.push_str(&columns(
        &["    AT", "COUNT", "FROM", "TO", "INTERFACE", "WHAT"],
        &rows,
    ));
}

fn socket(addr: std::net::IpAddr, port: u16) -> String {
    std::net::SocketAddr::new(addr, port).to_string()
}
