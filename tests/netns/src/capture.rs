//! Every frame that arrives on one interface of a namespace, whole, from an
//! `AF_PACKET` socket ([`FrameCapture`]); and [`segment_in_software`], which
//! turns off a device's checksum and segmentation offloads so that what
//! leaves it is cut and summed as on a wire.
//!
//! Invariants: the socket is bound to the interface before
//! [`FrameCapture::start`] returns, sees incoming frames only
//! (`PACKET_IGNORE_OUTGOING`), with a receive buffer large enough for a
//! burst of 64 KB frames; [`Frames`] says how many frames the kernel dropped
//! and how many were longer than the read buffer, so a test can refuse an
//! incomplete capture instead of judging from it.

use std::{
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use crate::{
    bpf::in_netns,
    error::{Error, Result},
    netns::Netns,
};

/// Frames longer than this are counted as truncated.
const READ_BUFFER: usize = 128 * 1024;
/// The socket's receive buffer.
const RCVBUF: libc::c_int = 32 << 20;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// What a [`FrameCapture`] saw.
#[derive(Debug, Clone, Default)]
pub struct Frames {
    /// Each frame as it arrived, Ethernet header first.
    pub frames: Vec<Vec<u8>>,
    /// Frames the kernel dropped because the socket's buffer was full.
    pub kernel_drops: u32,
    /// Frames longer than the read buffer (cut short in `frames`).
    pub truncated: u64,
}

#[derive(Debug, Default)]
struct Shared {
    frames: Vec<Vec<u8>>,
    truncated: u64,
    error: Option<String>,
}

/// Captures every frame that arrives on an interface until
/// [`FrameCapture::stop`]. Stops on drop.
#[derive(Debug)]
pub struct FrameCapture {
    fd: Arc<OwnedFd>,
    what: String,
    stop: Arc<AtomicBool>,
    shared: Arc<Mutex<Shared>>,
    reader: Option<thread::JoinHandle<()>>,
}

impl FrameCapture {
    /// Opens the socket on `iface` of `ns` and starts reading.
    pub fn start(ns: &Netns, iface: &str) -> Result<Self> {
        let what = format!("capture on {iface} in {}", ns.name());
        let name = std::ffi::CString::new(iface)
            .map_err(|_| Error::Other(format!("interface name {iface:?} has a NUL byte")))?;
        let fd = in_netns(&ns.path(), move || open_socket(&name))?;
        let fd = Arc::new(fd);
        let stop = Arc::new(AtomicBool::new(false));
        let shared = Arc::new(Mutex::new(Shared::default()));
        let reader = {
            let (fd, stop, shared) = (Arc::clone(&fd), Arc::clone(&stop), Arc::clone(&shared));
            thread::spawn(move || read_loop(&fd, &stop, &shared))
        };
        Ok(Self {
            fd,
            what,
            stop,
            shared,
            reader: Some(reader),
        })
    }

    /// The frames seen so far.
    pub fn snapshot(&self) -> Vec<Vec<u8>> {
        self.shared
            .lock()
            .map(|s| s.frames.clone())
            .unwrap_or_default()
    }

    /// Polls [`FrameCapture::snapshot`] until `done` holds or `timeout`
    /// passes; whether it held.
    pub fn wait_for(&self, timeout: Duration, done: impl Fn(&[Vec<u8>]) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(&self.snapshot()) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops reading (after what is queued) and returns everything seen.
    pub fn stop(mut self) -> Result<Frames> {
        self.halt();
        let mut shared = self
            .shared
            .lock()
            .map_err(|_| Error::Other(format!("{}: the reader panicked", self.what)))?;
        if let Some(e) = shared.error.take() {
            return Err(Error::Other(format!("{}: {e}", self.what)));
        }
        Ok(Frames {
            frames: std::mem::take(&mut shared.frames),
            kernel_drops: drops(&self.fd),
            truncated: shared.truncated,
        })
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

impl Drop for FrameCapture {
    fn drop(&mut self) {
        self.halt();
    }
}

fn open_socket(iface: &std::ffi::CStr) -> Result<OwnedFd> {
    // SAFETY: if_nametoindex(3) on a NUL-terminated name.
    let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
    if ifindex == 0 {
        return Err(Error::io(
            format!("no interface {iface:?}"),
            std::io::Error::last_os_error(),
        ));
    }
    // Protocol 0: nothing is queued before the bind below.
    let fd = socket(libc::AF_PACKET, libc::SOCK_RAW, "socket(AF_PACKET)")?;
    let one: libc::c_int = 1;
    setsockopt(&fd, libc::SOL_PACKET, PACKET_IGNORE_OUTGOING, &one)?;
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, &RCVBUF)?;
    let timeout = libc::timeval {
        tv_sec: 0,
        tv_usec: 20_000,
    };
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, &timeout)?;
    // SAFETY: a zeroed sockaddr_ll is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = (libc::ETH_P_ALL as u16).to_be();
    addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
    // SAFETY: bind(2) with an address we own and its size.
    let bound = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&raw const addr).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if bound != 0 {
        return Err(Error::io(
            format!("binding AF_PACKET to {iface:?}"),
            std::io::Error::last_os_error(),
        ));
    }
    // Counters start now: reading them resets them.
    drops(&fd);
    Ok(fd)
}

fn read_loop(fd: &OwnedFd, stop: &AtomicBool, shared: &Mutex<Shared>) {
    let mut buf = vec![0u8; READ_BUFFER];
    loop {
        // MSG_TRUNC: the frame's real length, even when longer than buf.
        // SAFETY: recv(2) into a buffer we own, with its size.
        let n = unsafe {
            libc::recv(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_TRUNC,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if !matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EINTR)) {
                if let Ok(mut s) = shared.lock() {
                    s.error = Some(format!("recv: {e}"));
                }
                return;
            }
            // Timed out with nothing queued: the queue is drained.
            if stop.load(Ordering::Relaxed) {
                return;
            }
            continue;
        }
        let len = n.unsigned_abs();
        if let Ok(mut s) = shared.lock() {
            if len > buf.len() {
                s.truncated += 1;
            }
            s.frames.push(buf[..len.min(buf.len())].to_vec());
        }
    }
}

/// `PACKET_STATISTICS`: frames dropped since the last call.
fn drops(fd: &OwnedFd) -> u32 {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: getsockopt(2) into a struct we own, with its size.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            (&raw mut stats).cast(),
            &raw mut len,
        )
    };
    if r == 0 { stats.tp_drops } else { u32::MAX }
}

fn setsockopt<T>(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, value: &T) -> Result<()> {
    // SAFETY: setsockopt(2) with a value we own and its size.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::from_ref(value).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Error::io(
            format!("setsockopt({level}, {name})"),
            std::io::Error::last_os_error(),
        ))
    }
}

const SIOCETHTOOL: libc::c_ulong = 0x8946;
const ETHTOOL_GTXCSUM: u32 = 0x16;
const ETHTOOL_STXCSUM: u32 = 0x17;
const ETHTOOL_GTSO: u32 = 0x1e;
const ETHTOOL_STSO: u32 = 0x1f;

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

#[repr(C)]
struct IfReqData {
    name: [u8; libc::IFNAMSIZ],
    data: *mut libc::c_void,
    _pad: [u8; 16],
}

/// Turns off transmit checksum offload and TSO on `dev` of `ns`, so that
/// the kernel cuts GSO packets into segments and fills in their checksums
/// before they leave it (what a capture behind it then sees is what a wire
/// would carry). Checks that both are off.
pub fn segment_in_software(ns: &Netns, dev: &str) -> Result<()> {
    let name = dev.to_owned();
    in_netns(&ns.path(), move || {
        let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, "socket(AF_INET)")?;
        for (set, get) in [
            (ETHTOOL_STSO, ETHTOOL_GTSO),
            (ETHTOOL_STXCSUM, ETHTOOL_GTXCSUM),
        ] {
            ethtool(&fd, &name, set, 0)?;
            let now = ethtool(&fd, &name, get, 0)?;
            if now != 0 {
                return Err(Error::Other(format!(
                    "ethtool command {set:#x} on {name}: the offload is still on"
                )));
            }
        }
        Ok(())
    })
}

fn ethtool(fd: &OwnedFd, dev: &str, cmd: u32, data: u32) -> Result<u32> {
    let mut value = EthtoolValue { cmd, data };
    let mut req = IfReqData {
        name: [0; libc::IFNAMSIZ],
        data: (&raw mut value).cast(),
        _pad: [0; 16],
    };
    let n = dev.len().min(libc::IFNAMSIZ - 1);
    req.name[..n].copy_from_slice(&dev.as_bytes()[..n]);
    // SAFETY: SIOCETHTOOL reads the ifreq and the ethtool_value it points
    // to, both ours and alive for the call.
    if unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL, &raw mut req) } < 0 {
        return Err(Error::io(
            format!("SIOCETHTOOL {cmd:#x} on {dev}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(value.data)
}

/// A new socket of `domain` and `ty` (close-on-exec, protocol 0); `what`
/// names it in the error.
fn socket(domain: libc::c_int, ty: libc::c_int, what: &str) -> Result<OwnedFd> {
    // SAFETY: socket(2) takes plain integers.
    let raw = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::io(what, std::io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this new fd to us.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}
