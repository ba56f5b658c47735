//! The commands of the `egress-guard` binary, one module each. `main.rs`
//! parses the command line and maps errors to exit codes; everything else is
//! here, in the library, where tests can reach it.

pub mod check;
pub mod detach;
pub mod run;
pub mod status;

use std::path::{Path, PathBuf};

use crate::{datapath::PinDir, state::StateDir};

/// The default pin directory (SPEC).
pub const DEFAULT_PIN_DIR: &str = "/sys/fs/bpf/egress-guard";

/// `table` or `json`, for `check` and `status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Where an agent keeps its pins and its state.
#[derive(Clone, Debug)]
pub struct Location {
    pub pins: PinDir,
    pub states: StateDir,
}

impl Location {
    /// The pin directory, and the state directory given or derived from it.
    pub fn new(pin_dir: &Path, state_dir: Option<&PathBuf>) -> Self {
        Self {
            pins: PinDir::new(pin_dir),
            states: state_dir.map_or_else(|| StateDir::for_pin_dir(pin_dir), StateDir::new),
        }
    }
}
