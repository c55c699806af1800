//! The spectrum of the safety update ΔW = W_ST − W_IT: singular values, the energy share of the
//! top direction, effective and stable rank, and the top singular vectors (paper Sec. 4.2,
//! "ΔW is low-rank and minimal", claims C13 and C21; dev scripts `*_stablerank.py`,
//! `*_energy.py`, reference/analysis_spec.md §10).

use super::linalg::{Svd, rank_tolerance, singular_values, thin_svd};
use super::{Matrix, MechanismError, Result};

/// ΔW = W_ST − W_IT, failing with both shapes when they differ.
///
/// # Shapes
/// `w_st`, `w_it`: out × in (PyTorch `nn.Linear.weight`) → out × in.
pub fn delta_w(w_st: &Matrix, w_it: &Matrix) -> Result<Matrix> {
    w_st.difference(w_it, "W_ST vs W_IT")
}

/// Summary of a spectrum. All shares are of the energy Σσ² = ‖M‖_F².
#[derive(Debug, Clone, PartialEq)]
pub struct Spectrum {
    /// Singular values, non-increasing.
    pub singular_values: Vec<f64>,
    /// ‖M‖_F = sqrt(Σσ²).
    pub frobenius_norm: f64,
    /// σ1² / Σσ²: the energy of the top direction (C13: "up to about 62 %").
    pub top_energy_share: f64,
    /// Cumulative energy share: entry k−1 is Σ_{i<k} σ_i² / Σσ².
    pub cumulative_energy: Vec<f64>,
    /// exp(H(p)) with p_i = σ_i² / Σσ²: the effective rank over energy shares. Equals k for k
    /// equal non-zero singular values.
    pub effective_rank: f64,
    /// exp(H(p)) with p_i = σ_i / Σσ: Roy & Vetterli's (2007) original effective rank, which
    /// normalises the singular values themselves. Also k for k equal singular values.
    pub effective_rank_roy_vetterli: f64,
    /// ‖M‖_F² / σ1²: the stable rank (dev script `*_stablerank.py`).
    pub stable_rank: f64,
    /// Number of σ above [`rank_tolerance`] (`max(m, n) · ε_f32 · σ1`).
    pub numerical_rank: usize,
}

/// The spectrum summary of `m` (usually ΔW); fails on an empty or all-zero matrix, whose
/// shares are undefined.
pub fn spectrum(m: &Matrix) -> Result<Spectrum> {
    let s = singular_values(m)?;
    let shape = m.shape();
    spectrum_from_singular_values(&s).map(|mut sp| {
        sp.numerical_rank = {
            let tol = rank_tolerance(shape.rows, shape.cols, s.first());
            s.iter().filter(|&&x| x > tol).count()
        };
        sp
    })
}

/// The spectrum summary from singular values alone (any order; they are sorted
/// non-increasing). `numerical_rank` uses a tolerance of `len · ε_f32 · σ1`.
pub fn spectrum_from_singular_values(singular: &[f64]) -> Result<Spectrum> {
    let mut s = singular.to_vec();
    if let Some((index, &value)) = s
        .iter()
        .enumerate()
        .find(|(_, v)| !v.is_finite() || **v < 0.0)
    {
        return Err(MechanismError::NonFinite {
            what: "singular values (must be finite and ≥ 0)",
            index,
            value,
        });
    }
    s.sort_by(|a, b| b.total_cmp(a));
    let energy: f64 = s.iter().map(|x| x * x).sum();
    let l1: f64 = s.iter().sum();
    let sigma1 = s.first().copied().unwrap_or(0.0);
    if energy <= 0.0 || sigma1 <= 0.0 {
        return Err(MechanismError::InvalidParameter {
            name: "spectrum",
            message: format!(
                "all {} singular values are zero; shares and ranks are undefined (ΔW = 0: the \
                 two checkpoints are identical?)",
                s.len()
            ),
        });
    }
    let mut cum = 0.0;
    let cumulative_energy = s
        .iter()
        .map(|x| {
            cum += x * x;
            cum / energy
        })
        .collect();
    let entropy = |weights: &mut dyn Iterator<Item = f64>| -> f64 {
        weights.filter(|&p| p > 0.0).map(|p| -p * p.ln()).sum()
    };
    let effective_rank = entropy(&mut s.iter().map(|x| x * x / energy)).exp();
    let effective_rank_roy_vetterli = entropy(&mut s.iter().map(|x| x / l1)).exp();
    let tol = rank_tolerance(s.len(), s.len(), Some(&sigma1));
    Ok(Spectrum {
        frobenius_norm: energy.sqrt(),
        top_energy_share: sigma1 * sigma1 / energy,
        cumulative_energy,
        effective_rank,
        effective_rank_roy_vetterli,
        stable_rank: energy / (sigma1 * sigma1),
        numerical_rank: s.iter().filter(|&&x| x > tol).count(),
        singular_values: s,
    })
}

/// How many leading directions carry a given share of the energy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EnergyCut {
    /// INTENDED: the smallest k with Σ_{i<k} σ_i² / Σσ² ≥ fraction.
    AtLeast(f64),
    /// LITERAL `k90` (`column_space_analysis.py:L1866–1893`, reference/analysis_spec.md §2.2):
    /// the first 0-based index j whose cumulative share exceeds the fraction, used as the count,
    /// i.e. the vectors strictly before the crossing. It is one less than `AtLeast` (and 0 when
    /// σ1 alone exceeds the fraction).
    StrictlyBefore(f64),
}

impl EnergyCut {
    /// The number of leading directions for singular values `s` (non-increasing).
    pub fn count(self, s: &[f64]) -> Result<usize> {
        let fraction = match self {
            EnergyCut::AtLeast(f) | EnergyCut::StrictlyBefore(f) => f,
        };
        if !(fraction > 0.0 && fraction <= 1.0) {
            return Err(MechanismError::InvalidParameter {
                name: "energy fraction",
                message: format!("{fraction}; must lie in (0, 1]"),
            });
        }
        let energy: f64 = s.iter().map(|x| x * x).sum();
        if energy <= 0.0 {
            return Ok(0);
        }
        let mut cum = 0.0;
        for (j, x) in s.iter().enumerate() {
            cum += x * x;
            let share = cum / energy;
            match self {
                // A relative slack of 1e-12 so that an exact share (e.g. 0.9 from σ² = 9, 1)
                // is not missed by rounding.
                EnergyCut::AtLeast(f) if share >= f - 1e-12 => return Ok(j + 1),
                EnergyCut::StrictlyBefore(f) if share > f => return Ok(j),
                _ => {}
            }
        }
        Ok(s.len())
    }
}

/// The top-`k` singular triplets of `m`: the thin SVD truncated to its first `k` columns
/// (fails when `k` exceeds min(rows, cols) or is 0).
///
/// # Shapes
/// `m`: out × in → `u`: out × k, `v`: in × k, `singular_values`: k.
pub fn top_singular(m: &Matrix, k: usize) -> Result<Svd> {
    let full = thin_svd(m)?;
    let r = full.singular_values.len();
    if k == 0 || k > r {
        return Err(MechanismError::InvalidParameter {
            name: "top-k singular directions",
            message: format!("k = {k}; a {} matrix has {r}", m.shape()),
        });
    }
    Ok(Svd {
        u: super::linalg::leading_columns(&full.u, k),
        singular_values: full.singular_values[..k].to_vec(),
        v: super::linalg::leading_columns(&full.v, k),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::testing::planted;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    /// [[3, 0], [4, 5]]: AᵀA = [[25, 20], [20, 25]] has eigenvalues 45 and 5, so σ = 3√5, √5.
    #[test]
    fn hand_computed_2x2() -> Result<()> {
        let a = Matrix::from_rows(&[vec![3.0, 0.0], vec![4.0, 5.0]])?;
        let sp = spectrum(&a)?;
        let want = [45f64.sqrt(), 5f64.sqrt()];
        for (got, want) in sp.singular_values.iter().zip(want) {
            assert!(close(*got, want, 1e-12), "{got} vs {want}");
        }
        assert!(close(sp.top_energy_share, 0.9, 1e-12));
        assert!(close(sp.stable_rank, 50.0 / 45.0, 1e-12));
        // p = (0.9, 0.1): H = −0.9 ln 0.9 − 0.1 ln 0.1.
        let h = -0.9 * 0.9f64.ln() - 0.1 * 0.1f64.ln();
        assert!(close(sp.effective_rank, h.exp(), 1e-12));
        // p = (3√5, √5) / 4√5 = (0.75, 0.25).
        let h_rv = -0.75 * 0.75f64.ln() - 0.25 * 0.25f64.ln();
        assert!(close(sp.effective_rank_roy_vetterli, h_rv.exp(), 1e-12));
        assert_eq!(sp.numerical_rank, 2);
        assert_eq!(EnergyCut::AtLeast(0.9).count(&sp.singular_values)?, 1);
        assert_eq!(EnergyCut::AtLeast(0.95).count(&sp.singular_values)?, 2);
        assert_eq!(
            EnergyCut::StrictlyBefore(0.85).count(&sp.singular_values)?,
            0
        );
        assert_eq!(
            EnergyCut::StrictlyBefore(0.95).count(&sp.singular_values)?,
            1
        );
        Ok(())
    }

    /// A signed permutation of diag(3, 2, 1) has σ = 3, 2, 1 and a rank-deficient companion
    /// [[1, 1], [1, 1], [0, 0]] has σ = 2, 0.
    #[test]
    fn hand_computed_3x3_and_rank_deficient() -> Result<()> {
        let a = Matrix::from_rows(&[
            vec![0.0, -2.0, 0.0],
            vec![0.0, 0.0, 1.0],
            vec![3.0, 0.0, 0.0],
        ])?;
        let s = spectrum(&a)?.singular_values;
        assert!(
            s.iter()
                .zip([3.0, 2.0, 1.0])
                .all(|(g, w)| close(*g, w, 1e-12)),
            "{s:?}"
        );
        let b = Matrix::from_rows(&[vec![1.0, 1.0], vec![1.0, 1.0], vec![0.0, 0.0]])?;
        let sp = spectrum(&b)?;
        assert!(close(sp.singular_values[0], 2.0, 1e-12) && sp.singular_values[1] < 1e-12);
        assert_eq!(sp.numerical_rank, 1);
        assert!(close(sp.effective_rank, 1.0, 1e-12) && close(sp.stable_rank, 1.0, 1e-12));
        let top = top_singular(&b, 1)?;
        let want = std::f64::consts::FRAC_1_SQRT_2;
        assert!(top.right(0).iter().all(|x| close(x.abs(), want, 1e-12)));
        Ok(())
    }

    /// Planted rank-k ΔW with equal singular values (plus 1e-3 Gaussian noise): effective and
    /// stable rank ≈ k (±0.1), numerical-energy count at 99 % = k, top share ≈ 1/k (±0.01).
    #[test]
    fn planted_rank_is_recovered() -> Result<()> {
        for k in 1..=3 {
            let p = planted(&vec![2.0; k], 11 + k as u64)?;
            let sp = spectrum(&delta_w(&p.w_st, &p.w_it)?)?;
            assert!(
                close(sp.effective_rank, k as f64, 0.1),
                "k={k}: {}",
                sp.effective_rank
            );
            assert!(
                close(sp.stable_rank, k as f64, 0.1),
                "k={k}: {}",
                sp.stable_rank
            );
            assert!(close(sp.top_energy_share, 1.0 / k as f64, 0.01));
            assert_eq!(EnergyCut::AtLeast(0.99).count(&sp.singular_values)?, k);
        }
        Ok(())
    }

    /// Unequal planted σ = (3, 2, 1): top share 9/14 and stable rank 14/9 as constructed (±0.01).
    #[test]
    fn planted_energy_share_is_as_constructed() -> Result<()> {
        let p = planted(&[3.0, 2.0, 1.0], 5)?;
        let sp = spectrum(&delta_w(&p.w_st, &p.w_it)?)?;
        assert!(
            close(sp.top_energy_share, 9.0 / 14.0, 0.01),
            "{}",
            sp.top_energy_share
        );
        assert!(
            close(sp.stable_rank, 14.0 / 9.0, 0.01),
            "{}",
            sp.stable_rank
        );
        assert!(close(sp.cumulative_energy[2], 1.0, 0.01));
        Ok(())
    }

    #[test]
    fn mismatched_or_zero_update_is_a_typed_error() {
        let err = delta_w(&Matrix::zeros(768, 192), &Matrix::zeros(192, 768)).expect_err("shape");
        assert_eq!(
            err.to_string(),
            "W_ST vs W_IT: shapes differ: 768×192 vs 192×768"
        );
        assert!(spectrum(&Matrix::zeros(3, 3)).is_err());
        assert!(top_singular(&Matrix::zeros(3, 2), 3).is_err());
    }
}
