//! The `enforcement:` section: what is held back, how, and where, with the
//! defaults of a policy that leaves a setting out.
//!
//! Invariants: `ports` holds 1 to [`MAX_PORTS`] distinct ports; `attach`
//! and its compiled globs always agree (they are set together,
//! [`Enforcement::set_attach`]), and two sections are equal when their
//! patterns are.

use std::fmt;

use chrono::NaiveDate;
use globset::{GlobBuilder, GlobMatcher};
use ipnet::IpNet;

use super::choices::{Action, Hook, Mode, Verdict};

/// The default `cutoff`: the day Azure started restricting port 25.
pub const DEFAULT_CUTOFF: NaiveDate = match NaiveDate::from_ymd_opt(2017, 11, 15) {
    Some(d) => d,
    None => NaiveDate::MIN,
};

/// The default `ports`.
pub const DEFAULT_PORTS: [u16; 1] = [25];

/// At most this many `ports` (the kernel's port map has this many slots).
pub const MAX_PORTS: usize = 16;

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
