//! Config of the `spectra` stage (`pipeline/configs/<preset>/spectra.yaml`): the options of the
//! mechanistic analyses ([`crate::mechanism`]); every INTENDED/LITERAL choice of
//! reference/analysis_spec.md §12 that the stage exposes, with the paper's meaning the default.

use serde::{Deserialize, Serialize};

use super::evaluate::EvalSet;
use super::{FieldError, StageConfig};

/// The standard sets: the test points of Fig. 3 and Fig. 5.
pub const STD_SETS: [EvalSet; 2] = [EvalSet::StdSafe, EvalSet::StdUnsafe];

/// Which reference rows make the τ cluster means (§1.3 step 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TauReferences {
    /// Every reference set (safe-branch and unsafe-branch text) — the INTENDED reading.
    #[default]
    Pooled,
    /// `std_safe` only (safe-branch text with safe / unsafe operators): the official script.
    Literal,
}

/// τ (Fig. 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TauConfig {
    /// Which reference rows.
    #[serde(default)]
    pub references: TauReferences,
    /// Only the first hidden units (official: 192 of 768); absent = all (the paper's intent).
    #[serde(default)]
    pub first_units: Option<usize>,
}

/// The analyses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpectraConfig {
    /// Seed of the random controls (and names the run folder).
    #[serde(default)]
    pub seed: u64,
    /// Random draws per control (≥ 20).
    pub control_draws: usize,
    /// τ options.
    pub tau: TauConfig,
    /// Top singular directions of ΔW reported in the row-space table (Fig. 5: 15).
    pub row_space_top_k: usize,
    /// Top right singular directions of ΔW compared with the refusal direction.
    pub direction_top_k: usize,
    /// Bins of the Lipschitz histograms (shared edges over all models and groups).
    pub lipschitz_bins: usize,
}

impl StageConfig for SpectraConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.control_draws < 20 {
            return Err(FieldError::new(
                "control_draws",
                format!(
                    "{} < 20: a ratio to chance needs ≥ 20 draws",
                    self.control_draws
                ),
            ));
        }
        if self.tau.first_units == Some(0) {
            return Err(FieldError::new(
                "tau.first_units",
                "must be ≥ 1 (or absent: all)",
            ));
        }
        for (field, v) in [
            ("row_space_top_k", self.row_space_top_k),
            ("direction_top_k", self.direction_top_k),
            ("lipschitz_bins", self.lipschitz_bins),
        ] {
            if v == 0 {
                return Err(FieldError::new(field, "must be ≥ 1"));
            }
        }
        Ok(())
    }
}
