//! Keeping the maps in step with the desired state: read what the kernel
//! holds, diff it against what the policy wants, write only the difference,
//! in an order that never opens a window:
//!
//! 1. allowed destinations: new prefixes before old ones go, so a
//!    destination allowed before and after stays allowed throughout;
//! 2. held ports: one bitmap word at a time, so a port held before and after
//!    stays held (its bit is set in both words);
//! 3. interfaces: each entry is replaced whole (the hash map is not
//!    preallocated: a reader sees the old entry or the new one);
//! 4. the global settings.
//!
//! Entries of interfaces that are no longer enforced are removed by the
//! caller after it takes the program off them ([`Maps::remove_interface`]).

use std::collections::{BTreeMap, BTreeSet};

use aya::maps::{MapError, lpm_trie::Key};
use egress_guard_common::maps::{self as shared, Config, IfaceEntry, PORT_WORDS, port_slot};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::maps::{Maps, MapsError};

/// What the maps should hold (or do hold).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    pub config: Config,
    pub ports: BTreeSet<u16>,
    pub allow_v4: BTreeSet<Ipv4Net>,
    pub allow_v6: BTreeSet<Ipv6Net>,
    /// Enforced interfaces by ifindex.
    pub ifaces: BTreeMap<u32, IfaceEntry>,
}

impl KernelState {
    /// Splits `allow_destinations` into the two tries.
    pub fn set_allowed(&mut self, prefixes: &[IpNet]) {
        self.allow_v4.clear();
        self.allow_v6.clear();
        for prefix in prefixes {
            match prefix.trunc() {
                IpNet::V4(p) => {
                    self.allow_v4.insert(p);
                }
                IpNet::V6(p) => {
                    self.allow_v6.insert(p);
                }
            }
        }
    }
}

/// How many map entries one sync wrote and removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    pub written: usize,
    pub removed: usize,
}

impl SyncReport {
    pub fn changed(&self) -> bool {
        self.written + self.removed > 0
    }
}

fn map_err(name: &'static str) -> impl Fn(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

impl Maps {
    /// Reads the state the maps hold now.
    pub fn read_state(&self) -> Result<KernelState, MapsError> {
        let mut state = KernelState {
            config: match self.config.get(&0, 0) {
                Ok(c) => c,
                Err(MapError::KeyNotFound) => Config::default(),
                Err(e) => return Err(map_err(shared::CONFIG)(e)),
            },
            ..KernelState::default()
        };
        for word in 0..PORT_WORDS {
            let bits = self.ports.get(&word, 0).map_err(map_err(shared::PORTS))?;
            for bit in 0..64u16 {
                if bits & (1 << bit) != 0 {
                    state.ports.insert((word as u16) << 6 | bit);
                }
            }
        }
        for key in self.allow_v4.keys() {
            let key = key.map_err(map_err(shared::ALLOW_V4))?;
            let net = Ipv4Net::new(key.data().into(), key.prefix_len() as u8)
                .map_err(|_| map_err(shared::ALLOW_V4)(MapError::KeyNotFound))?;
            state.allow_v4.insert(net);
        }
        for key in self.allow_v6.keys() {
            let key = key.map_err(map_err(shared::ALLOW_V6))?;
            let net = Ipv6Net::new(key.data().into(), key.prefix_len() as u8)
                .map_err(|_| map_err(shared::ALLOW_V6)(MapError::KeyNotFound))?;
            state.allow_v6.insert(net);
        }
        state.ifaces.extend(self.slots.entries());
        for item in &self.ifaces {
            let (ifindex, entry) = item.map_err(map_err(shared::IFACES))?;
            state.ifaces.insert(ifindex, entry);
        }
        Ok(state)
    }

    /// Makes the maps hold `desired`, writing only what differs from
    /// `actual` (what [`Maps::read_state`] returned). Interfaces in `actual`
    /// but not in `desired` are left alone: see [`Maps::remove_interface`].
    pub fn apply(
        &mut self,
        actual: &KernelState,
        desired: &KernelState,
    ) -> Result<SyncReport, MapsError> {
        let mut report = SyncReport::default();

        // 1. Allowed destinations: add, then remove.
        for net in desired.allow_v4.difference(&actual.allow_v4) {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.allow_v4
                .insert(&key, 1, 0)
                .map_err(map_err(shared::ALLOW_V4))?;
            report.written += 1;
        }
        for net in desired.allow_v6.difference(&actual.allow_v6) {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.allow_v6
                .insert(&key, 1, 0)
                .map_err(map_err(shared::ALLOW_V6))?;
            report.written += 1;
        }
        for net in actual.allow_v4.difference(&desired.allow_v4) {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.allow_v4
                .remove(&key)
                .map_err(map_err(shared::ALLOW_V4))?;
            report.removed += 1;
        }
        for net in actual.allow_v6.difference(&desired.allow_v6) {
            let key = Key::new(u32::from(net.prefix_len()), net.network().octets());
            self.allow_v6
                .remove(&key)
                .map_err(map_err(shared::ALLOW_V6))?;
            report.removed += 1;
        }

        // 2. Held ports, word by word.
        let old = port_words(&actual.ports);
        let new = port_words(&desired.ports);
        for (word, (&before, &after)) in old.iter().zip(new.iter()).enumerate() {
            if before != after {
                self.ports
                    .set(word as u32, after, 0)
                    .map_err(map_err(shared::PORTS))?;
                report.written += 1;
            }
        }

        // 3. Interfaces, each entry replaced whole.
        for (&ifindex, &entry) in &desired.ifaces {
            if actual.ifaces.get(&ifindex) != Some(&entry) {
                self.set_interface(ifindex, entry)?;
                report.written += 1;
            }
        }

        // 4. Global settings.
        if actual.config != desired.config {
            self.config
                .set(0, desired.config, 0)
                .map_err(map_err(shared::CONFIG))?;
            report.written += 1;
        }
        Ok(report)
    }

    /// Writes (or replaces) one interface's entry.
    pub fn set_interface(&mut self, ifindex: u32, entry: IfaceEntry) -> Result<(), MapsError> {
        if self.slots.covers(ifindex) {
            self.slots.set(ifindex, entry);
            return Ok(());
        }
        self.ifaces
            .insert(ifindex, entry, 0)
            .map_err(map_err(shared::IFACES))
    }

    /// Removes an interface's entry (after its program was taken off).
    pub fn remove_interface(&mut self, ifindex: u32) -> Result<bool, MapsError> {
        if self.slots.covers(ifindex) {
            return Ok(self.slots.clear(ifindex));
        }
        match self.ifaces.remove(&ifindex) {
            Ok(()) => Ok(true),
            Err(e) if is_not_found(&e) => Ok(false),
            Err(e) => Err(map_err(shared::IFACES)(e)),
        }
    }

    /// Forgets the records (counters, attempts) of VM keys not in `keep`.
    pub fn prune_counters(&mut self, keep: &BTreeSet<u64>) -> Result<usize, MapsError> {
        let stale: Vec<u64> = self
            .counters
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !keep.contains(k))
            .collect();
        for key in &stale {
            match self.counters.remove(key) {
                Ok(()) => {}
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(map_err(shared::COUNTERS)(e)),
            }
        }
        Ok(stale.len())
    }
}

/// Whether a map error says the key is not there. aya reports a missing
/// key on lookup as `KeyNotFound`, but on delete as the syscall's ENOENT.
fn is_not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn port_words(ports: &BTreeSet<u16>) -> Vec<u64> {
    let mut words = vec![0u64; PORT_WORDS as usize];
    for &port in ports {
        let (word, bit) = port_slot(port);
        words[word as usize] |= bit;
    }
    words
}
