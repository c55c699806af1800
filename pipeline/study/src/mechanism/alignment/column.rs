//! Fig. 4 (claim C12): do ΔW's top left singular vectors lie in the left null space of W_IT?
//!
//! Source: `evals/column_space_analysis.py` (LITERAL) and the Llama sibling
//! `model_analysis_svd_compare_models_weights_cosine_sim_transform_orig.py` (INTENDED);
//! reference/analysis_spec.md §2, D5–D6.
//!
//! For each of the top-k left singular vectors u_i of the decomposed matrix (ΔW by default),
//! ν_i = ‖(I − P) u_i‖, where P projects onto the span of W_IT's leading left singular vectors
//! (its column space). ν_i = 1: u_i lies entirely in W_IT's left null space; ν_i = 0: entirely
//! in its column space. A Haar-random unit vector has E[ν²] = (out − rank)/out, which is large
//! for a tall `c_fc` (768 × 192: 0.75), so only the random control tells alignment from chance.
//!
//! Not implemented: the LITERAL use of the rows `U[i, :]` instead of the columns (D6), a bug.

use super::super::controls::{Chance, ControlSpec, RandomFactors, run_control};
use super::super::linalg::{Svd, leading_columns, orthogonal_complement_component, thin_svd};
use super::super::matrix::norm;
use super::super::spectra::{EnergyCut, delta_w};
use super::super::{Matrix, MechanismError, Result};
use super::{Centring, SubspaceRank};

/// Which matrix's left singular vectors are projected (spec D5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ColumnSpaceMatrix {
    /// INTENDED (default): the update ΔW = W_ST − W_IT (paper caption; Llama sibling).
    #[default]
    DeltaW,
    /// LITERAL: the fine-tuned weight W_ST itself (`val_arr_transform = val_arr`,
    /// `column_space_analysis.py:L1932`).
    WSt,
}

/// Options of the column-space analysis.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ColumnSpaceOptions {
    /// The decomposed matrix (default ΔW).
    pub matrix: ColumnSpaceMatrix,
    /// How many of its top left singular vectors are reported (default: those holding 90 % of
    /// its energy, `Energy(AtLeast(0.9))`; the official `k90` is `Energy(StrictlyBefore(0.9))`).
    pub directions: SubspaceRank,
    /// How many of W_IT's left singular vectors span its column space (default: its numerical
    /// rank, so the complement is the exact left null space; the official script uses
    /// `Energy(StrictlyBefore(0.9))`, an approximate null space, which is the only non-trivial
    /// choice for a wide `c_proj` (192 × 768) whose exact left null space is {0}).
    pub it_column_space: SubspaceRank,
    /// Centring of both matrices before their SVD (default none; LITERAL: column means).
    pub centring: Centring,
}

impl Default for ColumnSpaceOptions {
    fn default() -> Self {
        Self {
            matrix: ColumnSpaceMatrix::DeltaW,
            directions: SubspaceRank::Energy(EnergyCut::AtLeast(0.9)),
            it_column_space: SubspaceRank::Numerical,
            centring: Centring::None,
        }
    }
}

/// Result of the column-space analysis of one weight.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpaceAlignment {
    /// σ_i of the decomposed matrix for the k reported directions.
    pub singular_values: Vec<f64>,
    /// ν_i = ‖(I − P_IT) u_i‖ ∈ [0, 1] for i < k, in σ order (Fig. 4's y values).
    pub null_projection: Vec<f64>,
    /// Mean of `null_projection`: the statistic the control compares.
    pub mean_null_projection: f64,
    /// Dimension of W_IT's (approximate) column space.
    pub it_rank: usize,
    /// Output dimension (rows of the weights).
    pub out_dim: usize,
    /// (out_dim − it_rank) / out_dim: E[ν²] for a Haar-random direction.
    pub chance_energy: f64,
}

/// Result of the column-space analysis beside its random control.
#[derive(Debug, Clone, PartialEq)]
pub struct ColumnSpaceControl {
    /// The analysis of the real weights.
    pub alignment: ColumnSpaceAlignment,
    /// Mean ν over the same number of top directions of random matrices with the decomposed
    /// matrix's singular values and Haar singular vectors.
    pub mean_null_projection: Chance,
}

struct Prepared {
    decomposed: Svd,
    k: usize,
    it_basis: Matrix,
    it_rank: usize,
    out_dim: usize,
}

fn prepare(w_st: &Matrix, w_it: &Matrix, opts: &ColumnSpaceOptions) -> Result<Prepared> {
    let delta = delta_w(w_st, w_it)?;
    let a = match opts.matrix {
        ColumnSpaceMatrix::DeltaW => delta,
        ColumnSpaceMatrix::WSt => w_st.clone(),
    };
    let decomposed = thin_svd(&opts.centring.apply(&a)?)?;
    let it = thin_svd(&opts.centring.apply(w_it)?)?;
    let k = opts.directions.count(&decomposed)?;
    if k == 0 {
        return Err(MechanismError::InvalidParameter {
            name: "column-space directions",
            message: format!(
                "{:?} selects no direction (σ1 alone exceeds the energy fraction under the \
                 LITERAL k90 rule, or the matrix is zero)",
                opts.directions
            ),
        });
    }
    let it_rank = opts.it_column_space.count(&it)?;
    Ok(Prepared {
        k,
        it_basis: leading_columns(&it.u, it_rank),
        it_rank,
        out_dim: w_it.rows(),
        decomposed,
    })
}

/// ν_i for the first k columns of `left`. When W_IT's column space is the whole output space
/// (a wide `c_proj` at its numerical rank) the left null space is {0} and every ν_i is exactly 0:
/// the projection residue would be rounding noise, and a ratio of noise to noise is no statistic
/// (the control's ratio is then NaN, "undefined").
fn null_projections(it_basis: &Matrix, left: &Matrix, k: usize) -> Vec<f64> {
    if it_basis.cols() == it_basis.rows() {
        return vec![0.0; k];
    }
    (0..k)
        .map(|i| norm(&orthogonal_complement_component(it_basis, &left.col(i))))
        .collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

/// Fig. 4 for one weight: the null-space share ν_i of the top left singular vectors.
///
/// # Shapes
/// `w_st`, `w_it`: out × in (e.g. `transformer.h.{ℓ}.mlp.c_fc.weight`, 768 × 192).
///
/// # Paper
/// Sec. 4.2, Fig. 4, claim C12.
pub fn column_space_alignment(
    w_st: &Matrix,
    w_it: &Matrix,
    opts: &ColumnSpaceOptions,
) -> Result<ColumnSpaceAlignment> {
    let p = prepare(w_st, w_it, opts)?;
    Ok(alignment_of(&p))
}

fn alignment_of(p: &Prepared) -> ColumnSpaceAlignment {
    let null_projection = null_projections(&p.it_basis, &p.decomposed.u, p.k);
    ColumnSpaceAlignment {
        singular_values: p.decomposed.singular_values[..p.k].to_vec(),
        mean_null_projection: mean(&null_projection),
        null_projection,
        it_rank: p.it_rank,
        out_dim: p.out_dim,
        chance_energy: (p.out_dim - p.it_rank) as f64 / p.out_dim as f64,
    }
}

/// [`column_space_alignment`] beside its random control: `spec.draws()` random matrices with
/// the decomposed matrix's singular values and Haar singular vectors, the same k and the same
/// W_IT subspace.
pub fn column_space_control(
    w_st: &Matrix,
    w_it: &Matrix,
    opts: &ColumnSpaceOptions,
    spec: ControlSpec,
) -> Result<ColumnSpaceControl> {
    let p = prepare(w_st, w_it, opts)?;
    let alignment = alignment_of(&p);
    let shape = w_it.shape();
    let sigma = &p.decomposed.singular_values;
    let mut chance = run_control(
        spec,
        "column-space",
        &[alignment.mean_null_projection],
        |rng| {
            let random = RandomFactors::draw(shape, sigma, rng)?;
            Ok(vec![mean(&null_projections(
                &p.it_basis,
                &random.left,
                p.k,
            ))])
        },
    )?;
    Ok(ColumnSpaceControl {
        alignment,
        mean_null_projection: chance.remove(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::Shape;
    use crate::mechanism::testing::{OUT, RANK_IT, planted, random_update};

    fn spec() -> ControlSpec {
        ControlSpec::new(2024, 24).expect("24 ≥ 20 draws")
    }

    /// Planted ΔW of rank 1–3 whose column space is W_IT's 3-dim left null space (out 48):
    /// every reported ν_i ≥ 0.99, and the control (chance ν ≈ sqrt(3/48) ≈ 0.25) gives a ratio
    /// > 3 and a z-score > 5.
    #[test]
    fn planted_update_lies_in_the_null_space() -> Result<()> {
        for k in 1..=3 {
            let p = planted(&vec![2.0; k], 100 + k as u64)?;
            let c = column_space_control(&p.w_st, &p.w_it, &ColumnSpaceOptions::default(), spec())?;
            let a = &c.alignment;
            assert_eq!(
                a.null_projection.len(),
                k,
                "90 % of the energy is in k directions"
            );
            assert_eq!(a.it_rank, RANK_IT);
            assert!((a.chance_energy - 3.0 / OUT as f64).abs() < 1e-12);
            assert!(a.null_projection.iter().all(|&v| v >= 0.99), "k={k}: {a:?}");
            let ch = &c.mean_null_projection;
            assert!(ch.ratio > 3.0 && ch.z_score() > 5.0, "k={k}: {ch:?}");
            assert!((ch.mean - (3.0 / OUT as f64).sqrt()).abs() < 0.08, "{ch:?}");
            // The planted null basis spans ΔW's top left singular vectors.
            let top =
                crate::mechanism::spectra::top_singular(&(p.w_st.difference(&p.w_it, "t")?), k)?;
            for i in 0..k {
                let u = top.left(i);
                let inside: f64 = (0..p.null_basis.cols())
                    .map(|j| crate::mechanism::matrix::dot(&p.null_basis.col(j), &u).powi(2))
                    .sum();
                assert!(inside.sqrt() >= 0.99, "k={k}, i={i}: {inside}");
            }
        }
        Ok(())
    }

    /// The LITERAL variant decomposes W_ST, whose top directions are W_IT's own (σ up to 5 vs
    /// ΔW's 2): they lie in W_IT's column space, so ν is small (< 0.2: only the cross term of ΔW with W_IT tilts them).
    #[test]
    fn literal_w_st_variant_sees_the_it_column_space() -> Result<()> {
        let p = planted(&[2.0], 7)?;
        let opts = ColumnSpaceOptions {
            matrix: ColumnSpaceMatrix::WSt,
            directions: SubspaceRank::Fixed(3),
            ..ColumnSpaceOptions::default()
        };
        let a = column_space_alignment(&p.w_st, &p.w_it, &opts)?;
        assert!(a.null_projection.iter().all(|&v| v < 0.2), "{a:?}");
        Ok(())
    }

    /// A dense Gaussian ΔW against a rank-24 W_IT (null space = half of ℝ^48): ΔW's top 16 left
    /// singular vectors are Haar-like, so observed/chance ≈ 1 (tolerance ±0.15, about 4
    /// standard errors of a mean over 16 directions).
    #[test]
    fn random_update_is_at_chance() -> Result<()> {
        let (w_st, w_it) = random_update(9)?;
        let opts = ColumnSpaceOptions {
            directions: SubspaceRank::Fixed(16),
            ..ColumnSpaceOptions::default()
        };
        let c = column_space_control(&w_st, &w_it, &opts, spec())?;
        assert_eq!(c.alignment.it_rank, 24);
        let ch = &c.mean_null_projection;
        assert!((ch.ratio - 1.0).abs() < 0.15, "{ch:?}");
        Ok(())
    }

    /// A wide, full-rank W_IT (a `c_proj`: out 8 < in 20) has no left null space at its
    /// numerical rank: every ν is exactly 0 and the ratio is undefined (NaN), not noise / noise.
    #[test]
    fn trivial_null_space_gives_zero_shares_and_an_undefined_ratio() -> Result<()> {
        let w_it = Matrix::from_fn(8, 20, |i, j| {
            ((i * 20 + j) as f64 * 0.37).sin() + f64::from(u8::from(i == j))
        });
        let w_st = w_it.add_scaled(
            1.0,
            &Matrix::from_fn(8, 20, |i, j| ((i + 3 * j) as f64).cos()),
            "w",
        )?;
        let c = column_space_control(&w_st, &w_it, &ColumnSpaceOptions::default(), spec())?;
        assert_eq!((c.alignment.it_rank, c.alignment.chance_energy), (8, 0.0));
        assert!(
            c.alignment.null_projection.iter().all(|&v| v == 0.0),
            "{c:?}"
        );
        assert!(c.mean_null_projection.draws.iter().all(|&v| v == 0.0));
        assert!(c.mean_null_projection.ratio.is_nan());
        Ok(())
    }

    #[test]
    fn same_seed_same_control() -> Result<()> {
        let p = planted(&[2.0, 1.0], 3)?;
        let opts = ColumnSpaceOptions::default();
        let a = column_space_control(&p.w_st, &p.w_it, &opts, spec())?;
        let b = column_space_control(&p.w_st, &p.w_it, &opts, spec())?;
        assert_eq!(a, b);
        let other = ControlSpec::new(2025, 24)?;
        let c = column_space_control(&p.w_st, &p.w_it, &opts, other)?;
        assert_ne!(a.mean_null_projection.draws, c.mean_null_projection.draws);
        Ok(())
    }

    #[test]
    fn shape_mismatch_names_both_shapes() {
        let err = column_space_alignment(
            &Matrix::zeros(48, 192),
            &Matrix::zeros(48, 191),
            &ColumnSpaceOptions::default(),
        )
        .expect_err("shapes differ");
        let want = format!(
            "W_ST vs W_IT: shapes differ: {} vs {}",
            Shape {
                rows: 48,
                cols: 192
            },
            Shape {
                rows: 48,
                cols: 191
            }
        );
        assert_eq!(err.to_string(), want);
    }
}
