//! The mechanistic study of the paper (Jain et al., NeurIPS 2024, Sec. 4–5): pure analysis
//! functions on weights and activations already on disk. No I/O, no drawing, no candle.
//!
//! | file | paper | official script (reference/analysis_spec.md) |
//! |---|---|---|
//! | [`clusters`] | Fig. 3, τ per layer (C3–C11) | `evals/activation_space_analysis.py` (§1) |
//! | [`spectra`] | ΔW = W_ST − W_IT is low-rank (C13, C21) | dev `*_stablerank.py`, `*_energy.py` (§10) |
//! | [`alignment`] | Fig. 4 column/null space (C12), Fig. 5 row space (C14) | `column_space_analysis.py` (§2), `row_space_analysis.py` (§3) |
//! | [`direction`] | refusal direction (Arditi et al.) beside ΔW | — (DESIGN.md §5) |
//! | [`lipschitz`] | Fig. 6 histograms (C16) | `lipschitzness_analysis.py` (§4) |
//! | [`interpolation`] | W_IT + αΔW (C15) | `interpolate_state_dicts_forward` (§8) |
//! | [`reference`] | the paper's numbers for Figs. 3–7 | reference/paper_claims.md |
//!
//! Matrices are the crate's own row-major [`Matrix`] of `f64`: weights arrive as f32 row-major
//! `out × in` (PyTorch `nn.Linear.weight`), activation sets as f32 row-major `samples × width`.
//! Dense linear algebra (SVD, QR) comes from `faer` behind [`linalg`]; nothing is hand-written.
//!
//! Where the official code and the paper disagree, the choice is an enum whose `Default` is the
//! paper's INTENDED meaning (DESIGN.md §4); the LITERAL variant is the other arm.
//!
//! Random controls ([`controls`]) keep a matrix's singular values and draw Haar singular
//! vectors from a ChaCha8 stream keyed by an explicit `u64` seed and the draw index.

pub mod alignment;
pub mod clusters;
pub mod controls;
pub mod direction;
pub mod interpolation;
pub mod linalg;
pub mod lipschitz;
pub mod matrix;
pub mod reference;
pub mod spectra;
#[cfg(test)]
pub(crate) mod testing;

pub use matrix::{Matrix, Shape};

/// Why a mechanistic analysis refused its inputs.
#[derive(Debug, thiserror::Error)]
pub enum MechanismError {
    /// Two inputs that must agree in shape do not.
    #[error("{what}: shapes differ: {left} vs {right}")]
    ShapeMismatch {
        /// The two inputs, e.g. `W_ST vs W_IT`.
        what: &'static str,
        /// Shape of the first input.
        left: Shape,
        /// Shape of the second input.
        right: Shape,
    },
    /// A vector's length does not fit the matrix it meets.
    #[error("{what}: length {len} does not fit {expected}")]
    LengthMismatch {
        /// Which vector, e.g. `activation width vs W columns`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// What was expected, e.g. `192 (columns of a 768×192 matrix)`.
        expected: String,
    },
    /// A flat buffer cannot be read as the matrix it claims to be.
    #[error("{what}: {len} values cannot form a {rows}×{cols} matrix")]
    BadBuffer {
        /// Which buffer.
        what: &'static str,
        /// Number of values.
        len: usize,
        /// Claimed rows.
        rows: usize,
        /// Claimed columns.
        cols: usize,
    },
    /// An input that needs at least one row (or value) has none.
    #[error("{what} is empty ({shape}); the analysis needs at least one sample")]
    Empty {
        /// Which input.
        what: &'static str,
        /// Its shape.
        shape: Shape,
    },
    /// A NaN or infinity where a finite number is required.
    #[error("{what}: non-finite value {value} at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Flat (row-major) index of the first bad value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A parameter outside its valid range.
    #[error("invalid {name}: {message}")]
    InvalidParameter {
        /// The parameter.
        name: &'static str,
        /// What is wrong and what is allowed.
        message: String,
    },
    /// The reference set of a τ analysis shares rows with its test set (spec D3).
    #[error(
        "{count} test rows of `{group}` also occur in the reference set; use disjoint \
         (held-out) rows, or ReferenceOverlap::Allow for the official (LITERAL) behaviour"
    )]
    ReferenceOverlap {
        /// The test group with shared rows.
        group: &'static str,
        /// How many of its rows also occur in the reference set.
        count: usize,
    },
    /// faer's SVD did not converge.
    #[error("SVD of a {shape} matrix did not converge")]
    SvdNoConvergence {
        /// Shape of the matrix.
        shape: Shape,
    },
}

/// Result of the mechanistic analyses.
pub type Result<T, E = MechanismError> = std::result::Result<T, E>;
