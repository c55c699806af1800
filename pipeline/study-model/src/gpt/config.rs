//! The model's shape ([`GptConfig`]): its parameters' official names and shapes, their count
//! and FLOPs, and which parameters weight decay applies to ([`decay_group`]).

use serde::{Deserialize, Serialize};

use super::Gelu;

/// The model's shape, with nanoGPT's names. Written next to every checkpoint as `config.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GptConfig {
    /// Transformer blocks (paper: 6).
    pub n_layer: usize,
    /// Attention heads per block (paper: 6).
    pub n_head: usize,
    /// Residual width d (paper: 192). Must be even (sinusoidal table) and divisible by `n_head`.
    pub n_embd: usize,
    /// Longest context, tokens (paper: 159 = corpus window − 1).
    pub block_size: usize,
    /// Vocabulary size; equals the corpus's `vocab.json` (59).
    pub vocab_size: usize,
    /// MLP hidden width as a multiple of `n_embd` (official `scale_internal`: 4).
    pub mlp_ratio: usize,
    /// How the CPU kernel evaluates GELU (absent in checkpoints written before the choice
    /// existed, which all used `exact`).
    #[serde(default)]
    pub gelu: Gelu,
}

impl GptConfig {
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
    }

    /// MLP hidden width.
    pub fn mlp_hidden(&self) -> usize {
        self.mlp_ratio * self.n_embd
    }

    /// Why this shape cannot be built, if it cannot.
    pub fn check(&self) -> std::result::Result<(), String> {
        let positive = [
            ("n_layer", self.n_layer),
            ("n_head", self.n_head),
            ("n_embd", self.n_embd),
            ("block_size", self.block_size),
            ("vocab_size", self.vocab_size),
            ("mlp_ratio", self.mlp_ratio),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must be ≥ 1"));
        }
        if !self.n_embd.is_multiple_of(self.n_head) {
            return Err(format!(
                "n_embd = {} is not divisible by n_head = {}",
                self.n_embd, self.n_head
            ));
        }
        if !self.n_embd.is_multiple_of(2) {
            return Err(format!(
                "n_embd = {} must be even (sinusoidal positions pair sin/cos)",
                self.n_embd
            ));
        }
        Ok(())
    }

    /// Every parameter's name and shape, in a fixed order (the official `state_dict` order).
    pub fn parameter_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (d, h, v) = (self.n_embd, self.mlp_hidden(), self.vocab_size);
        let mut out = vec![("transformer.wte.weight".to_owned(), vec![v, d])];
        for l in 0..self.n_layer {
            let p = format!("transformer.h.{l}");
            out.extend([
                (format!("{p}.ln_1.weight"), vec![d]),
                (format!("{p}.ln_1.bias"), vec![d]),
                (format!("{p}.attn.c_attn.weight"), vec![3 * d, d]),
                (format!("{p}.attn.c_attn.bias"), vec![3 * d]),
                (format!("{p}.attn.c_proj.weight"), vec![d, d]),
                (format!("{p}.attn.c_proj.bias"), vec![d]),
                (format!("{p}.ln_2.weight"), vec![d]),
                (format!("{p}.ln_2.bias"), vec![d]),
                (format!("{p}.c_fc.weight"), vec![h, d]),
                (format!("{p}.c_fc.bias"), vec![h]),
                (format!("{p}.c_proj.weight"), vec![d, h]),
                (format!("{p}.c_proj.bias"), vec![d]),
            ]);
        }
        out.push(("transformer.ln_f.weight".to_owned(), vec![d]));
        out.push(("transformer.ln_f.bias".to_owned(), vec![d]));
        out.push(("lm_head.weight".to_owned(), vec![v, d]));
        out
    }

    /// Number of parameters (including the unused `ln_2`).
    pub fn num_parameters(&self) -> usize {
        self.parameter_shapes()
            .iter()
            .map(|(_, s)| s.iter().product::<usize>())
            .sum()
    }

    /// Forward FLOPs per token at context `t` (training_spec §9.1): 2 × matmul weights plus the
    /// attention products over the full t×t square.
    pub fn forward_flops_per_token(&self, t: usize) -> f64 {
        let d = self.n_embd as f64;
        let per_block = 4.0 * d * d + 2.0 * d * self.mlp_hidden() as f64;
        let matmul = self.n_layer as f64 * per_block + (self.vocab_size as f64) * d;
        2.0 * matmul + 4.0 * (self.n_layer * t) as f64 * d
    }
}

/// Which optimiser group a parameter belongs to (official `configure_optimizers`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecayGroup {
    /// Linear weights: decayed.
    Decay,
    /// Biases, LayerNorm weights, embeddings: not decayed.
    NoDecay,
}

/// The group of parameter `name`: the weights of the five Linear layers decay.
pub fn decay_group(name: &str) -> DecayGroup {
    let linear = ["attn.c_attn", "attn.c_proj", ".c_fc", ".c_proj", "lm_head"];
    if name.ends_with(".weight") && linear.iter().any(|l| name.contains(l)) {
        DecayGroup::Decay
    } else {
        DecayGroup::NoDecay
    }
}
