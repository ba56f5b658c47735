//! Medians, percentiles and the like over repeated samples.

/// The median of `v` (the mean of the two middle values for an even count);
/// NaN for no samples.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    }
}

/// The `p`-th percentile (0 < p <= 100) by the nearest-rank method: the
/// smallest sample that at least `p` % of the samples are at or below.
pub fn percentile(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    #[expect(
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "a rank between 1 and the sample count"
    )]
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

/// The smallest sample; NaN for none.
pub fn min(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::min)
}

/// The largest sample; NaN for none.
pub fn max(v: &[f64]) -> f64 {
    v.iter()
        .copied()
        .filter(|x| !x.is_nan())
        .fold(f64::NAN, f64::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert!(median(&[]).is_nan());
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        assert!((median(&[f64::NAN, 5.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert!((percentile(&v, 50.0) - 100.0).abs() < 1e-12);
        assert!((percentile(&v, 99.0) - 198.0).abs() < 1e-12);
        assert!((percentile(&v, 100.0) - 200.0).abs() < 1e-12);
        assert!((percentile(&[7.0], 99.0) - 7.0).abs() < 1e-12);
        assert!((max(&v) - 200.0).abs() < 1e-12);
        assert!((min(&v) - 1.0).abs() < 1e-12);
    }
}
