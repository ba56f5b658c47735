//! The running agent: from the policy and the interfaces that exist to the
//! maps and links the kernel holds, and back again whenever either changes.
//!
//! [`Agent::reconcile`] is the one place that makes the kernel match the
//! policy. It is idempotent: run twice on the same inputs, the second run
//! writes nothing (not even the state file).
//!
//! The agent keeps the policy's verdicts compact (a byte a VM,
//! [`policy::Verdicts`]) and evaluates them again only when they can have
//! changed: a new policy, an interface created (rule 3), or the next instant
//! a verdict changes by time alone. The periodic reconcile lists the
//! interfaces and compares the kernel with those verdicts, which costs what
//! the interfaces cost, not what the policy does.
//!
//! The agent's parts, each in its own module: [`core`] (its state and its
//! start), [`reconcile`], [`netlink`] (link events), [`reload`] (the policy
//! file read again, off the event loop), [`persist`] (the state directory),
//! [`attempts`] (blocked-attempt events), [`snapshot`] (metrics). What the
//! kernel must hold is computed, purely, in [`crate::desired`].

mod attempts;
mod core;
mod netlink;
mod persist;
mod reconcile;
mod reload;
mod snapshot;

pub use self::{
    core::{AfterLinkEvent, Agent, AgentError, AgentStats, Reconciled, Reload},
    reload::{ReloadJob, ReloadStep},
};
