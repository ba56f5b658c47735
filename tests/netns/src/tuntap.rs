//! A VM's network device as its VMM opens it: a tap from `/dev/net/tun`
//! (`IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, optionally `IFF_NAPI |
//! IFF_NAPI_FRAGS`), an L3 tun (`IFF_TUN | IFF_NO_PI`), or a macvtap's
//! character device `/dev/tapN`; and writes of what the guest sends.
//!
//! Invariants:
//! - A tap or tun is created in the namespace given (the file is opened from
//!   a thread inside it: `/dev/net/tun` binds its device to the opener's
//!   namespace). It is not persistent: closing the file, when the
//!   [`VmDevice`] is dropped, deletes it.
//! - A tap is set up as QEMU sets up its tap backend: opened `O_NONBLOCK`
//!   (which tun's build_skb path requires), `TUNSETVNETHDRSZ` 12 and
//!   `TUNSETOFFLOAD` `TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6`.
//! - A macvtap is created with `ip link add ... type macvtap mode bridge`;
//!   there is no udev here, so its character device is made with mknod in a
//!   temporary directory of ours, from the `dev` numbers sysfs shows inside
//!   the namespace. `IFF_VNET_HDR` is read and set back with
//!   `TUNGETIFF`/`TUNSETIFF` as libvirt does, then `TUNSETVNETHDRSZ` 12. It
//!   is deleted on drop.

use std::{
    ffi::CString,
    io::IoSlice,
    net::{Ipv4Addr, Ipv6Addr},
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
};

use crate::{
    bpf::in_netns,
    error::{Error, Result},
    names::TempDir,
    netns::Netns,
    traffic::mac_address,
    vmframe::{VNET_HDR_LEN, VirtioNetHdr},
};

pub const IFF_TUN: i16 = 0x0001;
pub const IFF_TAP: i16 = 0x0002;
pub const IFF_NAPI: i16 = 0x0010;
pub const IFF_NAPI_FRAGS: i16 = 0x0020;
pub const IFF_NO_PI: i16 = 0x1000;
pub const IFF_VNET_HDR: i16 = 0x4000;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const TUNGETIFF: libc::c_ulong = 0x8004_54d2;
const TUNSETOFFLOAD: libc::c_ulong = 0x4004_54d0;
const TUNSETVNETHDRSZ: libc::c_ulong = 0x4004_54d8;
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

/// `struct ifreq` with the `ifr_flags` member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: i16,
    _pad: [u8; 22],
}

impl IfReq {
    fn new(name: &str, flags: i16) -> Result<Self> {
        let mut req = Self {
            name: [0; libc::IFNAMSIZ],
            flags,
            _pad: [0; 22],
        };
        if name.is_empty() || name.len() >= libc::IFNAMSIZ {
            return Err(Error::Other(format!(
                "interface name {name:?} is not 1 to 15 bytes"
            )));
        }
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(req)
    }
}

/// What kind of device a [`VmDevice`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR`, with the extra flags given.
    Tap { extra_flags: i16 },
    /// `IFF_TUN | IFF_NO_PI`: packets start at the IP header.
    L3Tun,
    /// A macvtap in bridge mode over a lower device.
    Macvtap,
}

/// An open VM device: the host-side interface and the VMM's file.
#[derive(Debug)]
pub struct VmDevice {
    fd: OwnedFd,
    kind: DeviceKind,
    name: String,
    ifindex: u32,
    mac: Option<[u8; 6]>,
    ns: String,
    /// Where the macvtap's character device node is.
    _node: Option<TempDir>,
}

impl VmDevice {
    /// A tap named `name` in `ns`, opened as QEMU opens one, with
    /// `extra_flags` (`IFF_NAPI | IFF_NAPI_FRAGS`, or 0). Brought up.
    pub fn tap(ns: &Netns, name: &str, extra_flags: i16) -> Result<Self> {
        let flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | extra_flags;
        let fd = open_tun(ns, name, flags)?;
        vnet_hdr_size(&fd, name)?;
        let offloads = TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6;
        // SAFETY: TUNSETOFFLOAD takes its argument by value.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETOFFLOAD, libc::c_ulong::from(offloads)) } < 0
        {
            return Err(Error::io(
                format!("TUNSETOFFLOAD on tap {name}"),
                std::io::Error::last_os_error(),
            ));
        }
        Self::finish(ns, fd, DeviceKind::Tap { extra_flags }, name, None)
    }

    /// An L3 tun (`IFF_TUN | IFF_NO_PI`) named `name` in `ns`. Brought up.
    pub fn l3_tun(ns: &Netns, name: &str) -> Result<Self> {
        let fd = open_tun(ns, name, IFF_TUN | IFF_NO_PI)?;
        Self::finish(ns, fd, DeviceKind::L3Tun, name, None)
    }

    /// A macvtap named `name` over `lower` in `ns`, bridge mode, and its
    /// character device opened as libvirt and QEMU open it. Brought up.
    pub fn macvtap(ns: &Netns, lower: &str, name: &str) -> Result<Self> {
        ns.ip([
            "link", "add", "link", lower, "name", name, "type", "macvtap", "mode", "bridge",
        ])?;
        let opened = open_macvtap(ns, name);
        let (fd, node) = match opened {
            Ok(x) => x,
            Err(e) => {
                let _ = ns.ip(["link", "del", name]);
                return Err(e);
            }
        };
        Self::finish(ns, fd, DeviceKind::Macvtap, name, Some(node))
    }

    fn finish(
        ns: &Netns,
        fd: OwnedFd,
        kind: DeviceKind,
        name: &str,
        node: Option<TempDir>,
    ) -> Result<Self> {
        ns.ip(["link", "set", name, "up"])?;
        let mac = if kind == DeviceKind::L3Tun {
            None
        } else {
            Some(mac_address(ns, name)?)
        };
        Ok(Self {
            fd,
            kind,
            ifindex: ifindex(ns, name)?,
            name: name.to_owned(),
            mac,
            ns: ns.name().to_owned(),
            _node: node,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> DeviceKind {
        self.kind
    }

    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// The host-side interface's MAC (none for an L3 tun). A guest on a
    /// macvtap sends from it; a guest on a tap sends to it.
    pub fn mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// Gives the host-side interface the VM's gateway addresses (a /24 and
    /// a /64), so that the host routes what the VM sends.
    pub fn gateway(&self, ns: &Netns, v4: Ipv4Addr, v6: Ipv6Addr) -> Result<()> {
        ns.add_addrs(&self.name, v4, v6)
    }

    /// Writes one frame with its `virtio_net_hdr`, as the guest's driver
    /// handed it over, in one writev: the header, then `parts` (the frame,
    /// whole or scattered as in the guest's descriptors).
    pub fn write_vnet(&self, hdr: &VirtioNetHdr, parts: &[&[u8]]) -> Result<()> {
        let head = hdr.to_bytes();
        let mut iov = vec![IoSlice::new(&head)];
        iov.extend(parts.iter().map(|p| IoSlice::new(p)));
        self.writev(
            &iov,
            VNET_HDR_LEN + parts.iter().map(|p| p.len()).sum::<usize>(),
        )
    }

    /// Writes one packet as it is (an L3 tun's IP packet).
    pub fn write(&self, packet: &[u8]) -> Result<()> {
        self.writev(&[IoSlice::new(packet)], packet.len())
    }

    /// Reads the next frame the host sent to the VM (what the VMM would
    /// hand the guest), waiting up to `timeout`; its `virtio_net_hdr` is
    /// cut off. `None` when nothing came.
    pub fn read(&self, timeout: std::time::Duration) -> Result<Option<Vec<u8>>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: poll(2) on one pollfd we own.
        let ready = unsafe { libc::poll(&raw mut pfd, 1, ms) };
        if ready < 0 {
            return Err(Error::io(
                format!("poll on {}", self.name),
                std::io::Error::last_os_error(),
            ));
        }
        if ready == 0 {
            return Ok(None);
        }
        let mut buf = vec![0u8; 128 * 1024];
        // SAFETY: read(2) into a buffer we own, with its size.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EAGAIN) {
                return Ok(None);
            }
            return Err(Error::io(format!("reading from {}", self.name), e));
        }
        buf.truncate(n.unsigned_abs());
        if self.kind != DeviceKind::L3Tun {
            buf.drain(..VNET_HDR_LEN.min(buf.len()));
        }
        Ok(Some(buf))
    }

    /// Reads and discards what the host sent to the VM so far.
    pub fn drain(&self) -> Result<usize> {
        let mut n = 0;
        while self.read(std::time::Duration::ZERO)?.is_some() {
            n += 1;
        }
        Ok(n)
    }

    fn writev(&self, iov: &[IoSlice<'_>], len: usize) -> Result<()> {
        let count = libc::c_int::try_from(iov.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: IoSlice is ABI-compatible with iovec; the buffers live
        // for the call.
        let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr().cast(), count) };
        if n < 0 {
            return Err(Error::io(
                format!("writing {len} bytes into {}", self.name),
                std::io::Error::last_os_error(),
            ));
        }
        if usize::try_from(n).ok() != Some(len) {
            return Err(Error::Other(format!(
                "writing {len} bytes into {}: only {n} written",
                self.name
            )));
        }
        Ok(())
    }
}

impl Drop for VmDevice {
    fn drop(&mut self) {
        if self.kind == DeviceKind::Macvtap {
            // The namespace may be gone already, and the macvtap with it.
            let _ = std::process::Command::new("ip")
                .args(["-n", &self.ns, "link", "del", &self.name])
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Opens `/dev/net/tun` from inside `ns` and creates `name` with `flags`.
fn open_tun(ns: &Netns, name: &str, flags: i16) -> Result<OwnedFd> {
    let mut req = IfReq::new(name, flags)?;
    let name = name.to_owned();
    in_netns(&ns.path(), move || {
        let fd = open("/dev/net/tun")?;
        // SAFETY: TUNSETIFF reads and writes a struct ifreq we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &raw mut req) } < 0 {
            return Err(Error::io(
                format!("TUNSETIFF {name} (flags {flags:#x})"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(fd)
    })
}

/// Makes the macvtap's character device and opens it as libvirt does.
fn open_macvtap(ns: &Netns, name: &str) -> Result<(OwnedFd, TempDir)> {
    let index = ifindex(ns, name)?;
    let sys = format!("/sys/class/net/{name}/macvtap/tap{index}/dev");
    let out = ns.run("cat", [&sys])?;
    let (major, minor) = out
        .stdout
        .trim()
        .split_once(':')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .ok_or_else(|| Error::Other(format!("{sys} says {:?}", out.stdout)))?;
    let dir = TempDir::new("macvtap")?;
    let node = dir.path().join(format!("tap{index}"));
    let c_node = CString::new(node.as_os_str().as_encoded_bytes())
        .map_err(|_| Error::Other(format!("{} has a NUL byte", node.display())))?;
    // SAFETY: mknod(2) on a NUL-terminated path we own.
    let made = unsafe {
        libc::mknod(
            c_node.as_ptr(),
            libc::S_IFCHR | 0o600,
            libc::makedev(major, minor),
        )
    };
    if made != 0 {
        return Err(Error::io(
            format!("mknod {} c {major} {minor}", node.display()),
            std::io::Error::last_os_error(),
        ));
    }
    let fd = open(&node.to_string_lossy())?;
    let mut req = IfReq::new(name, 0)?;
    // SAFETY: TUNGETIFF writes a struct ifreq we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNGETIFF, &raw mut req) } < 0 {
        return Err(Error::io(
            format!("TUNGETIFF on {}", node.display()),
            std::io::Error::last_os_error(),
        ));
    }
    if req.flags & IFF_VNET_HDR == 0 {
        req.flags |= IFF_VNET_HDR;
        // SAFETY: TUNSETIFF reads a struct ifreq we own.
        if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETIFF, &raw mut req) } < 0 {
            return Err(Error::io(
                format!("TUNSETIFF IFF_VNET_HDR on {}", node.display()),
                std::io::Error::last_os_error(),
            ));
        }
    }
    vnet_hdr_size(&fd, name)?;
    Ok((fd, dir))
}

fn vnet_hdr_size(fd: &OwnedFd, name: &str) -> Result<()> {
    let mut size = libc::c_int::try_from(VNET_HDR_LEN).unwrap_or(libc::c_int::MAX);
    // SAFETY: TUNSETVNETHDRSZ reads an int we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), TUNSETVNETHDRSZ, &raw mut size) } < 0 {
        return Err(Error::io(
            format!("TUNSETVNETHDRSZ {VNET_HDR_LEN} on {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

fn open(path: &str) -> Result<OwnedFd> {
    let c_path =
        CString::new(path).map_err(|_| Error::Other(format!("{path:?} has a NUL byte")))?;
    // SAFETY: open(2) on a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            c_path.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Error::io(
            format!("opening {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The ifindex of `dev` in `ns`.
pub fn ifindex(ns: &Netns, dev: &str) -> Result<u32> {
    let link = ns.link_json(dev)?;
    link["ifindex"]
        .as_u64()
        .and_then(|i| u32::try_from(i).ok())
        .ok_or_else(|| Error::Other(format!("no ifindex for {dev} in {}: {link}", ns.name())))
}
