//! The transformer block ([`block`]) as one autograd node.
//!
//! Built from the fused ops, a block is seven nodes — LayerNorm, the projected attention, its
//! output projection, the residual add, the MLP's first layer with its GELU, its second layer and
//! the residual add — and candle's backward gives each of their six activations' gradients a
//! zeroed buffer and adds into it: per block nine (B, T, d)-sized zeroings and eleven adds (the
//! MLP's hidden activation counts four), run one after another on a single thread
//! ([`crate::process_env`]) while the other threads wait. Here the block is one node: its
//! backward hands the gradients from one fused op's backward to the next itself, and sums the two
//! that meet at each residual stream in one parallel pass. What is left to candle is the block
//! input's gradient and the parameters'.
//!
//! A candle custom op takes at most three tensors, and a block has eleven (the input and ten
//! parameters), so the parameters travel as one flat vector, `Tensor::cat` of the ten: candle's
//! backward of `cat` hands each parameter its slice of the flat gradient. The copy costs
//! 12·d² + 13·d floats a block each way, against the (B·T)·d-sized buffers it spares (B·T is
//! 1,728 at the cpu shape, 5,088 at the paper shape, against 12·d = 576 and 2,304).
//!
//! The node runs the fused ops' own forward and backward code ([`LayerNorm`], [`LinearThen`] with
//! [`Attention`] and [`GeluEpilogue`], [`Linear`]) on views of the flat vector, so values and
//! gradients are the seven nodes' to the bit (the test below) and training trajectories do not
//! change. Where the seven nodes' graph lets candle accumulate a gradient into a zeroed buffer,
//! `0 + g`, the node passes `g` on as it is: the two differ only where `g` is −0 (made +0), and
//! a zero's sign cannot reach any other value — the backward multiplies and adds gradients,
//! never divides by them — while candle's accumulation of the gradients the node returns makes
//! their zeros +0 as before.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::attention::Attention;
use super::layer_norm::LayerNorm;
use super::linear::{GeluEpilogue, Linear, LinearThen};
use super::{
    ELEMENTS_PER_TASK, Gelu, f32_slice, layer_norm, linear, linear_gelu,
    projected_causal_attention, zip_map,
};

/// A block's parameters, as the official `Block` names them (`ln_1`, `attn.c_attn`,
/// `attn.c_proj`, `c_fc`, `c_proj`), each `(weight, bias)`; weights in PyTorch's `Linear` layout
/// (out, in).
#[derive(Debug, Clone, Copy)]
pub struct BlockParams<'a> {
    /// The LayerNorm (d), (d).
    pub ln_1: (&'a Tensor, &'a Tensor),
    /// Attention's input projection to queries, keys and values (3d, d), (3d).
    pub c_attn: (&'a Tensor, &'a Tensor),
    /// Attention's output projection (d, d), (d).
    pub attn_proj: (&'a Tensor, &'a Tensor),
    /// The MLP's first layer (h, d), (h).
    pub c_fc: (&'a Tensor, &'a Tensor),
    /// The MLP's second layer (d, h), (d).
    pub c_proj: (&'a Tensor, &'a Tensor),
}

impl<'a> BlockParams<'a> {
    /// The ten tensors in the flat vector's order.
    fn tensors(&self) -> [&'a Tensor; PARAMS] {
        [
            self.ln_1.0,
            self.ln_1.1,
            self.c_attn.0,
            self.c_attn.1,
            self.attn_proj.0,
            self.attn_proj.1,
            self.c_fc.0,
            self.c_fc.1,
            self.c_proj.0,
            self.c_proj.1,
        ]
    }
}

const PARAMS: usize = 10;
const LN_W: usize = 0;
const LN_B: usize = 1;
const ATTN_W: usize = 2;
const ATTN_B: usize = 3;
const ATTN_PROJ_W: usize = 4;
const ATTN_PROJ_B: usize = 5;
const FC_W: usize = 6;
const FC_B: usize = 7;
const PROJ_W: usize = 8;
const PROJ_B: usize = 9;

/// The official block on `x` (B, T, d):
///
/// ```text
/// u  = ln_1(x)
/// a  = u + attn.c_proj(attention(attn.c_attn(u)))
/// x' = a + c_proj(gelu(c_fc(a)))
/// ```
///
/// Differentiable in `x` and every parameter. One node on the CPU for f32 ([`composed`]'s values
/// and gradients to the bit); the fused ops elsewhere.
pub fn block(
    x: &Tensor,
    p: &BlockParams,
    n_head: usize,
    gelu: Gelu,
    eps: f64,
    mask: &Tensor,
) -> Result<Tensor> {
    if !(x.device().is_cpu() && x.dtype() == DType::F32) {
        return composed(x, p, n_head, gelu, eps, mask);
    }
    let tensors = p.tensors();
    let shapes = tensors.map(|t| t.shape().clone());
    let mut offsets = [0; PARAMS];
    let mut at = 0;
    for (o, s) in offsets.iter_mut().zip(&shapes) {
        *o = at;
        at += s.elem_count();
    }
    let flat = Tensor::cat(
        &tensors
            .map(|t| t.flatten_all())
            .into_iter()
            .collect::<Result<Vec<_>>>()?,
        0,
    )?;
    let op = Block {
        n_head,
        gelu,
        eps: eps as f32,
        shapes,
        offsets,
        saved: OnceLock::new(),
    };
    x.contiguous()?.apply_op2(&flat, op)
}

/// The block as the fused ops' seven nodes (the fallback, and the node's reference in the
/// tests): the model's code before this node.
fn composed(
    x: &Tensor,
    p: &BlockParams,
    n_head: usize,
    gelu: Gelu,
    eps: f64,
    mask: &Tensor,
) -> Result<Tensor> {
    let u = layer_norm(x, p.ln_1.0, p.ln_1.1, eps)?;
    let heads = projected_causal_attention(&u, p.c_attn.0, p.c_attn.1, n_head, mask)?;
    let a = (&u + linear(&heads, p.attn_proj.0, Some(p.attn_proj.1))?)?;
    let post = linear_gelu(&a, p.c_fc.0, p.c_fc.1, gelu)?;
    &a + linear(&post, p.c_proj.0, Some(p.c_proj.1))?
}

struct Block {
    n_head: usize,
    gelu: Gelu,
    eps: f32,
    /// Each parameter's shape and offset in the flat vector.
    shapes: [Shape; PARAMS],
    offsets: [usize; PARAMS],
    saved: OnceLock<Saved>,
}

/// What the backward needs of the forward: the activations that are an op's input, and the
/// two fused ops that keep state of their own (the projection's output, the attention weights;
/// the MLP's pre-activation).
struct Saved {
    u: Tensor,
    attn: LinearThen<Attention>,
    heads: Tensor,
    a: Tensor,
    mlp: LinearThen<GeluEpilogue>,
}

/// `a + b` element-wise into `b` (the residual adds: `a` is the stream, `b` the branch), in
/// parallel; the values do not depend on the split.
fn add_into(a: &[f32], b: &mut [f32]) {
    b.par_chunks_mut(ELEMENTS_PER_TASK)
        .zip(a.par_chunks(ELEMENTS_PER_TASK))
        .for_each(|(b, a)| b.iter_mut().zip(a).for_each(|(b, a)| *b += a));
}

impl Block {
    /// Parameter `i`'s layout in a contiguous flat vector starting at `base`.
    fn view(&self, base: usize, i: usize) -> Layout {
        Layout::contiguous_with_offset(self.shapes[i].clone(), base + self.offsets[i])
    }

    /// Parameter `i` as a view of the flat vector.
    fn param(&self, flat: &Tensor, i: usize) -> Result<Tensor> {
        flat.narrow(0, self.offsets[i], self.shapes[i].elem_count())?
            .reshape(&self.shapes[i])
    }

    fn f32_vec(s: CpuStorage) -> Result<Vec<f32>> {
        match s {
            CpuStorage::F32(v) => Ok(v),
            _ => candle_core::bail!("transformer block: expected f32 storage"),
        }
    }
}

impl CustomOp2 for Block {
    fn name(&self) -> &'static str {
        "study-transformer-block"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let total = self.offsets[PARAMS - 1] + self.shapes[PARAMS - 1].elem_count();
        if lp.dims() != [total] || !lp.is_contiguous() || lx.dims().len() != 3 {
            candle_core::bail!(
                "transformer block: input {:?}, flat parameters {:?} (contiguous: {}), \
                 expected (B, T, d) and [{total}]",
                lx.dims(),
                lp.dims(),
                lp.is_contiguous()
            );
        }
        let base = lp.start_offset();
        let v = |i| self.view(base, i);
        let dev = candle_core::Device::Cpu;
        let shape = lx.shape().clone();
        let ln = LayerNorm { eps: self.eps };
        let (u, _) = CustomOp3::cpu_fwd(&ln, sx, lx, sp, &v(LN_W), sp, &v(LN_B))?;
        let l_u = Layout::contiguous(shape.clone());
        let mut qkv_dims = shape.dims().to_vec();
        qkv_dims[2] = self.shapes[ATTN_W].dims()[0];
        let attn = LinearThen::new(Attention::new(&qkv_dims, self.n_head)?);
        let (heads, _) = CustomOp3::cpu_fwd(&attn, &u, &l_u, sp, &v(ATTN_W), sp, &v(ATTN_B))?;
        let bias = f32_slice(sp, &v(ATTN_PROJ_B))?;
        let (y, _) = Linear::forward(&heads, &l_u, sp, &v(ATTN_PROJ_W), Some(bias))?;
        let mut a = Self::f32_vec(y)?;
        add_into(f32_slice(&u, &l_u)?, &mut a);
        let a = CpuStorage::F32(a);
        let mlp = LinearThen::new(GeluEpilogue::new(self.gelu));
        let (post, post_shape) = CustomOp3::cpu_fwd(&mlp, &a, &l_u, sp, &v(FC_W), sp, &v(FC_B))?;
        let l_post = Layout::contiguous(post_shape.clone());
        let bias = f32_slice(sp, &v(PROJ_B))?;
        let (out, _) = Linear::forward(&post, &l_post, sp, &v(PROJ_W), Some(bias))?;
        let mut out = Self::f32_vec(out)?;
        add_into(f32_slice(&a, &l_u)?, &mut out);
        let tensor =
            |s: CpuStorage, shape: &Shape| Tensor::from_vec(Self::f32_vec(s)?, shape, &dev);
        let saved = Saved {
            u: tensor(u, &shape)?,
            attn,
            heads: tensor(heads, &shape)?,
            a: tensor(a, &shape)?,
            mlp,
        };
        if self.saved.set(saved).is_err() {
            candle_core::bail!("transformer block: one node ran its forward twice");
        }
        Ok((CpuStorage::F32(out), shape))
    }

    fn bwd(
        &self,
        x: &Tensor,
        flat: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let s = self.saved.get().ok_or_else(|| {
            candle_core::Error::Msg("transformer block: backward before forward".into())
        })?;
        let flat = flat.detach();
        let p = |i| self.param(&flat, i);
        // x' = a + out: the output's gradient is `out`'s, and one of the two that make `a`'s.
        let g = grad_res.contiguous()?;
        // `post`, the second layer's input, again from the pre-activation and tanh the first
        // layer's node keeps (the forward's values to the bit), instead of a fourth (B, T, h)
        // buffer kept through the step.
        let post = s.mlp.epilogue_output()?;
        let (d_post, d_proj_w, d_proj_b) =
            Linear::grads_with_bias(&post, &p(PROJ_W)?, &p(PROJ_B)?, &g)?;
        let (d_a_mlp, d_fc_w, d_fc_b) =
            CustomOp3::bwd(&s.mlp, &s.a, &p(FC_W)?, &p(FC_B)?, &post, &some(d_post)?)?;
        let d_a = accumulate(&g, &some(d_a_mlp)?)?;
        // a = u + y: `y`'s gradient is `a`'s, and one of the two that make `u`'s.
        let (d_heads, d_attn_proj_w, d_attn_proj_b) =
            Linear::grads_with_bias(&s.heads, &p(ATTN_PROJ_W)?, &p(ATTN_PROJ_B)?, &d_a)?;
        let (d_u_attn, d_attn_w, d_attn_b) = CustomOp3::bwd(
            &s.attn,
            &s.u,
            &p(ATTN_W)?,
            &p(ATTN_B)?,
            &s.heads,
            &some(d_heads)?,
        )?;
        let d_u = accumulate(&d_a, &some(d_u_attn)?)?;
        let ln = LayerNorm { eps: self.eps };
        let (d_x, d_ln_w, d_ln_b) = CustomOp3::bwd(&ln, x, &p(LN_W)?, &p(LN_B)?, &s.u, &d_u)?;
        let grads = [
            d_ln_w,
            d_ln_b,
            d_attn_w,
            d_attn_b,
            d_attn_proj_w,
            d_attn_proj_b,
            d_fc_w,
            d_fc_b,
            d_proj_w,
            d_proj_b,
        ]
        .into_iter()
        .map(|g| some(g)?.flatten_all())
        .collect::<Result<Vec<_>>>()?;
        Ok((d_x, Some(Tensor::cat(&grads, 0)?)))
    }
}

/// A fused op's gradient that it always computes.
fn some(g: Option<Tensor>) -> Result<Tensor> {
    g.ok_or_else(|| candle_core::Error::Msg("transformer block: a gradient is missing".into()))
}

/// The gradient of an activation two ops read: the sum of the two, element-wise, in parallel
/// (the values do not depend on the split, nor on the order of the two).
fn accumulate(g1: &Tensor, g2: &Tensor) -> Result<Tensor> {
    g1.contiguous()?.apply_op2_no_bwd(&g2.contiguous()?, &Sum)
}

struct Sum;

impl CustomOp2 for Sum {
    fn name(&self) -> &'static str {
        "study-gradient-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip_map(self.name(), (s1, l1), (s2, l2), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::causal_mask;
    use crate::ops::check::{assert_same_gradient_bits, bits, ramp};
    use candle_core::{Device, Var};

    /// The block node against the fused ops' seven nodes: a small shape and the cpu preset's
    /// (3 heads of 16, T = 27, above gemm's threading threshold), with either GELU kernel; the
    /// output and the gradients of the input and of all ten parameters, bit for bit.
    #[test]
    fn the_block_node_is_the_seven_fused_nodes_to_the_bit() {
        let dev = Device::Cpu;
        for (b, t, d, nh) in [(2usize, 5usize, 12usize, 3usize), (64, 27, 48, 3)] {
            for kind in [Gelu::Exact, Gelu::Vectorised] {
                let h = 4 * d;
                let var = |n: usize, k: f64, a: f64, shape: &[usize]| {
                    Var::from_tensor(&ramp(&dev, n, k, a, shape)).expect("var")
                };
                let vars = [
                    ("x", var(b * t * d, 0.37, 2.0, &[b, t, d])),
                    ("ln_1.weight", var(d, 0.9, 1.2, &[d])),
                    ("ln_1.bias", var(d, 0.5, 0.3, &[d])),
                    ("c_attn.weight", var(3 * d * d, 0.11, 0.4, &[3 * d, d])),
                    ("c_attn.bias", var(3 * d, 0.7, 0.1, &[3 * d])),
                    ("attn.c_proj.weight", var(d * d, 0.23, 0.3, &[d, d])),
                    ("attn.c_proj.bias", var(d, 0.3, 0.1, &[d])),
                    ("c_fc.weight", var(h * d, 0.17, 0.3, &[h, d])),
                    ("c_fc.bias", var(h, 0.6, 0.1, &[h])),
                    ("c_proj.weight", var(d * h, 0.19, 0.3, &[d, h])),
                    ("c_proj.bias", var(d, 0.4, 0.1, &[d])),
                ];
                let v = |i: usize| vars[i].1.as_tensor();
                let p = BlockParams {
                    ln_1: (v(1), v(2)),
                    c_attn: (v(3), v(4)),
                    attn_proj: (v(5), v(6)),
                    c_fc: (v(7), v(8)),
                    c_proj: (v(9), v(10)),
                };
                let mask = causal_mask(t, &dev).expect("mask");
                let ours = block(v(0), &p, nh, kind, 1e-5, &mask).expect("ours");
                let theirs = composed(v(0), &p, nh, kind, 1e-5, &mask).expect("theirs");
                let what = format!("{b}×{t}×{d}, {kind:?}");
                assert!(bits(&ours) == bits(&theirs), "output differs at {what}");
                let up = ramp(&dev, b * t * d, 0.13, 1.0, &[b, t, d]);
                let named: Vec<(&str, &Var)> = vars.iter().map(|(n, v)| (*n, v)).collect();
                assert_same_gradient_bits(&ours, &theirs, &up, &named, &what);
            }
        }
    }
}
