//! `attachments()` sees XDP and TCX programs: a positive control for the
//! "detach leaves nothing behind" checks of the end-to-end tests. Loads two
//! trivial programs with raw bpf(2) calls, attaches them with BPF links to a
//! veth in a namespace, and looks. Needs root.

use std::os::fd::{FromRawFd, OwnedFd};

use anyhow::{Result, bail, ensure};
use egress_guard_netns::{Netns, attachments, names, require_root};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_XDP: u32 = 37;
const BPF_TCX_INGRESS: u32 = 46;

fn bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> Result<OwnedFd> {
    // SAFETY: bpf(2) with a zero-padded attr of 128 bytes; every pointer in
    // it points to memory that lives until the call returns.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if fd < 0 {
        bail!("bpf({cmd}): {}", std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(i32::try_from(fd)?) })
}

fn put_u32(attr: &mut [u8; 128], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8; 128], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

/// Loads `r0 = ret; exit` as a program of `prog_type`.
fn load(prog_type: u32, expected_attach_type: u32, ret: i32) -> Result<OwnedFd> {
    let mut insns = [0u8; 16];
    insns[0] = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K, dst r0
    insns[4..8].copy_from_slice(&ret.to_ne_bytes());
    insns[8] = 0x95; // BPF_JMP | BPF_EXIT
    let license = c"GPL";
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, prog_type);
    put_u32(&mut attr, 4, 2);
    put_u64(&mut attr, 8, insns.as_ptr() as u64);
    put_u64(&mut attr, 16, license.as_ptr() as u64);
    attr[48..48 + 7].copy_from_slice(b"egt_ctl");
    put_u32(&mut attr, 68, expected_attach_type);
    bpf(BPF_PROG_LOAD, &mut attr)
}

fn link(prog: &OwnedFd, ifindex: u32, attach_type: u32) -> Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, u32::try_from(prog.as_raw_fd())?);
    put_u32(&mut attr, 4, ifindex);
    put_u32(&mut attr, 8, attach_type);
    bpf(BPF_LINK_CREATE, &mut attr)
}

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
            let xdp = load(BPF_PROG_TYPE_XDP, BPF_XDP, 2)?; // XDP_PASS
            let tc = load(BPF_PROG_TYPE_SCHED_CLS, 0, -1)?; // TCX_NEXT
            let xdp_link = link(&xdp, ifindex, BPF_XDP)?;
            let tc_link = link(&tc, ifindex, BPF_TCX_INGRESS)?;
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
