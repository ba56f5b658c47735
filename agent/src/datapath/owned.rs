//! What a pinned datapath does under its own pin directory: the links it
//! lists and takes off, the larger datapath it stages beside itself, and
//! the map set it makes the one in use.
//!
//! Invariant: nothing outside `datapath/` pins or unpins; the agent asks
//! the datapath, which knows its directory.

use super::{
    Capacities, Datapath, DatapathError, PinDir, Staged,
    links::{LinkError, PinnedInterface, pinned_links, unpin},
};

impl Datapath {
    /// Its pin directory; an error for an unpinned datapath (TestRun's).
    pub fn pin_dir(&self) -> Result<&PinDir, DatapathError> {
        self.pins.as_ref().ok_or(DatapathError::Unpinned)
    }

    /// Every link pinned in its directory, sorted by ifindex.
    pub fn links(&self) -> Result<Vec<PinnedInterface>, LinkError> {
        pinned_links(self.pin_dir()?)
    }

    /// Takes `link` off its interface (its pin goes; no process holds it).
    pub fn detach(&self, link: &PinnedInterface) -> Result<(), LinkError> {
        unpin(&link.path)
    }

    /// Takes every link of interface `ifindex` off; whether there was one.
    pub fn detach_interface(&self, ifindex: u32) -> Result<bool, LinkError> {
        let mut any = false;
        for link in self.links()? {
            if link.ifindex == ifindex {
                self.detach(&link)?;
                any = true;
            }
        }
        Ok(any)
    }

    /// Loads programs over a new, larger map set in the same directory
    /// (see [`Datapath::stage`]); [`Staged::commit`] pins it beside this
    /// one.
    pub fn stage_larger(&self, capacities: Capacities) -> Result<Staged, DatapathError> {
        Datapath::stage(self.pin_dir()?, capacities)
    }

    /// Makes its map set the one in use, and removes older sets, unless it
    /// already is and they are gone. Returns the set when it changed
    /// anything. Call it only once every link runs these programs.
    pub fn commit_map_set(&self) -> Result<Option<&std::path::Path>, DatapathError> {
        let pins = self.pin_dir()?;
        let Some(set) = self.map_set() else {
            return Ok(None);
        };
        if pins.current_map_set().as_deref() == Some(set) && pins.map_sets().len() <= 1 {
            return Ok(None);
        }
        pins.commit_map_set(set)?;
        Ok(Some(set))
    }
}

impl PinDir {
    /// Takes every link off (the interfaces are free the moment their pin
    /// goes), then removes the whole directory: maps and all. Returns how
    /// many links and how many pins went.
    pub fn detach_all(&self) -> Result<(usize, usize), LinkError> {
        let mut links = 0;
        for link in pinned_links(self)? {
            unpin(&link.path)?;
            links += 1;
        }
        let root = self.root();
        let mut pins = 0;
        if root.exists() {
            pins = count_files(root);
            std::fs::remove_dir_all(root).map_err(|source| LinkError::Io {
                path: root.to_owned(),
                source,
            })?;
        }
        Ok((links, pins))
    }
}

fn count_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .map(|e| {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    count_files(&e.path())
                } else {
                    1
                }
            })
            .sum()
    })
}
