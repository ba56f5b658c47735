//! Putting the programs on interfaces, keeping them there, taking them off.
//!
//! Each enforced interface has one pinned link, `links/<ifindex>_<hook>`
//! (bpffs refuses names with a dot). A
//! link outlives the agent because it is pinned. A new agent (or a new build
//! of it) moves a pinned link to its own program with `bpf_link_update`,
//! which swaps the program atomically: the interface is never without one.

use std::{
    io,
    path::{Path, PathBuf},
};

use aya::programs::{
    LinkOrder, ProgramError,
    links::{FdLink, PinnedLink},
    tc::{SchedClassifierLink, TcAttachOptions, TcAttachType},
    xdp::{XdpLink, XdpMode},
};
use thiserror::Error;
use tracing::warn;

use super::{Datapath, DatapathError, PinDir, sys};

/// Where the program sits on an interface, and so which program it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Native (driver) XDP.
    Xdp,
    /// Generic (skb) XDP.
    XdpGeneric,
    /// TC classifier on tcx ingress.
    Tc,
    /// TC classifier on tcx egress: a macvtap's or ipvtap's guest frames
    /// are transmitted by the device, never received by it.
    TcEgress,
    /// TC classifier on tcx ingress of an L3 tun (packets start at the IP
    /// header).
    TcL3,
}

impl Hook {
    pub const ALL: [Hook; 5] = [
        Hook::Xdp,
        Hook::XdpGeneric,
        Hook::Tc,
        Hook::TcEgress,
        Hook::TcL3,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Hook::Xdp => "xdp",
            Hook::XdpGeneric => "xdp-generic",
            Hook::Tc => "tc",
            Hook::TcEgress => "tc-egress",
            Hook::TcL3 => "tc-l3",
        }
    }

    /// The program that runs there.
    pub fn program(self) -> &'static str {
        match self {
            Hook::Xdp | Hook::XdpGeneric => super::XDP_PROGRAM,
            Hook::Tc => super::TC_PROGRAM,
            Hook::TcEgress => super::TC_EGRESS_PROGRAM,
            Hook::TcL3 => super::TC_L3_PROGRAM,
        }
    }

    /// Whether a link on `actual` satisfies a request for `self`: itself,
    /// or generic XDP where native XDP was asked for and the driver has none.
    pub fn accepts(self, actual: Hook) -> bool {
        self == actual || (self == Hook::Xdp && actual == Hook::XdpGeneric)
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|h| h.as_str() == s)
    }
}

impl serde::Serialize for Hook {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Hook {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(d)?;
        Hook::parse(&text).ok_or_else(|| serde::de::Error::custom(format!("not a hook: {text:?}")))
    }
}

impl std::fmt::Display for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Error)]
pub enum LinkError {
    #[error(transparent)]
    Datapath(#[from] Box<DatapathError>),
    #[error("{hook} on {ifname}: {source}")]
    Attach {
        ifname: String,
        hook: Hook,
        #[source]
        source: ProgramError,
    },
    #[error("{hook} on {ifname}: the kernel gave a link that cannot be pinned: {source}")]
    NotPinnable {
        ifname: String,
        hook: Hook,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinned link {path}: {source}")]
    Pinned {
        path: PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("pinning link at {path}: {source}")]
    Pin {
        path: PathBuf,
        #[source]
        source: aya::pin::PinError,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl From<DatapathError> for LinkError {
    fn from(e: DatapathError) -> Self {
        LinkError::Datapath(Box::new(e))
    }
}

impl PinDir {
    /// The pin of the link on `ifindex` for `hook`.
    pub fn link(&self, ifindex: u32, hook: Hook) -> PathBuf {
        self.links().join(format!("{ifindex}_{hook}"))
    }
}

/// A pinned link found under the pin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinnedInterface {
    /// The interface the link was made for (from the pin's name).
    pub ifindex: u32,
    pub hook: Hook,
    pub path: PathBuf,
    /// What the kernel says of the link now; `ifindex` 0 there means the
    /// interface is gone and the link no longer enforces anything.
    pub target: Option<sys::LinkTarget>,
}

impl PinnedInterface {
    /// Whether the link still sits on the interface it was made for.
    pub fn is_live(&self) -> bool {
        self.target.is_some_and(|t| t.ifindex == self.ifindex)
    }
}

/// Every link pinned under `pins`, sorted by ifindex.
pub fn pinned_links(pins: &PinDir) -> Result<Vec<PinnedInterface>, LinkError> {
    let dir = pins.links();
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(LinkError::Io { path: dir, source }),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| LinkError::Io {
            path: dir.clone(),
            source,
        })?;
        let path = entry.path();
        let Some((ifindex, hook)) = parse_link_name(&entry.file_name().to_string_lossy()) else {
            warn!(path = %path.display(), "ignoring a pin that egress-guard did not make");
            continue;
        };
        let target = sys::pinned_link_target(&path).ok();
        found.push(PinnedInterface {
            ifindex,
            hook,
            path,
            target,
        });
    }
    found.sort_by_key(|p| (p.ifindex, p.hook));
    Ok(found)
}

fn parse_link_name(name: &str) -> Option<(u32, Hook)> {
    let (index, hook) = name.split_once('_')?;
    Some((index.parse().ok()?, Hook::parse(hook)?))
}

/// Removes the pin of a link, which detaches it (no process holds it).
pub fn unpin(path: &Path) -> Result<(), LinkError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(LinkError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

impl Datapath {
    /// Puts this build's program on an interface with `hook`, and returns
    /// the hook it ended up on (native XDP falls back to generic where the
    /// driver has none). Through the pinned link when there is one, which
    /// swaps the program atomically; otherwise with a new link, pinned at
    /// once. The interface's `EG_IFACES` entry must be written first.
    pub fn enforce(&mut self, ifindex: u32, ifname: &str, hook: Hook) -> Result<Hook, LinkError> {
        let pins = self.pin_dir()?.clone();
        let pins = &pins;
        match hook {
            Hook::Tc | Hook::TcEgress | Hook::TcL3 => {
                self.enforce_tc(pins, ifindex, ifname, hook).map(|()| hook)
            }
            Hook::XdpGeneric => self
                .enforce_xdp(pins, ifindex, ifname, Hook::XdpGeneric)
                .map(|()| Hook::XdpGeneric),
            Hook::Xdp => match self.enforce_xdp(pins, ifindex, ifname, Hook::Xdp) {
                Ok(()) => Ok(Hook::Xdp),
                Err(e) => {
                    warn!(
                        interface = ifname,
                        error = %crate::error_chain(&e),
                        "native XDP failed; using generic XDP"
                    );
                    self.enforce_xdp(pins, ifindex, ifname, Hook::XdpGeneric)
                        .map(|()| Hook::XdpGeneric)
                }
            },
        }
    }

    fn enforce_xdp(
        &mut self,
        pins: &PinDir,
        ifindex: u32,
        ifname: &str,
        hook: Hook,
    ) -> Result<(), LinkError> {
        let path = pins.link(ifindex, hook);
        let attach_err = |source| LinkError::Attach {
            ifname: ifname.to_owned(),
            hook,
            source,
        };
        let program = self.xdp()?;
        if let Some(pinned) = open_pinned(&path)? {
            let link = XdpLink::try_from(pinned).map_err(|source| LinkError::Pinned {
                path: path.clone(),
                source,
            })?;
            let id = program.attach_to_link(link).map_err(attach_err)?;
            // The pin still names the link: dropping our handle leaves it.
            drop(program.take_link(id).map_err(attach_err)?);
            return Ok(());
        }
        let mode = if hook == Hook::Xdp {
            XdpMode::Driver
        } else {
            XdpMode::Skb
        };
        let id = program
            .attach_to_if_index(ifindex, mode)
            .map_err(attach_err)?;
        let link = program.take_link(id).map_err(attach_err)?;
        pin_new(link, &path, ifname, hook)
    }

    fn enforce_tc(
        &mut self,
        pins: &PinDir,
        ifindex: u32,
        ifname: &str,
        hook: Hook,
    ) -> Result<(), LinkError> {
        let path = pins.link(ifindex, hook);
        let attach_err = |source| LinkError::Attach {
            ifname: ifname.to_owned(),
            hook,
            source,
        };
        let program = self.tc_program(hook.program())?;
        if let Some(pinned) = open_pinned(&path)? {
            let link =
                SchedClassifierLink::try_from(pinned).map_err(|source| LinkError::Pinned {
                    path: path.clone(),
                    source,
                })?;
            let id = program.attach_to_link(link).map_err(attach_err)?;
            drop(program.take_link(id).map_err(attach_err)?);
            return Ok(());
        }
        // First in the tcx chain: no program of another tool runs before us
        // and redirects the packet past us.
        let side = if hook == Hook::TcEgress {
            TcAttachType::Egress
        } else {
            TcAttachType::Ingress
        };
        let id = program
            .attach_with_options(ifname, side, TcAttachOptions::TcxOrder(LinkOrder::first()))
            .map_err(attach_err)?;
        let link = program.take_link(id).map_err(attach_err)?;
        pin_new(link, &path, ifname, hook)
    }
}

fn open_pinned(path: &Path) -> Result<Option<FdLink>, LinkError> {
    if !path.exists() {
        return Ok(None);
    }
    PinnedLink::from_pin(path)
        .map(|p| Some(FdLink::from(p)))
        .map_err(|source| LinkError::Pinned {
            path: path.to_owned(),
            source,
        })
}

fn pin_new<L>(link: L, path: &Path, ifname: &str, hook: Hook) -> Result<(), LinkError>
where
    FdLink: TryFrom<L, Error = aya::programs::links::LinkError>,
{
    let fd = FdLink::try_from(link).map_err(|source| LinkError::NotPinnable {
        ifname: ifname.to_owned(),
        hook,
        source,
    })?;
    fd.pin(path).map_err(|source| LinkError::Pin {
        path: path.to_owned(),
        source,
    })?;
    Ok(())
}
