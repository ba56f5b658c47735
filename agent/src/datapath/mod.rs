//! The kernel side, as the agent sees it: the embedded object, its two
//! programs and its maps, pinned under the pin directory.
//!
//! ```text
//! <pin-dir>/
//!   maps-v<LAYOUT_VERSION>/EG_IFACES, EG_CONFIG, ...   the shared maps
//!   links/<ifindex>_<hook>                             one pinned link per enforced interface
//! ```
//!
//! Maps are pinned so that a restarted agent, `status` and `detach` find
//! them; links are pinned so that enforcement outlives the agent process.

pub mod links;
pub mod maps;
pub mod sync;
pub mod sys;

use std::path::{Path, PathBuf};

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier, Xdp},
};
use egress_guard_common::maps as shared;
use thiserror::Error;

pub use self::{
    links::{Hook, LinkError, PinnedInterface},
    maps::{Capacities, Maps},
    sync::{KernelState, SyncReport},
};

/// The kernel programs, built by `build.rs` for the BPF target.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-guard"));

/// Name of the XDP program in [`OBJECT`].
pub const XDP_PROGRAM: &str = "eg_xdp";
/// Name of the TC classifier in [`OBJECT`].
pub const TC_PROGRAM: &str = "eg_tc";

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error(
        "the kernel programs are not in this binary (it was built with AYA_BUILD_SKIP); rebuild without it"
    )]
    NoObject,
    #[error("cannot parse the embedded kernel object: {0}")]
    Object(#[from] aya_obj::ParseError),
    #[error("cannot load the kernel object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
    #[error("the kernel object has no program {0}")]
    MissingProgram(&'static str),
    #[error(transparent)]
    Maps(#[from] maps::MapsError),
    #[error(
        "{0} is not on a bpf filesystem, where pins must live: mount one with \
         `mount -t bpf bpf /sys/fs/bpf` (systemd mounts it at boot)"
    )]
    NotBpffs(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Where the pinned objects of one agent live.
#[derive(Clone, Debug)]
pub struct PinDir {
    root: PathBuf,
}

impl PinDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of the maps whose layout this build knows.
    pub fn maps(&self) -> PathBuf {
        self.root.join(format!("maps-v{}", shared::LAYOUT_VERSION))
    }

    pub fn map(&self, name: &str) -> PathBuf {
        self.maps().join(name)
    }

    pub fn links(&self) -> PathBuf {
        self.root.join("links")
    }

    /// Creates the directories (the root must be on a bpffs).
    pub fn create(&self) -> Result<(), DatapathError> {
        self.check_bpffs()?;
        for dir in [self.maps(), self.links()] {
            std::fs::create_dir_all(&dir).map_err(|source| DatapathError::Io {
                path: dir.clone(),
                source,
            })?;
        }
        Ok(())
    }
}

impl PinDir {
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
        let rc = unsafe { libc::statfs(c_path.as_ptr(), &raw mut fs) };
        if rc != 0 {
            return Err(DatapathError::Io {
                path: existing.to_owned(),
                source: std::io::Error::last_os_error(),
            });
        }
        if fs.f_type != BPF_FS_MAGIC {
            return Err(DatapathError::NotBpffs(existing.to_owned()));
        }
        Ok(())
    }
}

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    pub maps: Maps,
}

impl Datapath {
    /// Loads the programs with their maps pinned under `pins`: maps already
    /// pinned there are reused (after checking that their shape is the one
    /// this build expects), the others are created and pinned.
    pub fn load_pinned(pins: &PinDir, capacities: Capacities) -> Result<Self, DatapathError> {
        pins.create()?;
        let object = object()?;
        let expected = maps::expected_shapes(object, capacities)?;
        maps::check_pinned(pins, &expected)?;
        let map_paths: Vec<(&str, PathBuf)> = shared::ALL
            .iter()
            .map(|name| (*name, pins.map(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(shared::IFACES, capacities.ifaces)
            .map_max_entries(shared::COUNTERS, capacities.counters);
        for (name, path) in &map_paths {
            loader.map_pin_path(name, path.as_path());
        }
        Self::finish(loader.load(object)?)
    }

    /// Loads the programs with fresh, unpinned maps (for TestRun and tests).
    pub fn load_unpinned(capacities: Capacities) -> Result<Self, DatapathError> {
        let object = object()?;
        let ebpf = EbpfLoader::new()
            .map_max_entries(shared::IFACES, capacities.ifaces)
            .map_max_entries(shared::COUNTERS, capacities.counters)
            .load(object)?;
        Self::finish(ebpf)
    }

    fn finish(mut ebpf: Ebpf) -> Result<Self, DatapathError> {
        let maps = Maps::take(&mut ebpf)?;
        let mut datapath = Self { ebpf, maps };
        datapath
            .xdp()?
            .load()
            .map_err(|source| DatapathError::Program {
                name: XDP_PROGRAM,
                source,
            })?;
        datapath
            .tc()?
            .load()
            .map_err(|source| DatapathError::Program {
                name: TC_PROGRAM,
                source,
            })?;
        Ok(datapath)
    }

    /// The kernel ids of the loaded XDP and TC programs.
    pub fn program_ids(&mut self) -> Result<[u32; 2], DatapathError> {
        let xdp = self
            .xdp()?
            .info()
            .map_err(|source| DatapathError::Program {
                name: XDP_PROGRAM,
                source,
            })?
            .id();
        let tc = self
            .tc()?
            .info()
            .map_err(|source| DatapathError::Program {
                name: TC_PROGRAM,
                source,
            })?
            .id();
        Ok([xdp, tc])
    }

    pub fn xdp(&mut self) -> Result<&mut Xdp, DatapathError> {
        let program = self
            .ebpf
            .program_mut(XDP_PROGRAM)
            .ok_or(DatapathError::MissingProgram(XDP_PROGRAM))?;
        program.try_into().map_err(|source| DatapathError::Program {
            name: XDP_PROGRAM,
            source,
        })
    }

    pub fn tc(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        let program = self
            .ebpf
            .program_mut(TC_PROGRAM)
            .ok_or(DatapathError::MissingProgram(TC_PROGRAM))?;
        program.try_into().map_err(|source| DatapathError::Program {
            name: TC_PROGRAM,
            source,
        })
    }
}

fn object() -> Result<&'static [u8], DatapathError> {
    if OBJECT.is_empty() {
        return Err(DatapathError::NoObject);
    }
    Ok(OBJECT)
}
