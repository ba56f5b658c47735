//! `cargo xtask demo --vm`: the demo's story with real guests. Two QEMU
//! guests (Debian's kernel, busybox, virtio-net; the image of `cargo xtask
//! guest`) on taps QEMU creates in the hypervisor's namespace, named
//! `vm-blocked` and `vm-exempt` as in `deploy/policy.example.yaml`; the
//! guests send mail with a small SMTP client (busybox `nc -e`) to the real
//! server. Everything is removed at the end, also on failure or Ctrl-C:
//! the guards stop QEMU, the namespaces go, the agent detaches.

use std::{net::IpAddr, time::Duration};

use anyhow::Result;
use egress_guard_netns::{
    Agent, Guest, GuestImage, Nic, SmtpSink, Topology, held_back_packets,
    topology::{SINK_V4, SINK_V6},
};

use super::story::{
    BLOCKED, Demo, EXEMPT, METRICS_ADDR, RELAY_V4, indent, internet, judge, pins_left, show_log,
};
use crate::{ctx::Ctx, signals};

/// The steps of this story.
pub const STEPS: u32 = 11;

pub fn run(ctx: &Ctx, demo: &Demo) -> Result<()> {
    demo.step("Build a guest and a small hypervisor")?;
    let image = GuestImage::in_dir(&crate::guest::ensure(ctx)?)?;
    let topo = Topology::builder().build()?;
    let sink = internet(&topo)?;
    println!(
        "\
The guest is Debian's kernel (linux-image-amd64) with a busybox initramfs and
the virtio-net modules, all from Debian's packages, cached by `cargo xtask
guest` in {}.
A namespace `hv` plays the hypervisor: QEMU runs there and creates each VM's
tap, and hv routes between the taps and the \"internet\" namespace, where a real
SMTP server (Python aiosmtpd) listens on {SINK_V4} and [{SINK_V6}],
ports 25 and 587, with a mail relay at {RELAY_V4}.",
        image
            .kernel
            .parent()
            .map_or_else(String::new, |p| p.display().to_string())
    );

    demo.step("Boot two guests with QEMU")?;
    let blocked_nic = Nic::tap(BLOCKED, 0);
    let exempt_nic = Nic::tap(EXEMPT, 1);
    let blocked = boot(&topo, &image, &blocked_nic)?;
    let exempt = boot(&topo, &image, &exempt_nic)?;
    println!(
        "QEMU's command line (the first guest):\n    {}\n\
         Each guest's NIC is virtio-net with its offloads on (checksum, TSO); QEMU\n\
         created the tap in hv, which the agent will find there.",
        blocked.command()
    );

    demo.step("Read the policy: egress-guard check")?;
    demo.check()?;

    demo.step("Start the agent in the hypervisor")?;
    let mut agent = Agent::start(&topo.hv, &demo.bin, &demo.policy)?;
    for l in agent.stdout_lines() {
        println!("  | {l}");
    }
    println!(
        "The agent attached its eBPF program to each tap the policy names, filled the\n\
         maps with each VM's verdict, and said `ready`."
    );
    let story = Story {
        demo,
        sink: &sink,
        timeout: demo.timeout,
    };
    let result = story.with_agent(&topo, &image, &mut agent, blocked, exempt);
    if result.is_err() {
        show_log(&agent);
    }
    result
}

fn boot<'a>(topo: &'a Topology, image: &GuestImage, nic: &Nic) -> Result<Guest<'a>> {
    signals::check()?;
    println!(
        "$ qemu-system-x86_64 ... -netdev tap,ifname={},... -device virtio-net-pci,mac={}",
        nic.ifname,
        nic.mac()
    );
    let guest = Guest::boot(topo, image, nic)?;
    println!(
        "  => {}: {} ({}, {})",
        nic.ifname,
        guest.boot_report(),
        nic.ipv4(),
        nic.ipv6()
    );
    Ok(guest)
}

struct Story<'d> {
    demo: &'d Demo,
    sink: &'d SmtpSink,
    timeout: Duration,
}

impl Story<'_> {
    fn with_agent<'t>(
        &self,
        topo: &'t Topology,
        image: &GuestImage,
        agent: &mut Agent<'_>,
        mut blocked: Guest<'t>,
        mut exempt: Guest<'t>,
    ) -> Result<()> {
        let d = self.demo;
        d.step(&format!("{BLOCKED} sends mail on port 25"))?;
        self.mail(&mut blocked, SINK_V4.into(), 25, false)?;
        self.mail(&mut blocked, SINK_V6.into(), 25, false)?;
        println!(
            "The guest's SYNs to port 25 were dropped as they came in on its tap: its\n\
             client never got an answer, over IPv4 and IPv6."
        );

        d.step("The agent logs each blocked attempt")?;
        Demo::attempt_log(agent)?;

        d.step(&format!("{EXEMPT} sends mail on port 25"))?;
        self.mail(&mut exempt, SINK_V4.into(), 25, true)?;
        println!("{EXEMPT}'s verdict is allow: its mail goes through.");

        d.step(&format!("{BLOCKED} uses the ways that stay open"))?;
        self.mail(&mut blocked, SINK_V4.into(), 587, true)?;
        self.mail(&mut blocked, RELAY_V4.into(), 25, true)?;
        println!(
            "Port 587 is not held back, nor port 25 towards the relay in\n\
             `allow_destinations`."
        );

        d.step("Look at the counters: egress-guard status")?;
        let out = agent.status_text()?;
        println!(
            "$ egress-guard status --pin-dir {}",
            agent.pin_dir().display()
        );
        println!("{}", indent(&out.stdout));
        let metrics = egress_guard_netns::http::get(&topo.hv, METRICS_ADDR.parse()?, "/metrics")?;
        for l in metrics.body.lines().filter(|l| {
            l.starts_with("egress_guard_blocked_attempts_total")
                || l.starts_with("egress_guard_ready")
        }) {
            println!("    {l}");
        }
        let held = held_back_packets(&agent.status_json()?, BLOCKED);
        println!(
            "Held back from {BLOCKED}: {} packets (its SYNs and their retransmissions).",
            held.map_or_else(|| "?".to_owned(), |n| n.to_string())
        );

        d.step(&format!("{BLOCKED} stops and starts"))?;
        let nic = blocked.nic().clone();
        blocked.stop()?;
        let mut blocked = boot(topo, image, &nic)?;
        println!(
            "QEMU exited and its tap went; a new QEMU created a new tap with the same name,\n\
             and the agent put its program on it as it appeared."
        );
        self.mail(&mut blocked, SINK_V4.into(), 25, false)?;
        self.mail(&mut blocked, SINK_V4.into(), 587, true)?;

        d.step("Remove everything: egress-guard detach")?;
        agent.stop()?;
        agent.detach()?;
        println!(
            "$ egress-guard detach --pin-dir {}\nThe pin directory is {}.",
            agent.pin_dir().display(),
            pins_left(agent)
        );
        self.mail(&mut blocked, SINK_V4.into(), 25, true)?;
        println!("With the programs gone, {BLOCKED}'s mail on port 25 flows again.");
        Ok(())
    }

    fn mail(&self, guest: &mut Guest<'_>, server: IpAddr, port: u16, expected: bool) -> Result<()> {
        signals::check()?;
        println!(
            "$ (in {}) nc {server} {port} -e smtp.sh   # busybox: a small SMTP client, {} s timeout",
            guest.ifname(),
            self.timeout.as_secs()
        );
        let d = guest.try_deliver(self.sink, server, port, self.timeout)?;
        judge(&d, expected, |secs| {
            format!("no answer in {secs:.1}s, and the server received nothing.")
        })
    }
}
