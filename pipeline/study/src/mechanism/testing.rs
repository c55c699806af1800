//! Planted-signal fixtures shared by the mechanism tests.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use super::linalg::haar_orthonormal;
use super::{Matrix, Result};

/// Output width of the planted W_IT.
pub const OUT: usize = 48;
/// Input width of the planted W_IT.
pub const IN: usize = 192;
/// Rank of the planted W_IT; its left null space has dimension `OUT − RANK_IT` = 3.
pub const RANK_IT: usize = 45;
/// Samples per planted activation group.
pub const N: usize = 200;

/// A planted IT/ST pair and activations.
pub struct Planted {
    /// W_IT = U[:, :45] diag(5 … 1) V[:, :45]ᵀ, 48 × 192, rank 45.
    pub w_it: Matrix,
    /// W_ST = W_IT + ΔW.
    pub w_st: Matrix,
    /// Basis (48 × 3, orthonormal columns) of W_IT's left null space: U[:, 45..48].
    pub null_basis: Matrix,
    /// The planted "unsafe" input directions (192 × k, orthonormal columns): ΔW's row space.
    pub unsafe_dirs: Matrix,
    /// Safe activations (N × 192): isotropic Gaussian with the unsafe directions removed.
    pub safe: Matrix,
    /// Unsafe activations (N × 192): 0.1 · safe-like noise + 3 · Σ_i z_i r_i with
    /// z_1 ~ N(2, 1), z_i ~ N(0, 1): the unsafe − safe mean difference is 6 r_1.
    pub unsafe_acts: Matrix,
}

fn gaussian(rows: usize, cols: usize, scale: f64, rng: &mut ChaCha8Rng) -> Matrix {
    Matrix::from_fn(rows, cols, |_, _| {
        scale * rng.sample::<f64, _>(StandardNormal)
    })
}

/// ΔW = Σ_i sigma[i] · null_i r_iᵀ + N(0, 1e-3²) noise, with column space in W_IT's left null
/// space and row space spanned by the unsafe directions; `sigma.len()` ≤ 3.
pub fn planted(sigma: &[f64], seed: u64) -> Result<Planted> {
    let k = sigma.len();
    assert!((1..=OUT - RANK_IT).contains(&k), "planted rank 1..=3");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let u = haar_orthonormal(OUT, OUT, &mut rng)?;
    let v = haar_orthonormal(IN, RANK_IT, &mut rng)?;
    let r = haar_orthonormal(IN, k, &mut rng)?;
    let s_it: Vec<f64> = (0..RANK_IT)
        .map(|i| 5.0 - 4.0 * i as f64 / (RANK_IT - 1) as f64)
        .collect();
    let w_it = Matrix::from_fn(OUT, IN, |i, j| {
        (0..RANK_IT)
            .map(|t| u.get(i, t) * s_it[t] * v.get(j, t))
            .sum()
    });
    let noise = gaussian(OUT, IN, 1e-3, &mut rng);
    let delta = Matrix::from_fn(OUT, IN, |i, j| {
        noise.get(i, j)
            + (0..k)
                .map(|t| sigma[t] * u.get(i, RANK_IT + t) * r.get(j, t))
                .sum::<f64>()
    });
    let w_st = w_it.add_scaled(1.0, &delta, "planted")?;
    let null_basis = Matrix::from_fn(OUT, OUT - RANK_IT, |i, j| u.get(i, RANK_IT + j));
    let project_out = |x: &mut Vec<f64>| {
        for t in 0..k {
            let c: f64 = (0..IN).map(|j| r.get(j, t) * x[j]).sum();
            (0..IN).for_each(|j| x[j] -= c * r.get(j, t));
        }
    };
    let mut safe_rows = Vec::with_capacity(N);
    let mut unsafe_rows = Vec::with_capacity(N);
    for _ in 0..N {
        let mut s = gaussian(1, IN, 1.0, &mut rng).row(0).to_vec();
        project_out(&mut s);
        safe_rows.push(s);
        let mut a: Vec<f64> = gaussian(1, IN, 0.1, &mut rng).row(0).to_vec();
        for t in 0..k {
            let z = rng.sample::<f64, _>(StandardNormal) + if t == 0 { 2.0 } else { 0.0 };
            (0..IN).for_each(|j| a[j] += 3.0 * z * r.get(j, t));
        }
        unsafe_rows.push(a);
    }
    Ok(Planted {
        w_it,
        w_st,
        null_basis,
        unsafe_dirs: r,
        safe: Matrix::from_rows(&safe_rows)?,
        unsafe_acts: Matrix::from_rows(&unsafe_rows)?,
    })
}

/// A pair whose ΔW is a dense Gaussian matrix (no planted structure), same W_IT as `planted`
/// but with W_IT of rank 24 so the null space is half the output space.
pub fn random_update(seed: u64) -> Result<(Matrix, Matrix)> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let u = haar_orthonormal(OUT, 24, &mut rng)?;
    let v = haar_orthonormal(IN, 24, &mut rng)?;
    let w_it = Matrix::from_fn(OUT, IN, |i, j| {
        (0..24).map(|t| u.get(i, t) * v.get(j, t)).sum()
    });
    let delta = gaussian(OUT, IN, 0.1, &mut rng);
    let w_st = w_it.add_scaled(1.0, &delta, "random update")?;
    Ok((w_st, w_it))
}
