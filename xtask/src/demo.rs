//! `cargo xtask demo`: the agent at work on a small hypervisor made of
//! network namespaces, narrated for a newcomer.
//!
//! Two VMs on a Linux bridge, `vm-blocked` and `vm-exempt` (the interface
//! names `deploy/policy.example.yaml` uses), an "internet" with a real SMTP
//! server, and the agent with the example policy. Everything it creates is
//! removed at the end, also on failure or Ctrl-C. `--vm` tells the same
//! story with real QEMU guests (`demo_vm`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use egress_guard_netns::{
    Agent, SmtpSink, Topology, cmd, held_back_packets,
    topology::{BRIDGE_IF, SINK_V4, SINK_V6, UPLINK_IF},
    vm_entry,
};
use serde_json::Value;

use crate::{build::build_agent, setup, signals};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The policy to run with (its VMs with interfaces vm-blocked and vm-exempt are shown).
    #[arg(
        long,
        value_name = "FILE",
        default_value = "deploy/policy.example.yaml"
    )]
    pub(crate) policy: PathBuf,
    /// How long a mail client waits for an answer, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 3)]
    timeout: u64,
    /// Skip the set-up (when you know everything is installed).
    #[arg(long)]
    no_setup: bool,
    /// Tell the story with real QEMU guests on taps instead of namespaces.
    #[arg(long)]
    vm: bool,
}

pub(crate) const BLOCKED: &str = "vm-blocked";
pub(crate) const EXEMPT: &str = "vm-exempt";
/// The addresses `deploy/policy.example.yaml` gives its two VMs, on a bridge.
const BLOCKED_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const BLOCKED_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const EXEMPT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const EXEMPT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
/// The agent's default `--metrics-addr` (in the hypervisor's namespace).
pub(crate) const METRICS_ADDR: &str = "127.0.0.1:9725";
/// A mail relay in the example policy's `allow_destinations` (10.77.250.0/24).
pub(crate) const RELAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 250, 25);

pub fn run(args: &Args) -> Result<()> {
    signals::install();
    let ctx = setup::for_root_task(
        args.no_setup,
        "the demo",
        "network namespaces, bpffs, the agent",
        "demo",
    )?;
    signals::check()?;
    let bin = build_agent(&ctx, true)?;
    signals::check()?;
    let policy = if args.policy.is_absolute() {
        args.policy.clone()
    } else {
        ctx.root.join(&args.policy)
    };
    if !policy.is_file() {
        bail!("no policy file at {}", policy.display());
    }
    let demo = Demo {
        bin,
        policy,
        timeout: Duration::from_secs(args.timeout.max(1)),
        step: std::cell::Cell::new(0),
        steps: if args.vm {
            crate::demo_vm::STEPS
        } else {
            STEPS
        },
    };
    println!(
        "egress-guard demo: two VMs on a hypervisor, one whose mail on port 25 is held back\n\
         and one whose mail goes through, decided by the policy {}.",
        demo.shown_policy()
    );
    // Everything the demo creates lives in Demo::run and is removed (agent
    // killed and detached, pins and namespaces deleted) when it returns,
    // whether it succeeded, failed or was interrupted.
    let result = if args.vm {
        crate::demo_vm::run(&ctx, &demo)
    } else {
        demo.run()
    };
    println!();
    if let Err(e) = &result {
        println!("The demo stopped: {e:#}");
    }
    println!("{}", leftovers());
    result
}

/// Says whether anything the demo made is left (there should be nothing).
fn leftovers() -> String {
    let mine = format!(
        "{}{}-",
        egress_guard_netns::names::PREFIX,
        std::process::id()
    );
    let mut left: Vec<String> = egress_guard_netns::names::list_namespaces()
        .unwrap_or_default()
        .into_iter()
        .filter(|n| n.starts_with(&mine))
        .collect();
    if let Ok(entries) = std::fs::read_dir(egress_guard_netns::names::BPFFS) {
        left.extend(
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&mine)),
        );
    }
    if left.is_empty() {
        "Cleaned up: the namespaces, the agent and its pins are gone.".to_owned()
    } else {
        format!("warning: left behind: {left:?} (`cargo xtask sweep` removes them)")
    }
}

pub(crate) struct Demo {
    pub(crate) bin: PathBuf,
    pub(crate) policy: PathBuf,
    pub(crate) timeout: Duration,
    step: std::cell::Cell<u32>,
    steps: u32,
}

const STEPS: u32 = 10;

impl Demo {
    pub(crate) fn step(&self, title: &str) -> Result<()> {
        signals::check()?;
        let n = self.step.get() + 1;
        self.step.set(n);
        println!();
        println!("[{n}/{}] {title}", self.steps);
        println!("{}", "-".repeat(title.len() + 6));
        Ok(())
    }

    fn run(&self) -> Result<()> {
        self.step("Build a small hypervisor out of network namespaces")?;
        let topo = Topology::builder()
            .bridge_gateways(GATEWAY_V4, GATEWAY_V6)
            .bridged_vm_at(BLOCKED, BLOCKED_V4, BLOCKED_V6)
            .bridged_vm_at(EXEMPT, EXEMPT_V4, EXEMPT_V6)
            .build()?;
        // The relay the example policy allows: in the internet namespace,
        // routed by hv.
        topo.internet
            .ip(["addr", "add", &format!("{RELAY_V4}/32"), "dev", "eth0"])?;
        topo.hv.ip([
            "route",
            "add",
            "10.77.250.0/24",
            "via",
            &SINK_V4.to_string(),
        ])?;
        let sink = SmtpSink::start(
            &topo.internet,
            &[SINK_V4.into(), SINK_V6.into(), RELAY_V4.into()],
            &[25, 587],
        )?;
        println!(
            "\
A namespace `hv` plays the hypervisor: it routes between the VMs and the
\"internet\". Each VM is a namespace of its own whose eth0 is the VM's NIC;
the other end of that cable is the VM's host-side interface in hv, which is
where the agent puts its eBPF program (identity = the interface a packet
arrives on, never its source address).

  VM          addresses            host-side interface in hv
  {BLOCKED:<11} {:<20} {BLOCKED} (a port of bridge {BRIDGE_IF})
  {EXEMPT:<11} {:<20} {EXEMPT} (a port of bridge {BRIDGE_IF})

  internet (via hv's {UPLINK_IF}): a real SMTP server (Python aiosmtpd) on
  {SINK_V4} and [{SINK_V6}], ports 25 (SMTP) and 587 (submission),
  and a mail relay at {RELAY_V4}, port 25.
Namespaces: {}",
            format!("{BLOCKED_V4}, {BLOCKED_V6}"),
            format!("{EXEMPT_V4}, {EXEMPT_V6}"),
            topo.namespace_names().join(", ")
        );

        self.step("Read the policy: egress-guard check")?;
        self.check()?;

        self.step("Start the agent in the hypervisor")?;
        let mut agent = Agent::start(&topo.hv, &self.bin, &self.policy)?;
        let result = self.with_agent(&topo, &sink, &mut agent);
        if result
            .as_ref()
            .is_err_and(|e| e.to_string() != "interrupted")
        {
            let log = egress_guard_netns::agent::strip_ansi(&agent.stderr());
            if !log.trim().is_empty() {
                println!("\nThe agent's log (stderr):\n{}", indent(&log));
            }
        }
        result
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

    fn with_agent(&self, topo: &Topology, sink: &SmtpSink, agent: &mut Agent<'_>) -> Result<()> {
        println!(
            "$ nsenter --net={} egress-guard run --policy {} --pin-dir {}",
            topo.hv.path().display(),
            self.shown_policy(),
            agent.pin_dir().display()
        );
        for l in agent.stdout_lines() {
            println!("  | {l}");
        }
        println!(
            "\
The agent checked the policy, loaded its eBPF programs, attached one to each
interface the policy names (and to any matching its `attach` globs), filled
the kernel's maps with each interface's verdict, pinned it all under
{}, and said `ready`. It runs in the hypervisor's namespace
(nsenter --net, so that it still sees bpffs at /sys/fs/bpf).",
            agent.pin_dir().display()
        );

        self.step(&format!("{BLOCKED} sends mail on port 25"))?;
        self.mail(topo, sink, BLOCKED, SINK_V4.into(), 25, false)?;
        println!(
            "The agent dropped the VM's TCP SYN to port 25 as it came in on {BLOCKED}: the\n\
             client never got an answer and gave up after {}s. The VM's verdict is block.",
            self.timeout.as_secs()
        );
        self.mail(topo, sink, BLOCKED, SINK_V6.into(), 25, false)?;
        println!("Same over IPv6.");

        self.step("The agent logs each blocked attempt")?;
        Self::attempt_log(agent)?;

        self.step(&format!("{EXEMPT} sends mail on port 25"))?;
        self.mail(topo, sink, EXEMPT, SINK_V4.into(), 25, true)?;
        println!(
            "{EXEMPT}'s verdict is allow, so the program lets its packets through at once,\n\
             without looking further into them."
        );

        self.step(&format!("{BLOCKED} uses the ways that stay open"))?;
        self.mail(topo, sink, BLOCKED, SINK_V4.into(), 587, true)?;
        println!(
            "Port 587 (authenticated submission) is not in `enforcement.ports`: only direct\n\
             SMTP on port 25 is held back."
        );
        self.mail(topo, sink, BLOCKED, RELAY_V4.into(), 25, true)?;
        println!(
            "{RELAY_V4} is in `allow_destinations` (10.77.250.0/24): port 25 towards the\n\
             network's own mail relay is never held back."
        );

        self.after_mail(topo, sink, agent)
    }

    fn after_mail(&self, topo: &Topology, sink: &SmtpSink, agent: &mut Agent<'_>) -> Result<()> {
        self.step("Look at the counters: egress-guard status")?;
        let out = agent.status_text()?;
        println!(
            "$ egress-guard status --pin-dir {}",
            agent.pin_dir().display()
        );
        println!("{}", indent(&out.stdout));
        let out = agent
            .ctl([
                "status",
                "--pin-dir",
                &agent.pin_dir().display().to_string(),
                "--vm",
                BLOCKED,
            ])?
            .check()?;
        println!(
            "$ egress-guard status --pin-dir {} --vm {BLOCKED}",
            agent.pin_dir().display()
        );
        println!("{}", indent(&out.stdout));
        let metrics = egress_guard_netns::http::get(&topo.hv, METRICS_ADDR.parse()?, "/metrics")?;
        println!(
            "$ curl http://{METRICS_ADDR}/metrics   (in the hypervisor's namespace; a few of its lines)"
        );
        for l in metrics.body.lines().filter(|l| {
            l.starts_with("egress_guard_blocked_attempts_total")
                || (l.starts_with("egress_guard_held_back_packets_total")
                    && l.contains("reason=\"policy\""))
                || l.starts_with("egress_guard_vms")
                || l.starts_with("egress_guard_ready")
        }) {
            println!("    {l}");
        }
        let status = agent.status_json()?;
        let held = held_back_packets(&status, BLOCKED);
        let held_exempt = held_back_packets(&status, EXEMPT);
        println!(
            "`status` reads the pinned maps, not the agent process. Held back from {BLOCKED}: {}\n\
             packets: the two SYNs above (IPv4 and IPv6) and the retransmissions the VM's TCP\n\
             sent while it waited for an answer. From {EXEMPT}: {} (its traffic is allowed).",
            held.map_or_else(|| "?".to_owned(), |n| n.to_string()),
            held_exempt.map_or_else(|| "?".to_owned(), |n| n.to_string()),
        );

        self.step("Stop the agent with SIGTERM: enforcement stays")?;
        let status = agent.stop()?;
        let after = agent.status_json()?;
        println!(
            "The agent exited ({status}); `status` now says the agent is {}.",
            if after["agent"]["running"] == true {
                "STILL RUNNING"
            } else {
                "not running"
            }
        );
        self.mail(topo, sink, BLOCKED, SINK_V4.into(), 25, false)?;
        println!(
            "Still held back: the programs, their links to the interfaces and the maps are\n\
             pinned in bpffs, so they outlive the process. A restart or upgrade of the agent\n\
             never opens a gap; only `detach` removes enforcement."
        );

        self.step("Remove everything: egress-guard detach")?;
        let out = agent.detach()?;
        println!(
            "$ egress-guard detach --pin-dir {}",
            agent.pin_dir().display()
        );
        let printed = format!("{}{}", out.stdout, out.stderr);
        if !printed.trim().is_empty() {
            println!("{}", indent(&printed));
        }
        println!(
            "The pin directory {} is {}.",
            agent.pin_dir().display(),
            if agent.pin_dir().exists() {
                "STILL THERE"
            } else {
                "gone"
            }
        );
        self.mail(topo, sink, BLOCKED, SINK_V4.into(), 25, true)?;
        println!("With the programs gone, {BLOCKED}'s mail on port 25 flows again.");
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

    fn mail(
        &self,
        topo: &Topology,
        sink: &SmtpSink,
        vm: &str,
        server: IpAddr,
        port: u16,
        expected: bool,
    ) -> Result<()> {
        signals::check()?;
        let target = match server {
            IpAddr::V4(a) => format!("{a}"),
            IpAddr::V6(a) => format!("[{a}]"),
        };
        println!(
            "$ ip netns exec <{vm}> swaks --server {target} --port {port} --timeout {}s ...",
            self.timeout.as_secs()
        );
        let d = sink.try_deliver(topo.vm(vm), server, port, self.timeout)?;
        match &d.received {
            Some(r) if d.delivered() => println!(
                "  => DELIVERED in {:.1}s: the server received it from {} on port {}.",
                d.attempt.elapsed.as_secs_f64(),
                r.peer,
                r.server_port
            ),
            _ => println!(
                "  => HELD BACK: no answer; swaks gave up after {:.1}s and the server received nothing.",
                d.attempt.elapsed.as_secs_f64()
            ),
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

    pub(crate) fn shown_policy(&self) -> String {
        let root = crate::ctx::workspace_root();
        self.policy.strip_prefix(&root).map_or_else(
            |_| self.policy.display().to_string(),
            |p| p.display().to_string(),
        )
    }
}

pub(crate) fn indent(text: &str) -> String {
    text.trim_end()
        .lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
