//! Typed handles on the shared maps, their expected shapes, and the check
//! that a pinned map may be reused.

use std::path::PathBuf;

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, Map, MapData, MapError, MapInfo, PerCpuHashMap},
};
use egress_guard_common::maps::{
    self as shared, Attempts, Config, Counters, FragEntry, FragKey, IfaceEntry, VmStats,
};
use thiserror::Error;

use super::{DatapathError, PinDir, slots::IfaceSlots};

#[derive(Debug, Error)]
pub enum MapsError {
    #[error("the kernel object declares no map {0}")]
    Missing(&'static str),
    #[error("map {0} is not an array")]
    NotAnArray(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("pinned map {path}: {source}")]
    Pinned {
        path: PathBuf,
        #[source]
        source: MapError,
    },
    #[error(
        "pinned map {path} is {found}, but this build of egress-guard expects {expected}; \
         it was made by another build: run `egress-guard detach` for this pin directory, \
         or start the build that made it"
    )]
    Incompatible {
        path: PathBuf,
        found: MapShape,
        expected: MapShape,
    },
    #[error("pinned map {path} holds {found} entries at most, and the policy needs {needed}")]
    TooSmall {
        path: PathBuf,
        found: u32,
        needed: u32,
    },
}

/// How many entries the policy-sized maps hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacities {
    /// Enforced interfaces.
    pub ifaces: u32,
    /// VMs (and unknown interfaces) with counters.
    pub counters: u32,
}

impl Default for Capacities {
    fn default() -> Self {
        Self {
            ifaces: shared::DEFAULT_IFACES_CAPACITY,
            counters: shared::DEFAULT_COUNTERS_CAPACITY,
        }
    }
}

impl Capacities {
    /// Whether maps of this size hold `entries` interfaces (or VMs with
    /// counters) with room to spare for what appears before the next
    /// reconcile.
    pub fn fits(&self, entries: usize) -> bool {
        let room = self.ifaces.min(self.counters) as usize;
        entries <= room - room / 4
    }

    /// Room for `vms` VMs plus as many unknown interfaces, rounded up to a
    /// power of two. The hash maps are not preallocated, so unused room
    /// costs only the bucket array (16 bytes an entry).
    pub fn for_vms(vms: usize) -> Self {
        let wanted = u32::try_from(vms.saturating_mul(2)).unwrap_or(u32::MAX / 2);
        let size = wanted
            .max(shared::DEFAULT_IFACES_CAPACITY)
            .checked_next_power_of_two()
            .unwrap_or(1 << 31);
        Self {
            ifaces: size,
            counters: size,
        }
    }
}

/// What the kernel reports of a map, as far as reuse is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MapShape {
    pub map_type: u32,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
    pub flags: u32,
}

impl std::fmt::Display for MapShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "type {} key {}B value {}B max {} flags {:#x}",
            self.map_type, self.key_size, self.value_size, self.max_entries, self.flags
        )
    }
}

/// The shapes the embedded object declares, with the policy-sized maps at
/// `capacities`.
pub(super) fn expected_shapes(
    object: &[u8],
    capacities: Capacities,
) -> Result<Vec<(&'static str, MapShape)>, DatapathError> {
    let object = aya_obj::Object::parse(object)?;
    shared::ALL
        .iter()
        .map(|&name| {
            let map = object.maps.get(name).ok_or(MapsError::Missing(name))?;
            let max_entries = match name {
                shared::IFACES => capacities.ifaces,
                shared::COUNTERS => capacities.counters,
                _ => map.max_entries(),
            };
            Ok((
                name,
                MapShape {
                    map_type: map.map_type(),
                    key_size: map.key_size(),
                    value_size: map.value_size(),
                    max_entries,
                    flags: map.map_flags(),
                },
            ))
        })
        .collect()
}

/// Refuses pinned maps this build cannot use. A map that is not pinned yet
/// is fine (it will be created).
pub(super) fn check_pinned(
    set: &std::path::Path,
    expected: &[(&'static str, MapShape)],
) -> Result<Capacities, MapsError> {
    let mut found_capacities = Capacities {
        ifaces: 0,
        counters: 0,
    };
    for (name, want) in expected {
        let path = set.join(name);
        if !path.exists() {
            continue;
        }
        let found = pinned_shape(&path)?;
        let same_kind = MapShape {
            max_entries: want.max_entries,
            ..found
        } == *want;
        if !same_kind {
            return Err(MapsError::Incompatible {
                path,
                found,
                expected: *want,
            });
        }
        if found.max_entries < want.max_entries {
            return Err(MapsError::TooSmall {
                path,
                found: found.max_entries,
                needed: want.max_entries,
            });
        }
        match *name {
            shared::IFACES => found_capacities.ifaces = found.max_entries,
            shared::COUNTERS => found_capacities.counters = found.max_entries,
            _ => {}
        }
    }
    Ok(found_capacities)
}

fn pinned_shape(path: &std::path::Path) -> Result<MapShape, MapsError> {
    let info = MapInfo::from_pin(path).map_err(|source| MapsError::Pinned {
        path: path.to_owned(),
        source,
    })?;
    let map_type = info.map_type().map_err(|source| MapsError::Pinned {
        path: path.to_owned(),
        source,
    })? as u32;
    Ok(MapShape {
        map_type,
        key_size: info.key_size(),
        value_size: info.value_size(),
        max_entries: info.max_entries(),
        flags: info.map_flags(),
    })
}

/// The shared maps, typed.
pub struct Maps {
    /// Interfaces below `IFACE_SLOT_COUNT`, mapped into memory.
    pub slots: IfaceSlots,
    /// Interfaces from `IFACE_SLOT_COUNT` on.
    pub ifaces: HashMap<MapData, u32, IfaceEntry>,
    pub config: Array<MapData, Config>,
    pub ports: Array<MapData, u64>,
    pub allow_v4: LpmTrie<MapData, [u8; 4], u8>,
    pub allow_v6: LpmTrie<MapData, [u8; 16], u8>,
    /// Written by the programs: each VM's record on each CPU (counters,
    /// attempts, rate-limit filters).
    pub counters: PerCpuHashMap<MapData, u64, VmStats>,
    /// Written by the programs only: the verdicts of fragmented datagrams.
    pub frags: HashMap<MapData, FragKey, FragEntry>,
    /// Written by the programs only: each VM's next reply time.
    pub reply_rate: HashMap<MapData, u64, u64>,
    /// Written by the programs only: each VM's next event time.
    pub event_rate: HashMap<MapData, u64, u64>,
}

impl Maps {
    /// Takes the maps out of a loaded object (the programs keep their own
    /// references).
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<Self, MapsError> {
        Self::build(|name| ebpf.take_map(name).ok_or(MapsError::Missing(name)))
    }

    /// Opens the pinned maps of an agent, without loading any program (for
    /// `status`). Fails if a map is missing or has another shape.
    pub fn open_pinned(pins: &PinDir) -> Result<Self, MapsError> {
        // Before an agent's first commit there is no `maps` link yet: the
        // newest set is the one it was filling.
        let set = pins
            .current_map_set()
            .or_else(|| pins.map_sets().pop())
            .unwrap_or_else(|| pins.maps());
        Self::build(|name| {
            let path = set.join(name);
            let data = MapData::from_pin(&path).map_err(|source| MapsError::Pinned {
                path: path.clone(),
                source,
            })?;
            Map::from_map_data(data).map_err(|source| MapsError::Pinned { path, source })
        })
    }

    fn build(
        mut get: impl FnMut(&'static str) -> Result<Map, MapsError>,
    ) -> Result<Self, MapsError> {
        fn typed<T>(name: &'static str, map: Map) -> Result<T, MapsError>
        where
            T: TryFrom<Map, Error = MapError>,
        {
            T::try_from(map).map_err(|source| MapsError::Map { name, source })
        }
        let Map::Array(slots) = get(shared::IFACE_SLOTS)? else {
            return Err(MapsError::NotAnArray(shared::IFACE_SLOTS));
        };
        let slots =
            IfaceSlots::map(slots, shared::IFACE_SLOT_COUNT).map_err(|source| MapsError::Map {
                name: shared::IFACE_SLOTS,
                source,
            })?;
        Ok(Self {
            slots,
            ifaces: typed(shared::IFACES, get(shared::IFACES)?)?,
            config: typed(shared::CONFIG, get(shared::CONFIG)?)?,
            ports: typed(shared::PORTS, get(shared::PORTS)?)?,
            allow_v4: typed(shared::ALLOW_V4, get(shared::ALLOW_V4)?)?,
            allow_v6: typed(shared::ALLOW_V6, get(shared::ALLOW_V6)?)?,
            counters: typed(shared::COUNTERS, get(shared::COUNTERS)?)?,
            frags: typed(shared::FRAGS, get(shared::FRAGS)?)?,
            reply_rate: typed(shared::REPLY_RATE, get(shared::REPLY_RATE)?)?,
            event_rate: typed(shared::EVENT_RATE, get(shared::EVENT_RATE)?)?,
        })
    }

    /// Carries the per-VM records (counters, attempts) over from the
    /// `EG_COUNTERS` of an older map set, when their layout is the same;
    /// returns how many VMs' records were carried.
    pub fn carry_counters(&mut self, old_set: &std::path::Path) -> Result<usize, MapsError> {
        carry(&mut self.counters, shared::COUNTERS, old_set)
    }

    /// The counters of every VM key, summed over CPUs.
    pub fn counters_by_key(&self) -> Result<std::collections::HashMap<u64, Counters>, MapsError> {
        self.sum_by_key(|total: &mut Counters, v| total.add(&v.counters))
    }

    /// The blocked connection attempts of every VM key, summed over CPUs.
    pub fn attempts_by_key(&self) -> Result<std::collections::HashMap<u64, Attempts>, MapsError> {
        self.sum_by_key(|total: &mut Attempts, v| total.add(&v.attempts))
    }

    /// One part of every VM's per-CPU record, summed over CPUs by `add`.
    fn sum_by_key<T: Default>(
        &self,
        add: impl Fn(&mut T, &VmStats),
    ) -> Result<std::collections::HashMap<u64, T>, MapsError> {
        let mut totals = std::collections::HashMap::new();
        for item in &self.counters {
            let (key, per_cpu) = item.map_err(|source| MapsError::Map {
                name: shared::COUNTERS,
                source,
            })?;
            let total: &mut T = totals.entry(key).or_default();
            for value in per_cpu.iter() {
                add(total, value);
            }
        }
        Ok(totals)
    }
}

/// Copies every entry of the per-CPU hash map `name` of `old_set` into
/// `into`, when the old map has the same key and value sizes; returns how
/// many entries were copied.
fn carry<V: aya::Pod>(
    into: &mut PerCpuHashMap<MapData, u64, V>,
    name: &'static str,
    old_set: &std::path::Path,
) -> Result<usize, MapsError> {
    let path = old_set.join(name);
    let Ok(shape) = pinned_shape(&path) else {
        return Ok(0);
    };
    if shape.value_size as usize != std::mem::size_of::<V>() || shape.key_size != 8 {
        return Ok(0);
    }
    let data = MapData::from_pin(&path).map_err(|source| MapsError::Pinned {
        path: path.clone(),
        source,
    })?;
    let map = Map::from_map_data(data).map_err(|source| MapsError::Pinned {
        path: path.clone(),
        source,
    })?;
    let old: PerCpuHashMap<MapData, u64, V> =
        PerCpuHashMap::try_from(map).map_err(|source| MapsError::Pinned { path, source })?;
    let mut carried = 0;
    for item in &old {
        let (key, values) = item.map_err(|source| MapsError::Map { name, source })?;
        into.insert(key, values, 0)
            .map_err(|source| MapsError::Map { name, source })?;
        carried += 1;
    }
    Ok(carried)
}
