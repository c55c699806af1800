//! Optimisation: the official learning-rate schedule, AdamW with the official two weight-decay
//! groups, and global gradient-norm clipping (reference/training_spec.md §1.7, §3.2, §3.4).
//!
//! AdamW is written here rather than taken from `candle_nn::optim::AdamW` because resuming a
//! killed run needs the moment estimates, and candle-nn keeps them private. The update is
//! PyTorch's (decoupled decay, bias-corrected moments, eps after the square root) and is pinned
//! against hand-computed values below.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
pub use study::config::train::{AdamWConfig, LrSchedule};

use crate::gpt::{DecayGroup, Params, decay_group};

struct Slot {
    name: String,
    var: Var,
    m: Tensor,
    v: Tensor,
    decay: f64,
}

/// AdamW over a model's parameters, with per-group weight decay.
pub struct AdamW {
    cfg: AdamWConfig,
    slots: Vec<Slot>,
    /// Updates applied so far (PyTorch's `step`, for bias correction).
    step: u64,
}

impl AdamW {
    /// Fresh moments (zeros) for every parameter of `params`.
    pub fn new(params: &Params, cfg: AdamWConfig) -> Result<Self> {
        let slots = params
            .iter()
            .map(|(name, var)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Slot {
                    name: name.to_owned(),
                    var: var.clone(),
                    m: zeros.clone(),
                    v: zeros,
                    decay: match decay_group(name) {
                        DecayGroup::Decay => cfg.weight_decay,
                        DecayGroup::NoDecay => 0.0,
                    },
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            slots,
            step: 0,
        })
    }

    /// Updates applied so far.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update at learning rate `lr`. Parameters without a gradient (the unused `ln_2`) are
    /// left alone, moments included, as PyTorch does.
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let (b1, b2) = (self.cfg.beta1, self.cfg.beta2);
        let c1 = 1.0 - b1.powi(self.step as i32);
        let c2 = 1.0 - b2.powi(self.step as i32);
        for slot in &mut self.slots {
            let Some(g) = grads.get(slot.var.as_tensor()) else {
                continue;
            };
            slot.m = ((&slot.m * b1)? + (g * (1.0 - b1))?)?;
            slot.v = ((&slot.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&slot.m / c1)?;
            let v_hat = (&slot.v / c2)?;
            let update = (m_hat / (v_hat.sqrt()? + self.cfg.eps)?)?;
            let theta = slot.var.as_tensor();
            let decayed = (theta * (1.0 - lr * slot.decay))?;
            slot.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`m.<param>`, `v.<param>`), for a checkpoint.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for s in &self.slots {
            out.insert(format!("m.{}", s.name), s.m.clone());
            out.insert(format!("v.{}", s.name), s.v.clone());
        }
        out
    }

    /// Restore moments written by [`AdamW::state_tensors`] and the step count.
    pub fn restore(&mut self, mut tensors: BTreeMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            for (prefix, slot) in [("m", &mut s.m), ("v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let t = tensors.remove(&key).ok_or_else(|| {
                    candle_core::Error::Msg(format!("optimiser state has no `{key}`"))
                })?;
                if t.dims() != slot.dims() {
                    candle_core::bail!("optimiser state `{key}` has shape {:?}", t.dims());
                }
                *slot = t.to_device(slot.device())?;
            }
        }
        self.step = step;
        Ok(())
    }

    /// Write the moments as safetensors.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<String, Tensor> =
            self.state_tensors().into_iter().collect();
        candle_core::safetensors::save(&tensors, path)
    }
}

/// Scale all gradients of `params` jointly so that their global L2 norm is at most `max_norm`
/// (PyTorch `clip_grad_norm_`: factor min(1, max_norm / (‖g‖ + 1e-6))). Returns the norm before
/// clipping.
pub fn clip_grad_norm(grads: &mut GradStore, params: &Params, max_norm: f64) -> Result<f64> {
    let norm = grad_norm(grads, params)?;
    let factor = max_norm / (norm + 1e-6);
    if factor < 1.0 {
        for (_, var) in params.iter() {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), (g * factor)?);
            }
        }
    }
    Ok(norm)
}

/// Global L2 norm of the gradients of `params` (one device-to-host read).
pub fn grad_norm(grads: &GradStore, params: &Params) -> Result<f64> {
    let squares = params
        .iter()
        .filter_map(|(_, var)| grads.get(var.as_tensor()))
        .map(|g| g.sqr()?.sum_all())
        .collect::<Result<Vec<_>>>()?;
    if squares.is_empty() {
        return Ok(0.0);
    }
    let total = Tensor::stack(&squares, 0)?.sum_all()?.to_scalar::<f32>()?;
    Ok(f64::from(total).sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt::GptConfig;
    use candle_core::Device;

    fn tiny_params() -> Params {
        let cfg = GptConfig {
            n_layer: 1,
            n_head: 1,
            n_embd: 2,
            block_size: 2,
            vocab_size: 3,
            mlp_ratio: 1,
            gelu: crate::gpt::Gelu::Exact,
        };
        Params::init(&cfg, 0, &Device::Cpu).expect("init")
    }

    #[test]
    fn adamw_step_equals_hand_computed_values() {
        let params = tiny_params();
        let cfg = AdamWConfig::default();
        let mut opt = AdamW::new(&params, cfg).expect("opt");
        let w = params.get("lm_head.weight").expect("w"); // decayed
        let b = params.get("transformer.ln_f.bias").expect("b"); // not decayed
        let w0 = w
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("w0");
        let b0 = b
            .as_tensor()
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("b0");
        // loss = Σ 3·w + Σ b² ⇒ dL/dw = 3, dL/db = 2b
        let loss = ((w.as_tensor() * 3.0).and_then(|t| t.sum_all()).expect("lw")
            + b.as_tensor().sqr().and_then(|t| t.sum_all()).expect("lb"))
        .expect("loss");
        let lr = 0.1;
        for step in 1..=2u32 {
            let grads = loss.backward().expect("grads");
            opt.step(&grads, lr).expect("step");
            // constant gradient g: m̂ = g, v̂ = g² ⇒ update = g/(|g| + eps) = ±1 (to 1e-8)
            let expect_w: Vec<f64> = w0
                .iter()
                .map(|&x| {
                    let mut x = f64::from(x);
                    for _ in 0..step {
                        x = x * (1.0 - lr * cfg.weight_decay) - lr * 3.0 / (3.0 + cfg.eps);
                    }
                    x
                })
                .collect();
            let got_w = w
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("w");
            for (g, e) in got_w.iter().zip(&expect_w) {
                assert!((f64::from(*g) - e).abs() < 1e-6, "step {step}: {g} vs {e}");
            }
            if step == 1 {
                // b starts at 0 ⇒ zero gradient ⇒ m = v = 0 ⇒ no move, no decay (group 0)
                let got_b = b.as_tensor().flatten_all().and_then(|t| t.to_vec1::<f32>());
                assert_eq!(got_b.expect("b"), b0);
            }
        }
        assert_eq!(opt.steps_taken(), 2);
    }

    #[test]
    fn adamw_bias_correction_with_changing_gradients() {
        // One scalar parameter, gradients 1 then 3, lr 0.01, no decay (a bias).
        let params = tiny_params();
        let cfg = AdamWConfig::default();
        let mut opt = AdamW::new(&params, cfg).expect("opt");
        let b = params.get("transformer.h.0.c_fc.bias").expect("b"); // 2 entries, no decay
        let x0 = f64::from(
            b.as_tensor()
                .flatten_all()
                .and_then(|t| t.get(0)?.to_scalar::<f32>())
                .expect("x0"),
        );
        let mut x = x0;
        let (mut m, mut v) = (0.0, 0.0);
        for (t, g) in [(1, 1.0), (2, 3.0)] {
            let loss = (b.as_tensor() * g).and_then(|l| l.sum_all()).expect("loss");
            opt.step(&loss.backward().expect("grads"), 0.01)
                .expect("step");
            m = 0.9 * m + 0.1 * g;
            v = 0.95 * v + 0.05 * g * g;
            let (mh, vh) = (m / (1.0 - 0.9f64.powi(t)), v / (1.0 - 0.95f64.powi(t)));
            x -= 0.01 * mh / (vh.sqrt() + 1e-8);
            let got = f64::from(
                b.as_tensor()
                    .flatten_all()
                    .and_then(|t| t.get(0)?.to_scalar::<f32>())
                    .expect("x"),
            );
            assert!((got - x).abs() < 1e-6, "step {t}: {got} vs {x}");
        }
    }

    #[test]
    fn clipping_scales_the_global_norm() {
        let params = tiny_params();
        let w = params.get("lm_head.weight").expect("w");
        let b = params.get("transformer.ln_f.bias").expect("b");
        // gradients: 3 on each of 6 entries of w, 4·(1,1)/√2·… keep it simple: loss = 3Σw + 4Σb
        let loss = ((w.as_tensor() * 3.0).and_then(|t| t.sum_all()).expect("lw")
            + (b.as_tensor() * 4.0).and_then(|t| t.sum_all()).expect("lb"))
        .expect("loss");
        let mut grads = loss.backward().expect("grads");
        let want = (6.0 * 9.0 + 2.0 * 16.0f64).sqrt();
        let norm = clip_grad_norm(&mut grads, &params, 1.0).expect("clip");
        assert!((norm - want).abs() < 1e-5, "{norm} vs {want}");
        let after = grad_norm(&grads, &params).expect("norm");
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // below the bound: untouched
        let norm2 = clip_grad_norm(&mut grads, &params, 10.0).expect("clip");
        assert!((norm2 - after).abs() < 1e-9);
    }
}
