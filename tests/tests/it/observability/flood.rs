//! A flood of SYNs to many destinations: every one counted, a bounded
//! number of events, the rest counted as lost.

use std::{
    net::Ipv4Addr,
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, ensure};
use egress_guard_common::maps::{EVENT_BURST, EVENT_INTERVAL_NS};
use egress_guard_tests::netns::vm_entry;

use super::{
    BLOCKED, SETTLE,
    metrics::{ATTEMPT, scrape_until, until},
    with_agent,
};

/// A flood of SYNs, each to another destination: every one is counted and
/// held back, but only the VM's burst of events (and what its rate allows
/// while the flood lasts) reaches the agent, each logged; the rest are
/// counted as lost. Through native XDP this time.
#[test]
fn a_flood_of_syns_yields_a_bounded_number_of_events_and_the_rest_are_counted_lost() -> Result<()> {
    with_agent("xdp", |s, agent| {
        let vm = s.sender(BLOCKED)?;
        // 750 destinations in the three documentation networks.
        let flood: Vec<Vec<u8>> = (0..750u32)
            .map(|i| {
                let net = [[192, 0, 2], [198, 51, 100], [203, 0, 113]][(i / 250) as usize];
                let dst = Ipv4Addr::new(net[0], net[1], net[2], (i % 250 + 1) as u8);
                vm.syn4(dst, 20000 + i as u16)
            })
            .collect();
        let started = Instant::now();
        vm.send(&flood)?;
        let took = started.elapsed();
        let m = scrape_until(s, "750 SYNs held back", |m| Ok(m.held("policy")? >= 750))?;
        ensure!(
            m.get("egress_guard_interfaces", &[("hook", "xdp")])? == 2,
            "{}",
            m.text
        );
        let attempts = m.attempts()?;
        let limited = m.lost("rate-limited")?;
        let full = m.lost("ring-full")?;
        let events = attempts - limited - full;
        println!("750 SYNs in {took:?}: {events} events, {limited} rate-limited, {full} ring-full");
        ensure!(m.held("policy")? == 750 && attempts == 750, "{}", m.text);
        let cpus = thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let allowed = EVENT_BURST + took_ns.div_ceil(EVENT_INTERVAL_NS) + 1 + cpus;
        ensure!(
            events >= EVENT_BURST && events <= allowed,
            "{events} events: expected {EVENT_BURST} to {allowed}"
        );
        ensure!(full == 0, "{}", m.text);
        // Every event that reached the agent is one log line (each SYN went
        // to another destination), and no more.
        until(SETTLE, "every event logged", || {
            Ok((agent.logged(ATTEMPT).len() as u64 >= events).then_some(()))
        })?;
        thread::sleep(Duration::from_millis(500));
        let lines = agent.logged(ATTEMPT);
        ensure!(
            lines.len() as u64 == events,
            "{} log lines for {events} events",
            lines.len()
        );
        ensure!(lines.iter().all(|l| l["vm"] == BLOCKED), "{lines:#?}");
        let st = agent.status_json()?;
        let b = vm_entry(&st, BLOCKED).context("status")?;
        ensure!(
            b["attempts"]["total"] == 750
                && b["attempts"]["events_lost"]["rate-limited"] == limited as u64,
            "{b:#}"
        );
        Ok(())
    })
}
