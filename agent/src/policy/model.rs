//! The validated policy: what a policy file means once it has been read.

use std::{fmt, net::IpAddr, sync::Arc};

use chrono::{DateTime, NaiveDate, Utc};
use globset::{GlobBuilder, GlobMatcher};
use hashbrown::HashTable;
use ipnet::IpNet;
use serde::Serialize;

/// The default `cutoff`: the day Azure started restricting port 25.
pub const DEFAULT_CUTOFF: NaiveDate = match NaiveDate::from_ymd_opt(2017, 11, 15) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// The default `ports`.
pub const DEFAULT_PORTS: [u16; 1] = [25];

/// At most this many `ports` (the kernel's port map has this many slots).
pub const MAX_PORTS: usize = 16;

/// A validated policy file.
#[derive(Clone, Debug)]
pub struct Policy {
    pub enforcement: Enforcement,
    /// Every offer a subscription may name: the built-in ones (as overridden
    /// by the file's `offers:`) and the file's own, by name.
    pub offers: std::collections::BTreeMap<String, Offer>,
    /// In file order.
    pub subscriptions: Vec<Subscription>,
    /// In file order.
    pub vms: Vec<Vm>,
    /// sha256 of the file's bytes, lowercase hex.
    pub hash: String,
    /// The VMs by interface name and by key (which also finds them by name).
    pub(crate) index: VmIndex,
    /// The file's text (when it was read from bytes the policy could keep,
    /// [`super::from_vec`]), and where its VMs are in it when the file is
    /// simple enough for a changed one to be read VM by VM
    /// ([`super::update`]).
    pub(crate) source: Option<std::sync::Arc<super::update::Source>>,
}

impl Policy {
    /// The subscription a VM belongs to.
    pub fn subscription_of(&self, vm: &Vm) -> &Subscription {
        &self.subscriptions[vm.subscription_index as usize]
    }

    /// The index in `vms` of the VM whose host-side interface is `ifname`.
    pub fn vm_index_by_interface(&self, ifname: &str) -> Option<usize> {
        self.index.by_interface(&self.vms, ifname)
    }

    /// The VM whose host-side interface is `ifname`.
    pub fn vm_by_interface(&self, ifname: &str) -> Option<&Vm> {
        self.vm_index_by_interface(ifname).map(|i| &self.vms[i])
    }

    /// The index in `vms` of the VM called `name`.
    pub fn vm_index_by_name(&self, name: &str) -> Option<usize> {
        self.index.by_name(&self.vms, name)
    }

    /// The index in `vms` of a VM whose key ([`super::vm_key`]) is `key`.
    pub fn vm_index_by_key(&self, key: u64) -> Option<usize> {
        self.index.by_key(&self.vms, key)
    }

    /// The text of the policy file, when it is kept ([`super::from_vec`],
    /// [`super::load`]).
    pub fn text(&self) -> Option<&str> {
        self.source.as_ref().map(|s| s.text.as_str())
    }
}

/// The VMs of a policy by interface name and by key, as indices into
/// `vms`: the names themselves stay in the VMs.
#[derive(Clone, Default)]
pub(crate) struct VmIndex {
    interfaces: HashTable<u32>,
    keys: HashTable<u32>,
}

impl fmt::Debug for VmIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VmIndex({} interfaces, {} keys)",
            self.interfaces.len(),
            self.keys.len()
        )
    }
}

/// The hash an interface name is found by.
pub(crate) fn name_hash(name: &str) -> u64 {
    super::fnv1a64(&[name.as_bytes()])
}

impl VmIndex {
    pub(crate) fn with_capacity(n: usize) -> Self {
        Self {
            interfaces: HashTable::with_capacity(n),
            keys: HashTable::with_capacity(n),
        }
    }

    pub(crate) fn by_interface(&self, vms: &[Vm], ifname: &str) -> Option<usize> {
        self.interfaces
            .find(name_hash(ifname), |&i| {
                &*vms[i as usize].interface == ifname
            })
            .map(|&i| i as usize)
    }

    pub(crate) fn by_name(&self, vms: &[Vm], name: &str) -> Option<usize> {
        self.keys
            .find(super::vm_key(name), |&i| &*vms[i as usize].name == name)
            .map(|&i| i as usize)
    }

    fn by_key(&self, vms: &[Vm], key: u64) -> Option<usize> {
        self.keys
            .find(key, |&i| vms[i as usize].key == key)
            .map(|&i| i as usize)
    }

    /// Adds `vms[i]` (whose interface and name are not in the index yet);
    /// an empty interface is left out.
    pub(crate) fn insert(&mut self, vms: &[Vm], i: usize) {
        self.insert_interface(vms, i);
        self.insert_key(vms, i);
    }

    /// Adds the interface of `vms[i]` (not in the index yet), unless empty.
    pub(crate) fn insert_interface(&mut self, vms: &[Vm], i: usize) {
        let vm = &vms[i];
        if !vm.interface.is_empty() {
            let at = u32::try_from(i).unwrap_or(u32::MAX);
            self.interfaces
                .insert_unique(name_hash(&vm.interface), at, |&j| {
                    name_hash(&vms[j as usize].interface)
                });
        }
    }

    /// Adds the name (and key) of `vms[i]` (not in the index yet).
    pub(crate) fn insert_key(&mut self, vms: &[Vm], i: usize) {
        let at = u32::try_from(i).unwrap_or(u32::MAX);
        self.keys
            .insert_unique(vms[i].key, at, |&j| vms[j as usize].key);
    }

    /// Takes `vms[i]` out (before it changes or goes).
    pub(crate) fn remove(&mut self, vms: &[Vm], i: usize) {
        let vm = &vms[i];
        let at = u32::try_from(i).unwrap_or(u32::MAX);
        if let Ok(entry) = self
            .interfaces
            .find_entry(name_hash(&vm.interface), |&j| j == at)
        {
            entry.remove();
        }
        if let Ok(entry) = self.keys.find_entry(vm.key, |&j| j == at) {
            entry.remove();
        }
    }

    /// Moves every index at or above `from` (which is at least `removed`)
    /// by `added - removed`: VMs put in and taken out before them.
    pub(crate) fn shift(&mut self, from: usize, added: usize, removed: usize) {
        if added == removed {
            return;
        }
        for table in [&mut self.interfaces, &mut self.keys] {
            for i in table.iter_mut() {
                if *i as usize >= from {
                    *i = (*i as usize + added - removed) as u32;
                }
            }
        }
    }
}

/// The `enforcement:` section, defaults filled in.
#[derive(Clone, Debug, PartialEq)]
pub struct Enforcement {
    /// TCP destination ports held back, in file order, no duplicates, 1..=16 of them.
    pub ports: Vec<u16>,
    pub action: Action,
    pub mode: Mode,
    pub hook: Hook,
    /// Globs of interface names also enforced (as written).
    pub attach: Vec<String>,
    /// The verdict of an enforced interface that belongs to no VM.
    pub unknown: Verdict,
    /// Destinations the ports are never held back towards (network addresses).
    pub allow_destinations: Vec<IpNet>,
    /// Subscriptions created on or after this day are restricted (for
    /// `from-cutoff` offers).
    pub cutoff: NaiveDate,
    pub(crate) attach_globs: AttachGlobs,
}

impl Default for Enforcement {
    fn default() -> Self {
        Self {
            ports: DEFAULT_PORTS.to_vec(),
            action: Action::Drop,
            mode: Mode::Enforce,
            hook: Hook::Auto,
            attach: Vec::new(),
            unknown: Verdict::Block,
            allow_destinations: Vec::new(),
            cutoff: DEFAULT_CUTOFF,
            attach_globs: AttachGlobs::default(),
        }
    }
}

impl Enforcement {
    /// Whether `ifname` matches one of the `attach` globs.
    pub fn matches_attach(&self, ifname: &str) -> bool {
        self.attach_globs.is_match(ifname)
    }

    /// Sets `attach`, compiling the globs. Fails with the first pattern that
    /// is not a valid glob, and why.
    pub fn set_attach(&mut self, patterns: Vec<String>) -> Result<(), (String, String)> {
        self.attach_globs = AttachGlobs::new(&patterns)?;
        self.attach = patterns;
        Ok(())
    }
}

/// The compiled `attach` globs. Two are equal when their patterns are.
#[derive(Clone, Default)]
pub(crate) struct AttachGlobs {
    patterns: Vec<String>,
    matchers: Vec<GlobMatcher>,
}

impl AttachGlobs {
    pub(crate) fn new(patterns: &[String]) -> Result<Self, (String, String)> {
        let matchers = patterns
            .iter()
            .map(|p| compile_glob(p).map_err(|e| (p.clone(), e)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            patterns: patterns.to_vec(),
            matchers,
        })
    }

    fn is_match(&self, ifname: &str) -> bool {
        self.matchers.iter().any(|m| m.is_match(ifname))
    }
}

/// Compiles one `attach` glob (`*`, `?`, `[...]`, `{a,b}`), or says why not.
pub(crate) fn compile_glob(pattern: &str) -> Result<GlobMatcher, String> {
    GlobBuilder::new(pattern)
        .literal_separator(false)
        .backslash_escape(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| e.kind().to_string())
}

impl PartialEq for AttachGlobs {
    fn eq(&self, other: &Self) -> bool {
        self.patterns == other.patterns
    }
}

impl fmt::Debug for AttachGlobs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.patterns).finish()
    }
}

macro_rules! yaml_enum {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
        pub enum $name {
            $(#[serde(rename = $text)] $variant),+
        }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The YAML spelling.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }

            /// Reads the YAML spelling (exact, lowercase).
            pub fn from_yaml(text: &str) -> Option<Self> {
                match text {
                    $($text => Some($name::$variant),)+
                    _ => None,
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

yaml_enum! {
    /// What happens to a held-back segment.
    Action { Drop = "drop", Reset = "reset", Icmp = "icmp" }
}
yaml_enum! {
    /// `enforce` holds back; `audit` only counts.
    Mode { Enforce = "enforce", Audit = "audit" }
}
yaml_enum! {
    /// Where the program sits on VM interfaces.
    Hook { Auto = "auto", Xdp = "xdp", XdpGeneric = "xdp-generic", Tc = "tc" }
}
yaml_enum! {
    /// Whether a VM (or interface) may send to the held-back ports.
    Verdict { Allow = "allow", Block = "block" }
}
yaml_enum! {
    /// When subscriptions of an offer are restricted.
    Restricted { Always = "always", Never = "never", FromCutoff = "from-cutoff" }
}
yaml_enum! {
    /// Whether subscriptions of an offer can be exempted.
    ExemptionRule { OnRequest = "on-request", Never = "never" }
}

/// An offer type: built in, overridden, or declared in the file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Offer {
    pub name: String,
    pub restricted: Restricted,
    pub exemption: ExemptionRule,
    /// Whether the name is one of the built-in offers (overridden or not).
    pub builtin: bool,
}

/// A subscription, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subscription {
    pub id: Arc<str>,
    pub offer: Arc<str>,
    /// The offer's rules, as resolved when the policy was read.
    pub restricted: Restricted,
    pub exemption_rule: ExemptionRule,
    pub created: NaiveDate,
    pub exemption: Option<Exemption>,
}

/// An exemption from the restriction (Azure grants these on request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exemption {
    pub granted: DateTime<Utc>,
    /// Always after `granted` when set.
    pub revoked: Option<DateTime<Utc>>,
}

/// A VM, validated. Its subscription is [`Policy::subscription_of`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vm {
    pub name: Box<str>,
    /// Host-side interface of its NIC.
    pub interface: Box<str>,
    pub addresses: Box<[IpAddr]>,
    pub started: Option<DateTime<Utc>>,
    pub override_verdict: Option<Verdict>,
    /// `vm_key(name)`.
    pub key: u64,
    pub(crate) subscription_index: u32,
}
