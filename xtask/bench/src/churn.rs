//! Benchmark 5: interface churn. Interfaces matching the policy's `attach`
//! glob are created one after another in the hypervisor namespace while the
//! agent runs; for each, the time from when it exists to when a program sits
//! on its TCX ingress (the agent writes the map entry first, so that is when
//! it is enforced), watched as the live-operation tests watch it
//! ([`AttachWatch`]: a thread in the namespace polling every 100 us).

use std::{
    fmt::Write as _,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use egress_guard_netns::{Agent, AttachWatch, TempDir, Topology, agent::READY_TIMEOUT};

use crate::{
    lab::{BLOCKED, EXEMPT},
    policy::{Role, policy},
    signals, stats,
};

#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub creations: usize,
}

/// The goal for the median from existing to enforced.
pub const GOAL_MEDIAN_MS: f64 = 20.0;

#[derive(Debug, Clone)]
pub struct ChurnResult {
    pub params: Params,
    /// From the interface existing to its program (ms).
    pub from_exists_ms: Vec<f64>,
    /// From `ip link add` returning to its program (0 when it was there
    /// before `ip` returned).
    pub from_return_ms: Vec<f64>,
    pub before_return: usize,
    pub command: String,
}

impl ChurnResult {
    pub fn median(&self) -> f64 {
        stats::median(&self.from_exists_ms)
    }
    pub fn p99(&self) -> f64 {
        stats::percentile(&self.from_exists_ms, 99.0)
    }
}

pub fn run(bin: &std::path::Path, params: Params) -> Result<ChurnResult> {
    let topo = Topology::builder().build()?;
    let dir = TempDir::new("churn")?;
    let file = dir.write(
        "policy.yaml",
        policy(
            "auto",
            &["tapx*"],
            &[(BLOCKED, Role::Blocked), (EXEMPT, Role::Exempt)],
            0,
        ),
    )?;
    let mut agent = Agent::spawn(&topo.hv, bin, &file, &["--log-format", "json"])?;
    agent.wait_ready(READY_TIMEOUT)?;
    let hv = &topo.hv;
    let mut from_exists = Vec::new();
    let mut from_return = Vec::new();
    let mut before_return = 0;
    let mut command = String::new();
    for i in 0..params.creations {
        signals::check()?;
        let name = format!("tapx{i}");
        let watch = AttachWatch::start(&hv.path(), &name, Duration::from_secs(5))?;
        let mut add = Command::new("ip");
        add.args(["-n", hv.name(), "link", "add", &name, "type", "veth"])
            .args(["peer", "name", &format!("qpeer{i}")]);
        if command.is_empty() {
            command = egress_guard_netns::cmd::describe(&add);
        }
        let status = add.status()?;
        let returned = Instant::now();
        ensure!(status.success(), "ip link add {name}: {status}");
        let times = watch
            .wait()
            .with_context(|| format!("{name} was not enforced\n{}", agent.output()))?;
        if times.attached <= returned {
            before_return += 1;
        }
        from_exists.push(
            times
                .attached
                .saturating_duration_since(times.exists)
                .as_secs_f64()
                * 1000.0,
        );
        from_return.push(
            times
                .attached
                .saturating_duration_since(returned)
                .as_secs_f64()
                * 1000.0,
        );
    }
    let doc = agent.status_json()?;
    let enforced = doc["interfaces"].as_array().map_or(0, |a| {
        a.iter()
            .filter(|i| {
                i["name"].as_str().is_some_and(|n| n.starts_with("tapx")) && i["verdict"] == "block"
            })
            .count()
    });
    ensure!(
        enforced == params.creations,
        "status shows {enforced} of the {} new interfaces enforced with block",
        params.creations
    );
    let mut batch = String::new();
    for i in 0..params.creations {
        let _ = writeln!(batch, "link del tapx{i}");
    }
    let batch = dir.write("del.batch", batch)?;
    hv.ip([std::ffi::OsStr::new("-batch"), batch.as_os_str()])?;
    agent.stop()?;
    let result = ChurnResult {
        params,
        from_exists_ms: from_exists,
        from_return_ms: from_return,
        before_return,
        command,
    };
    println!(
        "  churn over {} creations: existing to enforced median {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} enforced before `ip link add` returned",
        params.creations,
        result.median(),
        result.p99(),
        stats::max(&result.from_exists_ms),
        before_return
    );
    drop(agent);
    drop(topo);
    Ok(result)
}
