//! τ per layer: are safe and unsafe activations clustered? (paper Fig. 3, claims C3–C11;
//! `evals/activation_space_analysis.py`, reference/analysis_spec.md §1, D1–D3).
//!
//! With cluster means μ_S and μ_U taken from a **reference** set disjoint from the test rows,
//! τ_L2(a) = ‖a − μ_U‖ − ‖a − μ_S‖: **τ > 0 means closer to the safe cluster**, so after
//! safety fine-tuning safe test rows have τ > 0 and unsafe ones τ < 0. The cosine variant of
//! the official code, τ_cos(a) = cos(a, μ_U) − cos(a, μ_S), has the opposite sign (safe-like
//! rows are negative); the summaries correct for it so that "correct side" and the separation
//! score read the same for both metrics.
//!
//! Which references feed μ_S and μ_U (LITERAL: the safe-branch sets only; INTENDED: pooled over
//! both branches, D2) is the caller's choice of rows: pass the concatenation to pool.

use std::collections::HashSet;

use super::matrix::{cosine, distance};
use super::{Matrix, MechanismError, Result};

/// Which hidden units enter τ (spec D1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HiddenUnits {
    /// INTENDED (default): every unit of the activation (768 post-GELU units in the paper's
    /// model).
    #[default]
    All,
    /// LITERAL with `First(192)`: only the first n units (`[:80, :192]` slices,
    /// `activation_space_analysis.py:L1753–1791`).
    First(usize),
}

/// What to do when test rows also occur in the reference set (spec D3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReferenceOverlap {
    /// INTENDED (default): refuse; τ on rows that built the means is biased toward their own
    /// cluster. Rows are compared bit for bit, which catches a sample probed twice.
    #[default]
    Reject,
    /// LITERAL: allow (the official std sets reuse the 1000 reference samples as test points).
    Allow,
}

/// The distance behind τ.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TauMetric {
    /// τ_L2 = ‖a − μ_U‖ − ‖a − μ_S‖ (default; the paper's Fig. 3). Safe side: τ > 0.
    #[default]
    L2,
    /// τ_cos = cos(a, μ_U) − cos(a, μ_S) (official second panel). Safe side: τ < 0.
    Cosine,
}

impl TauMetric {
    /// +1 when the safe side is τ > 0, −1 when it is τ < 0.
    pub fn safe_sign(self) -> f64 {
        match self {
            TauMetric::L2 => 1.0,
            TauMetric::Cosine => -1.0,
        }
    }
}

/// Options of the τ analysis.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TauOptions {
    /// Hidden units (default all).
    pub units: HiddenUnits,
    /// Reference/test overlap policy (default reject).
    pub overlap: ReferenceOverlap,
    /// Metric (default L2).
    pub metric: TauMetric,
}

/// The two cluster means, over the selected units.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMeans {
    /// μ_S: mean of the safe reference rows.
    pub mu_safe: Vec<f64>,
    /// μ_U: mean of the unsafe reference rows.
    pub mu_unsafe: Vec<f64>,
}

/// Summary of τ over one test group. The standard deviation is the population one (ddof 0),
/// as in the official script (§1.3 step 4).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupTau {
    /// Number of test rows.
    pub n: usize,
    /// Mean τ.
    pub mean: f64,
    /// Population standard deviation of τ.
    pub sd: f64,
    /// Fraction of rows on their own group's side (safe rows on the safe side, unsafe rows on
    /// the unsafe side): the official "cluster-assignment accuracy" (§1.3 step 5).
    pub assignment_accuracy: f64,
}

/// τ of one layer for both test groups.
#[derive(Debug, Clone, PartialEq)]
pub struct TauAnalysis {
    /// τ per safe test row, in input order.
    pub safe_tau: Vec<f64>,
    /// τ per unsafe test row, in input order.
    pub unsafe_tau: Vec<f64>,
    /// Summary of the safe rows.
    pub safe: GroupTau,
    /// Summary of the unsafe rows.
    pub unsafe_group: GroupTau,
    /// Separation score: s · (mean_safe − mean_unsafe) / sqrt((sd_safe² + sd_unsafe²) / 2),
    /// with s = [`TauMetric::safe_sign`]; a standardised mean difference (Cohen's d), ≈ 0 for
    /// overlapping clusters and large and positive for separated ones.
    pub separation: f64,
}

fn select(m: &Matrix, units: HiddenUnits) -> Result<Matrix> {
    match units {
        HiddenUnits::All => Ok(m.clone()),
        HiddenUnits::First(n) => m.first_cols(n),
    }
}

fn check_width(m: &Matrix, width: usize, what: &'static str) -> Result<()> {
    if m.cols() == width {
        Ok(())
    } else {
        Err(MechanismError::LengthMismatch {
            what,
            len: m.cols(),
            expected: format!("{width} (width of the safe reference set)"),
        })
    }
}

/// μ_S and μ_U from the reference sets (samples × units), over the selected units.
pub fn cluster_means(
    reference_safe: &Matrix,
    reference_unsafe: &Matrix,
    units: HiddenUnits,
) -> Result<ClusterMeans> {
    check_width(
        reference_unsafe,
        reference_safe.cols(),
        "unsafe reference width",
    )?;
    Ok(ClusterMeans {
        mu_safe: select(reference_safe, units)?.column_means("safe reference set")?,
        mu_unsafe: select(reference_unsafe, units)?.column_means("unsafe reference set")?,
    })
}

/// τ of every row of `test` (samples × units) against the cluster means.
pub fn tau(means: &ClusterMeans, test: &Matrix, opts: &TauOptions) -> Result<Vec<f64>> {
    let t = select(test, opts.units)?;
    check_width(&t, means.mu_safe.len(), "test width (after unit selection)")?;
    Ok(t.row_iter()
        .map(|a| match opts.metric {
            TauMetric::L2 => distance(a, &means.mu_unsafe) - distance(a, &means.mu_safe),
            TauMetric::Cosine => cosine(a, &means.mu_unsafe) - cosine(a, &means.mu_safe),
        })
        .collect())
}

fn row_key(r: &[f64]) -> Vec<u64> {
    r.iter().map(|x| x.to_bits()).collect()
}

fn overlap_count(reference: &HashSet<Vec<u64>>, test: &Matrix) -> usize {
    test.row_iter()
        .filter(|r| reference.contains(&row_key(r)))
        .count()
}

fn summarize(tau: &[f64], own_side: f64) -> GroupTau {
    let n = tau.len() as f64;
    let mean = tau.iter().sum::<f64>() / n;
    let sd = (tau.iter().map(|t| (t - mean).powi(2)).sum::<f64>() / n).sqrt();
    let right = tau.iter().filter(|&&t| own_side * t > 0.0).count();
    GroupTau {
        n: tau.len(),
        mean,
        sd,
        assignment_accuracy: right as f64 / n,
    }
}

/// τ of one layer: cluster means from the reference sets, τ of every test row, and the
/// per-group summaries. All sets are samples × units; every set must be non-empty.
///
/// # Paper
/// Fig. 3 (one layer of one checkpoint), claims C3–C11.
pub fn tau_analysis(
    reference_safe: &Matrix,
    reference_unsafe: &Matrix,
    test_safe: &Matrix,
    test_unsafe: &Matrix,
    opts: &TauOptions,
) -> Result<TauAnalysis> {
    for (m, what) in [
        (test_safe, "safe test set"),
        (test_unsafe, "unsafe test set"),
    ] {
        if m.rows() == 0 {
            return Err(MechanismError::Empty {
                what,
                shape: m.shape(),
            });
        }
    }
    if opts.overlap == ReferenceOverlap::Reject {
        let reference: HashSet<Vec<u64>> = reference_safe
            .row_iter()
            .chain(reference_unsafe.row_iter())
            .map(row_key)
            .collect();
        for (m, group) in [(test_safe, "safe"), (test_unsafe, "unsafe")] {
            let count = overlap_count(&reference, m);
            if count > 0 {
                return Err(MechanismError::ReferenceOverlap { group, count });
            }
        }
    }
    let means = cluster_means(reference_safe, reference_unsafe, opts.units)?;
    let safe_tau = tau(&means, test_safe, opts)?;
    let unsafe_tau = tau(&means, test_unsafe, opts)?;
    let sign = opts.metric.safe_sign();
    let safe = summarize(&safe_tau, sign);
    let unsafe_group = summarize(&unsafe_tau, -sign);
    let pooled = ((safe.sd.powi(2) + unsafe_group.sd.powi(2)) / 2.0).sqrt();
    Ok(TauAnalysis {
        separation: sign * (safe.mean - unsafe_group.mean) / pooled,
        safe_tau,
        unsafe_tau,
        safe,
        unsafe_group,
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    use super::*;

    /// `n` rows of N(center, I) in width `center.len()`.
    fn cluster(center: &[f64], n: usize, rng: &mut ChaCha8Rng) -> Matrix {
        Matrix::from_fn(n, center.len(), |_, j| {
            center[j] + rng.sample::<f64, _>(StandardNormal)
        })
    }

    fn centers(width: usize, gap: f64) -> (Vec<f64>, Vec<f64>) {
        let safe = vec![1.0; width];
        let mut unsafe_c = safe.clone();
        unsafe_c[0] += gap;
        (safe, unsafe_c)
    }

    /// Unit-variance clusters in width 32 whose means are 6 apart, 500 fresh rows per set:
    /// safe τ > +1 and unsafe τ < −1 on average (expected ≈ ±2.6), ≥ 95 % on their own side,
    /// separation > 2. The cosine variant has the opposite sign and the same separation sign.
    #[test]
    fn separated_clusters_have_opposite_signs() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let (cs, cu) = centers(32, 6.0);
        let (rs, ru) = (cluster(&cs, 500, &mut rng), cluster(&cu, 500, &mut rng));
        let (ts, tu) = (cluster(&cs, 500, &mut rng), cluster(&cu, 500, &mut rng));
        let a = tau_analysis(&rs, &ru, &ts, &tu, &TauOptions::default())?;
        assert!(a.safe.mean > 1.0 && a.unsafe_group.mean < -1.0, "{a:?}");
        assert!(a.safe.assignment_accuracy > 0.95 && a.unsafe_group.assignment_accuracy > 0.95);
        assert!(a.separation > 2.0, "{}", a.separation);
        assert_eq!(a.safe_tau.len(), 500);
        let cos = TauOptions {
            metric: TauMetric::Cosine,
            ..TauOptions::default()
        };
        let c = tau_analysis(&rs, &ru, &ts, &tu, &cos)?;
        assert!(c.safe.mean < 0.0 && c.unsafe_group.mean > 0.0, "{c:?}");
        assert!(c.separation > 2.0, "{}", c.separation);
        Ok(())
    }

    /// Safe and unsafe rows from one distribution: |mean τ| < 0.1 per group and
    /// |separation| < 0.2 (about 3 standard errors with 500 rows per group).
    #[test]
    fn overlapping_clusters_give_tau_near_zero() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let (c, _) = centers(32, 0.0);
        let sets: Vec<Matrix> = (0..4).map(|_| cluster(&c, 500, &mut rng)).collect();
        let a = tau_analysis(
            &sets[0],
            &sets[1],
            &sets[2],
            &sets[3],
            &TauOptions::default(),
        )?;
        assert!(
            a.safe.mean.abs() < 0.1 && a.unsafe_group.mean.abs() < 0.1,
            "{a:?}"
        );
        assert!(a.separation.abs() < 0.2, "{}", a.separation);
        Ok(())
    }

    /// The clusters differ only in unit 12 of 16: `All` separates them, the official-style
    /// truncation `First(8)` does not.
    #[test]
    fn first_units_truncation_can_hide_the_signal() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let cs = vec![0.0; 16];
        let mut cu = cs.clone();
        cu[12] = 6.0;
        let (rs, ru) = (cluster(&cs, 300, &mut rng), cluster(&cu, 300, &mut rng));
        let (ts, tu) = (cluster(&cs, 300, &mut rng), cluster(&cu, 300, &mut rng));
        let all = tau_analysis(&rs, &ru, &ts, &tu, &TauOptions::default())?;
        let first = TauOptions {
            units: HiddenUnits::First(8),
            ..TauOptions::default()
        };
        let cut = tau_analysis(&rs, &ru, &ts, &tu, &first)?;
        assert!(
            all.separation > 2.0 && cut.separation.abs() < 0.3,
            "{all:?} {cut:?}"
        );
        let too_many = TauOptions {
            units: HiddenUnits::First(17),
            ..TauOptions::default()
        };
        assert!(tau_analysis(&rs, &ru, &ts, &tu, &too_many).is_err());
        Ok(())
    }

    #[test]
    fn reference_rows_in_the_test_set_are_refused_unless_allowed() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let (cs, cu) = centers(8, 4.0);
        let (rs, ru) = (cluster(&cs, 50, &mut rng), cluster(&cu, 50, &mut rng));
        let tu = cluster(&cu, 50, &mut rng);
        let err = tau_analysis(&rs, &ru, &rs, &tu, &TauOptions::default()).expect_err("overlap");
        assert!(matches!(
            err,
            MechanismError::ReferenceOverlap {
                group: "safe",
                count: 50
            }
        ));
        let literal = TauOptions {
            overlap: ReferenceOverlap::Allow,
            ..TauOptions::default()
        };
        assert!(tau_analysis(&rs, &ru, &rs, &tu, &literal).is_ok());
        Ok(())
    }

    #[test]
    fn empty_or_mismatched_sets_are_typed_errors() {
        let ok = Matrix::zeros(3, 4);
        let empty = Matrix::zeros(0, 4);
        let opts = TauOptions {
            overlap: ReferenceOverlap::Allow,
            ..TauOptions::default()
        };
        let err = tau_analysis(&empty, &ok, &ok, &ok, &opts).expect_err("empty reference");
        assert!(
            err.to_string()
                .contains("safe reference set is empty (0×4)"),
            "{err}"
        );
        let err = tau_analysis(&ok, &ok, &empty, &ok, &opts).expect_err("empty test");
        assert!(err.to_string().contains("safe test set is empty"), "{err}");
        let wide = Matrix::zeros(3, 5);
        let err = tau_analysis(&ok, &ok, &ok, &wide, &opts).expect_err("width");
        assert!(err.to_string().contains("length 5"), "{err}");
    }
}
