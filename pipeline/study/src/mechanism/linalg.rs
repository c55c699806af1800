//! The bridge to `faer`: thin SVD, numerical rank, column centring and Haar-random orthonormal
//! bases (QR of a Gaussian matrix). Everything else in [`super`] works on [`Matrix`].

use faer::Mat;
use rand::Rng;
use rand_distr::StandardNormal;

use super::matrix::dot;
use super::{Matrix, MechanismError, Result};

/// Thin singular value decomposition `A = U diag(σ) Vᵀ` of an `m × n` matrix, `r = min(m, n)`.
///
/// Singular values are non-negative and sorted in non-increasing order (numpy's convention).
/// Singular vectors are the **columns** of `u` and `v`; their signs are arbitrary, and every
/// statistic of this module is sign-invariant.
///
/// # Shapes
/// `u`: m × r, `singular_values`: r, `v`: n × r.
#[derive(Debug, Clone, PartialEq)]
pub struct Svd {
    /// Left singular vectors as columns (directions in the output space of a weight `out × in`).
    pub u: Matrix,
    /// Singular values, non-increasing.
    pub singular_values: Vec<f64>,
    /// Right singular vectors as columns (directions in the input space).
    pub v: Matrix,
}

impl Svd {
    /// Left singular vector `i` (column `i` of `u`), length m.
    pub fn left(&self, i: usize) -> Vec<f64> {
        self.u.col(i)
    }

    /// Right singular vector `i` (column `i` of `v`), length n.
    pub fn right(&self, i: usize) -> Vec<f64> {
        self.v.col(i)
    }

    /// Numerical rank: the number of σ above [`rank_tolerance`].
    pub fn numerical_rank(&self) -> usize {
        let tol = rank_tolerance(self.u.rows(), self.v.rows(), self.singular_values.first());
        self.singular_values.iter().filter(|&&s| s > tol).count()
    }
}

/// The rank tolerance of this module: `max(m, n) · ε_f32 · σ_max`.
///
/// This is numpy's `matrix_rank` default with the machine epsilon of **f32** (≈ 1.19e-7) rather
/// than f64: the study's weights are stored as f32, so singular values below the f32 rounding
/// floor of the largest one carry no information. A singular value σ counts toward the rank
/// iff σ > tolerance; an all-zero matrix has rank 0.
pub fn rank_tolerance(rows: usize, cols: usize, sigma_max: Option<&f64>) -> f64 {
    rows.max(cols) as f64 * f64::from(f32::EPSILON) * sigma_max.copied().unwrap_or(0.0)
}

fn to_faer(m: &Matrix) -> Mat<f64> {
    Mat::from_fn(m.rows(), m.cols(), |i, j| m.get(i, j))
}

fn from_faer(m: faer::MatRef<'_, f64>) -> Matrix {
    Matrix::from_fn(m.nrows(), m.ncols(), |i, j| m[(i, j)])
}

fn non_empty(m: &Matrix, what: &'static str) -> Result<()> {
    if m.is_empty() {
        Err(MechanismError::Empty {
            what,
            shape: m.shape(),
        })
    } else {
        Ok(())
    }
}

/// The thin SVD of `m` (faer's divide-and-conquer SVD, sequential so results do not depend on
/// the thread count).
pub fn thin_svd(m: &Matrix) -> Result<Svd> {
    non_empty(m, "matrix to decompose")?;
    let svd = to_faer(m)
        .thin_svd()
        .map_err(|_| MechanismError::SvdNoConvergence { shape: m.shape() })?;
    let s = svd.S().column_vector();
    Ok(Svd {
        u: from_faer(svd.U()),
        singular_values: (0..s.nrows()).map(|i| s[i]).collect(),
        v: from_faer(svd.V()),
    })
}

/// The singular values of `m`, non-increasing (no singular vectors are formed).
pub fn singular_values(m: &Matrix) -> Result<Vec<f64>> {
    non_empty(m, "matrix to decompose")?;
    to_faer(m)
        .singular_values()
        .map_err(|_| MechanismError::SvdNoConvergence { shape: m.shape() })
}

/// `m` with the mean of its rows subtracted from every row: the official `svdc` centring
/// (reference/analysis_spec.md §2.2, `column_space_analysis.py:L1825–1829`).
pub fn center_columns(m: &Matrix) -> Result<Matrix> {
    let mean = m.column_means("matrix to centre")?;
    Ok(Matrix::from_fn(m.rows(), m.cols(), |i, j| {
        m.get(i, j) - mean[j]
    }))
}

/// An `n × k` matrix with orthonormal columns drawn from the Haar measure: the `Q` factor of
/// the QR decomposition of an `n × k` standard Gaussian matrix, with each column's sign fixed by
/// the sign of `R`'s diagonal (without that fix `Q` is not exactly Haar; Mezzadri 2007).
pub fn haar_orthonormal(n: usize, k: usize, rng: &mut impl Rng) -> Result<Matrix> {
    if k > n || k == 0 {
        return Err(MechanismError::InvalidParameter {
            name: "orthonormal basis size",
            message: format!("need 1 ≤ k ≤ n, got k = {k}, n = {n}"),
        });
    }
    let g = Mat::<f64>::from_fn(n, k, |_, _| rng.sample(StandardNormal));
    let qr = g.qr();
    let q = qr.compute_thin_Q();
    let r = qr.thin_R();
    let mut out = from_faer(q.as_ref());
    let signs: Vec<f64> = (0..k)
        .map(|j| if r[(j, j)] < 0.0 { -1.0 } else { 1.0 })
        .collect();
    out = Matrix::from_fn(n, k, |i, j| out.get(i, j) * signs[j]);
    Ok(out)
}

/// `x − B (Bᵀ x)` for a basis `B` with orthonormal columns: the component of `x` orthogonal to
/// span(B). With no columns, `x` itself.
///
/// # Shapes
/// `basis`: n × k, `x`: n → n.
pub fn orthogonal_complement_component(basis: &Matrix, x: &[f64]) -> Vec<f64> {
    let mut out = x.to_vec();
    for j in 0..basis.cols() {
        let b = basis.col(j);
        let c = dot(&b, x);
        out.iter_mut().zip(&b).for_each(|(o, bi)| *o -= c * bi);
    }
    out
}

/// The first `k` columns of `m` (e.g. the leading singular vectors).
pub fn leading_columns(m: &Matrix, k: usize) -> Matrix {
    let k = k.min(m.cols());
    Matrix::from_fn(m.rows(), k, |i, j| m.get(i, j))
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::mechanism::matrix::norm;

    #[test]
    fn svd_reconstructs_and_orders() -> Result<()> {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let m = Matrix::from_fn(7, 4, |_, _| rng.sample(StandardNormal));
        let svd = thin_svd(&m)?;
        assert_eq!(svd.u.shape().rows, 7);
        assert_eq!(svd.v.shape().rows, 4);
        assert!(svd.singular_values.windows(2).all(|w| w[0] >= w[1]));
        for i in 0..4 {
            let av = m.matvec(&svd.right(i))?;
            let su: Vec<f64> = svd
                .left(i)
                .iter()
                .map(|x| x * svd.singular_values[i])
                .collect();
            let err: f64 = av.iter().zip(&su).map(|(a, b)| (a - b).abs()).sum();
            assert!(err < 1e-12, "A v_{i} ≠ σ_{i} u_{i}: {err}");
        }
        assert_eq!(svd.numerical_rank(), 4);
        Ok(())
    }

    #[test]
    fn haar_basis_is_orthonormal_and_seeded() -> Result<()> {
        let q = haar_orthonormal(9, 3, &mut ChaCha8Rng::seed_from_u64(5))?;
        for a in 0..3 {
            for b in 0..3 {
                let d = dot(&q.col(a), &q.col(b));
                let want = if a == b { 1.0 } else { 0.0 };
                assert!((d - want).abs() < 1e-12, "QᵀQ[{a},{b}] = {d}");
            }
        }
        let again = haar_orthonormal(9, 3, &mut ChaCha8Rng::seed_from_u64(5))?;
        assert_eq!(q, again);
        assert!(haar_orthonormal(3, 4, &mut ChaCha8Rng::seed_from_u64(5)).is_err());
        Ok(())
    }

    #[test]
    fn complement_removes_the_span() -> Result<()> {
        let basis = Matrix::from_rows(&[vec![1.0], vec![0.0], vec![0.0]])?;
        let c = orthogonal_complement_component(&basis, &[3.0, 4.0, 0.0]);
        assert_eq!(c, vec![0.0, 4.0, 0.0]);
        assert!((norm(&c) - 4.0).abs() < 1e-15);
        Ok(())
    }

    #[test]
    fn empty_matrix_is_a_typed_error() {
        let err = thin_svd(&Matrix::zeros(0, 3)).expect_err("empty");
        assert!(err.to_string().contains("0×3"), "{err}");
    }
}
