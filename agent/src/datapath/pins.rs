//! The pin directory of one agent.
//!
//! ```text
//! <pin-dir>/
//!   maps -> maps-v1-3        the map set in use (a symlink, switched atomically)
//!   maps-v1-3/EG_IFACES ...   a map set: layout version 1, serial 3
//!   links/<ifindex>_<hook>    one pinned link per enforced interface
//! ```
//!
//! A map set is never changed in shape. When a new build needs another
//! layout, or the policy outgrows a map, the agent makes a new set beside
//! the old one, fills it, moves every link to programs that use it, and only
//! then points `maps` at it and removes the old set (see
//! [`PinDir::commit_map_set`]). bpffs refuses names with dots, hence the
//! dashes and underscores.

use std::{
    io,
    path::{Path, PathBuf},
};

use egress_guard_common::maps as shared;

use super::DatapathError;

/// The directories and pins of one agent.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

fn io_error(path: &Path) -> impl FnOnce(io::Error) -> DatapathError + '_ {
    move |source| DatapathError::Io {
        path: path.to_owned(),
        source,
    }
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The symlink to the map set in use.
    pub fn maps(&self) -> PathBuf {
        self.root.join("maps")
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// The map set `maps` points at, if there is one.
    pub fn current_map_set(&self) -> Option<PathBuf> {
        let target = std::fs::read_link(self.maps()).ok()?;
        let set = self.root.join(target);
        set.is_dir().then_some(set)
    }

    /// Every map set directory, whatever its layout.
    pub fn map_sets(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut sets: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir() && parse_set_name(p).is_some())
            .collect();
        sets.sort();
        sets
    }

    /// A fresh map set directory for this build's layout, with a serial
    /// above every existing one.
    pub fn new_map_set(&self) -> PathBuf {
        let serial = self
            .map_sets()
            .iter()
            .filter_map(|p| parse_set_name(p).map(|(_, serial)| serial))
            .max()
            .map_or(1, |s| s + 1);
        self.root
            .join(format!("maps-v{}-{serial}", shared::LAYOUT_VERSION))
    }

    /// Creates the root and `links/` (the root must be on a bpffs).
    pub fn create(&self) -> Result<(), DatapathError> {
        self.check_bpffs()?;
        let links = self.links();
        std::fs::create_dir_all(&links).map_err(io_error(&links))
    }

    /// Makes `set` the map set in use (atomically: a reader of `maps` sees
    /// the old set or the new one), then removes every other set. Call it
    /// once every link runs programs that use `set`.
    pub fn commit_map_set(&self, set: &Path) -> Result<(), DatapathError> {
        let name = set
            .file_name()
            .ok_or_else(|| DatapathError::NotBpffs(set.to_owned()))?;
        if self.current_map_set().as_deref() != Some(set) {
            let tmp = self.root.join("maps-next");
            let _ = std::fs::remove_file(&tmp);
            std::os::unix::fs::symlink(name, &tmp).map_err(io_error(&tmp))?;
            let link = self.maps();
            std::fs::rename(&tmp, &link).map_err(io_error(&link))?;
        }
        for other in self.map_sets() {
            if other != set {
                std::fs::remove_dir_all(&other).map_err(io_error(&other))?;
            }
        }
        Ok(())
    }

    /// Fails unless the pin directory is (or would be created) on a bpffs.
    pub fn check_bpffs(&self) -> Result<(), DatapathError> {
        const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
        let mut existing = self.root.as_path();
        while !existing.exists() {
            existing = existing.parent().unwrap_or(Path::new("/"));
        }
        let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes())
            .map_err(|_| DatapathError::NotBpffs(existing.to_owned()))?;
        // SAFETY: statfs(2) into a zeroed struct we own, on a NUL-terminated path.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut fs) };
        if rc != 0 {
            return Err(DatapathError::Io {
                path: existing.to_owned(),
                source: io::Error::last_os_error(),
            });
        }
        if fs.f_type != BPF_FS_MAGIC {
            return Err(DatapathError::NotBpffs(existing.to_owned()));
        }
        Ok(())
    }
}

/// `maps-v<layout>-<serial>` -> (layout, serial).
fn parse_set_name(path: &Path) -> Option<(u32, u32)> {
    let name = path.file_name()?.to_str()?;
    let (layout, serial) = name.strip_prefix("maps-v")?.split_once('-')?;
    Some((layout.parse().ok()?, serial.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_set_names() {
        assert_eq!(parse_set_name(Path::new("/x/maps-v1-3")), Some((1, 3)));
        assert_eq!(parse_set_name(Path::new("/x/maps-v12-40")), Some((12, 40)));
        assert_eq!(parse_set_name(Path::new("/x/maps")), None);
        assert_eq!(parse_set_name(Path::new("/x/maps-next")), None);
        assert_eq!(parse_set_name(Path::new("/x/links")), None);
    }
}
