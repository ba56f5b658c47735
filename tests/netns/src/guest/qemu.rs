//! The QEMU command line of a guest, the accelerators it may run under, and
//! how a boot went. QEMU runs in hv (`nsenter --net`) so that a tap it
//! creates appears there; a macvtap's character device is handed to it as
//! fd 3, as libvirt does.

use std::{
    fs::File,
    os::{fd::AsRawFd as _, unix::process::CommandExt as _},
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use super::{GuestImage, Nic};
use crate::{cmd, topology::Topology};

/// How long a KVM boot may take to reach the init's ready line before the
/// harness gives up on KVM (Debian's kernels hang early under nested PVM).
pub const KVM_DEADLINE: Duration = Duration::from_secs(15);
/// How long a TCG boot may take (2 to 9 s on an idle-to-busy 2-core host).
pub const TCG_DEADLINE: Duration = Duration::from_mins(2);

/// The QEMU binary.
pub const QEMU: &str = "qemu-system-x86_64";

/// The accelerator a guest ran under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    pub fn name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }
}

/// How a guest booted.
#[derive(Debug, Clone)]
pub struct BootReport {
    pub accel: Accel,
    /// From QEMU's start to the init's ready line, under [`BootReport::accel`].
    pub took: Duration,
    /// Why KVM was not used, when it was not.
    pub kvm: Option<String>,
    /// The guest's kernel release.
    pub kernel: String,
}

impl std::fmt::Display for BootReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "booted kernel {} under {} in {:.1} s",
            self.kernel,
            self.accel.name(),
            self.took.as_secs_f64()
        )?;
        if let Some(why) = &self.kvm {
            write!(f, " (kvm: {why})")?;
        }
        Ok(())
    }
}

pub(crate) fn qemu_command(
    topo: &Topology,
    image: &GuestImage,
    nic: &Nic,
    accel: Accel,
    console: &Path,
    socket: &Path,
    tap_fd: Option<&File>,
) -> Command {
    let mut cmd = topo.hv.nsenter(QEMU);
    cmd.args(["-nographic", "-nodefaults", "-no-user-config", "-no-reboot"])
        .args(["-accel", accel.name(), "-m", "256", "-smp", "1"])
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initramfs)
        .args([
            "-append",
            &format!("console=ttyS0 panic=-1 {}", nic.cmdline()),
        ])
        .args([
            "-chardev",
            &format!("file,id=con,path={}", console.display()),
            "-serial",
            "chardev:con",
            "-chardev",
            &format!("socket,id=cmd,path={}", socket.display()),
            "-serial",
            "chardev:cmd",
        ]);
    match tap_fd {
        None => cmd.args([
            "-netdev",
            &format!(
                "tap,id=n0,ifname={},script=no,downscript=no,vhost=off",
                nic.ifname
            ),
        ]),
        Some(file) => {
            let fd = file.as_raw_fd();
            // SAFETY: dup2 and fcntl are async-signal-safe and only touch the
            // child's descriptor table; `fd` stays open in the parent until
            // spawn returns.
            unsafe {
                cmd.pre_exec(move || {
                    if fd == 3 {
                        if libc::fcntl(3, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(fd, 3) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            cmd.args(["-netdev", "tap,id=n0,fd=3,vhost=off"])
        }
    };
    // virtio-net's defaults, said explicitly: the guest may hand the host
    // frames with partial checksums (csum) and TCP super-frames (host_tso*),
    // and takes them the other way (guest_*).
    cmd.args([
        "-device",
        &format!(
            "virtio-net-pci,netdev=n0,mac={},csum=on,gso=on,host_tso4=on,host_tso6=on,guest_csum=on,guest_tso4=on,guest_tso6=on",
            nic.mac()
        ),
    ]);
    cmd
}

pub(crate) fn stop_qemu(qemu: &mut Child) {
    if matches!(qemu.try_wait(), Ok(None)) {
        cmd::signal(qemu.id(), libc::SIGTERM);
        if !matches!(cmd::wait_within(qemu, Duration::from_secs(5)), Ok(Some(_))) {
            let _ = qemu.kill();
            let _ = qemu.wait();
        }
    }
}
