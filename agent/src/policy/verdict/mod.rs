//! A VM's verdict at a time T (SPEC, "A VM's verdict at time T"): pure, no
//! I/O, no clock, no kernel.
//!
//! Layers, each importing only those below it: [`reason`] (why, as an
//! operator reads it), [`rules`] (the rules themselves), [`compact`] (a
//! byte a VM, what the agent keeps), [`desired`] (every VM with its
//! reason).

mod compact;
mod desired;
mod reason;
mod rules;

pub use compact::{Enforced, Facts, Verdicts, verdicts};
pub use desired::{Desired, InterfaceVerdict, VmVerdict, evaluate};
pub use reason::{Reason, Restriction, Since, UNKNOWN_INTERFACE_CODE, unknown_reason};
