//! Small statistics: percentiles of latency samples, and the summary of a
//! figure over several runs.

use std::time::Duration;

use serde::Serialize;

/// The `p`-th percentile (0–100) of `sorted` by nearest rank; 0 when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// A latency distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub n: usize,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

impl Latency {
    /// The distribution of `samples`.
    pub fn of(samples: &[Duration]) -> Self {
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Self {
            n: ms.len(),
            p50_ms: percentile(&ms, 50.0),
            p99_ms: percentile(&ms, 99.0),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }

    /// `p50 / p99` for a table cell.
    pub fn cell(&self) -> String {
        format!("{} / {}", fmt_ms(self.p50_ms), fmt_ms(self.p99_ms))
    }
}

/// One figure measured in several runs: the median of the runs, the 99th
/// percentile of the runs (the worst run when there are fewer than 100),
/// and every run's value.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Runs {
    /// Median over the runs.
    pub median: f64,
    /// 99th percentile over the runs.
    pub p99: f64,
    /// Each run's value, in run order.
    pub runs: Vec<f64>,
}

impl Runs {
    /// The summary of `runs`.
    pub fn of(runs: Vec<f64>) -> Self {
        let mut sorted = runs.clone();
        sorted.sort_by(f64::total_cmp);
        Self {
            median: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            runs,
        }
    }
}

/// `a / b`, or `None` when `b` is not positive.
pub fn ratio(a: f64, b: f64) -> Option<f64> {
    (b > 0.0 && a.is_finite()).then(|| a / b)
}

/// A ratio as a percentage cell, `-` when there is none.
pub fn fmt_ratio(r: Option<f64>) -> String {
    match r {
        Some(r) => format!("{:.0} %", r * 100.0),
        None => "-".into(),
    }
}

/// Milliseconds with a precision that suits their size.
pub fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else if ms >= 10.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.2}")
    }
}

/// A rate (per second) rounded to what matters.
pub fn fmt_rate(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else {
        format!("{r:.1}")
    }
}

/// KiB as MiB with one decimal.
pub fn fmt_mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn runs_and_latency() {
        let r = Runs::of(vec![10.0, 30.0, 20.0]);
        assert_eq!(r.median, 20.0);
        assert_eq!(r.p99, 30.0);
        assert_eq!(r.runs, vec![10.0, 30.0, 20.0]);
        let l = Latency::of(&[Duration::from_millis(1), Duration::from_millis(3)]);
        assert_eq!((l.n, l.p50_ms, l.max_ms), (2, 1.0, 3.0));
        assert_eq!(ratio(1.0, 0.0), None);
        assert_eq!(fmt_ratio(ratio(1.0, 2.0)), "50 %");
    }
}
