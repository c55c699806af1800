//! Config of the `probe` stage (`pipeline/configs/<preset>/probe.yaml`): which activations of
//! which rows are stored for the mechanistic analyses, and the Lipschitz proxy's rows
//! (reference/analysis_spec.md §1–§5).

use serde::{Deserialize, Serialize};

use super::{FieldError, StageConfig};
use crate::evaluation::SETS;
use crate::probe::{Hook, Pool};

/// One stored tensor: a hook at a pooling of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// The tensor.
    pub hook: Hook,
    /// The positions.
    pub pool: Pool,
}

/// The Lipschitz proxy (§4): rows of one set, both prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LipschitzConfig {
    /// Evaluation set (official: std_unsafe).
    pub set: String,
    /// Rows (the first of the set; official 1000).
    pub rows: usize,
}

/// The probe stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Seed (names the run folder; the stage draws nothing).
    #[serde(default)]
    pub seed: u64,
    /// Evaluation sets whose rows are probed (names without `eval_`).
    pub sets: Vec<String>,
    /// Sets that also give reference rows (cluster means, refusal direction): rows
    /// `0 .. reference_rows`; the others give test rows only.
    pub reference_sets: Vec<String>,
    /// Reference rows per reference set and prompt.
    pub reference_rows: usize,
    /// Test rows per set and prompt: rows `reference_rows .. reference_rows + test_rows` of
    /// every set (disjoint from the references by construction).
    pub test_rows: usize,
    /// Positions averaged by `pool: output` (official 10, §1.2; capped at EOT plus the first
    /// output's letters).
    pub output_positions: usize,
    /// The stored tensors.
    pub dumps: Vec<Dump>,
    /// The Lipschitz proxy.
    pub lipschitz: LipschitzConfig,
    /// Also store the activations of `04_evaluate`'s attacked inputs.
    pub adversarial: bool,
}

fn known_set(field: &str, s: &str) -> Result<(), FieldError> {
    if SETS.contains(&s) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("unknown set `{s}`; sets: {}", SETS.join(", ")),
        ))
    }
}

impl StageConfig for ProbeConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.sets.is_empty() {
            return Err(FieldError::new("sets", "name at least one evaluation set"));
        }
        for s in &self.sets {
            known_set("sets", s)?;
        }
        for s in &self.reference_sets {
            known_set("reference_sets", s)?;
            if !self.sets.contains(s) {
                return Err(FieldError::new(
                    "reference_sets",
                    format!("`{s}` is not in `sets`"),
                ));
            }
        }
        if self.reference_sets.is_empty() || self.reference_rows == 0 {
            return Err(FieldError::new(
                "reference_rows",
                "τ and the refusal direction need ≥ 1 reference row of ≥ 1 reference set",
            ));
        }
        if self.test_rows == 0 {
            return Err(FieldError::new("test_rows", "must be ≥ 1"));
        }
        if self.output_positions == 0 {
            return Err(FieldError::new("output_positions", "must be ≥ 1"));
        }
        if self.dumps.is_empty() {
            return Err(FieldError::new("dumps", "store at least one hook"));
        }
        known_set("lipschitz.set", &self.lipschitz.set)?;
        if self.lipschitz.rows == 0 {
            return Err(FieldError::new("lipschitz.rows", "must be ≥ 1"));
        }
        Ok(())
    }
}
