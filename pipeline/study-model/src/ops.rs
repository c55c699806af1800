//! Fused CPU kernels with their own backward pass, where candle's composed autograd is slow.
//!
//! Profiled first (`examples/probe_ops.rs`, a (2112, 192) f32 tensor, 2 threads): candle's
//! `gelu` forward + backward took 19 ms — its backward is a chain of elementwise tensor ops —
//! against 4 ms for a 192×192 matmul of the same rows. [`gelu`] computes candle's f32 expression
//! and its derivative in one pass each, with libm's scalar `tanhf` ([`Gelu::Exact`], equal to
//! candle's forward to the bit) or eight lanes at a time ([`Gelu::Vectorised`], within 2e-6).
//! On other devices, or other dtypes, it falls back to candle's `gelu`.
//!
//! Likewise a LayerNorm composed of tensor ops took 18 ms forward + backward at that size, mostly
//! in the reductions over rows that the weight and bias gradients need (candle reduces over a
//! leading axis ~50× slower than over the last); [`layer_norm`] does the forward in one pass and
//! the three gradients in another. (candle-nn's own fused `layer_norm` has no backward at all.)

use rayon::prelude::*;
use wide::f32x8;

pub use crate::gpt::Gelu;

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, D, DType, Layout, Result, Shape, Tensor,
};

const C: f32 = 0.797_884_6; // √(2/π), as candle's f32 GELU
const A: f32 = 0.044_715;

/// Elements per rayon task of an elementwise kernel.
const PAR_CHUNK: usize = 4096;

/// tanh-GELU and its derivative on eight lanes at once: `(gelu(v), gelu'(v))`.
///
/// `tanh` is `wide`'s vectorised one (exp-based, within a few ulp of libm's `tanhf`). Profiled on
/// the `cpu` pre-training (1 thread, `perf record`): libm's scalar `tanhf`/`expm1f` took 33% of
/// the step, one element at a time; this takes eight (four per SSE instruction without AVX).
fn gelu_lanes(v: f32x8) -> (f32x8, f32x8) {
    let (c, a, half, one) = (
        f32x8::splat(C),
        f32x8::splat(A),
        f32x8::splat(0.5),
        f32x8::ONE,
    );
    let v2 = v * v;
    let t = (c * v * (one + a * v2)).tanh();
    let value = half * v * (one + t);
    let du = c * (one + f32x8::splat(3.0) * a * v2);
    let slope = half * (one + t) + half * v * (one - t * t) * du;
    (value, slope)
}

/// `out[i] = f(x[i], g[i])` eight lanes at a time; the tail is zero-padded to a full vector.
fn map_lanes(out: &mut [f32], x: &[f32], g: &[f32], f: &impl Fn(f32x8, f32x8) -> f32x8) {
    let lanes = |s: &[f32]| f32x8::new(std::array::from_fn(|i| s.get(i).copied().unwrap_or(0.0)));
    for ((o, x), g) in out.chunks_mut(8).zip(x.chunks(8)).zip(g.chunks(8)) {
        let r = f(lanes(x), lanes(g)).to_array();
        o.copy_from_slice(&r[..o.len()]);
    }
}

/// tanh-approximation GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, differentiable.
/// `kind` picks the CPU kernel ([`Gelu::Exact`]: libm's scalar `tanhf`, bit-identical to every
/// earlier run; [`Gelu::Vectorised`]: eight lanes at a time).
pub fn gelu(x: &Tensor, kind: Gelu) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(GeluOp(kind))
    } else {
        x.gelu()
    }
}

/// The f32 values of a contiguous CPU tensor (the wrappers make inputs contiguous).
fn f32_slice<'a>(s: &'a CpuStorage, l: &Layout) -> Result<&'a [f32]> {
    let CpuStorage::F32(v) = s else {
        candle_core::bail!("fused CPU op: expected f32 storage");
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused CPU op: input must be contiguous"),
    }
}

/// `(gelu(v), gelu'(v))` with libm's scalar `tanhf`.
fn gelu_scalar(v: f32) -> (f32, f32) {
    let t = f32::tanh(C * v * (1.0 + A * v * v));
    let du = C * (1.0 + 3.0 * A * v * v);
    (
        0.5 * v * (1.0 + t),
        0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du,
    )
}

/// `out[i] = f(x[i], g[i])` with `kind`'s kernel; elementwise, so splitting the work across
/// threads cannot change a value.
fn gelu_map(
    kind: Gelu,
    x: &[f32],
    g: &[f32],
    scalar: impl Fn(f32, f32) -> f32 + Sync,
    lanes: impl Fn(f32x8, f32x8) -> f32x8 + Sync,
) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let parts = out
        .par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)));
    match kind {
        Gelu::Exact => parts.for_each(|(o, (x, g))| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                *o = scalar(x, g);
            }
        }),
        Gelu::Vectorised => parts.for_each(|(o, (x, g))| map_lanes(o, x, g, &lanes)),
    }
    out
}

struct GeluOp(Gelu);

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "study-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let y = gelu_map(
            self.0,
            x,
            x,
            |v, _| gelu_scalar(v).0,
            |v, _| gelu_lanes(v).0,
        );
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(
            arg.contiguous()?.apply_op2_no_bwd(&g, &GeluGrad(self.0))?,
        ))
    }
}

/// `grad · gelu'(x)` in one pass.
struct GeluGrad(Gelu);

impl CustomOp2 for GeluGrad {
    fn name(&self) -> &'static str {
        "study-gelu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        if x.len() != g.len() {
            candle_core::bail!("fused gelu grad: {} inputs, {} gradients", x.len(), g.len());
        }
        let out = gelu_map(
            self.0,
            x,
            g,
            |v, gr| gr * gelu_scalar(v).1,
            |v, gr| gr * gelu_lanes(v).1,
        );
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `y + b` for `y` of shape (rows, d) and a bias `b` of shape (d), differentiable in both. The
/// bias gradient is a sum over rows, which candle's broadcast backward computes ~50× slower than a
/// row-major loop (it took longer than the 192×192 matmul it follows).
pub fn add_bias(y: &Tensor, b: &Tensor) -> Result<Tensor> {
    if y.device().is_cpu() && y.dtype() == DType::F32 {
        y.contiguous()?.apply_op2(&b.contiguous()?, AddBias)
    } else {
        y.broadcast_add(b)
    }
}

struct AddBias;

impl CustomOp2 for AddBias {
    fn name(&self) -> &'static str {
        "study-add-bias"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        let d = b.len();
        if d == 0 || y.len() % d != 0 {
            candle_core::bail!("fused bias add: {:?} + ({d})", l1.shape());
        }
        let out = y
            .chunks_exact(d)
            .flat_map(|row| row.iter().zip(b).map(|(v, c)| v + c))
            .collect();
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _y: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let db = grad_res
            .contiguous()?
            .apply_op1_no_bwd(&ColumnSum { d: b.elem_count() })?;
        Ok((Some(grad_res.clone()), Some(db)))
    }
}

/// Sum of the rows of a row-major (rows, d) tensor → (d).
struct ColumnSum {
    d: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "study-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l)?;
        let mut out = vec![0f32; self.d];
        for row in g.chunks_exact(self.d) {
            for (o, v) in out.iter_mut().zip(row) {
                *o += v;
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(self.d)))
    }
}

/// LayerNorm over the last axis (biased variance, as PyTorch), differentiable in `x`, `weight`
/// and `bias`. Fused on the CPU for f32; composed of tensor ops elsewhere.
pub fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op3(
            &weight.contiguous()?,
            &bias.contiguous()?,
            LayerNorm { eps: eps as f32 },
        )
    } else {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centred = x.broadcast_sub(&mean)?;
        let var = centred.sqr()?.mean_keepdim(D::Minus1)?;
        centred
            .broadcast_div(&(var + eps)?.sqrt()?)?
            .broadcast_mul(weight)?
            .broadcast_add(bias)
    }
}

/// Per row of width `d`: (mean, 1/√(var + eps)).
fn row_stats(row: &[f32], eps: f32) -> (f32, f32) {
    let d = row.len() as f32;
    let mean = row.iter().sum::<f32>() / d;
    let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / d;
    (mean, 1.0 / (var + eps).sqrt())
}

struct LayerNorm {
    eps: f32,
}

impl CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "study-layer-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let d = w.len();
        if d == 0 || b.len() != d || x.len() % d != 0 {
            candle_core::bail!(
                "fused layer norm: shapes {:?}, {d}, {}",
                l1.shape(),
                b.len()
            );
        }
        let mut y = Vec::with_capacity(x.len());
        for row in x.chunks_exact(d) {
            let (mean, rstd) = row_stats(row, self.eps);
            y.extend(
                row.iter()
                    .zip(w)
                    .zip(b)
                    .map(|((v, g), c)| (v - mean) * rstd * g + c),
            );
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        weight: &Tensor,
        _bias: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = weight.elem_count();
        let rows = x.elem_count() / d;
        let packed = x.contiguous()?.apply_op3_no_bwd(
            &weight.contiguous()?,
            &grad_res.contiguous()?,
            &LayerNormGrad { eps: self.eps },
        )?;
        let dx = packed.narrow(0, 0, rows)?.reshape(x.shape())?;
        let dw = packed.narrow(0, rows, 1)?.reshape(d)?;
        let db = packed.narrow(0, rows + 1, 1)?.reshape(d)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// The three LayerNorm gradients in one pass, packed as (rows + 2, d): dx, then dweight, dbias.
struct LayerNormGrad {
    eps: f32,
}

impl CustomOp3 for LayerNormGrad {
    fn name(&self) -> &'static str {
        "study-layer-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (x, w, dy) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        let d = w.len();
        if d == 0 || dy.len() != x.len() || x.len() % d != 0 {
            candle_core::bail!("fused layer norm grad: shapes do not match");
        }
        let rows = x.len() / d;
        let mut out = vec![0f32; (rows + 2) * d];
        let (dx_all, rest) = out.split_at_mut(rows * d);
        let (dw, db) = rest.split_at_mut(d);
        let mut xhat = vec![0f32; d];
        for ((row, g), dx) in x
            .chunks_exact(d)
            .zip(dy.chunks_exact(d))
            .zip(dx_all.chunks_exact_mut(d))
        {
            let (mean, rstd) = row_stats(row, self.eps);
            let (mut m1, mut m2) = (0f32, 0f32);
            for j in 0..d {
                xhat[j] = (row[j] - mean) * rstd;
                let gw = g[j] * w[j];
                m1 += gw;
                m2 += gw * xhat[j];
                dw[j] += g[j] * xhat[j];
                db[j] += g[j];
            }
            let (m1, m2) = (m1 / d as f32, m2 / d as f32);
            for j in 0..d {
                dx[j] = rstd * (g[j] * w[j] - m1 - xhat[j] * m2);
            }
        }
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

/// The additive causal mask of a context of `t` tokens: (t, t), 0 where key `j ≤` query `i`,
/// −∞ above the diagonal.
pub fn causal_mask(t: usize, device: &candle_core::Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Tensor::from_vec(mask, (t, t), device)
}

/// Causal attention weights: `softmax(scale · scores + mask)` over the last axis of `scores`
/// (…, T, T), where query `i` sees keys `j ≤ i` only; differentiable in `scores`. `mask` is the
/// additive (T, T) causal mask (0 on and below the diagonal, −∞ above) that the composed fallback
/// uses; the fused CPU kernel applies the same causality itself.
///
/// Profiled (`examples/probe_attn.rs`, (64, 3, T, T) scores, 2 threads): the composed scale →
/// mask add → softmax took 1.8 ms forward + backward at T = 27 and 17.9 ms at T = 63, against
/// 0.7 and 2.4 ms for QKᵀ — candle's softmax backward is a chain of broadcast ops and
/// reductions. Fused: one pass each way, the backward `dx = scale · y ⊙ (dy − Σ dy ⊙ y)` from the
/// saved output; 0.7 and 2.5 ms. In a whole training step: 10–15% faster at the cpu preset's
/// context, a third less peak memory at 63 (README benchmark table).
pub fn causal_softmax(scores: &Tensor, scale: f64, mask: &Tensor) -> Result<Tensor> {
    if scores.device().is_cpu() && scores.dtype() == DType::F32 {
        scores.contiguous()?.apply_op1(CausalSoftmax {
            scale: scale as f32,
        })
    } else {
        candle_nn::ops::softmax(&(scores * scale)?.broadcast_add(mask)?, D::Minus1)
    }
}

struct CausalSoftmax {
    scale: f32,
}

/// The side T of (…, T, T) scores.
fn square_side(l: &Layout) -> Result<usize> {
    match l.dims() {
        [.., a, b] if a == b && *a > 0 => Ok(*a),
        d => candle_core::bail!("fused causal softmax: scores must be (…, T, T), got {d:?}"),
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "study-causal-softmax"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s, l)?;
        let t = square_side(l)?;
        let mut y = vec![0f32; x.len()];
        // Row by row (a row's value never depends on how rows are split across threads). Same
        // operations, in the same order, as the composed version: scale, max, exp, sum, divide.
        y.par_chunks_mut(t)
            .zip(x.par_chunks(t))
            .enumerate()
            .with_min_len(64)
            .for_each(|(r, (out, row))| {
                let seen = r % t + 1;
                let mut max = f32::NEG_INFINITY;
                for (o, &v) in out[..seen].iter_mut().zip(row) {
                    *o = v * self.scale;
                    max = max.max(*o);
                }
                let mut sum = 0f32;
                for o in &mut out[..seen] {
                    *o = (*o - max).exp();
                    sum += *o;
                }
                for o in &mut out[..seen] {
                    *o /= sum;
                }
            });
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, _arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let g = grad_res.contiguous()?;
        Ok(Some(res.contiguous()?.apply_op2_no_bwd(
            &g,
            &CausalSoftmaxGrad { scale: self.scale },
        )?))
    }
}

/// `scale · y ⊙ (dy − Σ_last dy ⊙ y)` from the softmax output `y` and its gradient `dy`.
struct CausalSoftmaxGrad {
    scale: f32,
}

impl CustomOp2 for CausalSoftmaxGrad {
    fn name(&self) -> &'static str {
        "study-causal-softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, dy) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
        if y.len() != dy.len() {
            candle_core::bail!(
                "fused causal softmax grad: {} outputs, {} gradients",
                y.len(),
                dy.len()
            );
        }
        let t = square_side(l1)?;
        let mut dx = vec![0f32; y.len()];
        dx.par_chunks_mut(t)
            .zip(y.par_chunks(t).zip(dy.par_chunks(t)))
            .enumerate()
            .with_min_len(64)
            .for_each(|(r, (out, (yr, gr)))| {
                let seen = r % t + 1;
                let dot: f32 = yr[..seen].iter().zip(gr).map(|(a, b)| a * b).sum();
                for ((o, &a), &b) in out[..seen].iter_mut().zip(yr).zip(gr) {
                    *o = self.scale * a * (b - dot);
                }
            });
        Ok((CpuStorage::F32(dx), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Largest absolute difference between two tensors of one shape.
    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
            .expect("diff")
    }

    /// Asserts that the gradients of Σ ours ⊙ up and Σ theirs ⊙ up agree within `tol` for every
    /// variable in `vars`.
    fn assert_same_gradients(ours: &Tensor, theirs: &Tensor, up: &Tensor, vars: &[&Var], tol: f32) {
        let ga = (ours * up)
            .and_then(|t| t.sum_all()?.backward())
            .expect("bwd");
        let gb = (theirs * up)
            .and_then(|t| t.sum_all()?.backward())
            .expect("bwd");
        for v in vars {
            let (p, q) = (
                ga.get(v.as_tensor()).expect("g"),
                gb.get(v.as_tensor()).expect("g"),
            );
            assert!(
                max_diff(p, q) < tol,
                "gradient differs by {}",
                max_diff(p, q)
            );
        }
    }

    #[test]
    fn fused_causal_softmax_equals_the_composed_one_with_gradients() {
        let dev = Device::Cpu;
        let (b, h, t) = (2, 3, 7);
        let n = b * h * t * t;
        let wave = |k: f64, a: f64| {
            Tensor::arange(0f32, n as f32, &dev)
                .and_then(|v| ((v * k)?.sin()? * a)?.reshape((b, h, t, t)))
        };
        let x = Var::from_tensor(&wave(0.61, 3.0).expect("scores")).expect("var");
        let up = wave(0.23, 1.0).expect("upstream");
        let mask = causal_mask(t, &dev).expect("mask");
        let scale = 0.25;
        let ours = causal_softmax(x.as_tensor(), scale, &mask).expect("ours");
        let theirs = candle_nn::ops::softmax(
            &(x.as_tensor() * scale)
                .and_then(|s| s.broadcast_add(&mask))
                .expect("masked"),
            D::Minus1,
        )
        .expect("theirs");
        // The forward repeats the composed operations in order: equal to the bit.
        assert_eq!(max_diff(&ours, &theirs), 0.0);
        // Rows sum to one and nothing above the diagonal is attended to.
        let v = ours
            .flatten_all()
            .and_then(|v| v.to_vec1::<f32>())
            .expect("values");
        for (r, row) in v.chunks(t).enumerate() {
            let i = r % t;
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
            assert!(
                row[i + 1..].iter().all(|&p| p == 0.0),
                "row {r} looks ahead"
            );
        }
        assert_same_gradients(&ours, &theirs, &up, &[&x], 1e-6);
        // A shape that is not (…, T, T) is a clear error.
        let bad = Tensor::zeros((2, 3, 4), DType::F32, &dev).expect("bad");
        let err = causal_softmax(&bad, 1.0, &mask).expect_err("not square");
        assert!(err.to_string().contains("(…, T, T)"), "{err}");
    }

    #[test]
    fn fused_bias_add_equals_broadcast_add_with_gradients() {
        let dev = Device::Cpu;
        let y = Var::from_tensor(
            &Tensor::arange(0f32, 60.0, &dev)
                .and_then(|t| (t * 0.3)?.sin()?.reshape((12, 5)))
                .expect("y"),
        )
        .expect("var");
        let b = Var::from_tensor(&Tensor::new(&[0.5f32, -1.0, 2.0, 0.0, 3.0], &dev).expect("b"))
            .expect("var");
        let up = Tensor::arange(0f32, 60.0, &dev)
            .and_then(|t| (t * 0.7)?.cos()?.reshape((12, 5)))
            .expect("up");
        let ours = add_bias(y.as_tensor(), b.as_tensor()).expect("ours");
        let theirs = y.as_tensor().broadcast_add(b.as_tensor()).expect("theirs");
        assert_eq!(max_diff(&ours, &theirs), 0.0);
        assert_same_gradients(&ours, &theirs, &up, &[&y, &b], 1e-5);
    }

    #[test]
    fn fused_layer_norm_equals_the_composed_one_with_gradients() {
        let dev = Device::Cpu;
        let ramp = |n: usize, k: f64| {
            Tensor::arange(0f32, n as f32, &dev)
                .and_then(|t| ((t * k)?.sin()? * 1.5)?.affine(1.0, 0.2))
        };
        let x = Var::from_tensor(
            &ramp(3 * 5 * 8, 0.37)
                .and_then(|t| t.reshape((3, 5, 8)))
                .expect("x"),
        )
        .expect("var");
        let w = Var::from_tensor(&ramp(8, 1.1).expect("w")).expect("var");
        let b = Var::from_tensor(&ramp(8, 0.7).expect("b")).expect("var");
        let up = ramp(3 * 5 * 8, 0.13)
            .and_then(|t| t.reshape((3, 5, 8)))
            .expect("upstream");
        let composed = |x: &Tensor| -> Result<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let c = x.broadcast_sub(&mean)?;
            let var = c.sqr()?.mean_keepdim(D::Minus1)?;
            c.broadcast_div(&(var + 1e-5)?.sqrt()?)?
                .broadcast_mul(w.as_tensor())?
                .broadcast_add(b.as_tensor())
        };
        let ours = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).expect("ours");
        let theirs = composed(x.as_tensor()).expect("theirs");
        assert!(max_diff(&ours, &theirs) < 1e-5);
        assert_same_gradients(&ours, &theirs, &up, &[&x, &w, &b], 1e-4);
    }

    #[test]
    fn fused_gelu_equals_candles_forward_and_gradient() {
        // 803 values (not a multiple of the 8 lanes) over [-4.1, 4.1], where GELU bends.
        let x = Var::from_tensor(
            &(Tensor::arange(-401f32, 402.0, &Device::Cpu).expect("range") / 97.0)
                .expect("scaled")
                .reshape((11, 73))
                .expect("2-d"),
        )
        .expect("var");
        let w = (Tensor::arange(0f32, 803.0, &Device::Cpu).expect("w") / 803.0)
            .and_then(|t| t.reshape((11, 73)))
            .expect("weights");
        let theirs = x.as_tensor().gelu().expect("theirs");
        // Exact: candle's f32 expression with libm's tanhf, to the bit.
        let exact = gelu(x.as_tensor(), Gelu::Exact).expect("exact");
        assert_eq!(
            max_diff(&exact, &theirs),
            0.0,
            "same f32 forward expression"
        );
        assert_same_gradients(&exact, &theirs, &w, &[&x], 1e-5);
        // Vectorised tanh against libm's: a few ulp of values up to 4.1.
        let fast = gelu(x.as_tensor(), Gelu::Vectorised).expect("vectorised");
        assert!(
            max_diff(&fast, &theirs) < 2e-6,
            "{}",
            max_diff(&fast, &theirs)
        );
        assert!(
            max_diff(&fast, &theirs) > 0.0,
            "a different kernel, not the same one"
        );
        assert_same_gradients(&fast, &theirs, &w, &[&x], 1e-5);
        // Far tails: exactly 0 and x where tanh saturates, nothing non-finite.
        let tails = Tensor::new(&[-60f32, -12.0, 0.0, 12.0, 60.0], &Device::Cpu).expect("tails");
        for kind in [Gelu::Exact, Gelu::Vectorised] {
            let v = gelu(&tails, kind)
                .and_then(|t| t.to_vec1::<f32>())
                .expect("gelu");
            assert_eq!(v, vec![-0.0, -0.0, 0.0, 12.0, 60.0], "{kind:?}");
        }
    }
}
