//! The kernel side, as the agent sees it: the embedded object, its
//! programs (one XDP, three TC: see [`Hook`]) and its maps, pinned under the pin directory.
//!
//! Maps are pinned so that a restarted agent, `status` and `detach` find
//! them; links are pinned so that enforcement outlives the agent process.
//! The layout of the pin directory is in [`pins`].

pub mod links;
pub mod maps;
mod owned;
pub mod pins;
pub mod slots;
pub mod sync;
pub mod sys;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, RingBuf},
    programs::{ProgramError, SchedClassifier, Xdp},
};
use egress_guard_common::maps as shared;
use maps::MapsError;
use thiserror::Error;
use tracing::warn;

pub use self::{
    links::{Hook, LinkError, PinnedInterface},
    maps::{Capacities, Maps},
    pins::PinDir,
    sync::{KernelState, SyncReport},
};

/// The kernel programs, built by `build.rs` for the BPF target.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/egress-guard"));

/// Name of the XDP program in [`OBJECT`].
pub const XDP_PROGRAM: &str = "eg_xdp";
/// Name of the TC classifier for tcx ingress in [`OBJECT`].
pub const TC_PROGRAM: &str = "eg_tc";
/// Name of the TC classifier for tcx egress (macvtap, ipvtap).
pub const TC_EGRESS_PROGRAM: &str = "eg_tc_egress";
/// Name of the TC classifier for tcx ingress of an L3 tun.
pub const TC_L3_PROGRAM: &str = "eg_tc_l3";
/// Every program in [`OBJECT`].
pub const PROGRAMS: [&str; 4] = [XDP_PROGRAM, TC_PROGRAM, TC_EGRESS_PROGRAM, TC_L3_PROGRAM];

#[derive(Debug, Error)]
pub enum DatapathError {
    #[error("this datapath is not pinned (a test's): it has no pin directory")]
    Unpinned,
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
    #[error("pinning {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
}

/// The loaded programs and their maps.
pub struct Datapath {
    ebpf: Ebpf,
    pub maps: Maps,
    /// The ring buffer of blocked connection attempts, until the agent takes
    /// it ([`Datapath::take_events`]).
    events: Option<RingBuf<MapData>>,
    /// The map set the maps are pinned in (none when unpinned).
    map_set: Option<PathBuf>,
    /// The set in use before, when this one replaces it (another layout, a
    /// map too small, or a map from another build).
    replaces: Option<PathBuf>,
    capacity: Capacities,
    /// The pin directory it lives in (none when unpinned): the datapath
    /// owns it; nothing outside `datapath/` pins or unpins.
    pins: Option<PinDir>,
}

impl Datapath {
    /// Loads the programs with their maps pinned under `pins`. The map set
    /// in use is reused if its every map has the shape this build expects
    /// and room enough; otherwise a new, empty set is made beside it (see
    /// [`Datapath::replaces`]) and the old one stays untouched until
    /// [`PinDir::commit_map_set`].
    pub fn load_pinned(pins: &PinDir, capacities: Capacities) -> Result<Self, DatapathError> {
        Self::stage(pins, capacities)?.commit()
    }

    /// What [`Datapath::load_pinned`] does before it writes to bpffs: the
    /// map set is chosen as it does, the maps of it that are pinned already
    /// are opened, the others are made (unpinned), and the programs are
    /// loaded and verified over them. Nothing under the pin directory
    /// changes until [`Staged::commit`]; dropping the result leaves no
    /// trace. The agent does this while it validates the policy.
    pub fn stage(pins: &PinDir, capacities: Capacities) -> Result<Staged, DatapathError> {
        pins.check_bpffs()?;
        let object = object()?;
        let expected = maps::expected_shapes(object, capacities)?;
        let current = pins.current_map_set();
        let mut capacity = capacities;
        let (set, replaces) = match &current {
            Some(set) => match maps::check_pinned(set, &expected) {
                Ok(found) => {
                    // A pinned set may be larger than asked for; it is kept.
                    if found.ifaces > 0 && found.counters > 0 {
                        capacity = found;
                    }
                    (set.clone(), None)
                }
                Err(e @ (MapsError::Incompatible { .. } | MapsError::TooSmall { .. })) => {
                    let fresh = pins.new_map_set();
                    warn!(
                        reason = %e,
                        new = %fresh.display(),
                        "the pinned maps cannot be reused: making a new set, and moving to it without a gap"
                    );
                    (fresh, Some(set.clone()))
                }
                Err(e) => return Err(e.into()),
            },
            None => (pins.new_map_set(), None),
        };
        let map_paths: Vec<(&'static str, PathBuf)> = shared::ALL
            .iter()
            .map(|name| (*name, set.join(name)))
            .collect();
        let mut loader = EbpfLoader::new();
        loader
            .map_max_entries(shared::IFACES, capacities.ifaces)
            .map_max_entries(shared::COUNTERS, capacities.counters);
        let mut unpinned = Vec::new();
        for (name, path) in &map_paths {
            if path.exists() {
                loader.map_pin_path(name, path.as_path());
            } else {
                unpinned.push((*name, path.clone()));
            }
        }
        let mut ebpf = loader.load(object)?;
        load_programs(&mut ebpf)?;
        Ok(Staged {
            ebpf,
            set,
            replaces,
            capacity,
            unpinned,
            pins: pins.clone(),
        })
    }

    /// The ring buffer of blocked connection attempts (once: its reader
    /// owns it).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    /// How many entries the policy-sized maps hold.
    pub fn capacity(&self) -> Capacities {
        self.capacity
    }

    /// The map set these maps are pinned in.
    pub fn map_set(&self) -> Option<&Path> {
        self.map_set.as_deref()
    }

    /// The map set in use before this one, if this one replaces it. The
    /// agent moves every link to these programs, then commits.
    pub fn replaces(&self) -> Option<&Path> {
        self.replaces.as_deref()
    }

    /// Loads the programs with fresh, unpinned maps (for TestRun and tests).
    pub fn load_unpinned(capacities: Capacities) -> Result<Self, DatapathError> {
        let object = object()?;
        let ebpf = EbpfLoader::new()
            .map_max_entries(shared::IFACES, capacities.ifaces)
            .map_max_entries(shared::COUNTERS, capacities.counters)
            .load(object)?;
        let mut datapath = Self::finish(ebpf)?;
        datapath.capacity = capacities;
        Ok(datapath)
    }

    fn finish(mut ebpf: Ebpf) -> Result<Self, DatapathError> {
        load_programs(&mut ebpf)?;
        Self::assemble(ebpf)
    }

    /// The maps and the ring buffer taken out of a loaded object.
    fn assemble(mut ebpf: Ebpf) -> Result<Self, DatapathError> {
        let maps = Maps::take(&mut ebpf)?;
        let events = ebpf
            .take_map(shared::EVENTS)
            .ok_or(MapsError::Missing(shared::EVENTS))?;
        let events = RingBuf::try_from(events).map_err(|source| MapsError::Map {
            name: shared::EVENTS,
            source,
        })?;
        Ok(Self {
            ebpf,
            maps,
            events: Some(events),
            map_set: None,
            replaces: None,
            capacity: Capacities::default(),
            pins: None,
        })
    }

    /// The kernel id of each loaded program, by name.
    pub fn program_ids(&mut self) -> Result<BTreeMap<&'static str, u32>, DatapathError> {
        let mut ids = BTreeMap::new();
        for name in PROGRAMS {
            let program = self
                .ebpf
                .program(name)
                .ok_or(DatapathError::MissingProgram(name))?;
            let info = program
                .info()
                .map_err(|source| DatapathError::Program { name, source })?;
            ids.insert(name, info.id());
        }
        Ok(ids)
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

    /// The TC classifier on tcx ingress of Ethernet devices.
    pub fn tc(&mut self) -> Result<&mut SchedClassifier, DatapathError> {
        self.tc_program(TC_PROGRAM)
    }

    /// One of the TC classifiers ([`TC_PROGRAM`], [`TC_EGRESS_PROGRAM`],
    /// [`TC_L3_PROGRAM`]).
    pub fn tc_program(
        &mut self,
        name: &'static str,
    ) -> Result<&mut SchedClassifier, DatapathError> {
        let program = self
            .ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?;
        program
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })
    }
}

/// Programs loaded and verified over the maps they will use, nothing of
/// them pinned yet: see [`Datapath::stage`].
pub struct Staged {
    ebpf: Ebpf,
    set: PathBuf,
    replaces: Option<PathBuf>,
    capacity: Capacities,
    /// The maps this load made, and where [`Staged::commit`] pins them.
    unpinned: Vec<(&'static str, PathBuf)>,
    pins: PinDir,
}

impl Staged {
    /// Makes the pin directory and the map set, pins the maps made by the
    /// load: the datapath [`Datapath::load_pinned`] would have given.
    pub fn commit(self) -> Result<Datapath, DatapathError> {
        self.pins.create()?;
        std::fs::create_dir_all(&self.set).map_err(|source| DatapathError::Io {
            path: self.set.clone(),
            source,
        })?;
        for (name, path) in &self.unpinned {
            let map = self.ebpf.map(name).ok_or(MapsError::Missing(name))?;
            map.pin(path).map_err(|source| DatapathError::Pin {
                path: path.clone(),
                source,
            })?;
        }
        let mut datapath = Datapath::assemble(self.ebpf)?;
        datapath.map_set = Some(self.set);
        datapath.replaces = self.replaces;
        datapath.capacity = self.capacity;
        datapath.pins = Some(self.pins);
        Ok(datapath)
    }
}

/// Loads (and so verifies) every program of a loaded object.
fn load_programs(ebpf: &mut Ebpf) -> Result<(), DatapathError> {
    let xdp: &mut Xdp = ebpf
        .program_mut(XDP_PROGRAM)
        .ok_or(DatapathError::MissingProgram(XDP_PROGRAM))?
        .try_into()
        .map_err(|source| DatapathError::Program {
            name: XDP_PROGRAM,
            source,
        })?;
    xdp.load().map_err(|source| DatapathError::Program {
        name: XDP_PROGRAM,
        source,
    })?;
    for name in [TC_PROGRAM, TC_EGRESS_PROGRAM, TC_L3_PROGRAM] {
        let tc: &mut SchedClassifier = ebpf
            .program_mut(name)
            .ok_or(DatapathError::MissingProgram(name))?
            .try_into()
            .map_err(|source| DatapathError::Program { name, source })?;
        tc.load()
            .map_err(|source| DatapathError::Program { name, source })?;
    }
    Ok(())
}

fn object() -> Result<&'static [u8], DatapathError> {
    if OBJECT.is_empty() {
        return Err(DatapathError::NoObject);
    }
    Ok(OBJECT)
}
