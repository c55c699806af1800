//! Where the safety update ΔW = W_ST − W_IT writes and what it reads (paper Sec. 4.2).
//!
//! - [`column`]: Fig. 4 (C12). Projection of ΔW's top **left** singular vectors (output space,
//!   e.g. the 768 hidden units for `c_fc`) onto the **left null space** of W_IT, i.e. the
//!   orthogonal complement of W_IT's column space: "ΔW writes where W_IT does not".
//! - [`row`]: Fig. 5 (C14). Projection of activations onto ΔW's top **right** singular vectors
//!   (input space) and the gain ‖ΔW a‖ / ‖a‖ per sample: "ΔW reads unsafe inputs".
//!
//! Both come with a random control ([`super::controls`]): the same statistic for matrices that
//! keep the singular values but have Haar-random singular vectors.

pub mod column;
pub mod row;

pub use column::{
    ColumnSpaceAlignment, ColumnSpaceControl, ColumnSpaceMatrix, ColumnSpaceOptions,
    column_space_alignment, column_space_control,
};
pub use row::{
    RowSpaceAnalysis, RowSpaceControl, RowSpaceMatrix, RowSpaceOptions, RowSpaceProjections,
    RowSpaceSummary, row_space_analysis, row_space_control, row_space_projections,
};

use super::linalg::{Svd, center_columns};
use super::spectra::EnergyCut;
use super::{Matrix, MechanismError, Result};

/// Whether a matrix is column-mean-centred before its SVD.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Centring {
    /// INTENDED (default): decompose the weight as it is, so "column space" and "null space"
    /// are those of the linear map the model applies.
    #[default]
    None,
    /// LITERAL: the official `svdc` subtracts the mean of the rows from every row before the
    /// SVD (`column_space_analysis.py:L1825–1829`, `row_space_analysis.py`; spec §2.2, §3.3).
    ColumnMeans,
}

impl Centring {
    pub(crate) fn apply(self, m: &Matrix) -> Result<Matrix> {
        match self {
            Centring::None => Ok(m.clone()),
            Centring::ColumnMeans => center_columns(m),
        }
    }
}

/// How many leading singular vectors span a subspace.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SubspaceRank {
    /// The numerical rank: σ > `max(m, n) · ε_f32 · σ1` ([`super::linalg::rank_tolerance`]).
    /// For W_IT this makes the complement the exact (left) null space.
    Numerical,
    /// The leading directions holding a share of the energy Σσ² (the official `k90`).
    Energy(EnergyCut),
    /// A fixed count, capped at min(rows, cols).
    Fixed(usize),
}

impl SubspaceRank {
    /// The count for a decomposition.
    pub fn count(self, svd: &Svd) -> Result<usize> {
        let s = &svd.singular_values;
        match self {
            SubspaceRank::Numerical => Ok(svd.numerical_rank()),
            SubspaceRank::Energy(cut) => cut.count(s),
            SubspaceRank::Fixed(k) => Ok(k.min(s.len())),
        }
    }
}

/// Fail unless `acts` is a non-empty `samples × width` set with no zero rows.
pub(crate) fn check_activations(acts: &Matrix, width: usize, what: &'static str) -> Result<()> {
    if acts.rows() == 0 {
        return Err(MechanismError::Empty {
            what,
            shape: acts.shape(),
        });
    }
    if acts.cols() != width {
        return Err(MechanismError::LengthMismatch {
            what,
            len: acts.cols(),
            expected: format!("{width} (input width of the weight)"),
        });
    }
    if let Some(i) = acts.row_iter().position(|r| r.iter().all(|&x| x == 0.0)) {
        return Err(MechanismError::InvalidParameter {
            name: what,
            message: format!("row {i} is all zeros; its direction (a / ‖a‖) is undefined"),
        });
    }
    Ok(())
}
