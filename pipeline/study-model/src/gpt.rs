//! The study's GPT, written literally after the official `model.py` (reference/training_spec.md
//! §1): a minGPT-style decoder with fixed sinusoidal positions, tanh-GELU MLPs (4× width), an
//! untied bias-free LM head, and the official code's unusual block:
//!
//! ```text
//! u  = ln_1(x)              // the residual stream is *replaced* by its normalisation
//! a  = u + attn(u)
//! x' = a + c_proj(gelu(c_fc(a)))   // no LayerNorm before the MLP; ln_2 exists but is unused
//! ```
//!
//! Parameter names equal the official PyTorch `state_dict` keys (without DataParallel's
//! `module.` prefix), so a checkpoint written here loads in PyTorch with `strict=False` (the two
//! buffers `transformer.wpe.pe` and `h.{l}.attn.bias` are not parameters and are not written).
//!
//! Every op used here has a backward pass. candle-nn's fused `layer_norm` and `softmax_last_dim`
//! do not (they are forward-only custom ops), so they must not be used on the training path;
//! [`layer_norm`], the linear layers, GELU and the causal softmax come from [`crate::ops`] (fused,
//! with their own backward, on the CPU).

mod config;
mod params;

pub use config::{DecayGroup, GptConfig, decay_group};
pub use params::{INIT_STD, Params};

use candle_core::{Device, Result, Tensor};
pub use study::config::train::Gelu;

/// PyTorch's LayerNorm default epsilon (the official model uses it everywhere).
pub const LN_EPS: f64 = 1e-5;

use crate::ops::linear;
pub use crate::ops::{cross_entropy, layer_norm};

/// The fixed sinusoidal position table (training_spec §1.4): for position p and i < d/2,
/// θ = p·exp(−2i·ln(10000)/d), PE[p, 2i] = sin θ, PE[p, 2i+1] = cos θ; computed in f32.
pub fn sinusoidal_table(len: usize, d: usize, device: &Device) -> Result<Tensor> {
    let mut pe = vec![0f32; len * d];
    for p in 0..len {
        for i in 0..d / 2 {
            let freq = (-((2 * i) as f32) * 10000f32.ln() / d as f32).exp();
            let theta = p as f32 * freq;
            pe[p * d + 2 * i] = theta.sin();
            pe[p * d + 2 * i + 1] = theta.cos();
        }
    }
    Tensor::from_vec(pe, (len, d), device)
}

/// Per-layer tensors recorded by a traced forward pass, each (B, T, ·).
#[derive(Debug, Clone)]
pub struct LayerTrace {
    /// The MLP's input `a = ln_1(x) + attn(ln_1(x))` (B, T, d).
    pub mlp_in: Tensor,
    /// `c_fc(a)`, before GELU (B, T, 4d).
    pub mlp_pre: Tensor,
    /// `gelu(c_fc(a))`: the input of `c_proj`, the weight the paper's ΔW analysis studies.
    pub mlp_post: Tensor,
    /// `c_proj(gelu(c_fc(a)))` (B, T, d).
    pub mlp_out: Tensor,
    /// The block's output `a + mlp_out` (B, T, d).
    pub block_out: Tensor,
}

/// What a traced forward pass records: one entry per layer, in order.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Layer 0 first.
    pub layers: Vec<LayerTrace>,
}

/// The MLP of one block (the official `MLP`): `c_proj(gelu(c_fc(a)))`, with the parameters
/// `c_fc.*` and `c_proj.*` directly under the block (the official names).
struct Mlp<'a> {
    c_fc: (&'a Tensor, &'a Tensor),
    c_proj: (&'a Tensor, &'a Tensor),
    gelu: Gelu,
}

impl Mlp<'_> {
    /// `(c_fc(a), gelu(c_fc(a)), c_proj(gelu(c_fc(a))))`: the pre-activation, the
    /// post-activation and the output, all three kept for the probes.
    fn traced(&self, a: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let pre = linear(a, self.c_fc.0, Some(self.c_fc.1))?;
        let post = crate::ops::gelu(&pre, self.gelu)?; // tanh approximation, fused on the CPU
        let out = linear(&post, self.c_proj.0, Some(self.c_proj.1))?;
        Ok((pre, post, out))
    }
}

/// Causal multi-head self-attention of one block (the official `CausalSelfAttention`):
/// `attn.c_attn` projects to q, k, v; `attn.c_proj` mixes the heads.
struct CausalSelfAttention<'a> {
    c_attn: (&'a Tensor, &'a Tensor),
    c_proj: (&'a Tensor, &'a Tensor),
    n_head: usize,
}

impl CausalSelfAttention<'_> {
    /// Attention over `u` (B, T, d) with the additive causal `mask` (T, T).
    fn forward(&self, u: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (w, b) = self.c_attn;
        let y = crate::ops::projected_causal_attention(u, w, b, self.n_head, mask)?;
        linear(&y, self.c_proj.0, Some(self.c_proj.1))
    }
}

/// One transformer block (the official `Block`), parameters `transformer.h.<l>.*`. As in the
/// official model, the attention's residual adds to `ln_1(x)`, not to `x`, and the MLP reads
/// that sum without a second LayerNorm: `a = ln_1(x) + attn(ln_1(x))`, output `a + mlp(a)`.
struct Block<'a> {
    ln_1: (&'a Tensor, &'a Tensor),
    attn: CausalSelfAttention<'a>,
    mlp: Mlp<'a>,
}

impl<'a> Block<'a> {
    /// Block `l` of `gpt`'s parameters.
    fn of(gpt: &'a Gpt, l: usize) -> Result<Self> {
        let p = |s: &str| gpt.p(&format!("transformer.h.{l}.{s}"));
        Ok(Self {
            ln_1: (p("ln_1.weight")?, p("ln_1.bias")?),
            attn: CausalSelfAttention {
                c_attn: (p("attn.c_attn.weight")?, p("attn.c_attn.bias")?),
                c_proj: (p("attn.c_proj.weight")?, p("attn.c_proj.bias")?),
                n_head: gpt.cfg.n_head,
            },
            mlp: Mlp {
                c_fc: (p("c_fc.weight")?, p("c_fc.bias")?),
                c_proj: (p("c_proj.weight")?, p("c_proj.bias")?),
                gelu: gpt.cfg.gelu,
            },
        })
    }

    /// The block on `x` (B, T, d): its output, the next block's input, and with `trace` every
    /// tensor the probes read. Without `trace` the block is one node ([`crate::ops::block`], the
    /// same values and gradients); with it, the fused ops' seven, so each activation is a
    /// tensor of its own.
    fn forward(
        &self,
        x: &Tensor,
        mask: &Tensor,
        trace: bool,
    ) -> Result<(Tensor, Option<LayerTrace>)> {
        if !trace {
            let p = crate::ops::BlockParams {
                ln_1: self.ln_1,
                c_attn: self.attn.c_attn,
                attn_proj: self.attn.c_proj,
                c_fc: self.mlp.c_fc,
                c_proj: self.mlp.c_proj,
            };
            let out = crate::ops::block(x, &p, self.attn.n_head, self.mlp.gelu, LN_EPS, mask)?;
            return Ok((out, None));
        }
        let u = layer_norm(x, self.ln_1.0, self.ln_1.1, LN_EPS)?;
        let y = self.attn.forward(&u, mask)?;
        let a = (u + y)?;
        let (pre, post, out) = self.mlp.traced(&a)?;
        let block_out = (&a + &out)?;
        let layer = LayerTrace {
            mlp_in: a,
            mlp_pre: pre,
            mlp_post: post,
            mlp_out: out,
            block_out: block_out.clone(),
        };
        Ok((block_out, Some(layer)))
    }
}

/// The model: parameters plus the constant position table and causal mask.
#[derive(Debug, Clone)]
pub struct Gpt {
    cfg: GptConfig,
    params: Params,
    pe: Tensor,
    /// (block_size, block_size): 0 on and below the diagonal, −∞ above.
    causal: Tensor,
}

impl Gpt {
    /// A model over `params` (shapes must match `cfg`; [`Params::init`] / [`Params::load`]).
    pub fn new(cfg: GptConfig, params: Params) -> Result<Self> {
        let device = params.get("transformer.wte.weight")?.device().clone();
        let t = cfg.block_size;
        Ok(Self {
            cfg,
            pe: sinusoidal_table(t, cfg.n_embd, &device)?,
            causal: crate::ops::causal_mask(t, &device)?,
            params,
        })
    }

    /// The shape.
    pub fn config(&self) -> &GptConfig {
        &self.cfg
    }

    /// The parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The device the parameters live on.
    pub fn device(&self) -> &Device {
        self.pe.device()
    }

    fn p(&self, name: &str) -> Result<&Tensor> {
        Ok(self.params.get(name)?.as_tensor())
    }

    /// Logits (B, T, vocab) for token ids `idx` (B, T), T ≤ block_size. With `trace`, records
    /// each layer's MLP input, pre- and post-activation, output and the block output; without,
    /// records nothing.
    pub fn forward(&self, idx: &Tensor, trace: Option<&mut Trace>) -> Result<Tensor> {
        self.forward_embeds(&self.embed(idx)?, trace)
    }

    /// Token embeddings (B, T, d) of ids `idx` (B, T), before positions are added.
    pub fn embed(&self, idx: &Tensor) -> Result<Tensor> {
        let (bsz, t) = idx.dims2()?;
        self.p("transformer.wte.weight")?
            .index_select(&idx.flatten_all()?, 0)?
            .reshape((bsz, t, self.cfg.n_embd))
    }

    /// Logits for token embeddings `tok` (B, T, d) given directly (the official `emb_in`
    /// attack path: soft tokens are embeddings, and the positional table is still added).
    pub fn forward_embeds(&self, tok: &Tensor, mut trace: Option<&mut Trace>) -> Result<Tensor> {
        let (_, t, _) = tok.dims3()?;
        if t > self.cfg.block_size {
            candle_core::bail!(
                "sequence of {t} tokens is longer than block_size {}",
                self.cfg.block_size
            );
        }
        let mut x = tok.broadcast_add(&self.pe.narrow(0, 0, t)?)?;
        let mask = self.causal.narrow(0, 0, t)?.narrow(1, 0, t)?;
        for l in 0..self.cfg.n_layer {
            let (out, layer) = Block::of(self, l)?.forward(&x, &mask, trace.is_some())?;
            x = out;
            if let (Some(tr), Some(layer)) = (trace.as_deref_mut(), layer) {
                tr.layers.push(layer);
            }
        }
        let h = layer_norm(
            &x,
            self.p("transformer.ln_f.weight")?,
            self.p("transformer.ln_f.bias")?,
            LN_EPS,
        )?;
        linear(&h, self.p("lm_head.weight")?, None)
    }
}
