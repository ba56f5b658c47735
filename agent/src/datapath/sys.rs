//! The two bpf(2) calls aya 0.14 does not expose for links: open a pinned
//! object and read which interface a link is attached to.

use std::{
    ffi::CString,
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    path::Path,
};

const BPF_OBJ_GET: libc::c_long = 7;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;

/// What the kernel says of a link (`struct bpf_link_info`, the part we use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkTarget {
    /// `BPF_LINK_TYPE_*` (6 XDP, 11 TCX).
    pub link_type: u32,
    pub link_id: u32,
    pub prog_id: u32,
    /// The interface the link is attached to; 0 once the interface is gone
    /// (the kernel detaches a link from a vanishing device but keeps the
    /// link object while it is pinned).
    pub ifindex: u32,
}

pub const BPF_LINK_TYPE_XDP: u32 = 6;
pub const BPF_LINK_TYPE_TCX: u32 = 11;

fn bpf(cmd: libc::c_long, attr: &mut [u64], size: usize) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a zero-initialised buffer at least `size` bytes long,
    // laid out as the kernel's `union bpf_attr` member for `cmd`.
    let ret = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size) };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Opens the object pinned at `path`.
fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::ffi::OsStrExt as _;
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in path"))?;
    // struct { __u64 pathname; __u32 bpf_fd; __u32 file_flags; __s32 path_fd; }
    let mut attr = [0u64; 3];
    attr[0] = c_path.as_ptr() as u64;
    let fd = bpf(BPF_OBJ_GET, &mut attr, 20)?;
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("fd out of range"))?;
    // SAFETY: the kernel just returned this fd to us; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Reads the type, ids and interface of the link pinned at `path`.
pub fn pinned_link_target(path: &Path) -> io::Result<LinkTarget> {
    let fd = obj_get(path)?;
    // struct bpf_link_info: type, id, prog_id, then (8-aligned) a union whose
    // xdp and tcx members both start with `__u32 ifindex`.
    let mut info = [0u64; 12];
    // struct { __u32 bpf_fd; __u32 info_len; __u64 info; }
    let mut attr = [0u64; 2];
    let fd_raw = u32::try_from(fd.as_raw_fd()).map_err(|_| io::Error::other("bad fd"))?;
    attr[0] = u64::from(fd_raw) | ((std::mem::size_of_val(&info) as u64) << 32);
    attr[1] = info.as_mut_ptr() as u64;
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr, 16)?;
    let word = |i: usize| -> u32 {
        let w = info[i / 2];
        if i.is_multiple_of(2) {
            w as u32
        } else {
            (w >> 32) as u32
        }
    };
    Ok(LinkTarget {
        link_type: word(0),
        link_id: word(1),
        prog_id: word(2),
        ifindex: word(4),
    })
}
