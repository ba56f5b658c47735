//! From what serde read to a [`Policy`](super::Policy): every value
//! checked, every error found (not only the first), each with the path of
//! what it is about. Paths are built only when there is an error.
//!
//! Layers, each importing only those below it: [`checker`] (the issues
//! and the checks of single fields), then the parts of the file
//! ([`settings`], [`subscriptions`], [`vms`]), then [`validator`], which
//! puts them together.

mod checker;
mod settings;
mod subscriptions;
mod validator;
mod vms;

pub(crate) use checker::{Checker, Issue};
pub use validator::Validator;
pub(crate) use vms::{SubNames, check_vm, resolve_subscriptions};
