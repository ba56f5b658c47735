//! The fixtures on their own, with no agent: the topology routes IPv4 and
//! IPv6 (also through the bridge), the sink receives what swaks sends, a
//! dropped connection times out quickly, and everything is removed again, also
//! when a test panics. Needs root.

use std::{
    net::IpAddr,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use egress_guard_netns::{
    SmtpSink, Topology, names, require_root,
    topology::{RELAY_V4, RELAY_V6, SINK_V4, SINK_V6},
};

const TIMEOUT: Duration = Duration::from_secs(3);

fn existing_namespaces() -> Vec<String> {
    names::list_namespaces().expect("ip netns list")
}

#[test]
fn every_vm_delivers_over_ipv4_and_ipv6_without_an_agent() -> Result<()> {
    require_root()?;
    let topo = Topology::builder()
        .routed_vm("vm-a")
        .routed_vm("vm-b")
        .bridged_vm("vm-br")
        .build()?;
    let sink = SmtpSink::start_in(&topo)?;
    for vm in topo.vms() {
        for (server, port) in [
            (IpAddr::from(SINK_V4), 25),
            (IpAddr::from(SINK_V6), 25),
            (IpAddr::from(SINK_V4), 587),
            (IpAddr::from(RELAY_V4), 25),
            (IpAddr::from(RELAY_V6), 25),
        ] {
            let d = sink.try_deliver(vm, server, port, TIMEOUT)?;
            ensure!(d.delivered(), "{}", d.describe());
            let got = d.received.as_ref().context("no message")?;
            // Routed, not NATed: the sink sees the VM's own address.
            ensure!(
                got.peer == vm.addr(server.is_ipv6()),
                "sink saw peer {} for {}",
                got.peer,
                d.describe()
            );
            ensure!(got.server == server && got.server_port == port, "{got:?}");
        }
    }
    ensure!(sink.received()?.len() == 15, "{:?}", sink.received()?);
    Ok(())
}

#[test]
fn a_dropped_connection_times_out_within_the_timeout() -> Result<()> {
    require_root()?;
    let topo = Topology::builder().routed_vm("vm-drop").build()?;
    let sink = SmtpSink::start_in(&topo)?;
    let vm = topo.vm("vm-drop");
    // hv silently drops what it would forward to these addresses, as the
    // agent drops a held-back SYN: the client sees no answer at all.
    topo.hv
        .ip(["route", "add", "blackhole", "198.51.100.99/32"])?;
    topo.hv
        .ip(["-6", "route", "add", "blackhole", "2001:db8:100::99/128"])?;
    for server in ["198.51.100.99", "2001:db8:100::99"] {
        let server: IpAddr = server.parse()?;
        let d = sink.try_deliver(vm, server, 25, TIMEOUT)?;
        ensure!(!d.delivered(), "{}", d.describe());
        ensure!(
            d.attempt.elapsed >= Duration::from_millis(2500) && d.attempt.elapsed < TIMEOUT * 3,
            "a dropped SYN should time out after about {TIMEOUT:?}: {}",
            d.describe()
        );
    }
    // The rest still flows.
    let d = sink.try_deliver(vm, SINK_V4.into(), 25, TIMEOUT)?;
    ensure!(d.delivered(), "{}", d.describe());
    Ok(())
}

#[test]
fn everything_is_removed_when_a_test_panics() -> Result<()> {
    require_root()?;
    let mut names = Vec::new();
    let mut sink_pid = None;
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let topo = Topology::builder()
            .routed_vm("vm-x")
            .bridged_vm("vm-y")
            .build()
            .expect("topology");
        let sink = SmtpSink::start_in(&topo).expect("sink");
        names = topo.namespace_names();
        sink_pid = egress_guard_netns::names::namespace_pids(topo.internet.name())
            .expect("pids")
            .first()
            .copied();
        drop(sink);
        panic!("deliberate panic inside a test");
    }));
    ensure!(outcome.is_err(), "the closure should have panicked");
    ensure!(names.len() == 4, "{names:?}");
    let left = existing_namespaces();
    for name in &names {
        ensure!(
            !left.contains(name),
            "namespace {name} is left after a panic"
        );
    }
    if let Some(pid) = sink_pid {
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is left after a panic"
        );
    }
    Ok(())
}

#[test]
fn a_failed_build_removes_what_it_created() -> Result<()> {
    require_root()?;
    // The second VM's name is too long for an interface: caught before
    // anything is made. A name `ip` refuses is caught by `ip` itself.
    let err = Topology::builder()
        .routed_vm("vm-ok")
        .routed_vm("this-name-is-far-too-long")
        .build()
        .expect_err("too long a name");
    ensure!(err.to_string().contains("15 characters"), "{err}");
    let err = Topology::builder()
        .routed_vm("vm-ok")
        .routed_vm("bad%name")
        .build()
        .expect_err("ip refuses %");
    ensure!(
        err.to_string().contains("ip -n"),
        "the error should name the command: {err}"
    );
    // Only this test uses the name vm-ok: its namespaces must be gone.
    // (Other processes on the machine, other runs of this test among them,
    // may have theirs: only this process's names count.)
    let ours = format!("egt-{}-", std::process::id());
    let left: Vec<_> = existing_namespaces()
        .into_iter()
        .filter(|n| n.starts_with(&ours) && n.ends_with("-vm-ok"))
        .collect();
    ensure!(left.is_empty(), "left behind: {left:?}");
    Ok(())
}

#[test]
fn sweep_removes_leftovers_of_dead_processes_only() -> Result<()> {
    require_root()?;
    // A pid that is certainly gone: a child we started and reaped.
    let mut child = std::process::Command::new("true").spawn()?;
    let dead = child.id();
    child.wait()?;
    let stale_ns = format!("egt-{dead}-0-leftover");
    let stale_pin = Path::new(names::BPFFS).join(format!("egt-{dead}-0"));
    let live = egress_guard_netns::Netns::create(&format!("{}-live", names::unique_tag()))?;
    egress_guard_netns::cmd::run_args("ip", &["netns", "add", &stale_ns])?;
    std::fs::create_dir_all(stale_pin.join("links"))?;

    let swept = names::sweep()?;
    let left = existing_namespaces();
    let ns_gone = !left.contains(&stale_ns);
    let pin_gone = !stale_pin.exists();
    // Clean up by hand whatever the sweep missed, before judging.
    if !ns_gone {
        let _ = egress_guard_netns::cmd::run_args("ip", &["netns", "delete", &stale_ns]);
    }
    if !pin_gone {
        let _ = std::fs::remove_dir_all(&stale_pin);
    }
    ensure!(ns_gone, "sweep left {stale_ns}: {swept:?}");
    ensure!(pin_gone, "sweep left {}: {swept:?}", stale_pin.display());
    ensure!(
        left.contains(&live.name().to_owned()),
        "sweep removed a live namespace"
    );
    Ok(())
}
