//! What both demo stories share: the VMs' names and the addresses the
//! example policy speaks of, the narrator (`Demo`: numbered steps, the
//! policy check, the attempt log) and the judge of each mail.
//!
//! Invariant: a story fails (returns `Err`) as soon as a mail's fate is not
//! what the policy says, so a demo that ends well has shown the policy
//! enforced, never merely narrated it.

use std::{cell::Cell, path::PathBuf, process::Command, time::Duration};

use anyhow::{Context as _, Result, bail};
use egress_guard_netns::{
    Agent, Delivery, SmtpSink, Topology, cmd,
    topology::{SINK_V4, SINK_V6},
    vm_entry,
};
use serde_json::Value;

use crate::signals;

pub(crate) const BLOCKED: &str = "vm-blocked";
pub(crate) const EXEMPT: &str = "vm-exempt";
/// The agent's default `--metrics-addr` (in the hypervisor's namespace).
pub(crate) const METRICS_ADDR: &str = "127.0.0.1:9725";
/// A mail relay in the example policy's `allow_destinations` (10.77.250.0/24).
pub(crate) const RELAY_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(10, 77, 250, 25);

/// The narrator of a story and what it runs: the agent binary, the policy,
/// the mail client's patience, and the step counter.
pub(crate) struct Demo {
    pub(crate) bin: PathBuf,
    pub(crate) policy: PathBuf,
    pub(crate) timeout: Duration,
    step: Cell<u32>,
    steps: u32,
}

impl Demo {
    pub(crate) fn new(bin: PathBuf, policy: PathBuf, timeout: Duration, steps: u32) -> Self {
        Self {
            bin,
            policy,
            timeout,
            step: Cell::new(0),
            steps,
        }
    }

    pub(crate) fn step(&self, title: &str) -> Result<()> {
        signals::check()?;
        let n = self.step.get() + 1;
        self.step.set(n);
        println!();
        println!("[{n}/{}] {title}", self.steps);
        println!("{}", "-".repeat(title.len() + 6));
        Ok(())
    }

    pub(crate) fn check(&self) -> Result<()> {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("check").arg("--policy").arg(&self.policy);
        let out = cmd::output_within(&mut cmd, Duration::from_secs(30))?.check()?;
        println!("$ egress-guard check --policy {}", self.shown_policy());
        println!("{}", indent(&out.stdout));
        let mut cmd = Command::new(&self.bin);
        cmd.arg("check")
            .arg("--policy")
            .arg(&self.policy)
            .args(["--format", "json"]);
        let out = cmd::output_within(&mut cmd, Duration::from_secs(30))?.check()?;
        let doc: Value = serde_json::from_str(&out.stdout).with_context(|| {
            format!(
                "`egress-guard check --format json` printed:\n{}",
                out.stdout
            )
        })?;
        println!(
            "\
`check` evaluates every VM of the policy at this moment, without touching the
kernel. Most of these VMs do not exist on this demo host; the two that do:"
        );
        for vm in [BLOCKED, EXEMPT] {
            let e = vm_entry(&doc, vm)
                .with_context(|| format!("the policy has no VM on interface {vm}"))?;
            println!(
                "  - {} (interface {vm}): subscription {}, offer {} -> {} ({})\n      because: {}",
                e["name"].as_str().unwrap_or("?"),
                e["subscription"].as_str().unwrap_or("?"),
                e["offer"].as_str().unwrap_or("?"),
                e["verdict"].as_str().unwrap_or("?").to_uppercase(),
                e["reason_code"].as_str().unwrap_or("-"),
                e["reason"].as_str().unwrap_or("?"),
            );
        }
        Ok(())
    }

    /// Shows the agent's log lines about vm-blocked's attempts (the kernel
    /// sends an event per SYN; the agent logs the first to each destination
    /// and summarises repeats).
    pub(crate) fn attempt_log(agent: &Agent<'_>) -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let lines = loop {
            let log = egress_guard_netns::agent::strip_ansi(&agent.stderr());
            let lines: Vec<String> = log
                .lines()
                .filter(|l| l.contains("blocked connection attempt"))
                .map(str::to_owned)
                .collect();
            if lines.len() >= 2 || std::time::Instant::now() >= deadline {
                break lines;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        if lines.is_empty() {
            bail!("the agent logged no blocked connection attempt");
        }
        println!("The agent's log (stderr), its lines about the attempts:");
        for l in &lines {
            println!("  | {l}");
        }
        println!(
            "\
For each TCP SYN to port 25 from a blocked VM the kernel program sends an event
(rate-limited per VM, what it drops is counted); the agent logs it with the VM
and its subscription from the policy. The client's retransmissions of the same
SYN are not logged one by one: one summary line with their count follows when
the repeat window (60 s) ends. With --log-format json each line is a JSON object."
        );
        Ok(())
    }

    pub(crate) fn shown_policy(&self) -> String {
        let root = crate::ctx::workspace_root();
        self.policy.strip_prefix(&root).map_or_else(
            |_| self.policy.display().to_string(),
            |p| p.display().to_string(),
        )
    }
}

/// The "internet" of both stories: the relay the example policy allows
/// (10.77.250.0/24) in the internet namespace, routed by hv, and a real
/// SMTP server on the sink's addresses and the relay's, ports 25 and 587.
pub(crate) fn internet(topo: &Topology) -> Result<SmtpSink> {
    topo.internet
        .ip(["addr", "add", &format!("{RELAY_V4}/32"), "dev", "eth0"])?;
    topo.hv.ip([
        "route",
        "add",
        "10.77.250.0/24",
        "via",
        &SINK_V4.to_string(),
    ])?;
    Ok(SmtpSink::start(
        &topo.internet,
        &[SINK_V4.into(), SINK_V6.into(), RELAY_V4.into()],
        &[25, 587],
    )?)
}

/// Prints a mail's fate and fails when it is not `expected` (delivered or
/// not). `held_back` words the line of a mail that got no answer, given
/// the seconds the client waited.
pub(crate) fn judge(d: &Delivery, expected: bool, held_back: fn(f64) -> String) -> Result<()> {
    let secs = d.attempt.elapsed.as_secs_f64();
    match &d.received {
        Some(r) if d.delivered() => println!(
            "  => DELIVERED in {secs:.1}s: the server received it from {} on port {}.",
            r.peer, r.server_port
        ),
        _ => println!("  => HELD BACK: {}", held_back(secs)),
    }
    // The demo fails when what happened is not what the policy says.
    if d.delivered() != expected {
        bail!(
            "expected this mail to be {}, but:\n{}",
            if expected { "delivered" } else { "held back" },
            d.describe()
        );
    }
    Ok(())
}

/// Prints the agent's log (after a story failed), if it logged anything.
pub(crate) fn show_log(agent: &Agent<'_>) {
    let log = egress_guard_netns::agent::strip_ansi(&agent.stderr());
    if !log.trim().is_empty() {
        println!("\nThe agent's log (stderr):\n{}", indent(&log));
    }
}

/// What became of the agent's pin directory after `detach`.
pub(crate) fn pins_left(agent: &Agent<'_>) -> &'static str {
    if agent.pin_dir().exists() {
        "STILL THERE"
    } else {
        "gone"
    }
}

pub(crate) fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
