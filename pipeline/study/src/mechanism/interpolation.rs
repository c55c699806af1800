//! Linear interpolation and extrapolation along the safety update: W(α) = W_IT + α ΔW
//! (paper Sec. 4.2 "interventions via linear connectivity", claim C15; the official helper
//! `interpolate_state_dicts_forward` computes α θ_ST + (1 − α) θ_IT, the same line;
//! reference/analysis_spec.md §8). α = 0 is the IT model, α = 1 the ST model, α > 1
//! extrapolates past it.

use super::spectra::delta_w;
use super::{Matrix, MechanismError, Result};

/// The default grid: α = 0, 0.25, …, 2 (spec §8 suggestion; the dev runs used
/// {0.5, 1, 1.5, 2}).
pub fn default_alpha_grid() -> Vec<f64> {
    alpha_grid(0.0, 2.0, 9).unwrap_or_default()
}

/// `points` evenly spaced values from `start` to `end` inclusive (α_i = start + i · step, not
/// accumulated, so 1.0 is exact on the default grid).
pub fn alpha_grid(start: f64, end: f64, points: usize) -> Result<Vec<f64>> {
    if points < 2 || !(start.is_finite() && end.is_finite()) || start >= end {
        return Err(MechanismError::InvalidParameter {
            name: "α grid",
            message: format!(
                "start {start}, end {end}, {points} points; need finite start < end and ≥ 2 points"
            ),
        });
    }
    let step = (end - start) / (points - 1) as f64;
    let mut grid: Vec<f64> = (0..points).map(|i| start + step * i as f64).collect();
    grid[points - 1] = end;
    Ok(grid)
}

/// W(α) = W_IT + α (W_ST − W_IT) for one weight.
///
/// # Shapes
/// `w_it`, `w_st`: out × in → out × in.
pub fn interpolate(w_it: &Matrix, w_st: &Matrix, alpha: f64) -> Result<Matrix> {
    w_it.add_scaled(alpha, &delta_w(w_st, w_it)?, "W_IT + α ΔW")
}

/// W(α) for every α of `grid`, paired with its α.
pub fn interpolation_path(
    w_it: &Matrix,
    w_st: &Matrix,
    grid: &[f64],
) -> Result<Vec<(f64, Matrix)>> {
    let delta = delta_w(w_st, w_it)?;
    grid.iter()
        .map(|&a| Ok((a, w_it.add_scaled(a, &delta, "W_IT + α ΔW")?)))
        .collect()
}

/// θ(α) = θ_IT + α (θ_ST − θ_IT) for any flat f32 parameter (biases, LayerNorm, embeddings:
/// the intervention applies to **all** parameters), computed in f64 and narrowed back.
pub fn interpolate_values(it: &[f32], st: &[f32], alpha: f64) -> Result<Vec<f32>> {
    if it.len() != st.len() {
        return Err(MechanismError::LengthMismatch {
            what: "θ_ST vs θ_IT",
            len: st.len(),
            expected: format!("{} (length of θ_IT)", it.len()),
        });
    }
    Ok(it
        .iter()
        .zip(st)
        .map(|(&a, &b)| {
            let (a, b) = (f64::from(a), f64::from(b));
            (a + alpha * (b - a)) as f32
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_is_exact_at_its_ends_and_at_one() -> Result<()> {
        let g = default_alpha_grid();
        assert_eq!(g.len(), 9);
        assert_eq!((g[0], g[4], g[8]), (0.0, 1.0, 2.0));
        assert!(alpha_grid(1.0, 1.0, 3).is_err() && alpha_grid(0.0, 1.0, 1).is_err());
        Ok(())
    }

    /// α = 0 and α = 1 reproduce the f32 checkpoints exactly; α = 2 is 2 W_ST − W_IT.
    #[test]
    fn endpoints_are_the_checkpoints() -> Result<()> {
        let it_f32 = [0.1f32, -0.7, 1.3e-3, 2.5, 0.0, -1.0];
        let st_f32 = [0.1f32 + 1e-4, -0.69, 1.2e-3, 2.0, 3.0e-7, -1.0];
        let w_it = Matrix::from_f32(2, 3, &it_f32)?;
        let w_st = Matrix::from_f32(2, 3, &st_f32)?;
        let path = interpolation_path(&w_it, &w_st, &[0.0, 1.0, 2.0])?;
        assert_eq!(path[0].1.to_f32_vec(), it_f32.to_vec());
        assert_eq!(path[1].1.to_f32_vec(), st_f32.to_vec());
        let two = interpolate(&w_it, &w_st, 2.0)?;
        for i in 0..6 {
            let want = 2.0 * f64::from(st_f32[i]) - f64::from(it_f32[i]);
            assert!((two.as_slice()[i] - want).abs() < 1e-15);
        }
        assert_eq!(interpolate_values(&it_f32, &st_f32, 1.0)?, st_f32.to_vec());
        assert_eq!(interpolate_values(&it_f32, &st_f32, 0.0)?, it_f32.to_vec());
        Ok(())
    }

    #[test]
    fn mismatched_weights_are_typed_errors() {
        let err = interpolate(&Matrix::zeros(2, 3), &Matrix::zeros(3, 2), 0.5).expect_err("shape");
        assert!(err.to_string().contains("2×3"), "{err}");
        assert!(interpolate_values(&[0.0; 3], &[0.0; 2], 0.5).is_err());
    }
}
