//! The parser against etherparse, on any frame: it must never let through
//! what etherparse reads as a TCP segment to the held port, and never hold
//! back what etherparse reads whole as something else (see
//! `egress_guard_common::oracle`). A frame that breaks this goes in
//! `corpus/parse/regression-*` once fixed.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    if let Err(disagreement) = egress_guard_common::oracle::check(frame) {
        panic!("{disagreement}");
    }
});
