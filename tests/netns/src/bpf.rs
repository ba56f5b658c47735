//! What BPF programs sit on an interface: XDP (from `ip -d -j link`), TCX
//! (asked from the kernel with `BPF_PROG_QUERY`, because Debian 12's iproute2
//! and bpftool 7.1 predate TCX and do not show it) and classic tc filters.

use std::{
    fmt,
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;

use crate::{
    cmd,
    error::{Error, Result},
    netns::Netns,
};

const BPF_PROG_QUERY: libc::c_long = 16;
/// `enum bpf_attach_type`: `BPF_TCX_INGRESS`.
pub const BPF_TCX_INGRESS: u32 = 46;
/// `enum bpf_attach_type`: `BPF_TCX_EGRESS`.
pub const BPF_TCX_EGRESS: u32 = 47;

/// The BPF programs on one interface.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attachments {
    pub ifname: String,
    pub ifindex: u32,
    /// The XDP attachment as `ip` shows it (JSON), if any.
    pub xdp: Option<String>,
    /// Programs on TCX ingress and egress.
    pub tcx_ingress: u32,
    pub tcx_egress: u32,
    /// Classic tc filters (clsact ingress and egress), as `tc` prints them.
    pub tc_filters: Vec<String>,
}

impl Attachments {
    /// Nothing at all is attached.
    pub fn is_empty(&self) -> bool {
        self.xdp.is_none()
            && self.tcx_ingress == 0
            && self.tcx_egress == 0
            && self.tc_filters.is_empty()
    }
}

impl fmt::Display for Attachments {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (ifindex {}): xdp {}, tcx ingress {}, tcx egress {}, tc filters {:?}",
            self.ifname,
            self.ifindex,
            self.xdp.as_deref().unwrap_or("none"),
            self.tcx_ingress,
            self.tcx_egress,
            self.tc_filters
        )
    }
}

/// What is attached to interface `ifname` of namespace `ns`.
pub fn attachments(ns: &Netns, ifname: &str) -> Result<Attachments> {
    let out = ns.ip(["-d", "-j", "link", "show", "dev", ifname])?;
    let links: Value = serde_json::from_str(&out.stdout).map_err(|source| Error::Json {
        command: out.command.clone(),
        output: out.stdout.clone(),
        source,
    })?;
    let link = links
        .get(0)
        .ok_or_else(|| Error::Other(format!("`{}` showed no link", out.command)))?;
    let ifindex = link
        .get("ifindex")
        .and_then(Value::as_u64)
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| Error::Other(format!("no ifindex in `{}`: {}", out.command, out.stdout)))?;
    let xdp = link.get("xdp").map(Value::to_string);

    let mut tc_filters = Vec::new();
    for dir in ["ingress", "egress"] {
        // Without a clsact qdisc tc complains; that means no filter.
        let out = cmd::output_within(
            ns.command("tc")
                .args(["filter", "show", "dev", ifname, dir]),
            Duration::from_secs(10),
        )?;
        if out.success() {
            tc_filters.extend(
                out.stdout
                    .lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| format!("{dir}: {l}")),
            );
        }
    }

    let path = ns.path();
    Ok(Attachments {
        ifname: ifname.to_owned(),
        ifindex,
        xdp,
        tcx_ingress: tcx_count(&path, ifindex, BPF_TCX_INGRESS)?,
        tcx_egress: tcx_count(&path, ifindex, BPF_TCX_EGRESS)?,
        tc_filters,
    })
}

/// `union bpf_attr`, the part `BPF_PROG_QUERY` reads.
#[repr(C)]
#[derive(Default)]
struct ProgQuery {
    target_ifindex: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}

/// How many programs are attached to `ifindex` at `attach_type` (a TCX type)
/// in the network namespace at `netns`. Runs the query on a thread that enters
/// that namespace, since ifindexes are per namespace.
pub fn tcx_count(netns: &Path, ifindex: u32, attach_type: u32) -> Result<u32> {
    let path: PathBuf = netns.to_owned();
    let file =
        File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    std::thread::spawn(move || -> Result<u32> {
        // SAFETY: setns(2) on a valid fd; it changes only this thread's
        // network namespace, and this thread ends right after the query.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(Error::io(
                format!("entering network namespace {}", path.display()),
                std::io::Error::last_os_error(),
            ));
        }
        let mut attr = ProgQuery {
            target_ifindex: ifindex,
            attach_type,
            ..ProgQuery::default()
        };
        // SAFETY: bpf(2) with a pointer to a properly sized, initialised
        // attr; prog_ids is null, so the kernel writes only into attr.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_PROG_QUERY,
                &raw mut attr,
                std::mem::size_of::<ProgQuery>(),
            )
        };
        if rc == 0 {
            return Ok(attr.prog_cnt);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::ENOENT) {
            return Ok(0);
        }
        Err(Error::io(
            format!(
                "BPF_PROG_QUERY (attach type {attach_type}) on ifindex {ifindex} in {}",
                path.display()
            ),
            err,
        ))
    })
    .join()
    .map_err(|_| Error::Other("the BPF_PROG_QUERY thread panicked".to_owned()))?
}
