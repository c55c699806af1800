//! Config of the `pretrain` stage (`pipeline/configs/<preset>/pretrain.yaml`): the instruction-
//! tuned (IT) model of the study (reference/training_spec.md §3).
//!
//! The sample-type curriculum and the null-operator probability are data knobs and live in the
//! corpus config (`pretrain_mix`); this stage reads them from the corpus manifest.

use serde::{Deserialize, Serialize};

use super::train::{AdamWConfig, LrSchedule, ModelConfig};
use super::{FieldError, StageConfig};

/// Pre-training: model shape, optimisation, evaluation and checkpoint cadence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PretrainConfig {
    /// Seed of the initial weights and of batch sampling (batch k draws from its own stream
    /// keyed by `(seed, k)`, so a resumed run sees the same batches). Official: unseeded (B22).
    #[serde(default)]
    pub seed: u64,
    /// Model shape (paper: 6 layers, 6 heads, width 192).
    pub model: ModelConfig,
    /// Optimiser steps (paper: 100,000).
    pub steps: usize,
    /// Sequences per step (paper: 512).
    pub batch_size: usize,
    /// Learning rate schedule (paper: 1e-3 peak, warm-up 20k, cosine to 80k, floor 1e-5).
    pub lr: LrSchedule,
    /// AdamW (paper: β = (0.9, 0.95), weight decay 1e-4 on Linear weights).
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip. `null` reproduces the official pre-training, whose clip call
    /// sits before `backward` and so never acts (training_spec B1); `1.0` is the intended value.
    #[serde(default)]
    pub grad_clip: Option<f64>,
    /// Held-out evaluation during training.
    pub eval: EvalConfig,
    /// Write a resumable checkpoint every this many steps (0: only at the end). Paper: 10,000.
    #[serde(default)]
    pub checkpoint_every: usize,
}

/// Held-out evaluation (teacher-forced and greedy) during and after training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalConfig {
    /// Evaluate every this many steps (and always after the last). Paper: 1,000.
    pub every: usize,
    /// Held-out rows (`pretrain_test`) scored teacher-forced per evaluation; the official code
    /// scores one batch of 500 (B6). Capped by the corpus's `sizes.pretrain_test`.
    pub rows: usize,
    /// Held-out `full` rows decoded greedily per evaluation (exact match of both outputs).
    pub greedy_rows: usize,
    /// Accuracy bar of the IT model: greedy exact match of both outputs on held-out safe
    /// instructions. The stage records whether it holds; fine-tuning refuses a model below it.
    pub min_exact_match: f64,
}

impl StageConfig for PretrainConfig {
    fn validate(&self) -> Result<(), FieldError> {
        self.model.validate()?;
        if self.steps == 0 {
            return Err(FieldError::new("steps", "must be ≥ 1"));
        }
        if self.batch_size == 0 {
            return Err(FieldError::new("batch_size", "must be ≥ 1"));
        }
        self.lr.validate("lr")?;
        self.adamw.validate("adamw")?;
        if let Some(c) = self.grad_clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(FieldError::new(
                "grad_clip",
                format!("{c} must be > 0, or null for no clipping"),
            ));
        }
        if self.eval.every == 0 {
            return Err(FieldError::new("eval.every", "must be ≥ 1"));
        }
        if self.eval.rows == 0 {
            return Err(FieldError::new("eval.rows", "must be ≥ 1"));
        }
        if !(0.0..=1.0).contains(&self.eval.min_exact_match) {
            return Err(FieldError::new(
                "eval.min_exact_match",
                "must be a fraction in [0, 1]",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml;
    use std::path::Path;

    const YAML: &str = "
seed: 0
model: {n_layer: 2, n_head: 2, n_embd: 16}
steps: 10
batch_size: 4
lr: {lr_max: 1.0e-3, lr_min: 1.0e-5, warmup: 2, decay_end: 8}
eval: {every: 5, rows: 8, greedy_rows: 4, min_exact_match: 0.9}
";

    #[test]
    fn presets_parse_and_bad_values_name_their_field() {
        let p = Path::new("pretrain.yaml");
        let cfg: PretrainConfig = from_yaml(YAML, p, &[]).expect("valid");
        assert_eq!(cfg.model.mlp_ratio, 4);
        assert_eq!(cfg.grad_clip, None);
        let e = from_yaml::<PretrainConfig>(YAML, p, &["model.n_embd=15".into()])
            .expect_err("odd/indivisible");
        assert!(e.to_string().contains("model.n_embd"), "{e}");
        let e = from_yaml::<PretrainConfig>(YAML, p, &["grad_clip=-1".into()]).expect_err("neg");
        assert!(e.to_string().contains("grad_clip"), "{e}");
        let e = from_yaml::<PretrainConfig>(&format!("{YAML}lr_peak: 3\n"), p, &[])
            .expect_err("unknown key");
        assert!(e.to_string().contains("lr_peak"), "{e}");
    }
}
