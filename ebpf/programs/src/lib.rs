#![no_std]
//! Empty: the library target exists so that the agent can name this crate as a
//! build-dependency (and rebuild when it changes). The programs are the binary.
