//! `EG_IFACE_SLOTS`: the interface entries of ifindex below
//! [`IFACE_SLOTS`](egress_guard_common::maps::IFACE_SLOTS), in an array
//! the programs index directly (no hash), mapped into the agent's memory
//! (`BPF_F_MMAPABLE`): reading all of it is a scan of 1 MiB, writing an
//! entry two stores.
//!
//! A slot whose verdict word is 0 holds no entry (the programs treat it as
//! blocked, as an interface with no entry). An entry is written VM key first,
//! then the verdict and flags as one 8-byte store, so that the programs
//! never see a verdict of one write with a word of another; it is cleared
//! verdict first.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    ptr::NonNull,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{MapData, MapError};
use egress_guard_common::maps::IfaceEntry;

/// The slots, mapped.
pub struct IfaceSlots {
    /// Keeps the map (and its fd) alive while it is mapped.
    _map: MapData,
    base: NonNull<u64>,
    /// Entries.
    len: u32,
    /// Bytes mapped.
    bytes: usize,
}

// SAFETY: the mapping is shared memory the kernel also writes; every access
// goes through atomics.
unsafe impl Send for IfaceSlots {}

impl IfaceSlots {
    /// Maps `map` (an `EG_IFACE_SLOTS` of `len` entries) into memory.
    pub fn map(map: MapData, len: u32) -> Result<Self, MapError> {
        let bytes = (len as usize * size_of::<IfaceEntry>()).next_multiple_of(page_size());
        // SAFETY: a shared mapping of the map's fd at offset 0, of the size
        // the kernel backs it with (its entries, rounded up to pages);
        // nothing else is mapped there.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: std::io::Error::last_os_error(),
            }));
        }
        let base = NonNull::new(ptr.cast::<u64>()).ok_or_else(|| {
            MapError::SyscallError(aya::sys::SyscallError {
                call: "mmap",
                io_error: std::io::Error::other("mapped at address 0"),
            })
        })?;
        Ok(Self {
            _map: map,
            base,
            len,
            bytes,
        })
    }

    /// Whether `ifindex` has a slot here.
    pub fn covers(&self, ifindex: u32) -> bool {
        ifindex < self.len
    }

    /// The two 8-byte words of slot `ifindex`: the VM key, and the verdict
    /// and flags.
    fn words(&self, ifindex: u32) -> (&AtomicU64, &AtomicU64) {
        debug_assert!(self.covers(ifindex));
        // SAFETY: `ifindex < len`: both words lie in the mapping, 8-byte
        // aligned (16-byte entries from a page boundary); the kernel and the
        // programs access them too, hence atomics.
        unsafe {
            let at = self.base.as_ptr().add(2 * ifindex as usize);
            (AtomicU64::from_ptr(at), AtomicU64::from_ptr(at.add(1)))
        }
    }

    /// The entry of `ifindex`, if it has one.
    pub fn get(&self, ifindex: u32) -> Option<IfaceEntry> {
        let (key, word) = self.words(ifindex);
        let word = word.load(Ordering::Acquire);
        let entry = IfaceEntry {
            vm_key: key.load(Ordering::Acquire),
            verdict: word as u32,
            flags: (word >> 32) as u32,
        };
        (entry.verdict != 0).then_some(entry)
    }

    /// Writes the entry of `ifindex`.
    pub fn set(&self, ifindex: u32, entry: IfaceEntry) {
        let (key, word) = self.words(ifindex);
        key.store(entry.vm_key, Ordering::Release);
        word.store(
            u64::from(entry.verdict) | u64::from(entry.flags) << 32,
            Ordering::Release,
        );
    }

    /// Clears the entry of `ifindex`; whether it had one.
    pub fn clear(&self, ifindex: u32) -> bool {
        let (key, word) = self.words(ifindex);
        let had = word.swap(0, Ordering::AcqRel) as u32 != 0;
        key.store(0, Ordering::Release);
        had
    }

    /// Every entry, by ifindex.
    pub fn entries(&self) -> impl Iterator<Item = (u32, IfaceEntry)> + '_ {
        (0..self.len).filter_map(|i| self.get(i).map(|e| (i, e)))
    }
}

impl Drop for IfaceSlots {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.bytes);
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(size).unwrap_or(4096)
}
