//! Config of the `evaluate` stage (`pipeline/configs/<preset>/evaluate.yaml`): behaviour of the
//! IT and safety fine-tuned models on every evaluation set (Table 1), and the adversarial
//! soft-token attack (reference/analysis_spec.md §5).

use serde::{Deserialize, Serialize};

use super::{FieldError, StageConfig};

/// Which threat model the attack uses (analysis_spec §5.2 vs §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackModeConfig {
    /// Per-token L2 ball, soft-token count independent of the steps (default).
    Intended,
    /// The official code: per-coordinate clamp, soft tokens = steps, ε over the padded row.
    Literal,
}

/// The soft-token attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    /// Evaluation set attacked (its unsafe variant); official: std_unsafe.
    pub set: String,
    /// Rows attacked per model (first rows of the set whose unsafe operators sit in the first
    /// pair; the official analysis attacks 1000 one by one).
    pub rows: usize,
    /// Soft tokens (README: 2; dev runs 3/6/9; the released code 10 = the steps).
    pub n_soft: usize,
    /// Optimisation steps (official 10).
    pub steps: usize,
    /// Budgets to sweep, as multiples of the mean token-embedding norm.
    pub budget_factors: Vec<f64>,
    /// The budget the behaviour bar is read at (must be one of `budget_factors`).
    pub default_factor: f64,
    /// Threat model.
    pub mode: AttackModeConfig,
    /// Seed of the soft tokens' initialisation.
    #[serde(default)]
    pub seed: u64,
}

impl AttackConfig {
    /// The threat model in words (for bars and figures).
    pub fn describe(&self) -> String {
        match self.mode {
            AttackModeConfig::Intended => "insertion, per-token L2 ball".into(),
            AttackModeConfig::Literal => "insertion, official clamp".into(),
        }
    }
}

/// Behaviour evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateConfig {
    /// Seed (names the run folder; evaluation itself draws nothing but the attack's init).
    #[serde(default)]
    pub seed: u64,
    /// Rows per evaluation set (capped by the corpus's `sizes.eval`).
    pub rows: usize,
    /// Also decode greedily (besides teacher-forced exact match).
    #[serde(default = "yes")]
    pub greedy: bool,
    /// The soft-token attack.
    pub attack: AttackConfig,
}

fn yes() -> bool {
    true
}

impl StageConfig for EvaluateConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.rows == 0 {
            return Err(FieldError::new("rows", "must be ≥ 1"));
        }
        let a = &self.attack;
        if a.rows == 0 || a.steps == 0 || a.n_soft == 0 {
            return Err(FieldError::new(
                "attack",
                "rows, steps and n_soft must be ≥ 1",
            ));
        }
        if a.budget_factors.is_empty() || a.budget_factors.iter().any(|f| f.is_nan() || *f <= 0.0) {
            return Err(FieldError::new(
                "attack.budget_factors",
                "needs one or more factors > 0",
            ));
        }
        if !a.budget_factors.contains(&a.default_factor) {
            return Err(FieldError::new(
                "attack.default_factor",
                format!(
                    "{} is not one of attack.budget_factors {:?}",
                    a.default_factor, a.budget_factors
                ),
            ));
        }
        Ok(())
    }
}
