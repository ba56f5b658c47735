//! The three policy readers against each other, on any text: the line
//! reader and the streaming reader read what serde_norway's reader reads or
//! leave the file to it, the whole pipeline gives serde_norway's verdicts or
//! diagnostics, and a file beyond a bound is refused by all with the
//! bound's message (`policy::agree`). Bounded: any input is read in time
//! linear in its size.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(disagreement) = egress_guard_policy_fuzz::policy::readers_agree(text) {
        panic!("{disagreement}");
    }
});
