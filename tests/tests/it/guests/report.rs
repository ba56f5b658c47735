//! The checks of a guest test, recorded as they end: the test goes on
//! after a failed check, prints the whole table, and fails at the end.

use std::{fmt::Write as _, net::IpAddr};

use anyhow::{Result, ensure};
use egress_guard_tests::netns::{
    Guest, Nic, NicKind, guest::checks::BulkReceiver, topology::SINK_V4,
};

use super::{BULK_MIB, BULK_PORT, Lab};
use crate::fixtures::SINK4;

/// The checks of one test, each recorded as it ends: a test goes on after
/// a failed mail check (so one run shows every hook and step), prints the
/// table, and fails at the end if any check did.
#[derive(Default)]
pub(super) struct Report {
    text: String,
    pub(super) failed: Vec<String>,
    /// What the checks are under now (a hook, a step), for the failures.
    section: String,
}

impl Report {
    pub(super) fn line(&mut self, line: &str) {
        println!("{line}");
        let _ = writeln!(self.text, "{line}");
    }

    /// Starts a section of checks: `title` is printed, `name` prefixes its
    /// failures.
    pub(super) fn section(&mut self, name: &str, title: &str) {
        name.clone_into(&mut self.section);
        self.line(title);
    }

    /// [`Lab::expect`], recorded.
    pub(super) fn mail(
        &mut self,
        lab: &Lab,
        guest: &mut Guest<'_>,
        (server, port): (IpAddr, u16),
        delivered: bool,
    ) -> Result<()> {
        let what = format!("{}: {} -> {server}:{port}", self.section, guest.ifname());
        match lab.expect(guest, server, port, delivered)? {
            Ok(line) => self.line(&format!("  ok     {line}")),
            Err(why) => {
                self.line(&format!("  FAILED {why}"));
                self.failed.push(what);
            }
        }
        Ok(())
    }

    /// The hook status shows for the guest's interface under `setting`,
    /// recorded: a macvtap's program is on tcx egress whatever the setting
    /// (its guest's frames are transmitted by the device); a tap's follows
    /// the setting (`auto`: tc; native XDP may fall back to generic).
    pub(super) fn hook(&mut self, nic: &Nic, setting: &str, shown: &str) {
        let right = match (nic.kind, setting) {
            (NicKind::Macvtap, _) => shown == "tc-egress",
            (NicKind::Tap, "auto" | "tc") => shown == "tc",
            (NicKind::Tap, "xdp") => shown == "xdp" || shown == "xdp-generic",
            (NicKind::Tap, other) => shown == other,
        };
        if right {
            self.line(&format!("  ok     hook shown: {shown}"));
        } else {
            self.line(&format!("  FAILED hook shown: {shown}, under {setting}"));
            self.failed
                .push(format!("{}: hook shown {shown}", self.section));
        }
    }

    /// Bulk TCP from `guest` to the internet namespace, recorded.
    pub(super) fn bulk(&mut self, lab: &Lab, guest: &mut Guest<'_>) -> Result<()> {
        let receiver = BulkReceiver::start(&lab.topo.internet, SINK4, BULK_PORT)?;
        let bulk = guest.send_bulk(receiver, BULK_MIB)?;
        let line = format!(
            "{}: bulk {BULK_MIB} MiB to {SINK_V4}:{BULK_PORT}: sent {} bytes {}, received {} bytes {} ({:.1} s in the guest); on the host side {} frames of {} bytes on average",
            guest.ifname(),
            bulk.sent.0,
            bulk.sent.1,
            bulk.received.0,
            bulk.received.1,
            bulk.took.as_secs_f64(),
            bulk.host_frames,
            bulk.mean_frame()
        );
        // Whether the guest's TCP made super-frames (TSO) depends on how
        // fast the TCG guest writes, which a busy host changes (seen: 8,210
        // bytes a frame on average idle, 1,095 under load): it is said, not
        // judged. The device tests hold GSO super-frames to the verdicts.
        let line = format!(
            "{line} ({})",
            if bulk.mean_frame() > 1514 {
                "TSO super-frames reached the host"
            } else {
                "no TSO super-frames this time"
            }
        );
        if bulk.intact() && bulk.sent.0 == u64::from(BULK_MIB) << 20 {
            self.line(&format!("  ok     {line}"));
        } else {
            self.line(&format!(
                "  FAILED {line}; nc exited {}:\n{}",
                bulk.nc_status, bulk.guest_output
            ));
            self.failed
                .push(format!("{}: {}: bulk", self.section, guest.ifname()));
        }
        Ok(())
    }

    /// An error naming the failed checks (the table is printed above).
    pub(super) fn finish(self, what: &str, agent_output: &str) -> Result<()> {
        ensure!(
            self.failed.is_empty(),
            "{what}: these checks failed (see the table above): {:?}\n\n{agent_output}",
            self.failed
        );
        Ok(())
    }
}
