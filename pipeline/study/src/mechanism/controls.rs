//! Random controls for the alignment claims (the control the paper lacks; paper_claims.md §4,
//! limitation 9): the same statistic computed for random matrices that keep the observed
//! matrix's singular values but have Haar-random singular vectors.
//!
//! Draw `d` of a control uses its own ChaCha8 stream: the key is blake3 of
//! `(b"mechanism-control", seed, purpose)` and the stream number is `d`, so draws do not depend
//! on each other, on their order, or on the other controls run with the same seed.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::linalg::haar_orthonormal;
use super::matrix::{dot, norm};
use super::{Matrix, MechanismError, Result, Shape};

/// The fewest draws a control accepts.
pub const MIN_DRAWS: usize = 20;

/// How a random control is drawn: an explicit seed and a number of draws (≥ [`MIN_DRAWS`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlSpec {
    seed: u64,
    draws: usize,
}

impl ControlSpec {
    /// A control of `draws` draws from `seed`; fails when `draws < MIN_DRAWS`.
    pub fn new(seed: u64, draws: usize) -> Result<Self> {
        if draws < MIN_DRAWS {
            return Err(MechanismError::InvalidParameter {
                name: "control draws",
                message: format!("{draws} draws; at least {MIN_DRAWS} are needed"),
            });
        }
        Ok(Self { seed, draws })
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The number of draws.
    pub fn draws(&self) -> usize {
        self.draws
    }

    /// The RNG of draw `draw` for the control named `purpose`.
    pub fn rng(&self, purpose: &str, draw: usize) -> ChaCha8Rng {
        let mut key = blake3::Hasher::new();
        key.update(b"mechanism-control");
        key.update(&self.seed.to_le_bytes());
        key.update(purpose.as_bytes());
        let mut rng = ChaCha8Rng::from_seed(*key.finalize().as_bytes());
        rng.set_stream(draw as u64);
        rng
    }
}

/// An observed statistic beside its distribution under the random control.
#[derive(Debug, Clone, PartialEq)]
pub struct Chance {
    /// The statistic on the real matrix.
    pub observed: f64,
    /// The statistic on each random draw, in draw order.
    pub draws: Vec<f64>,
    /// Mean over the draws.
    pub mean: f64,
    /// Sample standard deviation over the draws (ddof 1).
    pub sd: f64,
    /// `observed / mean`: ≈ 1 when the real matrix is no better aligned than chance; infinite
    /// or NaN when the chance mean is 0.
    pub ratio: f64,
}

impl Chance {
    /// Summarise `draws` beside `observed`.
    pub fn new(observed: f64, draws: Vec<f64>) -> Self {
        let n = draws.len() as f64;
        let mean = draws.iter().sum::<f64>() / n;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0).max(1.0);
        Self {
            observed,
            mean,
            sd: var.sqrt(),
            ratio: observed / mean,
            draws,
        }
    }

    /// `(observed − mean) / sd`: how many control standard deviations the observation lies
    /// from chance.
    pub fn z_score(&self) -> f64 {
        (self.observed - self.mean) / self.sd
    }
}

/// Run `statistic` once per draw and pair each of its outputs with the matching `observed`.
pub(crate) fn run_control(
    spec: ControlSpec,
    purpose: &str,
    observed: &[f64],
    mut statistic: impl FnMut(&mut ChaCha8Rng) -> Result<Vec<f64>>,
) -> Result<Vec<Chance>> {
    let mut per_stat = vec![Vec::with_capacity(spec.draws); observed.len()];
    for d in 0..spec.draws {
        let values = statistic(&mut spec.rng(purpose, d))?;
        for (acc, v) in per_stat.iter_mut().zip(values) {
            acc.push(v);
        }
    }
    Ok(observed
        .iter()
        .zip(per_stat)
        .map(|(&o, draws)| Chance::new(o, draws))
        .collect())
}

/// A random matrix `L diag(σ) Rᵀ` with given singular values and Haar-random orthonormal
/// `L` (rows × r) and `R` (cols × r), kept in factored form: its left and right singular
/// vectors are exactly the columns of `L` and `R`, so no SVD is needed to analyse it.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomFactors {
    /// Left singular vectors as columns, rows × r.
    pub left: Matrix,
    /// Singular values, as given (non-increasing when taken from an SVD).
    pub singular_values: Vec<f64>,
    /// Right singular vectors as columns, cols × r.
    pub right: Matrix,
}

impl RandomFactors {
    /// Draw the factors of a `shape` matrix with singular values `sigma` (r = `sigma.len()` ≤
    /// min(rows, cols)).
    pub fn draw(shape: Shape, sigma: &[f64], rng: &mut ChaCha8Rng) -> Result<Self> {
        let r = sigma.len();
        if r > shape.rows.min(shape.cols) {
            return Err(MechanismError::InvalidParameter {
                name: "random matrix rank",
                message: format!("{r} singular values for a {shape} matrix"),
            });
        }
        Ok(Self {
            left: haar_orthonormal(shape.rows, r, rng)?,
            singular_values: sigma.to_vec(),
            right: haar_orthonormal(shape.cols, r, rng)?,
        })
    }

    /// `‖R a‖ / ‖a‖ = ‖diag(σ) Rᵀ a‖ / ‖a‖` for the random matrix `R` (L has orthonormal
    /// columns, so it preserves norms).
    pub fn gain(&self, a: &[f64]) -> f64 {
        let coords: Vec<f64> = (0..self.right.cols())
            .map(|j| self.singular_values[j] * dot(&self.right.col(j), a))
            .collect();
        norm(&coords) / norm(a)
    }

    /// The dense matrix `L diag(σ) Rᵀ`.
    pub fn to_matrix(&self) -> Matrix {
        Matrix::from_fn(self.left.rows(), self.right.rows(), |i, j| {
            (0..self.singular_values.len())
                .map(|k| self.left.get(i, k) * self.singular_values[k] * self.right.get(j, k))
                .sum()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mechanism::linalg::singular_values;

    #[test]
    fn fewer_than_twenty_draws_are_refused() {
        assert!(ControlSpec::new(1, 19).is_err());
        assert!(ControlSpec::new(1, 20).is_ok());
    }

    #[test]
    fn streams_differ_by_draw_and_purpose_but_repeat_by_seed() -> Result<()> {
        let spec = ControlSpec::new(42, 20)?;
        let shape = Shape { rows: 6, cols: 4 };
        let a = RandomFactors::draw(shape, &[2.0, 1.0], &mut spec.rng("x", 0))?;
        let b = RandomFactors::draw(shape, &[2.0, 1.0], &mut spec.rng("x", 0))?;
        let c = RandomFactors::draw(shape, &[2.0, 1.0], &mut spec.rng("x", 1))?;
        let d = RandomFactors::draw(shape, &[2.0, 1.0], &mut spec.rng("y", 0))?;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, d);
        Ok(())
    }

    #[test]
    fn random_factors_keep_the_singular_values() -> Result<()> {
        let spec = ControlSpec::new(3, 20)?;
        let f = RandomFactors::draw(
            Shape { rows: 8, cols: 5 },
            &[3.0, 2.0, 0.5],
            &mut spec.rng("t", 0),
        )?;
        let s = singular_values(&f.to_matrix())?;
        for (got, want) in s.iter().zip([3.0, 2.0, 0.5, 0.0, 0.0]) {
            assert!((got - want).abs() < 1e-12, "{s:?}");
        }
        let a = [1.0, -2.0, 0.5, 0.0, 3.0];
        let dense = f.to_matrix().matvec(&a)?;
        assert!((f.gain(&a) - norm(&dense) / norm(&a)).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn chance_summary() {
        let c = Chance::new(2.0, vec![1.0, 1.0, 1.0, 1.0]);
        assert_eq!((c.mean, c.sd, c.ratio), (1.0, 0.0, 2.0));
    }
}
