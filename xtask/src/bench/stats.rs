//! Medians, spreads and side-by-side ratios. Every figure is a ratio of rounds run
//! alternately in the same run, so drift of a noisy machine hits both sides.
use serde::{Deserialize, Serialize};

/// Median and range of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

/// The median of finite samples (mean of the two middle ones for an even count);
/// None when there are none.
pub fn median(samples: &[f64]) -> Option<f64> {
    let mut xs: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    if xs.is_empty() {
        return None;
    }
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    Some(if xs.len().is_multiple_of(2) {
        (xs[mid - 1] + xs[mid]) / 2.0
    } else {
        xs[mid]
    })
}

pub fn spread(samples: &[f64]) -> Option<Spread> {
    let finite: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
    Some(Spread {
        median: median(&finite)?,
        min: finite.iter().copied().fold(f64::INFINITY, f64::min),
        max: finite.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        n: finite.len(),
    })
}

/// How much slower the traced side is, per pair of rounds: untraced throughput over
/// traced throughput (1.05 = 5% slower). Pairs with a zero or missing side are
/// dropped rather than turned into infinities.
pub fn slowdowns(untraced: &[f64], traced: &[f64]) -> Vec<f64> {
    untraced
        .iter()
        .zip(traced)
        .filter(|(u, t)| **u > 0.0 && **t > 0.0 && u.is_finite() && t.is_finite())
        .map(|(u, t)| u / t)
        .collect()
}

/// The order in which `n` variants run in round `r`: rotated each round (A B, B A,
/// A B... for two), so a trend over the run (thermal, another tenant) does not
/// favour one side.
pub fn rotation(round: usize, n: usize) -> Vec<usize> {
    (0..n).map(|i| (round + i) % n.max(1)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[f64::NAN]), None);
        assert_eq!(median(&[f64::NAN, 5.0]), Some(5.0));
    }

    #[test]
    fn spread_reports_range_of_finite_samples() {
        let s = spread(&[1.0, f64::INFINITY, 9.0, 5.0]).unwrap();
        assert_eq!(
            s,
            Spread {
                median: 5.0,
                min: 1.0,
                max: 9.0,
                n: 3
            }
        );
        assert!(spread(&[]).is_none());
    }

    #[test]
    fn slowdown_is_untraced_over_traced_per_pair() {
        let r = slowdowns(&[100.0, 200.0, 0.0, 50.0], &[50.0, 200.0, 10.0, 0.0]);
        assert_eq!(r, vec![2.0, 1.0]);
        // The median of ratios, not the ratio of medians: pairs stay paired.
        assert_eq!(
            median(&slowdowns(&[10.0, 30.0, 20.0], &[10.0, 10.0, 20.0])),
            Some(1.0)
        );
    }

    #[test]
    fn order_rotates() {
        assert_eq!(rotation(0, 2), vec![0, 1]);
        assert_eq!(rotation(1, 2), vec![1, 0]);
        assert_eq!(rotation(2, 3), vec![2, 0, 1]);
        assert!(rotation(5, 0).is_empty());
    }
}
