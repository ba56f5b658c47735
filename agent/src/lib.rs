//! The egress-guard agent library.

pub mod datapath;
pub mod policy;
