//! The guest image `cargo xtask guest` builds (`xtask/src/guest.rs`): what
//! goes into it from this crate (the init, the module list), and where the
//! tests find it (`$EGRESS_GUARD_GUEST_DIR`). A missing or stale image is an
//! error that says how to build it, never a skip.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The guest's init (busybox sh), built into the initramfs by `cargo xtask
/// guest`; it speaks the protocol of [`super::port`].
pub const INIT_SCRIPT: &str = include_str!("../../../fixtures/guest_init.sh");

/// The virtio-net modules, in the order the init loads them (those built
/// into the kernel are left out of the image).
pub const VIRTIO_NET_MODULES: [&str; 8] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
];

/// The environment variable naming the image directory.
pub const GUEST_DIR_ENV: &str = "EGRESS_GUARD_GUEST_DIR";
/// The kernel's file name in the image directory.
pub const KERNEL_FILE: &str = "vmlinuz";
/// The initramfs's file name in the image directory.
pub const INITRAMFS_FILE: &str = "initramfs.cpio";
/// A copy of the init the image was built with (to tell a stale image).
pub const INIT_FILE: &str = "init";

/// The kernel and initramfs of the test guest.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initramfs: PathBuf,
}

impl GuestImage {
    /// The image in `$EGRESS_GUARD_GUEST_DIR`.
    pub fn from_env() -> Result<Self> {
        let dir = std::env::var_os(GUEST_DIR_ENV)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                Error::Other(format!(
                    "{GUEST_DIR_ENV} is not set: the guest tests need the guest image; run them with `cargo xtask test`, or build it with `cargo xtask guest` and set {GUEST_DIR_ENV} to the directory it prints"
                ))
            })?;
        Self::in_dir(Path::new(&dir))
    }

    /// The image in `dir`; an error when a part is missing or it was built
    /// with another init than this crate's.
    pub fn in_dir(dir: &Path) -> Result<Self> {
        let image = Self {
            kernel: dir.join(KERNEL_FILE),
            initramfs: dir.join(INITRAMFS_FILE),
        };
        for part in [&image.kernel, &image.initramfs] {
            if !part.is_file() {
                return Err(Error::Other(format!(
                    "the guest image in {} has no {}: build it with `cargo xtask guest`",
                    dir.display(),
                    part.display()
                )));
            }
        }
        let init = std::fs::read_to_string(dir.join(INIT_FILE)).unwrap_or_default();
        if init != INIT_SCRIPT {
            return Err(Error::Other(format!(
                "the guest image in {} was built with another init than tests/fixtures/guest_init.sh: rebuild it with `cargo xtask guest`",
                dir.display()
            )));
        }
        Ok(image)
    }
}
