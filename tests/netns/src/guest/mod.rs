//! Real guests: QEMU (Debian's `qemu-system-x86`) booting Debian's kernel and
//! a busybox initramfs, on a tap or a macvtap in the hypervisor namespace of
//! a [`Topology`], with virtio-net and its default offloads on (checksum
//! offload, TSO).
//!
//! - [`GuestImage`]: the kernel and initramfs `cargo xtask guest` builds and
//!   caches (`$EGRESS_GUARD_GUEST_DIR`); an error, never a skip, when missing.
//! - [`Guest::boot`]: QEMU runs in hv (`nsenter --net`), so a tap appears there
//!   as a VMM makes it; see [`net`] for the NICs and their addresses. The
//!   boot tries KVM first with a short deadline ([`KVM_DEADLINE`] to the
//!   init's ready line), then TCG; [`Guest::boot_report`] says which ran and
//!   how long the boot took. After one KVM boot failed, later boots in the
//!   same process go straight to TCG.
//! - [`Guest::run`]: a shell script in the guest over its command port
//!   ([`port`]): one booted guest runs many checks.
//! - [`Guest::stop`] (or drop, also while a test panics): QEMU is killed, the
//!   tap goes with it (waited for), a macvtap is deleted, the temporary
//!   directory (sockets, console log) removed. A new [`Guest::boot`] on the
//!   same [`Nic`] is the VM started again: a new QEMU, a new interface.

pub mod checks;
pub mod image;
pub mod net;
pub mod port;
pub mod qemu;

use std::{
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

pub use image::{
    GUEST_DIR_ENV, GuestImage, INIT_FILE, INIT_SCRIPT, INITRAMFS_FILE, KERNEL_FILE,
    VIRTIO_NET_MODULES,
};
pub use net::{Nic, NicKind};
pub use port::Output;
pub use qemu::{Accel, BootReport, KVM_DEADLINE, QEMU, TCG_DEADLINE};

use crate::{
    cmd::describe,
    error::{Error, Result},
    names::TempDir,
    topology::Topology,
};
use qemu::{qemu_command, stop_qemu};

/// Set once a KVM boot failed in this process: later boots use TCG at once.
static KVM_FAILED: AtomicBool = AtomicBool::new(false);

/// A running guest. Dropping it stops QEMU and removes its NIC.
#[derive(Debug)]
pub struct Guest<'a> {
    topo: &'a Topology,
    nic: Nic,
    qemu: Child,
    command: String,
    port: port::Port,
    report: BootReport,
    dir: TempDir,
}

impl<'a> Guest<'a> {
    /// Boots a guest on `nic` in `topo`'s hypervisor namespace and waits
    /// until its init is ready (its NIC configured).
    pub fn boot(topo: &'a Topology, image: &GuestImage, nic: &Nic) -> Result<Self> {
        nic.check()?;
        let kvm_note = if KVM_FAILED.load(Ordering::Relaxed) {
            "failed earlier in this run; not tried again".to_owned()
        } else if !Path::new("/dev/kvm").exists() {
            "no /dev/kvm".to_owned()
        } else {
            match Self::try_boot(topo, image, nic, Accel::Kvm, KVM_DEADLINE) {
                Ok(guest) => return Ok(guest),
                Err(e) => {
                    KVM_FAILED.store(true, Ordering::Relaxed);
                    let first = e.to_string();
                    format!(
                        "{}; fell back to tcg",
                        first.lines().next().unwrap_or_default()
                    )
                }
            }
        };
        let mut guest = Self::try_boot(topo, image, nic, Accel::Tcg, TCG_DEADLINE)?;
        guest.report.kvm = Some(kvm_note);
        Ok(guest)
    }

    fn try_boot(
        topo: &'a Topology,
        image: &GuestImage,
        nic: &Nic,
        accel: Accel,
        deadline: Duration,
    ) -> Result<Self> {
        let dir = TempDir::new("guest")?;
        let socket = dir.path().join("cmd.sock");
        let console = dir.path().join("console.log");
        let listener = std::os::unix::net::UnixListener::bind(&socket)
            .map_err(|e| Error::io(format!("binding {}", socket.display()), e))?;
        let tap_fd = match nic.kind {
            NicKind::Tap => None,
            NicKind::Macvtap => Some(net::create_macvtap(topo, nic, dir.path())?),
        };
        let mut cmd = qemu_command(topo, image, nic, accel, &console, &socket, tap_fd.as_ref());
        let command = describe(&cmd);
        let started = Instant::now();
        let qemu = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(
                std::fs::File::create(dir.path().join("qemu.stderr"))
                    .map_err(|e| Error::io("creating the QEMU stderr file", e))?,
            )
            .process_group(0)
            .spawn();
        drop(tap_fd);
        let qemu = match qemu {
            Ok(q) => q,
            Err(source) => {
                if nic.kind == NicKind::Macvtap {
                    let _ = topo.hv.ip(["link", "del", &nic.ifname]);
                }
                return Err(Error::Spawn { command, source });
            }
        };
        // From here on, dropping `starting` cleans up.
        let mut starting = Starting {
            topo,
            nic: nic.clone(),
            qemu: Some(qemu),
        };
        let until = started + deadline;
        let mut port = port::Port::accept(&listener, until)
            .map_err(|e| boot_error(&e.to_string(), &command, &dir))?;
        if nic.kind == NicKind::Tap {
            net::plumb_tap(&topo.hv, nic, Duration::from_secs(10))
                .map_err(|e| boot_error(&e.to_string(), &command, &dir))?;
        }
        let kernel = match port.wait_ready(until) {
            Ok(Some(kernel)) => kernel,
            Ok(None) => {
                return Err(boot_error(
                    &format!(
                        "no ready line within {:.0} s under {}",
                        deadline.as_secs_f64(),
                        accel.name()
                    ),
                    &command,
                    &dir,
                ));
            }
            Err(e) => return Err(boot_error(&e.to_string(), &command, &dir)),
        };
        let took = started.elapsed();
        let qemu = starting
            .qemu
            .take()
            .ok_or_else(|| Error::Other("no QEMU".to_owned()))?;
        Ok(Self {
            topo,
            nic: nic.clone(),
            qemu,
            command,
            port,
            report: BootReport {
                accel,
                took,
                kvm: None,
                kernel,
            },
            dir,
        })
    }

    /// The guest's NIC.
    pub fn nic(&self) -> &Nic {
        &self.nic
    }

    /// The packet and byte counters of the host-side interface in the
    /// direction the guest's frames take (rx of a tap: QEMU writes them
    /// into it; tx of a macvtap: it transmits them).
    pub fn host_counters(&self) -> Result<(u64, u64)> {
        let dir = match self.nic.kind {
            NicKind::Tap => "rx",
            NicKind::Macvtap => "tx",
        };
        let read = |what: &str| -> Result<u64> {
            let path = format!("/sys/class/net/{}/statistics/{dir}_{what}", self.nic.ifname);
            let out = self.topo.hv.run("cat", [&path])?;
            out.stdout
                .trim()
                .parse()
                .map_err(|_| Error::Other(format!("{path}: {:?}", out.stdout)))
        };
        Ok((read("packets")?, read("bytes")?))
    }

    /// The host-side interface's name (what the policy names).
    pub fn ifname(&self) -> &str {
        &self.nic.ifname
    }

    /// Which accelerator ran and how long the boot took.
    pub fn boot_report(&self) -> &BootReport {
        &self.report
    }

    /// QEMU's command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The guest's console (kernel messages, the init's steps) so far.
    pub fn console(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs `script` with the guest's sh and returns its output and status,
    /// whatever the status; an error if the guest does not answer within
    /// `timeout` (the console's tail is in the error).
    pub fn run(&mut self, script: &str, timeout: Duration) -> Result<Output> {
        self.port.run(script, timeout).map_err(|e| {
            Error::Other(format!(
                "{e}\n--- guest console (tail) ---\n{}",
                tail(&self.console(), 30)
            ))
        })
    }

    /// [`Guest::run`], an error unless the script exits 0.
    pub fn check(&mut self, script: &str, timeout: Duration) -> Result<Output> {
        let out = self.run(script, timeout)?;
        if out.success() {
            Ok(out)
        } else {
            Err(Error::Other(format!(
                "in the guest on {}: `{script}` exited {}:\n{}",
                self.nic.ifname, out.status, out.output
            )))
        }
    }

    /// Stops the guest as a hypervisor does: QEMU ends, its tap goes (waited
    /// for), a macvtap is deleted. An error if something stays.
    pub fn stop(mut self) -> Result<()> {
        let problems = self.cleanup();
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Other(problems.join("; ")))
        }
    }

    fn cleanup(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        stop_qemu(&mut self.qemu);
        if let Err(e) = remove_nic(self.topo, &self.nic) {
            problems.push(e.to_string());
        }
        problems
    }
}

impl Drop for Guest<'_> {
    fn drop(&mut self) {
        for p in self.cleanup() {
            eprintln!("warning: stopping the guest on {}: {p}", self.nic.ifname);
        }
    }
}

/// A QEMU being booted: killed and its NIC removed if the boot fails.
struct Starting<'a> {
    topo: &'a Topology,
    nic: Nic,
    qemu: Option<Child>,
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        if let Some(mut q) = self.qemu.take() {
            stop_qemu(&mut q);
            if let Err(e) = remove_nic(self.topo, &self.nic) {
                eprintln!("warning: after a failed boot: {e}");
            }
        }
    }
}

/// After QEMU ended: waits for its tap to go, or deletes the macvtap.
fn remove_nic(topo: &Topology, nic: &Nic) -> Result<()> {
    match nic.kind {
        NicKind::Tap => net::wait_link(&topo.hv, &nic.ifname, false, Duration::from_secs(10)),
        NicKind::Macvtap => {
            if topo.hv.links()?.contains(&nic.ifname) {
                topo.hv.ip(["link", "del", &nic.ifname])?;
            }
            Ok(())
        }
    }
}

fn boot_error(what: &str, command: &str, dir: &TempDir) -> Error {
    let console = std::fs::read_to_string(dir.path().join("console.log")).unwrap_or_default();
    let stderr = std::fs::read_to_string(dir.path().join("qemu.stderr")).unwrap_or_default();
    Error::Other(format!(
        "the guest did not boot: {what}\n`{command}`\n--- QEMU stderr ---\n{stderr}--- console (tail) ---\n{}",
        tail(&console, 40)
    ))
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
