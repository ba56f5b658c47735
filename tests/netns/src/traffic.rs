//! Continuous traffic for the zero-escape tests: a steady stream of TCP SYNs
//! from a VM ([`SynStream`]), and a capture in another namespace that counts
//! every SYN that arrives, by source address and sequence number
//! ([`SynCapture`]).
//!
//! Each SYN of a stream is hand-made and sent once (raw sockets, no
//! retransmission), with its number as its TCP sequence number, so a capture
//! tells exactly which ones got through: for a blocked VM the count must be
//! 0, for an allowed VM every number from 0 to `sent - 1` must be there.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::OsString,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    path::PathBuf,
    time::Duration,
};

use serde::Deserialize;

use crate::{
    error::{Error, Result},
    names::TempDir,
    netns::Netns,
    script::Script,
    topology::Vm,
};

/// The stream sender's source.
pub const STREAM_SCRIPT: &str = include_str!("../../fixtures/syn_stream.py");
/// The capture's source.
pub const CAPTURE_SCRIPT: &str = include_str!("../../fixtures/syn_capture.py");

/// A python script running in a namespace until told to stop, which then
/// writes its result as JSON to a file (`--out FILE`).
#[derive(Debug)]
struct Reporter {
    script: Script,
    out: PathBuf,
}

impl Reporter {
    /// Starts `source` with `args` (and `--out FILE`) in `ns`, and waits for
    /// it to print `ready_word`.
    fn start(
        ns: &Netns,
        what: &str,
        source: &str,
        args: &[String],
        ready_word: &str,
    ) -> Result<Self> {
        let dir = TempDir::new(what)?;
        let out = dir.path().join("result.json");
        let mut all: Vec<OsString> = args.iter().map(OsString::from).collect();
        all.extend(["--out".into(), out.clone().into()]);
        let script = Script::start(ns, dir, what, source, &all, ready_word)?;
        Ok(Self { script, out })
    }

    /// SIGTERM, wait for the end, read the result.
    fn finish<T: for<'de> Deserialize<'de>>(&mut self) -> Result<T> {
        let timeout = Duration::from_secs(15);
        let Some(status) = self.script.terminate(timeout)? else {
            return Err(Error::Timeout {
                what: format!("`{}` to end after SIGTERM", self.script.command()),
                timeout,
                details: format!("--- stderr ---\n{}", self.script.stderr()),
            });
        };
        let text = std::fs::read_to_string(&self.out).map_err(|e| {
            Error::Other(format!(
                "`{}` ended ({status}) without a result in {}: {e}\n--- stderr ---\n{}",
                self.script.command(),
                self.out.display(),
                self.script.stderr()
            ))
        })?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            command: self.script.command().to_owned(),
            output: text,
            source,
        })
    }
}

/// What a [`SynStream`] sent.
#[derive(Debug, Clone, Deserialize)]
pub struct Sent {
    /// SYNs sent: numbers `0..sent` (when `errors` is 0).
    pub sent: u64,
    pub sent_v4: u64,
    pub sent_v6: u64,
    /// Sends that failed (their numbers were not sent).
    pub errors: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
}

/// A steady stream of TCP SYNs from a VM, one per sequence number, until
/// [`SynStream::stop`]. Killed on drop.
#[derive(Debug)]
pub struct SynStream {
    script: Reporter,
}

impl SynStream {
    /// Starts sending `rate` SYNs a second from `vm` to `dst4:port` (and,
    /// alternately, to `dst6:port` when given); returns once it sends.
    pub fn start(
        vm: &Vm,
        dst4: Ipv4Addr,
        dst6: Option<Ipv6Addr>,
        port: u16,
        rate: u32,
    ) -> Result<Self> {
        let mut args = vec![
            "--src4".to_owned(),
            vm.ipv4.to_string(),
            "--dst4".to_owned(),
            dst4.to_string(),
            "--dport".to_owned(),
            port.to_string(),
            "--rate".to_owned(),
            rate.to_string(),
        ];
        if let Some(dst6) = dst6 {
            args.extend([
                "--src6".to_owned(),
                vm.ipv6.to_string(),
                "--dst6".to_owned(),
                dst6.to_string(),
            ]);
        }
        Ok(Self {
            script: Reporter::start(&vm.ns, "syn-stream", STREAM_SCRIPT, &args, "sending")?,
        })
    }

    /// Stops the stream and says what it sent.
    pub fn stop(&mut self) -> Result<Sent> {
        self.script.finish()
    }
}

/// What a [`SynCapture`] saw from one source address.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FromSource {
    /// SYNs to a watched port.
    pub syns: u64,
    /// Their sequence numbers, in order of arrival.
    pub seqs: Vec<u32>,
}

/// What a [`SynCapture`] saw.
#[derive(Debug, Clone, Deserialize)]
pub struct Captured {
    /// By source address (as the capture printed it).
    pub by_src: BTreeMap<String, FromSource>,
    /// Frames received in all.
    pub frames: u64,
    /// Frames the kernel dropped because the capture was too slow: when not
    /// 0, the counts are incomplete.
    pub kernel_drops: u64,
}

impl Captured {
    /// What arrived from `addr`.
    pub fn from(&self, addr: IpAddr) -> FromSource {
        self.by_src
            .iter()
            .find(|(k, _)| k.parse::<IpAddr>().ok() == Some(addr))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    /// The SYNs to a watched port from any of `addrs`.
    pub fn syns_from(&self, addrs: &[IpAddr]) -> u64 {
        addrs.iter().map(|a| self.from(*a).syns).sum()
    }

    /// The sequence numbers in `0..sent` that arrived from none of `addrs`.
    pub fn missing(&self, addrs: &[IpAddr], sent: u64) -> Vec<u64> {
        let seen: BTreeSet<u64> = addrs
            .iter()
            .flat_map(|a| self.from(*a).seqs)
            .map(u64::from)
            .collect();
        (0..sent).filter(|s| !seen.contains(s)).collect()
    }
}

/// Counts every TCP SYN to the given ports that arrives on an interface of a
/// namespace, from when it starts until [`SynCapture::stop`]. Killed on drop.
#[derive(Debug)]
pub struct SynCapture {
    script: Reporter,
}

impl SynCapture {
    /// Starts capturing on `iface` of `ns`; returns once the socket is bound.
    pub fn start(ns: &Netns, iface: &str, ports: &[u16]) -> Result<Self> {
        let mut args = vec!["--iface".to_owned(), iface.to_owned()];
        for port in ports {
            args.extend(["--port".to_owned(), port.to_string()]);
        }
        Ok(Self {
            script: Reporter::start(ns, "syn-capture", CAPTURE_SCRIPT, &args, "capturing")?,
        })
    }

    /// Stops the capture (after it drained what is queued) and returns what
    /// it saw.
    pub fn stop(&mut self) -> Result<Captured> {
        self.script.finish()
    }
}

/// The MAC address of interface `dev` of namespace `ns`.
pub fn mac_address(ns: &Netns, dev: &str) -> Result<[u8; 6]> {
    let link = ns.link_json(dev)?;
    let text = link["address"].as_str().unwrap_or_default();
    let bytes: Vec<u8> = text
        .split(':')
        .filter_map(|b| u8::from_str_radix(b, 16).ok())
        .collect();
    bytes
        .try_into()
        .map_err(|_| Error::Other(format!("no MAC address for {dev} in {}: {link}", ns.name())))
}

/// Sends each of `frames` (whole Ethernet frames, as they are) out of
/// interface `iface` of namespace `ns`, with an `AF_PACKET` socket: nothing
/// of the namespace's stack touches them, so they may be malformed, or
/// fragments, or anything a VM's own driver could send. Returns how many
/// were sent; an error at the first that could not be.
pub fn send_frames(ns: &Netns, iface: &str, frames: &[Vec<u8>]) -> Result<usize> {
    let iface = std::ffi::CString::new(iface)
        .map_err(|_| Error::Other(format!("interface name {iface:?} has a NUL byte")))?;
    let frames = frames.to_vec();
    crate::bpf::in_netns(&ns.path(), move || {
        // SAFETY: if_nametoindex(3) on a NUL-terminated name we own.
        let ifindex = unsafe { libc::if_nametoindex(iface.as_ptr()) };
        if ifindex == 0 {
            return Err(Error::io(
                format!("no interface {iface:?}"),
                std::io::Error::last_os_error(),
            ));
        }
        let eth_p_all = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: socket(2) with constant arguments.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(eth_p_all)) };
        if fd < 0 {
            return Err(Error::io(
                "socket(AF_PACKET)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the kernel just returned this new fd to us.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: a zeroed sockaddr_ll is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = eth_p_all;
        addr.sll_ifindex = i32::try_from(ifindex).unwrap_or(0);
        let mut sent = 0;
        for frame in &frames {
            // SAFETY: sendto(2) of a buffer we own, to an address we own,
            // with their sizes.
            let n = unsafe {
                libc::sendto(
                    std::os::fd::AsRawFd::as_raw_fd(&fd),
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&raw const addr).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
                )
            };
            if n < 0 {
                return Err(Error::io(
                    format!("sending frame {sent} of {} on {iface:?}", frames.len()),
                    std::io::Error::last_os_error(),
                ));
            }
            sent += 1;
        }
        Ok(sent)
    })
}
