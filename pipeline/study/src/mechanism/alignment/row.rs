//! Fig. 5 (claim C14): does ΔW act on unsafe activations more than on safe ones?
//!
//! Source: `evals/row_space_analysis.py` (reference/analysis_spec.md §3, D8–D10). For an
//! activation a (the input of the weight: the MLP input for `c_fc`) and the chosen matrix M
//! with SVD M = U diag(σ) Vᵀ:
//!
//! - p_j(a) = σ_j · cos(a, v_j) for the top-k right singular vectors v_j (spec §3.3 step 3);
//! - gain(a) = ‖M a‖ / ‖a‖ (= sqrt(Σ_j p_j²) over all j for an uncentred M).
//!
//! Fig. 5 INTENDED plots mean_k |p_j(a_k)| ± sd over samples for j = 1…15, safe vs unsafe
//! (D10; the LITERAL plot of the smallest direction over the first 15 samples is a bug and is
//! not reproduced). Which activation is read (attention output, LITERAL D9, or MLP input,
//! INTENDED) is the caller's choice of input rows.

use super::super::controls::{Chance, ControlSpec, RandomFactors, run_control};
use super::super::linalg::{singular_values, thin_svd};
use super::super::matrix::{cosine, norm};
use super::super::spectra::delta_w;
use super::super::{Matrix, MechanismError, Result};
use super::{Centring, check_activations};

/// Which matrix's row space the activations are projected on (spec D8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RowSpaceMatrix {
    /// INTENDED (default): the update ΔW = W_ST − W_IT (paper text, summary S11).
    #[default]
    DeltaW,
    /// LITERAL: the IT weight (`val_arr_diff` is set to W_IT, `row_space_analysis.py:L1898`).
    WIt,
    /// The fine-tuned weight W_ST.
    WSt,
}

/// Options of the row-space analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RowSpaceOptions {
    /// The matrix (default ΔW).
    pub matrix: RowSpaceMatrix,
    /// Number of top right singular vectors reported (default 15, Fig. 5's x axis), capped at
    /// min(out, in).
    pub top_k: usize,
    /// Centring before the SVD that gives σ_j and v_j (default none; LITERAL: column means).
    /// The gain always uses the uncentred matrix.
    pub centring: Centring,
}

impl Default for RowSpaceOptions {
    fn default() -> Self {
        Self {
            matrix: RowSpaceMatrix::DeltaW,
            top_k: 15,
            centring: Centring::None,
        }
    }
}

/// Per-sample row-space statistics of one activation set.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpaceProjections {
    /// σ_j for the k reported directions.
    pub singular_values: Vec<f64>,
    /// p_j(a) = σ_j cos(a, v_j): samples × k (signs depend on the arbitrary SVD signs).
    pub projections: Matrix,
    /// ‖M a‖ / ‖a‖ per sample.
    pub gain: Vec<f64>,
}

/// Summary of one group (Fig. 5 series). Standard deviations are population (ddof 0), as in
/// the official scripts.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpaceSummary {
    /// Number of samples.
    pub n: usize,
    /// mean_k |p_j(a_k)| for each reported direction j.
    pub mean_abs_projection: Vec<f64>,
    /// sd_k |p_j(a_k)| for each reported direction j.
    pub sd_abs_projection: Vec<f64>,
    /// Mean gain ‖M a‖ / ‖a‖.
    pub mean_gain: f64,
    /// Standard deviation of the gain.
    pub sd_gain: f64,
}

/// Fig. 5 for one weight: both groups, summarised.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpaceAnalysis {
    /// Safe activations.
    pub safe: RowSpaceProjections,
    /// Unsafe activations.
    pub unsafe_acts: RowSpaceProjections,
    /// Summary of the safe group.
    pub safe_summary: RowSpaceSummary,
    /// Summary of the unsafe group.
    pub unsafe_summary: RowSpaceSummary,
    /// Mean unsafe gain / mean safe gain (C14 expects ≫ 1 for ΔW).
    pub gain_ratio: f64,
}

/// Mean gains beside their random control.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSpaceControl {
    /// Mean safe gain vs random matrices with M's singular values and Haar singular vectors.
    pub safe_gain: Chance,
    /// Mean unsafe gain vs the same random matrices.
    pub unsafe_gain: Chance,
}

fn chosen(w_st: &Matrix, w_it: &Matrix, which: RowSpaceMatrix) -> Result<Matrix> {
    let delta = delta_w(w_st, w_it)?;
    Ok(match which {
        RowSpaceMatrix::DeltaW => delta,
        RowSpaceMatrix::WIt => w_it.clone(),
        RowSpaceMatrix::WSt => w_st.clone(),
    })
}

/// Row-space projections and gains of one activation set.
///
/// # Shapes
/// `w_st`, `w_it`: out × in; `activations`: samples × in.
///
/// # Paper
/// Sec. 4.2, Fig. 5, claim C14.
pub fn row_space_projections(
    w_st: &Matrix,
    w_it: &Matrix,
    activations: &Matrix,
    opts: &RowSpaceOptions,
) -> Result<RowSpaceProjections> {
    let m = chosen(w_st, w_it, opts.matrix)?;
    check_activations(activations, m.cols(), "row-space activations")?;
    if opts.top_k == 0 {
        return Err(MechanismError::InvalidParameter {
            name: "row-space top_k",
            message: "0; report at least one direction".into(),
        });
    }
    let svd = thin_svd(&opts.centring.apply(&m)?)?;
    let k = opts.top_k.min(svd.singular_values.len());
    let dirs: Vec<Vec<f64>> = (0..k).map(|j| svd.right(j)).collect();
    let sigma = svd.singular_values[..k].to_vec();
    let projections = Matrix::from_fn(activations.rows(), k, |i, j| {
        sigma[j] * cosine(activations.row(i), &dirs[j])
    });
    let gain = activations
        .row_iter()
        .map(|a| m.matvec(a).map(|ma| norm(&ma) / norm(a)))
        .collect::<Result<_>>()?;
    Ok(RowSpaceProjections {
        singular_values: sigma,
        projections,
        gain,
    })
}

fn mean_sd(v: impl Iterator<Item = f64> + Clone) -> (f64, f64) {
    let n = v.clone().count() as f64;
    let mean = v.clone().sum::<f64>() / n;
    let var = v.map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

impl RowSpaceProjections {
    /// Fig. 5's series for this group.
    pub fn summary(&self) -> RowSpaceSummary {
        let p = &self.projections;
        let (mean_abs_projection, sd_abs_projection) = (0..p.cols())
            .map(|j| mean_sd((0..p.rows()).map(|i| p.get(i, j).abs())))
            .unzip();
        let (mean_gain, sd_gain) = mean_sd(self.gain.iter().copied());
        RowSpaceSummary {
            n: p.rows(),
            mean_abs_projection,
            sd_abs_projection,
            mean_gain,
            sd_gain,
        }
    }
}

/// Fig. 5 for one weight, safe vs unsafe.
pub fn row_space_analysis(
    w_st: &Matrix,
    w_it: &Matrix,
    safe: &Matrix,
    unsafe_acts: &Matrix,
    opts: &RowSpaceOptions,
) -> Result<RowSpaceAnalysis> {
    let safe = row_space_projections(w_st, w_it, safe, opts)?;
    let unsafe_acts = row_space_projections(w_st, w_it, unsafe_acts, opts)?;
    let safe_summary = safe.summary();
    let unsafe_summary = unsafe_acts.summary();
    Ok(RowSpaceAnalysis {
        gain_ratio: unsafe_summary.mean_gain / safe_summary.mean_gain,
        safe,
        unsafe_acts,
        safe_summary,
        unsafe_summary,
    })
}

/// The mean gain of each group beside random matrices that keep all singular values of the
/// chosen (uncentred) matrix and have Haar singular vectors.
pub fn row_space_control(
    w_st: &Matrix,
    w_it: &Matrix,
    safe: &Matrix,
    unsafe_acts: &Matrix,
    opts: &RowSpaceOptions,
    spec: ControlSpec,
) -> Result<RowSpaceControl> {
    let observed = row_space_analysis(w_st, w_it, safe, unsafe_acts, opts)?;
    let m = chosen(w_st, w_it, opts.matrix)?;
    let sigma = singular_values(&m)?;
    let mean_gain = |r: &RandomFactors, acts: &Matrix| {
        acts.row_iter().map(|a| r.gain(a)).sum::<f64>() / acts.rows() as f64
    };
    let mut chance = run_control(
        spec,
        "row-space",
        &[
            observed.safe_summary.mean_gain,
            observed.unsafe_summary.mean_gain,
        ],
        |rng| {
            let r = RandomFactors::draw(m.shape(), &sigma, rng)?;
            Ok(vec![mean_gain(&r, safe), mean_gain(&r, unsafe_acts)])
        },
    )?;
    let unsafe_gain = chance.remove(1);
    let safe_gain = chance.remove(0);
    Ok(RowSpaceControl {
        safe_gain,
        unsafe_gain,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::testing::{planted, random_update};

    fn spec() -> ControlSpec {
        ControlSpec::new(7, 20).expect("20 draws")
    }

    /// Planted ΔW (σ = 2, row space = the unsafe directions): unsafe gain > 1.5, safe gain
    /// < 0.05 (only the 1e-3 noise acts on safe rows), ratio > 30; the top k directions carry
    /// the unsafe projection (Σ_{j<k} mean |p_j| > 1.5 unsafe, < 0.05 safe); against the control the
    /// unsafe gain is > 5× chance (chance ≈ 2·sqrt(k/192)) and the safe gain < 0.2× chance.
    #[test]
    fn planted_update_reads_unsafe_activations() -> Result<()> {
        for k in 1..=3 {
            let p = planted(&vec![2.0; k], 200 + k as u64)?;
            let opts = RowSpaceOptions::default();
            let a = row_space_analysis(&p.w_st, &p.w_it, &p.safe, &p.unsafe_acts, &opts)?;
            let (s, u) = (&a.safe_summary, &a.unsafe_summary);
            assert!(
                u.mean_gain > 1.5 && s.mean_gain < 0.05,
                "k={k}: {s:?} {u:?}"
            );
            assert!(a.gain_ratio > 30.0, "k={k}: {}", a.gain_ratio);
            let top = |x: &RowSpaceSummary| x.mean_abs_projection[..k].iter().sum::<f64>();
            assert!(
                top(u) > 1.5 && top(s) < 0.05,
                "k={k}: {} {}",
                top(u),
                top(s)
            );
            let c = row_space_control(&p.w_st, &p.w_it, &p.safe, &p.unsafe_acts, &opts, spec())?;
            assert!(c.unsafe_gain.ratio > 5.0, "k={k}: {:?}", c.unsafe_gain);
            assert!(c.safe_gain.ratio < 0.2, "k={k}: {:?}", c.safe_gain);
        }
        Ok(())
    }

    /// A dense Gaussian ΔW acts on every direction alike: observed/chance gain ≈ 1 for both
    /// groups (±0.1; the gain of a Gaussian matrix concentrates, its control sd is ≈ 1 %).
    #[test]
    fn random_update_is_at_chance() -> Result<()> {
        let (w_st, w_it) = random_update(4)?;
        let p = planted(&[2.0], 1)?;
        let opts = RowSpaceOptions::default();
        let c = row_space_control(&w_st, &w_it, &p.safe, &p.unsafe_acts, &opts, spec())?;
        assert!((c.safe_gain.ratio - 1.0).abs() < 0.1, "{:?}", c.safe_gain);
        assert!(
            (c.unsafe_gain.ratio - 1.0).abs() < 0.1,
            "{:?}",
            c.unsafe_gain
        );
        Ok(())
    }

    /// The gain equals sqrt(Σ_j p_j²) over all directions for an uncentred matrix.
    #[test]
    fn gain_is_the_norm_of_all_projections() -> Result<()> {
        let p = planted(&[2.0, 1.0], 3)?;
        let opts = RowSpaceOptions {
            matrix: RowSpaceMatrix::WIt,
            top_k: 48,
            ..RowSpaceOptions::default()
        };
        let r = row_space_projections(&p.w_st, &p.w_it, &p.unsafe_acts, &opts)?;
        for i in 0..5 {
            let from_p = norm(r.projections.row(i));
            assert!(
                (from_p - r.gain[i]).abs() < 1e-9,
                "{from_p} vs {}",
                r.gain[i]
            );
        }
        Ok(())
    }

    #[test]
    fn bad_activations_are_typed_errors() -> Result<()> {
        let p = planted(&[2.0], 3)?;
        let opts = RowSpaceOptions::default();
        let narrow = Matrix::zeros(4, 191);
        let err = row_space_projections(&p.w_st, &p.w_it, &narrow, &opts).expect_err("width");
        assert!(err.to_string().contains("191"), "{err}");
        let empty = Matrix::zeros(0, 192);
        let err = row_space_projections(&p.w_st, &p.w_it, &empty, &opts).expect_err("empty");
        assert!(err.to_string().contains("0×192"), "{err}");
        let zero = Matrix::zeros(2, 192);
        assert!(row_space_projections(&p.w_st, &p.w_it, &zero, &opts).is_err());
        Ok(())
    }
}
