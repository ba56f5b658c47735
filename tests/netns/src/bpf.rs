//! What BPF programs sit on an interface: XDP (from `ip -d -j link`), TCX
//! (asked from the kernel with `BPF_PROG_QUERY`, because Debian 12's iproute2
//! and bpftool 7.1 predate TCX and do not show it) and classic tc filters.
//!
//! And the few raw bpf(2) calls the live-operation tests need, without a BPF
//! library: which programs sit on TCX ([`tcx_prog_ids`]), what a program is
//! ([`prog_info`]: its tag and maps), what a pinned map is ([`pinned_map_info`]),
//! a map pinned by hand ([`create_pinned_map`], a map "from another build"),
//! how long after an interface appears a program sits on it
//! ([`AttachWatch`]), and the emptiest programs ([`load_trivial`]) with their
//! links ([`link_create`]) and test runs ([`prog_test_run`]), for positive
//! controls and the benchmarks' baselines.

use std::{
    ffi::CString,
    fmt,
    fs::File,
    os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::{
    cmd,
    error::{Error, Result},
    netns::Netns,
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
/// `enum bpf_prog_type`: `BPF_PROG_TYPE_SCHED_CLS`.
pub const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `enum bpf_prog_type`: `BPF_PROG_TYPE_XDP`.
pub const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: `BPF_XDP`.
pub const BPF_XDP: u32 = 37;
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
    let netns_path = netns.to_owned();
    in_netns(netns, move || {
        query(&netns_path, ifindex, attach_type, 0).map(|(n, _)| n)
    })
}

/// The ids of the programs attached to `ifindex` at `attach_type` (a TCX
/// type) in the network namespace at `netns`, first in the chain first.
pub fn tcx_prog_ids(netns: &Path, ifindex: u32, attach_type: u32) -> Result<Vec<u32>> {
    let netns_path = netns.to_owned();
    in_netns(netns, move || {
        query(&netns_path, ifindex, attach_type, 64).map(|(_, ids)| ids)
    })
}

/// Runs `f` on a thread that entered the network namespace at `netns` (only
/// that thread changes namespace, and it ends with `f`).
pub fn in_netns<T, F>(netns: &Path, f: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path: PathBuf = netns.to_owned();
    let file =
        File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    thread::spawn(move || -> Result<T> {
        enter(&file, &path)?;
        f()
    })
    .join()
    .map_err(|_| Error::Other("a thread in another network namespace panicked".to_owned()))?
}

fn enter(file: &File, path: &Path) -> Result<()> {
    // SAFETY: setns(2) on a valid fd; it changes only the calling thread's
    // network namespace, and callers use a thread of their own.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::io(
            format!("entering network namespace {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// `BPF_PROG_QUERY` in the current thread's namespace: how many programs, and
/// the ids of the first `room` of them.
fn query(netns: &Path, ifindex: u32, attach_type: u32, room: u32) -> Result<(u32, Vec<u32>)> {
    let mut ids = vec![0u32; room as usize];
    let mut attr = ProgQuery {
        target_ifindex: ifindex,
        attach_type,
        prog_ids: if room > 0 { ids.as_mut_ptr() as u64 } else { 0 },
        prog_cnt: room,
        ..ProgQuery::default()
    };
    // SAFETY: bpf(2) with a pointer to a properly sized, initialised attr;
    // prog_ids is null or points to `room` u32s that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            &raw mut attr,
            std::mem::size_of::<ProgQuery>(),
        )
    };
    if rc == 0 {
        ids.truncate(attr.prog_cnt.min(room) as usize);
        return Ok((attr.prog_cnt, ids));
    }
    let err = std::io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ENOENT) {
        return Ok((0, Vec::new()));
    }
    Err(Error::io(
        format!(
            "BPF_PROG_QUERY (attach type {attach_type}) on ifindex {ifindex} in {}",
            netns.display()
        ),
        err,
    ))
}

/// bpf(2) with an attr of 128 bytes (zero-padded); returns what it returned.
fn bpf(cmd: libc::c_long, attr: &mut [u8; 128], what: &str) -> Result<i64> {
    // SAFETY: bpf(2) with a zero-padded attr of 128 bytes; every pointer in
    // it points to memory that lives until the call returns.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len()) };
    if rc < 0 {
        return Err(Error::io(what.to_owned(), std::io::Error::last_os_error()));
    }
    Ok(rc)
}

/// bpf(2) that returns a new fd.
fn bpf_fd(cmd: libc::c_long, attr: &mut [u8; 128], what: &str) -> Result<OwnedFd> {
    let fd = bpf(cmd, attr, what)?;
    let fd = i32::try_from(fd).map_err(|_| Error::Other(format!("{what}: fd {fd}")))?;
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn put_u32(attr: &mut [u8], at: usize, v: u32) {
    attr[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}

fn put_u64(attr: &mut [u8], at: usize, v: u64) {
    attr[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_ne_bytes(b)
}

fn c_name(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn c_path(path: &Path) -> Result<CString> {
    CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Other(format!("{} has a NUL byte", path.display())))
}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info`.
fn obj_info(fd: &OwnedFd, info: &mut [u8], what: &str) -> Result<()> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, u32::try_from(fd.as_raw_fd()).unwrap_or(0));
    put_u32(&mut attr, 4, u32::try_from(info.len()).unwrap_or(0));
    put_u64(&mut attr, 8, info.as_mut_ptr() as u64);
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, what).map(|_| ())
}

/// What the kernel says of a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProgInfo {
    pub id: u32,
    /// The hash of its instructions (map references left out): two loads of
    /// the same bytecode have the same tag, a changed program another.
    pub tag: [u8; 8],
    pub name: String,
    /// The maps it uses.
    pub map_ids: Vec<u32>,
}

impl ProgInfo {
    /// The tag in hex, as bpftool prints it.
    pub fn tag_hex(&self) -> String {
        use std::fmt::Write as _;
        self.tag.iter().fold(String::new(), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
    }
}

/// The program with id `id` (`BPF_PROG_GET_FD_BY_ID` then
/// `BPF_OBJ_GET_INFO_BY_FD`).
pub fn prog_info(id: u32) -> Result<ProgInfo> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, id);
    let fd = bpf_fd(
        BPF_PROG_GET_FD_BY_ID,
        &mut attr,
        &format!("BPF_PROG_GET_FD_BY_ID {id}"),
    )?;
    let mut map_ids = vec![0u32; 64];
    // struct bpf_prog_info up to and including `name` (offset 64, 16 bytes).
    let mut info = [0u8; 80];
    put_u32(&mut info, 52, u32::try_from(map_ids.len()).unwrap_or(0));
    put_u64(&mut info, 56, map_ids.as_mut_ptr() as u64);
    obj_info(
        &fd,
        &mut info,
        &format!("BPF_OBJ_GET_INFO_BY_FD (program {id})"),
    )?;
    let nr_maps = get_u32(&info, 52) as usize;
    map_ids.truncate(nr_maps.min(64));
    let mut tag = [0u8; 8];
    tag.copy_from_slice(&info[8..16]);
    Ok(ProgInfo {
        id: get_u32(&info, 4),
        tag,
        name: c_name(&info[64..80]),
        map_ids,
    })
}

/// What the kernel says of a map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapInfo {
    pub id: u32,
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
    pub name: String,
}

/// The map pinned at `path` (`BPF_OBJ_GET` then `BPF_OBJ_GET_INFO_BY_FD`).
pub fn pinned_map_info(path: &Path) -> Result<MapInfo> {
    // struct bpf_map_info up to and including `name` (offset 24, 16 bytes).
    let info: [u8; 40] = pinned_info(path)?;
    Ok(MapInfo {
        map_type: get_u32(&info, 0),
        id: get_u32(&info, 4),
        key_size: get_u32(&info, 8),
        value_size: get_u32(&info, 12),
        max_entries: get_u32(&info, 16),
        flags: get_u32(&info, 20),
        name: c_name(&info[24..40]),
    })
}

/// What the kernel says of a pinned link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkInfo {
    pub id: u32,
    /// The program it runs now.
    pub prog_id: u32,
}

/// The link pinned at `path`.
pub fn pinned_link_info(path: &Path) -> Result<LinkInfo> {
    // struct bpf_link_info: type, id, prog_id.
    let info: [u8; 16] = pinned_info(path)?;
    Ok(LinkInfo {
        id: get_u32(&info, 4),
        prog_id: get_u32(&info, 8),
    })
}

/// The first `N` bytes of what `BPF_OBJ_GET_INFO_BY_FD` says of the object
/// pinned at `path`.
fn pinned_info<const N: usize>(path: &Path) -> Result<[u8; N]> {
    let fd = obj_get(path)?;
    let mut info = [0u8; N];
    obj_info(
        &fd,
        &mut info,
        &format!("BPF_OBJ_GET_INFO_BY_FD ({})", path.display()),
    )?;
    Ok(info)
}

fn obj_get(path: &Path) -> Result<OwnedFd> {
    let name = c_path(path)?;
    let mut attr = [0u8; 128];
    put_u64(&mut attr, 0, name.as_ptr() as u64);
    bpf_fd(
        BPF_OBJ_GET,
        &mut attr,
        &format!("BPF_OBJ_GET {}", path.display()),
    )
}

/// `enum bpf_map_type`: `BPF_MAP_TYPE_ARRAY`.
pub const BPF_MAP_TYPE_ARRAY: u32 = 2;

/// Creates a map (`BPF_MAP_CREATE`) and pins it at `path` (`BPF_OBJ_PIN`);
/// returns its id. The pin is all that holds it: unpinning frees it.
pub fn create_pinned_map(
    path: &Path,
    name: &str,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> Result<u32> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, map_type);
    put_u32(&mut attr, 4, key_size);
    put_u32(&mut attr, 8, value_size);
    put_u32(&mut attr, 12, max_entries);
    let name_bytes = name.as_bytes();
    let len = name_bytes.len().min(15);
    attr[28..28 + len].copy_from_slice(&name_bytes[..len]);
    let fd = bpf_fd(BPF_MAP_CREATE, &mut attr, &format!("BPF_MAP_CREATE {name}"))?;
    let mut info = [0u8; 40];
    obj_info(&fd, &mut info, &format!("BPF_OBJ_GET_INFO_BY_FD ({name})"))?;
    let c = c_path(path)?;
    let mut attr = [0u8; 128];
    put_u64(&mut attr, 0, c.as_ptr() as u64);
    put_u32(&mut attr, 8, u32::try_from(fd.as_raw_fd()).unwrap_or(0));
    bpf(
        BPF_OBJ_PIN,
        &mut attr,
        &format!("BPF_OBJ_PIN {}", path.display()),
    )?;
    Ok(get_u32(&info, 4))
}

/// When an interface appeared, and when a program was first attached to its
/// TCX ingress, as seen from a thread polling the kernel.
#[derive(Debug, Clone, Copy)]
pub struct AttachTimes {
    /// The first time the interface's name resolved to an ifindex.
    pub exists: Instant,
    /// The first time `BPF_PROG_QUERY` showed a program on its TCX ingress.
    pub attached: Instant,
    pub ifindex: u32,
}

/// Watches for interface `ifname` to appear in a namespace and for a program
/// to be attached to its TCX ingress: start it before creating the
/// interface, then [`AttachWatch::wait`].
#[derive(Debug)]
pub struct AttachWatch {
    handle: thread::JoinHandle<Result<AttachTimes>>,
}

impl AttachWatch {
    /// Starts a thread in the namespace at `netns` that polls (every 100 us)
    /// for `ifname`, then for a TCX ingress program on it, for at most
    /// `timeout` in all. Returns once the thread is in the namespace.
    pub fn start(netns: &Path, ifname: &str, timeout: Duration) -> Result<Self> {
        let path = netns.to_owned();
        let file =
            File::open(&path).map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let name = CString::new(ifname)
            .map_err(|_| Error::Other(format!("interface name {ifname:?} has a NUL byte")))?;
        let ifname = ifname.to_owned();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = thread::spawn(move || -> Result<AttachTimes> {
            let entered = enter(&file, &path);
            let _ = ready_tx.send(());
            entered?;
            let deadline = Instant::now() + timeout;
            let pause = Duration::from_micros(100);
            let (ifindex, exists) = loop {
                // SAFETY: if_nametoindex(3) on a NUL-terminated name we own.
                let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
                if index != 0 {
                    break (index, Instant::now());
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!("interface {ifname} to appear"),
                        timeout,
                        details: String::new(),
                    });
                }
                thread::sleep(pause);
            };
            loop {
                let (count, _) = query(&path, ifindex, BPF_TCX_INGRESS, 0)?;
                if count > 0 {
                    return Ok(AttachTimes {
                        exists,
                        attached: Instant::now(),
                        ifindex,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(Error::Timeout {
                        what: format!(
                            "a program on the TCX ingress of {ifname} (ifindex {ifindex})"
                        ),
                        timeout,
                        details: String::new(),
                    });
                }
                thread::sleep(pause);
            }
        });
        let _ = ready_rx.recv();
        Ok(Self { handle })
    }

    /// Waits for the watching thread's answer.
    pub fn wait(self) -> Result<AttachTimes> {
        self.handle
            .join()
            .map_err(|_| Error::Other("the attach-watch thread panicked".to_owned()))?
    }
}

/// Loads `r0 = ret; exit` as a program of `prog_type` (with
/// `expected_attach_type`, 0 for none), named `name` (at most 15 bytes
/// kept): the emptiest program of a type.
pub fn load_trivial(
    prog_type: u32,
    expected_attach_type: u32,
    ret: i32,
    name: &str,
) -> Result<OwnedFd> {
    // struct bpf_insn: code, dst_reg:4|src_reg:4, off (i16), imm (i32).
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
    let bytes = name.as_bytes();
    let len = bytes.len().min(15);
    attr[48..48 + len].copy_from_slice(&bytes[..len]);
    put_u32(&mut attr, 68, expected_attach_type);
    bpf_fd(
        BPF_PROG_LOAD,
        &mut attr,
        &format!("bpf(BPF_PROG_LOAD) of the trivial program {name}"),
    )
}

/// A BPF link of `prog` to interface `ifindex` (in this thread's network
/// namespace) at `attach_type`.
pub fn link_create(prog: BorrowedFd<'_>, ifindex: u32, attach_type: u32) -> Result<OwnedFd> {
    link_create_flags(prog, ifindex, attach_type, 0)
}

/// `XDP_FLAGS_SKB_MODE`: generic XDP.
pub const XDP_FLAGS_SKB_MODE: u32 = 2;
/// `XDP_FLAGS_DRV_MODE`: native XDP (the driver's).
pub const XDP_FLAGS_DRV_MODE: u32 = 4;

/// [`link_create`] with the link's `flags` (for XDP: which mode).
pub fn link_create_flags(
    prog: BorrowedFd<'_>,
    ifindex: u32,
    attach_type: u32,
    flags: u32,
) -> Result<OwnedFd> {
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, fd_u32(prog));
    put_u32(&mut attr, 4, ifindex);
    put_u32(&mut attr, 8, attach_type);
    put_u32(&mut attr, 12, flags);
    bpf_fd(
        BPF_LINK_CREATE,
        &mut attr,
        &format!("bpf(BPF_LINK_CREATE) on ifindex {ifindex}"),
    )
}

/// What one `BPF_PROG_TEST_RUN` gave.
#[derive(Debug, Clone, Copy)]
pub struct TestRun {
    pub retval: u32,
    /// The kernel's timer over the loop divided by the repeat count, in
    /// whole nanoseconds (the kernel truncates).
    pub duration_ns: u32,
}

/// Runs `prog` `repeat` times on `data` with the context `ctx` (an `xdp_md`
/// or `__sk_buff` image).
pub fn prog_test_run(
    prog: BorrowedFd<'_>,
    data: &[u8],
    ctx: &[u8],
    repeat: u32,
) -> Result<TestRun> {
    let len = |b: &[u8]| u32::try_from(b.len()).unwrap_or(u32::MAX);
    let mut attr = [0u8; 128];
    put_u32(&mut attr, 0, fd_u32(prog));
    put_u32(&mut attr, 8, len(data));
    put_u64(&mut attr, 16, data.as_ptr() as u64);
    put_u32(&mut attr, 32, repeat);
    put_u32(&mut attr, 40, len(ctx));
    put_u64(&mut attr, 48, ctx.as_ptr() as u64);
    bpf(BPF_PROG_TEST_RUN, &mut attr, "bpf(BPF_PROG_TEST_RUN)")?;
    Ok(TestRun {
        retval: get_u32(&attr, 4),
        duration_ns: get_u32(&attr, 36),
    })
}

fn fd_u32(fd: BorrowedFd<'_>) -> u32 {
    u32::try_from(fd.as_raw_fd()).unwrap_or(u32::MAX)
}
