//! The table side of the local-Lipschitzness analysis (paper Fig. 6, claim C16;
//! `evals/lipschitzness_analysis.py`, reference/analysis_spec.md §4): shared histogram bins for
//! the per-sample gradient norms of IT vs ST and safe vs unsafe, and summary statistics. The
//! gradients themselves are computed with candle in `study_model::probe`.

use super::{MechanismError, Result};

/// Histograms of several groups over one set of bins.
#[derive(Debug, Clone, PartialEq)]
pub struct Histograms {
    /// `bins + 1` increasing edges. Bins are `[e_i, e_{i+1})`, the last one closed on the
    /// right (numpy / matplotlib semantics).
    pub edges: Vec<f64>,
    /// Counts per group (in input order) and bin.
    pub counts: Vec<Vec<u64>>,
}

fn check_finite(values: &[f64], what: &'static str) -> Result<()> {
    match values.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        Some((index, &value)) => Err(MechanismError::NonFinite { what, index, value }),
        None => Ok(()),
    }
}

/// `bins` equal-width bins spanning every value of every group, so IT vs ST and safe vs unsafe
/// histograms are comparable (matplotlib's default is 10 bins per call, each over its own
/// range; the official figure therefore overlays differently binned histograms).
///
/// When all values are equal, the range is widened to `[v − 0.5, v + 0.5]` as numpy does.
pub fn shared_bin_edges(groups: &[&[f64]], bins: usize) -> Result<Vec<f64>> {
    if bins == 0 {
        return Err(MechanismError::InvalidParameter {
            name: "histogram bins",
            message: "0; need at least one bin".into(),
        });
    }
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    for g in groups {
        check_finite(g, "histogram values")?;
        for &v in *g {
            lo = lo.min(v);
            hi = hi.max(v);
        }
    }
    if lo > hi {
        return Err(MechanismError::InvalidParameter {
            name: "histogram values",
            message: "every group is empty; nothing to bin".into(),
        });
    }
    if lo == hi {
        lo -= 0.5;
        hi += 0.5;
    }
    let width = (hi - lo) / bins as f64;
    let mut edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
    edges[bins] = hi;
    Ok(edges)
}

/// Counts of `values` in the bins of `edges` (values outside the edges are not counted).
pub fn histogram(values: &[f64], edges: &[f64]) -> Result<Vec<u64>> {
    check_finite(values, "histogram values")?;
    if edges.len() < 2 || edges.windows(2).any(|w| w[0] >= w[1]) {
        return Err(MechanismError::InvalidParameter {
            name: "histogram edges",
            message: format!("{} edges; need ≥ 2, strictly increasing", edges.len()),
        });
    }
    let bins = edges.len() - 1;
    let mut counts = vec![0u64; bins];
    let last = edges[bins];
    for &v in values {
        if v < edges[0] || v > last {
            continue;
        }
        // The first edge greater than v, minus one; v == last goes into the last bin.
        let i = edges
            .partition_point(|&e| e <= v)
            .saturating_sub(1)
            .min(bins - 1);
        counts[i] += 1;
    }
    Ok(counts)
}

/// Histograms of `groups` over shared bins.
pub fn shared_histograms(groups: &[&[f64]], bins: usize) -> Result<Histograms> {
    let edges = shared_bin_edges(groups, bins)?;
    let counts = groups
        .iter()
        .map(|g| histogram(g, &edges))
        .collect::<Result<_>>()?;
    Ok(Histograms { edges, counts })
}

/// Summary statistics of one group. Quantiles use linear interpolation between order
/// statistics (numpy's default `method="linear"`); the standard deviation is the population
/// one (ddof 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of values.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub sd: f64,
    /// Minimum.
    pub min: f64,
    /// 5 % quantile.
    pub q05: f64,
    /// 25 % quantile.
    pub q25: f64,
    /// Median.
    pub median: f64,
    /// 75 % quantile.
    pub q75: f64,
    /// 95 % quantile.
    pub q95: f64,
    /// Maximum.
    pub max: f64,
}

/// The `q` quantile (0 ≤ q ≤ 1) of `sorted` (non-decreasing, non-empty), numpy's linear rule.
pub fn quantile_sorted(sorted: &[f64], q: f64) -> Result<f64> {
    if sorted.is_empty() || !(0.0..=1.0).contains(&q) {
        return Err(MechanismError::InvalidParameter {
            name: "quantile",
            message: format!(
                "q = {q} of {} values; need 0 ≤ q ≤ 1 and values",
                sorted.len()
            ),
        });
    }
    let pos = q * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = pos.ceil() as usize;
    Ok(sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64))
}

/// Summary statistics of `values`; fails when empty or not finite.
pub fn summarize(values: &[f64]) -> Result<Summary> {
    check_finite(values, "values to summarise")?;
    if values.is_empty() {
        return Err(MechanismError::InvalidParameter {
            name: "values to summarise",
            message: "empty; need at least one value".into(),
        });
    }
    let mut s = values.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len() as f64;
    let mean = s.iter().sum::<f64>() / n;
    let sd = (s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    let q = |p| quantile_sorted(&s, p);
    Ok(Summary {
        n: s.len(),
        mean,
        sd,
        min: s[0],
        q05: q(0.05)?,
        q25: q(0.25)?,
        median: q(0.5)?,
        q75: q(0.75)?,
        q95: q(0.95)?,
        max: s[s.len() - 1],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_bins_cover_every_group() -> Result<()> {
        let it_safe = [1.0, 2.0, 3.0];
        let st_unsafe = [0.5, 4.5];
        let h = shared_histograms(&[&it_safe, &st_unsafe], 4)?;
        assert_eq!(h.edges, vec![0.5, 1.5, 2.5, 3.5, 4.5]);
        assert_eq!(h.counts, vec![vec![1, 1, 1, 0], vec![1, 0, 0, 1]]);
        let total: u64 = h.counts.iter().flatten().sum();
        assert_eq!(total, 5, "the maximum lands in the last (closed) bin");
        Ok(())
    }

    #[test]
    fn constant_values_get_a_unit_range() -> Result<()> {
        assert_eq!(shared_bin_edges(&[&[2.0, 2.0]], 2)?, vec![1.5, 2.0, 2.5]);
        Ok(())
    }

    /// numpy: np.quantile([4, 1, 3, 2], [0.25, 0.5]) = [1.75, 2.5].
    #[test]
    fn quantiles_match_numpy_linear() -> Result<()> {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0])?;
        assert_eq!((s.q25, s.median, s.min, s.max), (1.75, 2.5, 1.0, 4.0));
        assert!((s.mean - 2.5).abs() < 1e-15 && (s.sd - 1.25f64.sqrt()).abs() < 1e-15);
        assert!((s.q95 - 3.85).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        assert!(summarize(&[]).is_err());
        assert!(matches!(
            summarize(&[1.0, f64::NAN]),
            Err(MechanismError::NonFinite { index: 1, .. })
        ));
        assert!(shared_bin_edges(&[&[], &[]], 10).is_err());
        assert!(shared_bin_edges(&[&[1.0]], 0).is_err());
        assert!(histogram(&[1.0], &[1.0]).is_err());
    }
}
