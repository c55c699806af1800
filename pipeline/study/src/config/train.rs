//! Config pieces shared by every training stage (pre-training now; the safety fine-tunings
//! reuse them): the model shape, the learning-rate schedule, AdamW and evaluation settings.
//! Plain data without candle, so notebooks can read them from manifests.

use serde::{Deserialize, Serialize};

use super::FieldError;

/// The model's shape with nanoGPT's names (reference/training_spec.md §1.1). `block_size`
/// (window − 1) and `vocab_size` (`vocab.json`) are not knobs: they come from the corpus and are
/// recorded in each checkpoint's `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Transformer blocks (paper, `wrn2-cfg-mini`: 6).
    pub n_layer: usize,
    /// Attention heads per block (paper: 6).
    pub n_head: usize,
    /// Residual width d (paper: 192). Even, and divisible by `n_head`.
    pub n_embd: usize,
    /// MLP hidden width as a multiple of d (official `scale_internal`: 4).
    #[serde(default = "default_mlp_ratio")]
    pub mlp_ratio: usize,
    /// How the CPU evaluates the tanh GELU (default `exact`).
    #[serde(default)]
    pub gelu: Gelu,
}

/// How the fused CPU kernel evaluates the tanh-approximation GELU. Both compute the same
/// expression; they differ by at most 2e-6 per value, which is enough to move a training
/// trajectory (README, pilot 9: the `cpu` preset's seed-0 IT model passes its bar with `exact`
/// and not with `vectorised`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Gelu {
    /// libm's scalar `tanhf`, one value at a time (the numbers of every run before 2026-12-04).
    #[default]
    Exact,
    /// `wide`'s vectorised `tanh` (exp-based), computed lane by lane at the CPU's SIMD width and
    /// bit-identical to `wide`'s own eight lanes (`study_model::ops`; README, issue #13).
    Vectorised,
}

fn default_mlp_ratio() -> usize {
    4
}

impl ModelConfig {
    /// Range and divisibility checks; fields are named `model.*`.
    pub fn validate(&self) -> Result<(), FieldError> {
        for (name, v) in [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("mlp_ratio", self.mlp_ratio),
        ] {
            if v == 0 {
                return Err(FieldError::new(format!("model.{name}"), "must be ≥ 1"));
            }
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(FieldError::new(
                "model.n_embd",
                format!(
                    "{} is not divisible by model.n_head = {}: each head gets n_embd / n_head features",
                    self.n_embd, self.n_head
                ),
            ));
        }
        if !self.n_embd.is_multiple_of(2) {
            return Err(FieldError::new(
                "model.n_embd",
                format!(
                    "{} is odd; the sinusoidal position table pairs sin/cos features",
                    self.n_embd
                ),
            ));
        }
        Ok(())
    }
}

/// Linear warm-up from 0, cosine decay to a floor, then the floor (training_spec §3.2; the same
/// function drives every official trainer).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LrSchedule {
    /// Peak learning rate (paper pre-training: 1e-3).
    pub lr_max: f64,
    /// Floor after the decay (paper pre-training: 1e-5).
    pub lr_min: f64,
    /// Warm-up steps (paper pre-training: 20,000).
    pub warmup: usize,
    /// Step at which the cosine reaches the floor (paper pre-training: 80,000).
    pub decay_end: usize,
}

impl LrSchedule {
    /// The learning rate before 0-based step `it`. `lr(0) = 0`: the first step only fills the
    /// Adam moments, as in the official code.
    pub fn at(&self, it: usize) -> f64 {
        if it < self.warmup {
            self.lr_max * it as f64 / self.warmup as f64
        } else if it > self.decay_end {
            self.lr_min
        } else {
            let span = (self.decay_end - self.warmup).max(1) as f64;
            let ratio = (it - self.warmup) as f64 / span;
            self.lr_min
                + 0.5 * (1.0 + (std::f64::consts::PI * ratio).cos()) * (self.lr_max - self.lr_min)
        }
    }

    /// Range checks; `field` is the dotted prefix.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if !(self.lr_max > 0.0 && self.lr_max.is_finite()) {
            return Err(FieldError::new(format!("{field}.lr_max"), "must be > 0"));
        }
        if !(0.0..=self.lr_max).contains(&self.lr_min) {
            return Err(FieldError::new(
                format!("{field}.lr_min"),
                format!("{} must lie in [0, lr_max = {}]", self.lr_min, self.lr_max),
            ));
        }
        if self.decay_end < self.warmup {
            return Err(FieldError::new(
                format!("{field}.decay_end"),
                format!(
                    "{} is before the end of warm-up ({})",
                    self.decay_end, self.warmup
                ),
            ));
        }
        Ok(())
    }
}

/// AdamW hyper-parameters other than the learning rate (training_spec §1.7).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    /// β₁ (official: 0.9).
    pub beta1: f64,
    /// β₂ (official: 0.95).
    pub beta2: f64,
    /// ε (PyTorch default: 1e-8).
    pub eps: f64,
    /// Decoupled weight decay of the Linear weights (official: 1e-4). Biases, LayerNorm weights
    /// and the token embedding are never decayed.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 1e-4,
        }
    }
}

impl AdamWConfig {
    /// Range checks; `field` is the dotted prefix.
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(FieldError::new(
                    format!("{field}.{name}"),
                    format!("{v} must lie in [0, 1)"),
                ));
            }
        }
        if self.eps.is_nan() || self.eps <= 0.0 {
            return Err(FieldError::new(format!("{field}.eps"), "must be > 0"));
        }
        if self.weight_decay.is_nan() || self.weight_decay < 0.0 {
            return Err(FieldError::new(
                format!("{field}.weight_decay"),
                "must be ≥ 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_matches_the_official_sample_values() {
        // training_spec §3.2: lr(0)=0, lr(10k)=5e-4, lr(20k)=1e-3, lr(50k)=5.05e-4, lr(≥80k)=1e-5
        let s = LrSchedule {
            lr_max: 1e-3,
            lr_min: 1e-5,
            warmup: 20_000,
            decay_end: 80_000,
        };
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert_eq!(s.at(0), 0.0);
        assert!(close(s.at(10_000), 5e-4));
        assert!(close(s.at(20_000), 1e-3));
        assert!(close(s.at(50_000), 5.05e-4));
        assert!(close(s.at(80_000), 1e-5));
        assert!(close(s.at(99_999), 1e-5));
        assert!(s.validate("lr").is_ok());
        let bad = LrSchedule { decay_end: 10, ..s };
        assert_eq!(bad.validate("lr").expect_err("bad").field, "lr.decay_end");
    }

    #[test]
    fn model_shape_rules() {
        let ok = ModelConfig {
            n_layer: 3,
            n_head: 3,
            n_embd: 48,
            mlp_ratio: 4,
            gelu: Gelu::Exact,
        };
        assert!(ok.validate().is_ok());
        // The kernel is named in YAML in snake case; exact when absent.
        let v: ModelConfig =
            serde_yaml::from_str("{n_layer: 3, n_head: 3, n_embd: 48, gelu: vectorised}")
                .expect("yaml");
        assert_eq!(v.gelu, Gelu::Vectorised);
        let d: ModelConfig =
            serde_yaml::from_str("{n_layer: 3, n_head: 3, n_embd: 48}").expect("yaml");
        assert_eq!(d.gelu, Gelu::Exact);
        let e = ModelConfig { n_embd: 50, ..ok }
            .validate()
            .expect_err("50 % 3");
        assert_eq!(e.field, "model.n_embd");
        assert!(e.message.contains("not divisible"), "{}", e.message);
        let e = ModelConfig {
            n_head: 1,
            n_embd: 7,
            ..ok
        }
        .validate()
        .expect_err("odd");
        assert!(e.message.contains("odd"));
    }
}
