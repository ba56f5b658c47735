//! Real guests (issue 21, item 3): QEMU booting Debian's kernel with a
//! busybox initramfs, virtio-net with its default offloads (checksum, TSO),
//! on a tap QEMU creates and on a macvtap in bridge mode as libvirt makes it
//! (`egress_guard_netns::guest`). The guest sends mail with a
//! shell SMTP dialogue over busybox's `nc` to the real SMTP sink (aiosmtpd, ports 25 and 587), and bulk TCP
//! with busybox's `nc`; the agent runs in the hypervisor namespace.
//!
//! Every "not delivered" is proven against a working path in the same test:
//! the same guest delivers on 25 before the agent starts, on 587 under every
//! hook, and to the relay, so a broken guest network cannot pass.
//!
//! One guest is booted per test and reused for all its checks (a stop and
//! start boots a second); the tests run one at a time, since a TCG guest
//! needs a core. The image comes from `$EGRESS_GUARD_GUEST_DIR` (`cargo
//! xtask test` builds it); without it the tests fail, they never skip. Each
//! test prints which accelerator ran and the boot time. Needs root.

mod report;

use std::{net::IpAddr, ops::Deref, thread, time::Duration};

use anyhow::Result;
use egress_guard_tests::netns::{
    Agent, Guest, GuestImage, Nic, PolicyBuilder, Role, Topology, require_root,
    topology::{RELAY_V4, RELAY_V6},
    vm_entry,
};

use crate::fixtures::{Probe, SINK4, SINK6, Setup, serial, status_until, vm_field};
use report::Report;

/// The guest's sendmail waits 3 s: a held-back attempt takes that long
/// (the client is killed then; it is not refused at once).
const PROBE: Probe = Probe {
    timeout: Duration::from_secs(3),
    held_at_least: Duration::from_millis(2500),
};
/// The allowed port of the bulk transfer.
const BULK_PORT: u16 = 5001;
/// How much the bulk transfer sends.
const BULK_MIB: u32 = 8;

/// What the guest's VM is in a test policy.
#[derive(Clone, Debug)]
enum GuestRole {
    /// Blocked (msdn, created after the cutoff: cannot be exempted).
    Blocked,
    /// Exempt, started after the grant: allowed.
    Exempt,
    /// pay-as-you-go, exemption granted at this time, no `started`: allowed
    /// once the agent has seen its interface created after it.
    GrantedAt(String),
}

/// A policy for one VM named after its interface `ifname`, holding back
/// port 25 with the relay in `allow_destinations`.
fn policy(hook: &str, ifname: &str, role: &GuestRole) -> String {
    let p = PolicyBuilder::new()
        .hook(hook)
        .attach(&[])
        .allow(&[format!("{RELAY_V4}/32"), format!("{RELAY_V6}/128")]);
    match role {
        GuestRole::Blocked => p.vm(ifname, Role::Blocked),
        GuestRole::Exempt => p.vm(ifname, Role::Exempt),
        GuestRole::GrantedAt(at) => p
            .exempted_subscription("late-grant", "pay-as-you-go", "2020-05-01", at, None)
            .vm_with(ifname, ifname, "late-grant", &[]),
    }
    .yaml()
}

/// A [`Setup`] (hv and the internet with the sink, no namespace VMs) and
/// the guest image. Guests and agents borrow it, so they are dropped
/// first.
struct Lab {
    setup: Setup,
    image: GuestImage,
}

impl Deref for Lab {
    type Target = Setup;

    fn deref(&self) -> &Setup {
        &self.setup
    }
}

impl Lab {
    fn new() -> Result<Self> {
        let image = GuestImage::from_env()?;
        let setup = Setup::new(Topology::builder().build()?, PROBE)?;
        Ok(Self { setup, image })
    }

    fn boot(&self, nic: &Nic) -> Result<Guest<'_>> {
        let guest = Guest::boot(&self.topo, &self.image, nic)?;
        println!(
            "guest on {} {}: {}",
            nic.kind,
            nic.ifname,
            guest.boot_report()
        );
        Ok(guest)
    }

    /// One mail from `guest` to `server:port`, expected `delivered` or not:
    /// `Ok(Ok(line))` when it went as expected, `Ok(Err(why))` when not (with
    /// the client's dialogue), `Err` when the guest or the sink failed.
    fn expect(
        &self,
        guest: &mut Guest<'_>,
        server: IpAddr,
        port: u16,
        delivered: bool,
    ) -> Result<Result<String, String>> {
        let d = guest.try_deliver(self.sink()?, server, port, PROBE.timeout)?;
        let line = format!(
            "{} -> {server}:{port}: {} ({:.1} s)",
            guest.ifname(),
            if d.delivered() {
                "delivered"
            } else {
                "not delivered"
            },
            d.attempt.elapsed.as_secs_f64()
        );
        Ok(PROBE.judge(&d, delivered).map(|()| line))
    }
}

/// The hook status shows for interface `ifname`.
fn status_hook(agent: &Agent<'_>, ifname: &str) -> String {
    agent.status_json().ok().map_or_else(
        || "(status failed)".to_owned(),
        |doc| {
            doc["interfaces"]
                .as_array()
                .and_then(|a| a.iter().find(|i| i["name"] == ifname))
                .and_then(|i| i["hook"].as_str())
                .unwrap_or("(not listed)")
                .to_owned()
        },
    )
}

/// Polls status (for up to `seconds`) until VM `vm`'s `reason_code` is
/// `code`; returns its verdict and reason as status says them.
fn await_reason(agent: &Agent<'_>, vm: &str, code: &str, seconds: u64) -> Result<String> {
    let what = format!("{vm} with reason {code}");
    let every = Duration::from_millis(100);
    let (doc, _) = status_until(agent, Duration::from_secs(seconds), every, &what, |d| {
        vm_field(d, vm, "reason_code") == code
    })?;
    let entry = vm_entry(&doc, vm).cloned().unwrap_or_default();
    Ok(format!("{} ({})", entry["verdict"], entry["reason"]))
}

/// A blocked guest under each of `hooks`: held back on 25 over IPv4 and
/// IPv6, delivered on 587, and (under the first hook) to the relay, with bulk
/// TCP intact. Every hook is tried, then the test fails if a check did.
fn blocked_guest(nic: &Nic, hooks: &[&str]) -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let lab = Lab::new()?;
    let mut guest = lab.boot(nic)?;
    let name = nic.ifname.as_str();
    let mut report = Report::default();
    report.section("no agent", "without the agent:");
    // The control: without the agent, the guest delivers on 25.
    report.mail(&lab, &mut guest, (SINK4, 25), true)?;
    let mut agent_output = String::new();
    for hook in hooks {
        let agent = lab.start_agent(&policy(hook, name, &GuestRole::Blocked), &[])?;
        let shown = status_hook(&agent, name);
        report.section(
            &format!("hook {hook}"),
            &format!("hook {hook} (status shows {shown}):"),
        );
        report.hook(nic, hook, &shown);
        let failed_before = report.failed.len();
        report.mail(&lab, &mut guest, (SINK4, 25), false)?;
        report.mail(&lab, &mut guest, (SINK6, 25), false)?;
        report.mail(&lab, &mut guest, (SINK4, 587), true)?;
        report.mail(&lab, &mut guest, (SINK6, 587), true)?;
        if hook == &hooks[0] {
            report.mail(&lab, &mut guest, (RELAY_V4.into(), 25), true)?;
            report.mail(&lab, &mut guest, (RELAY_V6.into(), 25), true)?;
            report.bulk(&lab, &mut guest)?;
        }
        if report.failed.len() > failed_before && agent_output.is_empty() {
            agent_output = format!("(hook {hook}) {}", agent.output());
        }
    }
    guest.stop()?;
    report.finish(
        &format!("the blocked guest on {} {name}", nic.kind),
        &agent_output,
    )
}

/// An exempt guest delivers on 25; the policy then grants its VM an
/// exemption while it runs (held back: it needs a stop and start, while 587
/// works); the guest stops (QEMU exits, its interface goes) and starts (a
/// new QEMU, a new interface): the exemption is in force, and it delivers on
/// 25 over IPv4 and IPv6.
fn exemption_after_restart(nic: &Nic) -> Result<()> {
    let _serial = serial::exclusive();
    require_root()?;
    let lab = Lab::new()?;
    let name = nic.ifname.as_str();
    let mut guest = lab.boot(nic)?;
    let agent = lab.start_agent(&policy("auto", name, &GuestRole::Exempt), &[])?;
    let mut report = Report::default();
    let r = (|| -> Result<()> {
        report.section(
            "exempt",
            &format!("exempt (status shows hook {}):", status_hook(&agent, name)),
        );
        report.mail(&lab, &mut guest, (SINK4, 25), true)?;
        report.mail(&lab, &mut guest, (SINK6, 25), true)?;

        // Granted now, while the VM runs (a second after its interface
        // appeared, at least: policy times have whole seconds).
        thread::sleep(Duration::from_millis(1100));
        let granted = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        lab.write_policy(&policy(
            "auto",
            name,
            &GuestRole::GrantedAt(granted.clone()),
        ))?;
        let said = await_reason(&agent, name, "exemption-needs-restart", 5)?;
        report.section(
            "granted while it runs",
            &format!("granted {granted} while it runs; status: {said}:"),
        );
        report.mail(&lab, &mut guest, (SINK4, 25), false)?;
        report.mail(&lab, &mut guest, (SINK4, 587), true)?;

        // Stop and start: QEMU exits, a new one makes a new interface.
        guest.stop()?;
        let mut guest = lab.boot(nic)?;
        let said = await_reason(&agent, name, "exempted", 10)?;
        report.section(
            "after a stop and start",
            &format!("stopped and started; status: {said}:"),
        );
        report.mail(&lab, &mut guest, (SINK4, 25), true)?;
        report.mail(&lab, &mut guest, (SINK6, 25), true)?;
        guest.stop()?;
        Ok(())
    })();
    let output = agent.output();
    r.map_err(|e| anyhow::anyhow!("{e:#}\n\n{output}"))?;
    report.finish(&format!("the guest on {} {name}", nic.kind), &output)
}

#[test]
fn a_blocked_tap_guest_cannot_mail_on_25_under_any_hook_but_mails_on_587_and_via_the_relay()
-> Result<()> {
    blocked_guest(
        &Nic::tap("vm-tap", 0),
        &["auto", "tc", "xdp-generic", "xdp"],
    )
}

#[test]
fn a_blocked_macvtap_guest_cannot_mail_on_25_under_any_hook_but_mails_on_587_and_via_the_relay()
-> Result<()> {
    blocked_guest(
        &Nic::macvtap("vm-mvtap", 0),
        &["auto", "tc", "xdp-generic", "xdp"],
    )
}

#[test]
fn a_tap_guest_stopped_and_started_opens_an_exemption_granted_while_it_ran() -> Result<()> {
    exemption_after_restart(&Nic::tap("vm-tap", 1))
}

#[test]
fn a_macvtap_guest_stopped_and_started_opens_an_exemption_granted_while_it_ran() -> Result<()> {
    exemption_after_restart(&Nic::macvtap("vm-mvtap", 1))
}
