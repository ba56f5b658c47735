//! Ctrl-C and SIGTERM for the demo and the benchmarks: the first one sets a
//! flag that the demo and the benchmarks check between steps, so that they
//! stop their agents and traffic and remove their namespaces, nftables
//! rules and pins before the process exits (the benchmark binary, which
//! gets the Ctrl-C too, does the same on its side while `bench` waits for
//! it). A second one ends the process at once (`cargo xtask sweep` then
//! removes what is left).
//!
//! The benchmark crate compiles this same file (`xtask/bench/src/signals.rs`
//! includes it), so the two binaries handle signals alike.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(128 + signal) };
    }
}

/// Installs the handler for SIGINT and SIGTERM.
pub fn install() {
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only touches an atomic and calls _exit, both
    // async-signal-safe.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
}

/// An error once Ctrl-C (or SIGTERM) has arrived.
pub fn check() -> anyhow::Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        anyhow::bail!("interrupted");
    }
    Ok(())
}
