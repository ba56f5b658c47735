//! The demo's story on network namespaces: two VMs on a Linux bridge in a
//! namespace `hv` that plays the hypervisor, each VM a namespace whose eth0
//! is its NIC. Ten steps; each mail must meet the policy's verdict.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::Result;
use egress_guard_netns::{
    Agent, SmtpSink, Topology, held_back_packets,
    topology::{BRIDGE_IF, SINK_V4, SINK_V6, UPLINK_IF},
};

use super::story::{
    BLOCKED, Demo, EXEMPT, METRICS_ADDR, RELAY_V4, indent, internet, judge, pins_left, show_log,
};
use crate::signals;

/// The addresses `deploy/policy.example.yaml` gives its two VMs, on a bridge.
const BLOCKED_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const BLOCKED_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 2);
const EXEMPT_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 3);
const EXEMPT_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 3);
const GATEWAY_V4: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const GATEWAY_V6: Ipv6Addr = Ipv6Addr::new(0xfd77, 0, 0, 0, 0, 0, 0, 1);
pub const STEPS: u32 = 10;

pub fn run(demo: &Demo) -> Result<()> {
    Story { demo }.run()
}

/// The namespace story, told by `demo`.
struct Story<'d> {
    demo: &'d Demo,
}

impl Story<'_> {
    fn run(&self) -> Result<()> {
        self.demo
            .step("Build a small hypervisor out of network namespaces")?;
        let topo = Topology::builder()
            .bridge_gateways(GATEWAY_V4, GATEWAY_V6)
            .bridged_vm_at(BLOCKED, BLOCKED_V4, BLOCKED_V6)
            .bridged_vm_at(EXEMPT, EXEMPT_V4, EXEMPT_V6)
            .build()?;
        let sink = internet(&topo)?;
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

        self.demo.step("Read the policy: egress-guard check")?;
        self.demo.check()?;

        self.demo.step("Start the agent in the hypervisor")?;
        let mut agent = Agent::start(&topo.hv, &self.demo.bin, &self.demo.policy)?;
        let result = self.with_agent(&topo, &sink, &mut agent);
        if result
            .as_ref()
            .is_err_and(|e| e.to_string() != "interrupted")
        {
            show_log(&agent);
        }
        result
    }

    fn with_agent(&self, topo: &Topology, sink: &SmtpSink, agent: &mut Agent<'_>) -> Result<()> {
        println!(
            "$ nsenter --net={} egress-guard run --policy {} --pin-dir {}",
            topo.hv.path().display(),
            self.demo.shown_policy(),
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

        self.demo
            .step(&format!("{BLOCKED} sends mail on port 25"))?;
        self.mail(topo, sink, BLOCKED, SINK_V4.into(), 25, false)?;
        println!(
            "The agent dropped the VM's TCP SYN to port 25 as it came in on {BLOCKED}: the\n\
             client never got an answer and gave up after {}s. The VM's verdict is block.",
            self.demo.timeout.as_secs()
        );
        self.mail(topo, sink, BLOCKED, SINK_V6.into(), 25, false)?;
        println!("Same over IPv6.");

        self.demo.step("The agent logs each blocked attempt")?;
        Demo::attempt_log(agent)?;

        self.demo.step(&format!("{EXEMPT} sends mail on port 25"))?;
        self.mail(topo, sink, EXEMPT, SINK_V4.into(), 25, true)?;
        println!(
            "{EXEMPT}'s verdict is allow, so the program lets its packets through at once,\n\
             without looking further into them."
        );

        self.demo
            .step(&format!("{BLOCKED} uses the ways that stay open"))?;
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
        self.demo
            .step("Look at the counters: egress-guard status")?;
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

        self.demo
            .step("Stop the agent with SIGTERM: enforcement stays")?;
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

        self.demo.step("Remove everything: egress-guard detach")?;
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
            pins_left(agent)
        );
        self.mail(topo, sink, BLOCKED, SINK_V4.into(), 25, true)?;
        println!("With the programs gone, {BLOCKED}'s mail on port 25 flows again.");
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
            self.demo.timeout.as_secs()
        );
        let d = sink.try_deliver(topo.vm(vm), server, port, self.demo.timeout)?;
        judge(&d, expected, |secs| {
            format!("no answer; swaks gave up after {secs:.1}s and the server received nothing.")
        })
    }
}
