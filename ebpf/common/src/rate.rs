//! The rate limits' arithmetic (GCRA), shared by the kernel programs' reply
//! and event limits and tested here on the host. Pure: times in, the next
//! due time out.

/// A GCRA step: one is due every `interval`, up to `burst` may come early.
/// With `due` the earliest time the next is due, the new one if one may go
/// at `now`.
#[inline(always)]
pub fn gcra(due: u64, now: u64, interval: u64, burst: u64) -> Option<u64> {
    let tolerance = interval * (if burst == 0 { 0 } else { burst - 1 });
    let due = if due > now { due } else { now };
    if due - now > tolerance {
        None
    } else {
        Some(due + interval)
    }
}

#[cfg(test)]
mod tests {
    use super::gcra;

    /// How many of `n` events at `now` pass, starting from `due`.
    fn passes(mut due: u64, now: u64, n: usize, interval: u64, burst: u64) -> (usize, u64) {
        let mut passed = 0;
        for _ in 0..n {
            if let Some(next) = gcra(due, now, interval, burst) {
                due = next;
                passed += 1;
            }
        }
        (passed, due)
    }

    #[test]
    fn a_burst_passes_then_one_an_interval() {
        // 40 at once pass from rest, the 41st does not.
        let (passed, due) = passes(0, 1_000, 100, 50, 40);
        assert_eq!(passed, 40);
        assert_eq!(due, 1_000 + 40 * 50);
        // One interval later, exactly one more.
        let (passed, _) = passes(due, 1_000 + 50, 10, 50, 40);
        assert_eq!(passed, 1);
    }

    #[test]
    fn a_steady_rate_at_the_interval_always_passes() {
        let mut due = 0;
        for i in 0..1_000u64 {
            due = gcra(due, 10_000 + i * 50, 50, 1).expect("at the rate, every one passes");
        }
    }

    #[test]
    fn burst_zero_and_one_both_mean_no_burst() {
        for burst in [0, 1] {
            assert_eq!(passes(0, 500, 5, 100, burst).0, 1, "burst {burst}");
        }
    }

    #[test]
    fn a_due_time_in_the_past_is_not_credit() {
        // Idle for a long time: the burst is all that passes, not the
        // intervals that went by.
        assert_eq!(passes(0, 1 << 40, 1_000, 10, 3).0, 3);
    }
}
