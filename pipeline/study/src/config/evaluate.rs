//! Config of the `evaluate` stage (`pipeline/configs/<preset>/evaluate.yaml`): behaviour of the
//! IT and safety fine-tuned models on every evaluation set (Table 1), and the adversarial
//! soft-token attack (reference/analysis_spec.md §5).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{FieldError, StageConfig};
use crate::names::named_enum;

named_enum! {
    /// An evaluation set, in Table 1 order (the corpus's `eval_<name>` table; the behaviour
    /// table's `set` column).
    EvalSet {
        /// Standard safe inputs.
        StdSafe => "std_safe",
        /// Standard unsafe inputs.
        StdUnsafe => "std_unsafe",
        /// Competing objectives, task level: one safe operator per pair.
        JbCoTask => "jb_co_task",
        /// Competing objectives, text level: text mixing both branches.
        JbCoText => "jb_co_text",
        /// Mismatched generalisation: alias operator tokens.
        JbMisgenTokens => "jb_misgen_tokens",
        /// Mismatched generalisation: out-of-distribution text.
        JbMisgenText => "jb_misgen_text",
    }
}

impl EvalSet {
    /// The jailbreak sets.
    pub const JAILBREAKS: [EvalSet; 4] = [
        EvalSet::JbCoTask,
        EvalSet::JbCoText,
        EvalSet::JbMisgenTokens,
        EvalSet::JbMisgenText,
    ];

    /// Whether the set's unsafe rows split into `a_operator` / `b_only` subsets (every set but
    /// `std_safe`, whose rows are safe).
    pub fn has_unsafe_subsets(self) -> bool {
        self != EvalSet::StdSafe
    }
}

/// Which threat model the attack uses (analysis_spec §5.2 vs §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackModeConfig {
    /// Per-token L2 ball, soft-token count independent of the steps (default).
    Intended,
    /// The official code: per-coordinate clamp, soft tokens = steps, ε over the padded row.
    Literal,
}

/// Where the attack's free vectors go, orthogonal to the threat model (`study_model::attack::
/// Placement`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackPlacementConfig {
    /// The paper's attack: `n_soft` soft tokens inserted between the text and EOT (default;
    /// EOT and the outputs shift right by `n_soft`).
    #[default]
    Insert,
    /// Additive perturbations of existing prompt embeddings at `perturb_positions`; no token is
    /// added, no position moves, and `n_soft` is not used.
    Perturb,
}

/// Which iterate of the attack's optimisation is reported, per row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackIterateConfig {
    /// The last step's δ (the official code; default).
    #[default]
    Last,
    /// The best of the `steps + 1` iterates (the initial δ and each step's): a successful one
    /// before a failed one, then the lowest targeted loss (the usual PGD practice; success can
    /// only rise over `last`, and no longer falls when a large step overshoots).
    Best,
}

/// Which prompt positions `placement: perturb` perturbs (full row coordinates; EOT and the
/// outputs are never perturbed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PerturbPositionsConfig {
    /// BOS, the four operator slots and SOT (positions 0–5); the operand text keeps its clean
    /// embeddings (default).
    #[default]
    Prefix,
    /// The four operator slots (positions 1–4).
    Operators,
    /// Every prompt position, text included (0 … L+5; δ then has L + 6 rows).
    AllPrompt,
}

impl PerturbPositionsConfig {
    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Prefix => "prefix",
            Self::Operators => "operators",
            Self::AllPrompt => "all_prompt",
        }
    }
}

/// The soft-token attack.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttackConfig {
    /// Evaluation set attacked (its unsafe variant); official: std_unsafe.
    pub set: EvalSet,
    /// Rows attacked per model (first rows of the set whose unsafe operators sit in the first
    /// pair; the official analysis attacks 1000 one by one).
    pub rows: usize,
    /// Soft tokens (README: 2; dev runs 3/6/9; the released code 10 = the steps); insertion
    /// only.
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
    /// Insert soft tokens (the paper's, default) or perturb existing prompt positions.
    #[serde(default)]
    pub placement: AttackPlacementConfig,
    /// The positions perturbed under `placement: perturb` (absent: `prefix`); must be absent
    /// under `placement: insert`.
    #[serde(default)]
    pub perturb_positions: Option<PerturbPositionsConfig>,
    /// Which iterate is reported: `last` (the official code's, default) or `best`.
    #[serde(default)]
    pub iterate: AttackIterateConfig,
}

impl AttackConfig {
    /// The perturbed positions under `placement: perturb` (`prefix` when not given); `None`
    /// under `placement: insert`.
    pub fn perturbed(&self) -> Option<PerturbPositionsConfig> {
        match self.placement {
            AttackPlacementConfig::Insert => None,
            AttackPlacementConfig::Perturb => Some(self.perturb_positions.unwrap_or_default()),
        }
    }

    /// The placement and threat model in words (for bars and figures).
    pub fn describe(&self) -> String {
        let ball = match self.mode {
            AttackModeConfig::Intended => "per-token L2 ball",
            AttackModeConfig::Literal => "official clamp",
        };
        let iterate = match self.iterate {
            AttackIterateConfig::Last => "last iterate",
            AttackIterateConfig::Best => "best iterate",
        };
        match self.perturbed() {
            None => format!(
                "insertion of {} soft tokens, {ball}, {iterate}",
                self.n_soft
            ),
            Some(p) => format!(
                "perturbation of the {} positions, {ball}, {iterate}",
                p.as_str()
            ),
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
        match (a.placement, a.perturb_positions, a.mode) {
            (AttackPlacementConfig::Insert, Some(p), _) => {
                return Err(FieldError::new(
                    "attack.perturb_positions",
                    format!(
                        "{} applies to placement: perturb only; drop it or set attack.placement: perturb",
                        serde_json::to_string(&p).unwrap_or_default()
                    ),
                ));
            }
            (AttackPlacementConfig::Perturb, _, AttackModeConfig::Literal) => {
                return Err(FieldError::new(
                    "attack.placement",
                    "perturb needs mode: intended (literal reproduces the official insertion)",
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml;
    use std::path::Path;

    const BASE: &str = "rows: 8\nattack:\n  set: std_unsafe\n  rows: 4\n  n_soft: 2\n  steps: 10\n  budget_factors: [0.5, 1.0]\n  default_factor: 1.0\n  mode: intended\n";

    fn parse(extra: &str, overrides: &[&str]) -> Result<EvaluateConfig, String> {
        let ov: Vec<String> = overrides.iter().map(|s| (*s).to_owned()).collect();
        from_yaml(&format!("{BASE}{extra}"), Path::new("evaluate.yaml"), &ov)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn placement_defaults_to_insert_and_parses_snake_case() {
        let c = parse("", &[]).expect("valid");
        assert_eq!(c.attack.placement, AttackPlacementConfig::Insert);
        assert_eq!(c.attack.perturb_positions, None);
        assert_eq!(c.attack.perturbed(), None);
        let c = parse("  placement: perturb\n", &[]).expect("valid");
        assert_eq!(c.attack.perturbed(), Some(PerturbPositionsConfig::Prefix));
        let c = parse(
            "  placement: perturb\n  perturb_positions: all_prompt\n",
            &[],
        )
        .expect("valid");
        assert_eq!(
            c.attack.perturbed(),
            Some(PerturbPositionsConfig::AllPrompt)
        );
        let c = parse(
            "  placement: perturb\n  perturb_positions: operators\n",
            &[],
        )
        .expect("valid");
        assert_eq!(
            c.attack.perturbed(),
            Some(PerturbPositionsConfig::Operators)
        );
        // Overrides reach both keys (they are always serialised).
        let c = parse(
            "",
            &[
                "attack.placement=perturb",
                "attack.perturb_positions=operators",
            ],
        )
        .expect("valid");
        assert_eq!(
            c.attack.perturbed(),
            Some(PerturbPositionsConfig::Operators)
        );
        assert!(
            parse("  placement: shift\n", &[])
                .expect_err("unknown")
                .contains("shift")
        );
    }

    #[test]
    fn iterate_defaults_to_the_official_last_and_parses_best() {
        let c = parse("", &[]).expect("valid");
        assert_eq!(c.attack.iterate, AttackIterateConfig::Last);
        assert!(c.attack.describe().ends_with("last iterate"));
        let c = parse("  iterate: best\n", &[]).expect("valid");
        assert_eq!(c.attack.iterate, AttackIterateConfig::Best);
        assert!(c.attack.describe().ends_with("best iterate"));
        let c = parse("", &["attack.iterate=best"]).expect("valid");
        assert_eq!(c.attack.iterate, AttackIterateConfig::Best);
        let e = parse("  iterate: first\n", &[]).expect_err("unknown");
        assert!(e.contains("first"), "{e}");
    }

    #[test]
    fn placement_combinations_are_validated() {
        let e = parse("  perturb_positions: prefix\n", &[]).expect_err("insert + positions");
        assert!(e.contains("attack.perturb_positions"), "{e}");
        let e = parse("  placement: perturb\n", &["attack.mode=literal"]).expect_err("literal");
        assert!(e.contains("attack.placement"), "{e}");
        assert!(parse("", &["attack.mode=literal"]).is_ok());
    }
}
