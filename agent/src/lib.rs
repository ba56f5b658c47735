//! The egress-guard agent library.

pub mod policy;
