//! Ctrl-C and SIGTERM in the benchmarks: xtask's handler (the same file,
//! `xtask/src/signals.rs`), and a sleep that ends early on Ctrl-C.

#[path = "../../src/signals.rs"]
mod shared;

pub use shared::{check, install};

/// Sleeps `d`, in short steps, ending early with an error on Ctrl-C.
pub fn sleep(d: std::time::Duration) -> anyhow::Result<()> {
    let until = std::time::Instant::now() + d;
    loop {
        check()?;
        let now = std::time::Instant::now();
        if now >= until {
            return Ok(());
        }
        std::thread::sleep((until - now).min(std::time::Duration::from_millis(100)));
    }
}
