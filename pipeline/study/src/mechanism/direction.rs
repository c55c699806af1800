//! The refusal direction per layer (Arditi et al., NeurIPS 2024: the difference of the unsafe
//! and safe activation means) and its alignment with ΔW's top singular directions: the
//! activation-space counterpart of the paper's ΔW picture (DESIGN.md §5; paper_claims.md §5).

use super::controls::{Chance, ControlSpec, RandomFactors, run_control};
use super::linalg::thin_svd;
use super::matrix::{cosine, norm};
use super::spectra::delta_w;
use super::{Matrix, MechanismError, Result};

/// The normalised difference of means r = (μ_unsafe − μ_safe) / ‖μ_unsafe − μ_safe‖.
#[derive(Debug, Clone, PartialEq)]
pub struct RefusalDirection {
    /// The unit direction r.
    pub direction: Vec<f64>,
    /// ‖μ_unsafe − μ_safe‖ before normalisation.
    pub mean_difference_norm: f64,
}

/// The refusal direction of one layer from safe and unsafe activations (samples × width).
///
/// Fails when a set is empty, the widths differ, or the two means coincide.
pub fn refusal_direction(safe: &Matrix, unsafe_acts: &Matrix) -> Result<RefusalDirection> {
    if safe.cols() != unsafe_acts.cols() {
        return Err(MechanismError::ShapeMismatch {
            what: "safe vs unsafe activations (widths must agree)",
            left: safe.shape(),
            right: unsafe_acts.shape(),
        });
    }
    let mu_s = safe.column_means("safe activations")?;
    let mu_u = unsafe_acts.column_means("unsafe activations")?;
    let diff: Vec<f64> = mu_u.iter().zip(&mu_s).map(|(u, s)| u - s).collect();
    let n = norm(&diff);
    if n == 0.0 {
        return Err(MechanismError::InvalidParameter {
            name: "refusal direction",
            message: "the safe and unsafe means coincide; the direction is undefined".into(),
        });
    }
    Ok(RefusalDirection {
        direction: diff.iter().map(|d| d / n).collect(),
        mean_difference_norm: n,
    })
}

/// Which singular vectors of ΔW the direction is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Side {
    /// Right singular vectors (default): the activations are the weight's **input** (e.g. the
    /// MLP input for `c_fc`), the space ΔW reads.
    #[default]
    Input,
    /// Left singular vectors: the activations live in the weight's **output** space (e.g.
    /// `mlp_pre` for `c_fc`), the space ΔW writes.
    Output,
}

/// Options of [`direction_alignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirectionOptions {
    /// Which side of ΔW (default: input).
    pub side: Side,
    /// Number of top singular directions compared (default 3), capped at min(out, in).
    pub top_k: usize,
}

impl Default for DirectionOptions {
    fn default() -> Self {
        Self {
            side: Side::Input,
            top_k: 3,
        }
    }
}

/// |cos| between a direction and ΔW's top singular vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionAlignment {
    /// σ_j of ΔW for the compared directions.
    pub singular_values: Vec<f64>,
    /// |cos(r, w_j)| for each compared singular vector w_j.
    pub abs_cosine: Vec<f64>,
    /// max_j |cos(r, w_j)|: the statistic the control compares.
    pub max_abs_cosine: f64,
    /// The j of the maximum (0-based, σ order).
    pub best: usize,
}

/// The alignment beside random matrices with ΔW's singular values and Haar singular vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct DirectionControl {
    /// The alignment with the real ΔW.
    pub alignment: DirectionAlignment,
    /// max_j |cos| under the control (chance ≈ sqrt(2 / (π d)) per direction in width d).
    pub max_abs_cosine: Chance,
}

fn abs_cosines(direction: &[f64], vectors: &Matrix, k: usize) -> Vec<f64> {
    (0..k)
        .map(|j| cosine(direction, &vectors.col(j)).abs())
        .collect()
}

fn argmax(v: &[f64]) -> (usize, f64) {
    v.iter().copied().enumerate().fold(
        (0, f64::NEG_INFINITY),
        |b, (i, x)| if x > b.1 { (i, x) } else { b },
    )
}

fn prepare(
    direction: &[f64],
    w_st: &Matrix,
    w_it: &Matrix,
    opts: &DirectionOptions,
) -> Result<(Vec<f64>, Matrix, usize)> {
    let delta = delta_w(w_st, w_it)?;
    let width = match opts.side {
        Side::Input => delta.cols(),
        Side::Output => delta.rows(),
    };
    if direction.len() != width {
        return Err(MechanismError::LengthMismatch {
            what: "refusal direction vs ΔW",
            len: direction.len(),
            expected: format!("{width} ({:?} side of a {} ΔW)", opts.side, delta.shape()),
        });
    }
    let svd = thin_svd(&delta)?;
    let k = opts.top_k.clamp(1, svd.singular_values.len());
    let vectors = match opts.side {
        Side::Input => svd.v,
        Side::Output => svd.u,
    };
    Ok((svd.singular_values, vectors, k))
}

/// |cos| of `direction` with ΔW's top-k singular vectors on the chosen side.
pub fn direction_alignment(
    direction: &[f64],
    w_st: &Matrix,
    w_it: &Matrix,
    opts: &DirectionOptions,
) -> Result<DirectionAlignment> {
    let (sigma, vectors, k) = prepare(direction, w_st, w_it, opts)?;
    let abs_cosine = abs_cosines(direction, &vectors, k);
    let (best, max_abs_cosine) = argmax(&abs_cosine);
    Ok(DirectionAlignment {
        singular_values: sigma[..k].to_vec(),
        abs_cosine,
        max_abs_cosine,
        best,
    })
}

/// [`direction_alignment`] beside its random control.
pub fn direction_control(
    direction: &[f64],
    w_st: &Matrix,
    w_it: &Matrix,
    opts: &DirectionOptions,
    spec: ControlSpec,
) -> Result<DirectionControl> {
    let alignment = direction_alignment(direction, w_st, w_it, opts)?;
    let (sigma, _, k) = prepare(direction, w_st, w_it, opts)?;
    let shape = w_it.shape();
    let mut chance = run_control(spec, "direction", &[alignment.max_abs_cosine], |rng| {
        let r = RandomFactors::draw(shape, &sigma, rng)?;
        let vectors = match opts.side {
            Side::Input => &r.right,
            Side::Output => &r.left,
        };
        Ok(vec![argmax(&abs_cosines(direction, vectors, k)).1])
    })?;
    Ok(DirectionControl {
        alignment,
        max_abs_cosine: chance.remove(0),
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;
    use rand_distr::StandardNormal;

    use super::*;
    use crate::mechanism::linalg::haar_orthonormal;
    use crate::mechanism::matrix::dot;
    use crate::mechanism::testing::planted;

    /// Gaussian clusters in width 64, 2000 rows each, unsafe mean = safe mean + 5 e: the
    /// recovered direction has cos > 0.99 with e (estimation noise ≈ 0.25 in norm vs 5).
    #[test]
    fn planted_mean_difference_is_recovered() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        let e = haar_orthonormal(64, 1, &mut rng)?.col(0);
        let base: Vec<f64> = (0..64).map(|_| rng.sample(StandardNormal)).collect();
        let mut draw = |shift: f64| {
            Matrix::from_fn(2000, 64, |_, j| {
                base[j] + shift * e[j] + rng.sample::<f64, _>(StandardNormal)
            })
        };
        let safe = draw(0.0);
        let unsafe_acts = draw(5.0);
        let r = refusal_direction(&safe, &unsafe_acts)?;
        assert!(dot(&r.direction, &e) > 0.99, "{}", dot(&r.direction, &e));
        assert!((r.mean_difference_norm - 5.0).abs() < 0.5);
        Ok(())
    }

    /// Planted ΔW with σ = (3, 2, 1) whose top right singular vector is the unsafe direction
    /// r_1 along which the unsafe mean is shifted: |cos| with v_1 > 0.95, best = 0, and > 5×
    /// the control (chance max of 3 |cos| in width 192 ≈ 0.1).
    #[test]
    fn refusal_direction_aligns_with_the_planted_update() -> Result<()> {
        let p = planted(&[3.0, 2.0, 1.0], 21)?;
        let r = refusal_direction(&p.safe, &p.unsafe_acts)?;
        let planted_r1 = dot(&r.direction, &p.unsafe_dirs.col(0));
        assert!(planted_r1 > 0.95, "cos with the planted r_1: {planted_r1}");
        let spec = ControlSpec::new(99, 30)?;
        let c = direction_control(
            &r.direction,
            &p.w_st,
            &p.w_it,
            &DirectionOptions::default(),
            spec,
        )?;
        assert!(c.alignment.max_abs_cosine > 0.95, "{:?}", c.alignment);
        assert_eq!(c.alignment.best, 0);
        assert!(c.max_abs_cosine.ratio > 5.0, "{:?}", c.max_abs_cosine);
        let again = direction_control(
            &r.direction,
            &p.w_st,
            &p.w_it,
            &DirectionOptions::default(),
            spec,
        )?;
        assert_eq!(c, again, "same seed, same control");
        Ok(())
    }

    #[test]
    fn bad_inputs_are_typed_errors() -> Result<()> {
        let err = refusal_direction(&Matrix::zeros(0, 4), &Matrix::zeros(3, 4)).expect_err("empty");
        assert!(
            err.to_string().contains("safe activations is empty (0×4)"),
            "{err}"
        );
        let err = refusal_direction(&Matrix::zeros(2, 4), &Matrix::zeros(2, 5)).expect_err("width");
        assert!(err.to_string().contains("2×4 vs 2×5"), "{err}");
        assert!(refusal_direction(&Matrix::zeros(2, 4), &Matrix::zeros(2, 4)).is_err());
        let p = planted(&[2.0], 1)?;
        let opts = DirectionOptions {
            side: Side::Output,
            top_k: 1,
        };
        let err = direction_alignment(&[1.0; 192], &p.w_st, &p.w_it, &opts).expect_err("side");
        assert!(err.to_string().contains("48"), "{err}");
        Ok(())
    }
}
