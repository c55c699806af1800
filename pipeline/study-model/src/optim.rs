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
use rayon::prelude::*;
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
            let k = Coefficients::new(&self.cfg, c1, c2, lr, slot.decay);
            if !fused_update(slot, g, &k)? {
                composed_update(slot, g, &self.cfg, c1, c2, lr)?;
            }
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

/// One parameter's update as tensor ops — the fallback off the CPU, and the fused update's
/// reference in the tests. Each `tensor ⊙ f64` is candle's `affine`, `v · mul + add` in the
/// tensor's dtype: [`fused_update`] follows it operation for operation.
fn composed_update(
    slot: &mut Slot,
    g: &Tensor,
    cfg: &AdamWConfig,
    c1: f64,
    c2: f64,
    lr: f64,
) -> Result<()> {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    slot.m = ((&slot.m * b1)? + (g * (1.0 - b1))?)?;
    slot.v = ((&slot.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
    let m_hat = (&slot.m / c1)?;
    let v_hat = (&slot.v / c2)?;
    let update = (m_hat / (v_hat.sqrt()? + cfg.eps)?)?;
    let theta = slot.var.as_tensor();
    let decayed = (theta * (1.0 - lr * slot.decay))?;
    slot.var.set(&(decayed - (update * lr)?)?)
}

/// The scalars of one parameter's update, in f32 as candle's `affine` rounds them: `x · f`
/// multiplies by `f as f32` and adds 0, `x / f` multiplies by `(1 / f) as f32`, `x + f` by 1 and
/// adds `f as f32`.
struct Coefficients {
    b1: f32,
    one_minus_b1: f32,
    b2: f32,
    one_minus_b2: f32,
    inv_c1: f32,
    inv_c2: f32,
    eps: f32,
    keep: f32,
    lr: f32,
}

impl Coefficients {
    fn new(cfg: &AdamWConfig, c1: f64, c2: f64, lr: f64, decay: f64) -> Self {
        Self {
            b1: cfg.beta1 as f32,
            one_minus_b1: (1.0 - cfg.beta1) as f32,
            b2: cfg.beta2 as f32,
            one_minus_b2: (1.0 - cfg.beta2) as f32,
            inv_c1: (1.0 / c1) as f32,
            inv_c2: (1.0 / c2) as f32,
            eps: cfg.eps as f32,
            keep: (1.0 - lr * decay) as f32,
            lr: lr as f32,
        }
    }

    /// `(m', v', θ')` from one element's `(m, v, θ, g)`: [`composed_update`]'s operations in its
    /// order, each rounded as candle rounds it (the `+ 0.0` of `affine` included: it makes −0
    /// +0).
    #[inline(always)]
    fn apply(&self, m: f32, v: f32, theta: f32, g: f32) -> (f32, f32, f32) {
        let m = (m * self.b1 + 0.0) + (g * self.one_minus_b1 + 0.0);
        let v = (v * self.b2 + 0.0) + ((g * g) * self.one_minus_b2 + 0.0);
        let m_hat = m * self.inv_c1 + 0.0;
        let v_hat = v * self.inv_c2 + 0.0;
        let update = m_hat / (v_hat.sqrt() * 1.0 + self.eps);
        let theta = (theta * self.keep + 0.0) - (update * self.lr + 0.0);
        (m, v, theta)
    }
}

/// Elements per rayon task of the fused update.
const UPDATE_CHUNK: usize = 4096;

/// The update of one parameter in one pass over its four arrays, in parallel: thirteen
/// tensor ops — each a pass and a fresh buffer, one after another on one thread — become one.
/// Values are [`composed_update`]'s to the bit (the test below). Returns `false`, changing
/// nothing, where the parameter is not f32 on the CPU.
fn fused_update(slot: &mut Slot, g: &Tensor, k: &Coefficients) -> Result<bool> {
    let theta = slot.var.as_tensor();
    let all = [theta, &slot.m, &slot.v, g];
    if all
        .iter()
        .any(|t| !t.device().is_cpu() || t.dtype() != candle_core::DType::F32)
    {
        return Ok(false);
    }
    let n = theta.elem_count();
    if all.iter().any(|t| t.elem_count() != n) {
        candle_core::bail!(
            "AdamW: parameter `{}` has {n} values, its moments or gradient {:?}",
            slot.name,
            all.map(Tensor::elem_count)
        );
    }
    let contiguous = all
        .map(Tensor::contiguous)
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let guards = contiguous
        .iter()
        .map(Tensor::storage_and_layout)
        .collect::<Vec<_>>();
    let slices = guards
        .iter()
        .map(|(s, l)| match (&**s, l.contiguous_offsets()) {
            (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(v)), Some((a, b))) => {
                Ok(&v[a..b])
            }
            _ => candle_core::bail!("AdamW: `{}` is not contiguous f32 on the CPU", slot.name),
        })
        .collect::<Result<Vec<_>>>()?;
    let (mut m, mut v, mut th) = (vec![0f32; n], vec![0f32; n], vec![0f32; n]);
    m.par_chunks_mut(UPDATE_CHUNK)
        .zip(v.par_chunks_mut(UPDATE_CHUNK))
        .zip(th.par_chunks_mut(UPDATE_CHUNK))
        .enumerate()
        .for_each(|(c, ((m, v), th))| {
            let at = c * UPDATE_CHUNK;
            let src = |i: usize| &slices[i][at..at + m.len()];
            let (t0, m0, v0, g) = (src(0), src(1), src(2), src(3));
            for i in 0..m.len() {
                (m[i], v[i], th[i]) = k.apply(m0[i], v0[i], t0[i], g[i]);
            }
        });
    drop(slices);
    drop(guards);
    let (shape, dev) = (theta.shape().clone(), theta.device().clone());
    slot.m = Tensor::from_vec(m, &shape, &dev)?;
    slot.v = Tensor::from_vec(v, &shape, &dev)?;
    slot.var.set(&Tensor::from_vec(th, shape, &dev)?)?;
    Ok(true)
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

    /// The fused update against the tensor ops it replaces, bit for bit: moments and parameter
    /// over four steps, with and without decay, gradients that change sign and include ±0, a
    /// parameter longer than one rayon task, and a non-contiguous (transposed) gradient.
    #[test]
    fn the_fused_update_is_the_composed_one_to_the_bit() {
        let dev = Device::Cpu;
        let cfg = AdamWConfig::default();
        let ramp = |n: usize, k: f64, a: f64| {
            Tensor::arange(0f32, n as f32, &dev)
                .and_then(|t| (t * k)?.sin()? * a)
                .expect("ramp")
        };
        let bits = |t: &Tensor| {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values")
                .into_iter()
                .map(f32::to_bits)
                .collect::<Vec<_>>()
        };
        for (rows, cols, decay, lr) in [(3, 5, 0.0, 0.3), (97, 131, 0.1, 1e-3)] {
            let n = rows * cols;
            let slot = || Slot {
                name: "p".into(),
                var: Var::from_tensor(&ramp(n, 0.37, 1.5).reshape((rows, cols)).expect("p"))
                    .expect("var"),
                m: Tensor::zeros((rows, cols), candle_core::DType::F32, &dev).expect("m"),
                v: Tensor::zeros((rows, cols), candle_core::DType::F32, &dev).expect("v"),
                decay,
            };
            let (mut ours, mut theirs) = (slot(), slot());
            for step in 1..=4 {
                let c1 = 1.0 - cfg.beta1.powi(step);
                let c2 = 1.0 - cfg.beta2.powi(step);
                // Zeros of both signs on every seventh entry; a transposed view at step 3.
                let keep =
                    Tensor::from_iter((0..n).map(|i| if i % 7 == 0 { -0.0f32 } else { 1.0 }), &dev)
                        .expect("keep");
                let g = (ramp(n, 0.11 * f64::from(step), 2.0) * keep).expect("g");
                let g = if step == 3 {
                    g.reshape((cols, rows)).and_then(|g| g.t()).expect("t")
                } else {
                    g.reshape((rows, cols)).expect("g")
                };
                let k = Coefficients::new(&cfg, c1, c2, lr, decay);
                assert!(fused_update(&mut ours, &g, &k).expect("fused"));
                composed_update(&mut theirs, &g, &cfg, c1, c2, lr).expect("composed");
                let what = format!("{rows}×{cols}, decay {decay}, step {step}");
                assert!(bits(&ours.m) == bits(&theirs.m), "m differs at {what}");
                assert!(bits(&ours.v) == bits(&theirs.v), "v differs at {what}");
                assert!(
                    bits(ours.var.as_tensor()) == bits(theirs.var.as_tensor()),
                    "parameter differs at {what}"
                );
            }
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
