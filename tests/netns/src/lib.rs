//! Network-namespace fixtures for egress-guard's end-to-end tests and its demo.
//!
//! - [`Netns`]: a named network namespace, deleted on drop.
//! - [`Topology`]: a hypervisor namespace routing VM namespaces (one or more on
//!   a Linux bridge) to an "internet" namespace, IPv4 and IPv6.
//! - [`SmtpSink`]: aiosmtpd in the internet namespace on ports 25 and 587;
//!   [`send_mail`] / [`SmtpSink::try_deliver`]: swaks in a VM namespace.
//! - [`Agent`]: `egress-guard run` in the hypervisor namespace with its own pin
//!   directory; killed, detached and unpinned on drop.
//! - [`attachments`]: what XDP/TCX/tc programs sit on an interface; [`bpf`]
//!   also has the raw bpf(2) calls of the live-operation tests (program tags,
//!   pinned maps, the attach window).
//! - [`SynStream`] / [`SynCapture`]: a steady stream of TCP SYNs from a VM,
//!   and a count of those that arrive elsewhere, for zero-escape tests;
//!   [`send_frames`]: exact frames (malformed ones, fragments) from a VM.
//! - [`http::get`]: the agent's `/metrics`, `/healthz` and `/readyz` from
//!   inside the hypervisor namespace.
//! - [`VmDevice`]: a tap, L3 tun or macvtap opened as a VMM opens it, and
//!   [`vmframe`]: the frames a guest writes into it (`virtio_net_hdr`, GSO
//!   super-frames, partial checksums, bare IP packets);
//!   [`FrameCapture`]: every frame that arrives on an interface, whole.
//! - [`PolicyBuilder`]: policy files from VM roles, the one place that
//!   spells the policy's YAML for the tests, the demo and the benchmarks.
//! - [`Guest`]: a real guest (QEMU, Debian's kernel, busybox, virtio-net) on
//!   a tap or a macvtap in the hypervisor namespace, running the checks a
//!   test asks for over its serial command port.
//! - [`sweep`]: removes what a crashed run left behind.
//!
//! Every guard cleans up in `Drop`, also while a test panics, and every name is
//! unique (`egt-<pid>-<n>...`), so tests can run in parallel. Errors name the
//! command that failed and show what it printed. Everything here needs root.

pub mod agent;
pub mod bpf;
pub mod capture;
pub mod cmd;
pub mod error;
pub mod guest;
pub mod http;
pub mod names;
pub mod netns;
pub mod policy;
pub mod script;
pub mod smtp;
pub mod topology;
pub mod traffic;
pub mod tuntap;
pub mod vmframe;

pub use agent::{Agent, agent_bin, held_back_packets, vm_entry};
pub use bpf::{AttachWatch, Attachments, ProgInfo, attachments};
pub use capture::{FrameCapture, Frames, segment_in_software};
pub use error::{Error, Result};
pub use guest::{Guest, GuestImage, Nic, NicKind};
pub use names::{TempDir, sweep, unique_tag};
pub use netns::Netns;
pub use policy::{PolicyBuilder, Role};
pub use smtp::{Delivery, MailAttempt, Received, SmtpSink, send_mail};
pub use topology::{Link, Topology, TopologyBuilder, Vm};
pub use traffic::{Captured, Sent, SynCapture, SynStream, mac_address, send_frames};
pub use tuntap::{DeviceKind, VmDevice};

/// An error unless this process runs as root (namespaces, bpffs and the agent
/// all need it).
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid(2) cannot fail and has no memory effects.
    if unsafe { libc::geteuid() } == 0 {
        Ok(())
    } else {
        Err(Error::Other(
            "these fixtures need root (network namespaces, bpffs, the agent): run as root, e.g. `sudo -E cargo xtask test`".to_owned(),
        ))
    }
}
