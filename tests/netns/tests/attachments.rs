//! `attachments()` sees XDP and TCX programs: a positive control for the
//! "detach leaves nothing behind" checks of the end-to-end tests. Loads two
//! trivial programs with raw bpf(2) calls, attaches them with BPF links to a
//! veth in a namespace, and looks. Needs root.

use std::os::fd::AsFd as _;

use anyhow::{Result, bail, ensure};
use egress_guard_netns::{
    Netns, attachments,
    bpf::{
        BPF_PROG_TYPE_SCHED_CLS, BPF_PROG_TYPE_XDP, BPF_TCX_INGRESS, BPF_XDP, link_create,
        load_trivial,
    },
    names, require_root,
};

#[test]
fn xdp_and_tcx_links_are_seen_and_their_removal_too() -> Result<()> {
    require_root()?;
    let ns = Netns::create(&format!("{}-attach", names::unique_tag()))?;
    ns.ip([
        "link", "add", "vm-ctl", "type", "veth", "peer", "name", "vm-peer",
    ])?;
    ns.ip(["link", "set", "vm-ctl", "up"])?;
    ns.ip(["link", "set", "vm-peer", "up"])?;
    let before = attachments(&ns, "vm-ctl")?;
    ensure!(before.is_empty(), "{before}");

    // Links are made on this thread's namespace: enter it on a thread.
    let path = ns.path();
    let ifindex = before.ifindex;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<()>>();
    let holder = std::thread::spawn(move || -> Result<()> {
        use std::os::fd::AsRawFd;
        let file = std::fs::File::open(&path)?;
        // SAFETY: setns(2) on a valid fd changes only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns: {}", std::io::Error::last_os_error());
        }
        let made = (|| -> Result<_> {
            let xdp = load_trivial(BPF_PROG_TYPE_XDP, BPF_XDP, 2, "egt_ctl")?; // XDP_PASS
            let tc = load_trivial(BPF_PROG_TYPE_SCHED_CLS, 0, -1, "egt_ctl")?; // TCX_NEXT
            let xdp_link = link_create(xdp.as_fd(), ifindex, BPF_XDP)?;
            let tc_link = link_create(tc.as_fd(), ifindex, BPF_TCX_INGRESS)?;
            Ok((xdp, tc, xdp_link, tc_link))
        })();
        match made {
            Ok(held) => {
                ready_tx.send(Ok(()))?;
                // Hold the links until told to drop them.
                let _ = rx.recv();
                drop(held);
                Ok(())
            }
            Err(e) => {
                ready_tx.send(Err(e))?;
                Ok(())
            }
        }
    });
    let attached = ready_rx.recv()?;
    let during = attachments(&ns, "vm-ctl");
    drop(tx);
    holder
        .join()
        .map_err(|_| anyhow::anyhow!("holder thread panicked"))??;
    attached?;
    let during = during?;
    ensure!(during.xdp.is_some(), "XDP not seen: {during}");
    ensure!(during.tcx_ingress == 1, "TCX ingress not seen: {during}");
    ensure!(during.tcx_egress == 0, "{during}");
    ensure!(!during.is_empty(), "{during}");

    let after = attachments(&ns, "vm-ctl")?;
    ensure!(after.is_empty(), "closing the links should detach: {after}");
    Ok(())
}
