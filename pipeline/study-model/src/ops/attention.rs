//! The core of causal self-attention ([`causal_attention`]) — from the fused projection `qkv` to
//! the heads' merged output — as one autograd node.
//!
//! Composed of tensor ops the core is seventeen nodes per block: three `narrow`s of `qkv` with a
//! reshape, a transpose and a copy each, QKᵀ, the causal softmax, ·V, and the head merge's
//! transpose and reshape. candle's backward gives every node's gradient a zeroed buffer and adds
//! into it, and pads each `narrow`'s gradient with zeros to the full (B, T, 3d) first, so the
//! backward copied and added the (B, T, 3d) gradient six times before the projection's matmul read
//! it. Here the core is one node, and it works per batch row, in parallel over rows, where
//! candle's batched matmul runs its small per-head products one after another.
//!
//! The forward runs candle's own matmul on strided views of `qkv` — the products the composed
//! graph computes on contiguous copies, with the same (m, n, k) and the same row/column
//! orientation of every operand — and the causal softmax's own row kernel; the backward runs the
//! four matmuls candle's matmul backward runs, oriented as it orients them, and the softmax's
//! gradient row kernel. Values and gradients are the composed graph's to the bit (the tests
//! below), so training trajectories do not change. The attention weights are kept for the
//! backward, as the composed graph keeps them; the raw scores are not.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::linear::{Epilogue, LinearThen, linear};
use super::softmax::{causal_softmax, softmax_block, softmax_grad_row};
use super::{f32_slice, zeroed};

/// `softmax(q kᵀ / √hs + mask) v` for every head, merged back to (B, T, d), from `qkv` (B, T, 3d)
/// — queries, keys and values side by side, each `n_head` heads of width `hs = d / n_head`, as
/// the official `c_attn` projection lays them out. `mask` is the additive (T, T) causal mask
/// ([`super::causal_mask`]) the composed fallback uses; the fused CPU kernel applies the same
/// causality itself. Differentiable in `qkv`. One fused node on the CPU for f32; composed of
/// tensor ops elsewhere.
pub fn causal_attention(qkv: &Tensor, n_head: usize, mask: &Tensor) -> Result<Tensor> {
    let heads = Heads::of(qkv.dims(), n_head)?;
    if qkv.device().is_cpu() && qkv.dtype() == DType::F32 {
        qkv.contiguous()?.apply_op1(Attention {
            heads,
            weights: OnceLock::new(),
        })
    } else {
        composed(qkv, heads, mask)
    }
}

/// `causal_attention(x Wᵀ + b)`: attention's input projection (`c_attn`, `w` of shape (3d, in))
/// and its core as one node, so that the backward takes the core's `qkv` gradient straight to the
/// projection's gradients instead of through a zeroed (B, T, 3d) buffer and an add. Values and
/// gradients are [`linear`] then [`causal_attention`]'s to the bit. One fused node on the CPU for
/// f32; the two elsewhere.
pub fn projected_causal_attention(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    n_head: usize,
    mask: &Tensor,
) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return causal_attention(&linear(x, w, Some(b))?, n_head, mask);
    }
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = w.dim(0)?;
    }
    LinearThen::apply(Attention::new(&dims, n_head)?, x, w, b)
}

/// The attention core as tensor ops (the fallback, and the fused node's reference in the tests):
/// the model's code before the fusion.
fn composed(qkv: &Tensor, h: Heads, mask: &Tensor) -> Result<Tensor> {
    let part = |slot: usize| -> Result<Tensor> {
        qkv.narrow(2, slot * h.d, h.d)?
            .reshape((h.b, h.t, h.nh, h.hs))?
            .transpose(1, 2)?
            .contiguous()
    };
    let (q, k, v) = (part(0)?, part(1)?, part(2)?);
    let att = causal_softmax(&q.matmul(&k.t()?)?, h.scale(), mask)?;
    att.matmul(&v)?.transpose(1, 2)?.reshape((h.b, h.t, h.d))
}

/// The geometry: batch rows, context, width d, heads and head width.
#[derive(Debug, Clone, Copy)]
struct Heads {
    b: usize,
    t: usize,
    d: usize,
    nh: usize,
    hs: usize,
}

impl Heads {
    fn of(dims: &[usize], n_head: usize) -> Result<Self> {
        match *dims {
            [b, t, d3] if n_head > 0 && t > 0 && d3 > 0 && d3.is_multiple_of(3 * n_head) => {
                Ok(Self {
                    b,
                    t,
                    d: d3 / 3,
                    nh: n_head,
                    hs: d3 / 3 / n_head,
                })
            }
            _ => candle_core::bail!(
                "causal attention: qkv must be (B, T, 3·d) with d divisible by n_head = \
                 {n_head}, got {dims:?}"
            ),
        }
    }

    /// 1/√hs, as the model computes it (in f64, then f32 in the softmax).
    fn scale(&self) -> f64 {
        1.0 / (self.hs as f64).sqrt()
    }

    /// The (nh, T, hs) view of slot `slot` (0 = q, 1 = k, 2 = v) of batch row `b` of a
    /// contiguous `qkv` whose data starts at `base`.
    fn slot(&self, base: usize, b: usize, slot: usize) -> Layout {
        let (t, d) = (self.t, self.d);
        Layout::new(
            (self.nh, t, self.hs).into(),
            vec![self.hs, 3 * d, 1],
            base + b * t * 3 * d + slot * d,
        )
    }

    /// The (nh, T, hs) view of batch row `b` of a contiguous (B, T, d) tensor (the merged output,
    /// or its gradient) whose data starts at `base`.
    fn merged(&self, base: usize, b: usize) -> Layout {
        Layout::new(
            (self.nh, self.t, self.hs).into(),
            vec![self.hs, self.d, 1],
            base + b * self.t * self.d,
        )
    }

    /// One batch row's (nh, T, T) weights, contiguous.
    fn square(&self) -> Layout {
        Layout::contiguous((self.nh, self.t, self.t))
    }
}

/// The f32 values of a CPU storage a matmul returned.
fn values(s: &CpuStorage) -> Result<&[f32]> {
    match s {
        CpuStorage::F32(v) => Ok(v),
        _ => candle_core::bail!("causal attention: expected f32 storage"),
    }
}

/// Writes the head-major (nh, T, hs) block `src` into the T rows of width `width` of `dst`,
/// head `h` at columns `col + h·hs ..`, each value through `f`.
fn merge_heads(
    dst: &mut [f32],
    width: usize,
    col: usize,
    src: &[f32],
    h: Heads,
    f: impl Fn(f32) -> f32,
) {
    for (head, block) in src.chunks_exact(h.t * h.hs).enumerate() {
        for (i, row) in block.chunks_exact(h.hs).enumerate() {
            let at = i * width + col + head * h.hs;
            for (o, &v) in dst[at..at + h.hs].iter_mut().zip(row) {
                *o = f(v);
            }
        }
    }
}

/// The composed graph's gradient accumulation: a gradient lands in a zeroed buffer, `0 + g`,
/// which is `g` except that −0 becomes +0.
fn accumulated(g: f32) -> f32 {
    0.0 + g
}

pub(super) struct Attention {
    heads: Heads,
    /// Per batch row, its (nh, T, T) attention weights, for the backward.
    weights: OnceLock<Vec<CpuStorage>>,
}

impl Attention {
    /// The core for a `qkv` of dimensions `dims` (B, T, 3·d), before its forward has run.
    pub(super) fn new(dims: &[usize], n_head: usize) -> Result<Self> {
        Ok(Self {
            heads: Heads::of(dims, n_head)?,
            weights: OnceLock::new(),
        })
    }
}

impl CustomOp1 for Attention {
    fn name(&self) -> &'static str {
        "study-causal-attention"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let h = self.heads;
        if l.dims() != [h.b, h.t, 3 * h.d] || !l.is_contiguous() {
            candle_core::bail!(
                "causal attention: qkv {:?} (contiguous: {}) is not the ({}, {}, {}) it was built for",
                l.dims(),
                l.is_contiguous(),
                h.b,
                h.t,
                3 * h.d
            );
        }
        let (base, scale) = (l.start_offset(), h.scale() as f32);
        let kt = |b| h.slot(base, b, 1).transpose(1, 2);
        let mut y = zeroed(h.b * h.t * h.d);
        let weights = y
            .par_chunks_mut(h.t * h.d)
            .enumerate()
            .map(|(b, y_b)| -> Result<CpuStorage> {
                // q · kᵀ: (nh, T, hs) × (nh, hs, T), as `q.matmul(&k.t())` on the copies.
                let scores = s.matmul(s, (h.nh, h.t, h.t, h.hs), &h.slot(base, b, 0), &kt(b)?)?;
                let CpuStorage::F32(mut p) = scores else {
                    candle_core::bail!("causal attention: expected f32 scores");
                };
                for block in p.chunks_exact_mut(h.t * h.t) {
                    softmax_block(block, h.t, scale);
                }
                let p = CpuStorage::F32(p);
                // weights · v: (nh, T, T) × (nh, T, hs).
                let out = p.matmul(s, (h.nh, h.t, h.hs, h.t), &h.square(), &h.slot(base, b, 2))?;
                merge_heads(y_b, h.d, 0, values(&out)?, h, std::convert::identity);
                Ok(p)
            })
            .collect::<Result<Vec<_>>>()?;
        if self.weights.set(weights).is_err() {
            candle_core::bail!("causal attention: one node ran its forward twice");
        }
        Ok((CpuStorage::F32(y), Shape::from((h.b, h.t, h.d))))
    }

    fn bwd(&self, qkv: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        let weights = self.weights.get().ok_or_else(|| {
            candle_core::Error::Msg("causal attention: backward before forward".into())
        })?;
        let grad = AttentionGrad {
            heads: self.heads,
            weights,
        };
        Ok(Some(qkv.apply_op2_no_bwd(&grad_res.contiguous()?, &grad)?))
    }
}

/// The core as the epilogue of its input projection ([`projected_causal_attention`]).
impl Epilogue for Attention {
    const NAME: &'static str = "study-projected-causal-attention";

    fn forward(&self, qkv: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        self.cpu_fwd(qkv, l)
    }

    fn backward(&self, qkv: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        self.bwd(qkv, res, grad)?
            .ok_or_else(|| candle_core::Error::Msg("causal attention: no gradient".into()))
    }
}

/// The gradient of `qkv` from `qkv`, the output's gradient and the saved weights.
struct AttentionGrad<'a> {
    heads: Heads,
    weights: &'a [CpuStorage],
}

impl CustomOp2 for AttentionGrad<'_> {
    fn name(&self) -> &'static str {
        "study-causal-attention-grad"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let h = self.heads;
        if lq.dims() != [h.b, h.t, 3 * h.d]
            || lg.dims() != [h.b, h.t, h.d]
            || !lq.is_contiguous()
            || !lg.is_contiguous()
            || self.weights.len() != h.b
        {
            candle_core::bail!(
                "causal attention grad: qkv {:?}, gradient {:?}, {} weight blocks",
                lq.dims(),
                lg.dims(),
                self.weights.len()
            );
        }
        f32_slice(sg, lg)?;
        let (qb, gb, scale) = (lq.start_offset(), lg.start_offset(), h.scale() as f32);
        let (t, hs, nh) = (h.t, h.hs, h.nh);
        let mut dqkv = zeroed(h.b * t * 3 * h.d);
        dqkv.par_chunks_mut(t * 3 * h.d)
            .zip(self.weights.par_iter())
            .enumerate()
            .try_for_each(|(b, (dq_b, p))| -> Result<()> {
                let dy = h.merged(gb, b);
                // The matmul `weights · v`: d(weights) = dy · vᵀ, dv = weightsᵀ · dy.
                let vt = h.slot(qb, b, 2).transpose(1, 2)?;
                let dp = sg.matmul(sq, (nh, t, t, hs), &dy, &vt)?;
                let dv = p.matmul(sg, (nh, t, hs, t), &h.square().transpose(1, 2)?, &dy)?;
                // The softmax, row by row: d(scores) in place of d(weights).
                let CpuStorage::F32(mut ds) = dp else {
                    candle_core::bail!("causal attention grad: expected f32");
                };
                for (r, (g, y)) in ds
                    .chunks_exact_mut(t)
                    .zip(values(p)?.chunks_exact(t))
                    .enumerate()
                {
                    softmax_grad_row(g, y, r % t + 1, scale);
                }
                let ds = CpuStorage::F32(ds);
                // The matmul `q · kᵀ`: dq = d(scores) · k, d(kᵀ) = qᵀ · d(scores) (hs × T).
                let dq = ds.matmul(sq, (nh, t, hs, t), &h.square(), &h.slot(qb, b, 1))?;
                let qt = h.slot(qb, b, 0).transpose(1, 2)?;
                let dkt = sq.matmul(&ds, (nh, hs, t, t), &qt, &h.square())?;
                merge_heads(dq_b, 3 * h.d, 0, values(&dq)?, h, accumulated);
                merge_heads(dq_b, 3 * h.d, 2 * h.d, values(&dv)?, h, accumulated);
                // d(kᵀ) is (nh, hs, T): transpose it into the key columns.
                for (head, block) in values(&dkt)?.chunks_exact(hs * t).enumerate() {
                    for (c, col) in block.chunks_exact(t).enumerate() {
                        let at = h.d + head * hs + c;
                        for (j, &v) in col.iter().enumerate() {
                            dq_b[j * 3 * h.d + at] = accumulated(v);
                        }
                    }
                }
                Ok(())
            })?;
        Ok((CpuStorage::F32(dqkv), lq.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::causal_mask;
    use crate::ops::check::{assert_same_gradient_bits, bits, ramp};
    use candle_core::{Device, Var};

    /// The fused core against the composed one it replaces — a small shape, the cpu preset's
    /// (3 heads of 16, T = 27) and the paper's (6 heads of 32, T = 159) on fewer rows — output
    /// and `qkv` gradient bit for bit, at the thread count the test runs on.
    #[test]
    fn the_fused_attention_is_the_composed_one_to_the_bit() {
        let dev = Device::Cpu;
        for (b, t, d, nh) in [(2, 5, 12, 3), (3, 27, 48, 3), (2, 159, 192, 6)] {
            let n = b * t * 3 * d;
            let qkv = Var::from_tensor(&ramp(&dev, n, 0.37, 2.5, &[b, t, 3 * d])).expect("qkv");
            let up = ramp(&dev, b * t * d, 0.13, 1.0, &[b, t, d]);
            let mask = causal_mask(t, &dev).expect("mask");
            let heads = Heads::of(qkv.dims(), nh).expect("heads");
            let ours = causal_attention(qkv.as_tensor(), nh, &mask).expect("ours");
            let theirs = composed(qkv.as_tensor(), heads, &mask).expect("theirs");
            assert!(
                bits(&ours) == bits(&theirs),
                "output differs at {b}×{t}×{d}"
            );
            let grad = |y: &Tensor| {
                let g = (y * &up)
                    .and_then(|t| t.sum_all()?.backward())
                    .expect("bwd");
                g.get(qkv.as_tensor()).expect("qkv gradient").clone()
            };
            let (ga, gb) = (grad(&ours), grad(&theirs));
            assert!(bits(&ga) == bits(&gb), "gradient differs at {b}×{t}×{d}");
            // Causality: a query never reads a later key, so the first position's output
            // depends on the first row of qkv alone.
            let row0 = ours.narrow(1, 0, 1).expect("row");
            let alone = causal_attention(
                &qkv.as_tensor().narrow(1, 0, 1).expect("first"),
                nh,
                &mask
                    .narrow(0, 0, 1)
                    .and_then(|m| m.narrow(1, 0, 1))
                    .expect("mask"),
            )
            .expect("alone");
            assert!(
                bits(&row0) == bits(&alone),
                "the first position looks ahead"
            );
        }
    }

    /// The projection and the core as one node against the two nodes it replaces: output and
    /// the gradients of the input, weight and bias, bit for bit.
    #[test]
    fn the_projected_attention_is_linear_then_attention_to_the_bit() {
        let dev = Device::Cpu;
        for (b, t, d, nh) in [(2, 5, 12, 3), (4, 27, 48, 3)] {
            let x = Var::from_tensor(&ramp(&dev, b * t * d, 0.37, 1.5, &[b, t, d])).expect("x");
            let w = Var::from_tensor(&ramp(&dev, 3 * d * d, 0.11, 0.3, &[3 * d, d])).expect("w");
            let bias = Var::from_tensor(&ramp(&dev, 3 * d, 0.7, 0.2, &[3 * d])).expect("b");
            let up = ramp(&dev, b * t * d, 0.13, 1.0, &[b, t, d]);
            let mask = causal_mask(t, &dev).expect("mask");
            let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
            let ours = projected_causal_attention(xt, wt, bt, nh, &mask).expect("ours");
            let theirs = linear(xt, wt, Some(bt))
                .and_then(|qkv| causal_attention(&qkv, nh, &mask))
                .expect("theirs");
            assert!(bits(&ours) == bits(&theirs), "output at {b}×{t}×{d}");
            let vars = [("x", &x), ("w", &w), ("b", &bias)];
            assert_same_gradient_bits(&ours, &theirs, &up, &vars, &format!("{b}×{t}×{d}"));
        }
    }

    #[test]
    fn a_width_the_heads_do_not_divide_is_an_error_naming_it() {
        let dev = Device::Cpu;
        let mask = causal_mask(4, &dev).expect("mask");
        let qkv = Tensor::zeros((2, 4, 3 * 10), DType::F32, &dev).expect("qkv");
        let err = causal_attention(&qkv, 3, &mask)
            .expect_err("10 is not divisible by 3")
            .to_string();
        assert!(
            err.contains("n_head = 3") && err.contains("[2, 4, 30]"),
            "{err}"
        );
        let flat = Tensor::zeros((4, 36), DType::F32, &dev).expect("flat");
        assert!(causal_attention(&flat, 3, &mask).is_err());
    }
}
