//! The policy engine: reads and validates a policy file (SPEC, "Policy
//! file"), and decides each VM's verdict at a time (SPEC, "A VM's verdict at
//! time T"). Pure: no kernel, no clock; [`load`] is the only I/O.
//!
//! Reading is two steps. The structure is read into [`raw`] types that keep
//! every scalar as text: by [`fast`] when the VMs are written plainly (a
//! line at a time, no YAML parser), else by [`stream`] (serde_norway, one
//! item at a time, so that a large file does not need many times its size in
//! memory), else by serde_norway's own reader (for its precise errors).
//! [`validate`] then checks every value and reports every problem. Lines and
//! columns are looked up ([`locate`]) only when there is an error to report,
//! so a large valid file costs no location table. A changed file is read
//! VM by VM when only VMs changed ([`update`]).
//!
//! The verdicts come in two forms: [`Verdicts`], a byte a VM (what the
//! agent keeps), and [`Desired`], every VM with its reason; a reason is
//! found again when it is asked for ([`Policy::decide`]).
//!
//! Layers, each file importing only from those below it (this file only
//! declares and re-exports):
//!
//! - the bottom, importing nothing of the policy: [`error`], [`keys`],
//!   [`values`], [`choices`], [`source`], [`raw`];
//! - the text: [`locate`], [`limits`], [`names`];
//! - the model: [`enforcement`], [`model`], [`offers`];
//! - reading: [`stream`], [`fast`], [`validate`], [`diagnose`], [`read`],
//!   [`update`];
//! - using: [`verdict`], [`report`], [`agree`].

mod agree;
mod choices;
mod diagnose;
mod enforcement;
mod error;
mod fast;
mod keys;
pub mod limits;
mod locate;
mod model;
mod names;
mod offers;
mod raw;
mod read;
pub mod report;
mod source;
mod stream;
mod update;
mod validate;
mod values;
mod verdict;

#[cfg(test)]
mod tests;

pub use agree::{ReadBy, readers_agree};
pub use choices::{Action, ExemptionRule, Hook, Mode, Restricted, Verdict};
pub use enforcement::{DEFAULT_CUTOFF, DEFAULT_PORTS, Enforcement, MAX_PORTS};
pub use error::{Diagnostic, PolicyError};
pub use keys::{sha256_hex, unknown_key, vm_key};
pub use limits::{DEFAULT_MAX_POLICY_BYTES, Limits};
pub use model::{Exemption, Offer, Policy, Subscription, Vm};
pub use names::{MAX_IFNAME, check_ifname, check_name};
pub use offers::BUILTIN_OFFERS;
pub use read::{estimate_vms, from_bytes, from_vec, load, parse, parse_by_serde, read};
pub use update::{Applied, Base, Change, MAX_SPLICE, Prepared, prepare};
pub use values::{fmt_time, parse_date, parse_prefix, parse_time};
pub use verdict::{
    Desired, Enforced, Facts, InterfaceVerdict, Reason, Restriction, Since, UNKNOWN_INTERFACE_CODE,
    Verdicts, VmVerdict, evaluate, unknown_reason, verdicts,
};
