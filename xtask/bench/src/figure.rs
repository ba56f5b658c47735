//! One figure beside its goal, and the number formats the summary, the
//! report and its sections share. The bottom of the report's layers: it
//! imports nothing of this crate.

/// One figure with its goal.
pub struct Figure {
    pub bench: &'static str,
    pub what: String,
    pub goal: String,
    pub measured: String,
    /// None: no goal to meet.
    pub met: Option<bool>,
}

/// What a table in BENCHMARKS.md says of a goal.
pub fn met(m: Option<bool>) -> &'static str {
    match m {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "",
    }
}

/// `n` with commas between thousands: 100,000.
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A share as a whole percentage: "95 %".
pub fn pct(x: f64) -> String {
    format!("{:.0} %", x * 100.0)
}
