//! The agent's policy engine, compiled on its own for the fuzzer.
#![allow(clippy::all, clippy::pedantic)]

#[path = "../../src/policy/mod.rs"]
pub mod policy;

/// `check`'s report writes its table through it.
#[path = "../../src/table.rs"]
pub mod table;
