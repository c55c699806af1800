//! The fused linear layer ([`linear`]): `x Wᵀ + b` as one autograd node.
//!
//! Composed of tensor ops, a linear layer is five nodes — reshape, transpose, matmul, bias add,
//! reshape — and candle's backward gives every node's gradient a fresh zeroed buffer and adds the
//! incoming gradient into it, so the layer's output gradient is copied three times before the
//! first matmul of the backward reads it. Here the layer is one node: the forward runs candle's
//! own matmul on the same layouts, then adds the bias in place; the backward runs the same two
//! matmuls candle's backward runs, on the same layouts, and the bias gradient's row-major column
//! sum. Values and gradients are therefore the composed layer's to the bit (the test below), and
//! training trajectories do not change.

use std::sync::OnceLock;

use candle_core::backend::BackendStorage;
use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor,
};
use faer::MatRef;

use super::bias::{ColumnSum, add_to_rows};
use super::{Gelu, f32_slice, gelu, matmul};

/// `x Wᵀ + b` for `x` of shape (…, in), `w` of shape (out, in) (PyTorch's `Linear` layout) and
/// an optional bias of shape (out); the result has shape (…, out). Differentiable in all three.
/// One fused node on the CPU for f32; composed of tensor ops elsewhere.
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        let (x, w) = (x.contiguous()?, w.contiguous()?);
        match b {
            Some(b) => x.apply_op3(&w, &b.contiguous()?, Linear),
            None => x.apply_op2(&w, Linear),
        }
    } else {
        composed(x, w, b)
    }
}

/// `gelu(x Wᵀ + b)`: the MLP's first layer and its activation as one node (shapes as
/// [`linear`]). The backward takes the pre-activation kept by the forward straight to the layer's
/// gradients, sparing the zeroed buffer and add candle gives the activation's input gradient; the
/// values are [`linear`] then [`gelu`](super::gelu)'s to the bit. One fused node on the CPU for
/// f32; the two ops elsewhere.
pub fn linear_gelu(x: &Tensor, w: &Tensor, b: &Tensor, kind: Gelu) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        LinearThen::apply(GeluEpilogue::new(kind), x, w, b)
    } else {
        super::gelu(&linear(x, w, Some(b))?, kind)
    }
}

/// The layer as tensor ops (the fallback, and the fused op's reference in the tests).
fn composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (rows, d_in) = rows_and_width(x.shape())?;
    let y = x.reshape((rows, d_in))?.matmul(&w.t()?)?;
    let y = match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    };
    y.reshape(out_shape(x.shape(), w.dim(0)?))
}

/// (rows, in) of an input of shape (…, in).
fn rows_and_width(shape: &Shape) -> Result<(usize, usize)> {
    match shape.dims().last() {
        Some(&d_in) if d_in > 0 => Ok((shape.elem_count() / d_in, d_in)),
        _ => candle_core::bail!("linear: input of shape {shape:?} has no feature axis"),
    }
}

/// The input's shape with its last axis replaced by `out`.
fn out_shape(input: &Shape, out: usize) -> Shape {
    let mut dims = input.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    Shape::from(dims)
}

pub(super) struct Linear;

impl Linear {
    /// `x Wᵀ (+ b)`: candle's matmul of the (rows, in) view of `x` by the transposed view of `w`
    /// — the call `x.reshape((rows, in)).matmul(&w.t())` makes — then the bias added row by row.
    pub(super) fn forward(
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        bias: Option<&[f32]>,
    ) -> Result<(CpuStorage, Shape)> {
        let (rows, d_in) = rows_and_width(lx.shape())?;
        let (out, w_in) = lw.shape().dims2()?;
        if out == 0 || w_in != d_in || bias.is_some_and(|b| b.len() != out) {
            candle_core::bail!(
                "linear: input {:?}, weight {:?}, bias {:?}",
                lx.shape(),
                lw.shape(),
                bias.map(<[f32]>::len)
            );
        }
        if !lx.is_contiguous() || !lw.is_contiguous() {
            candle_core::bail!("linear: input and weight must be contiguous");
        }
        let (CpuStorage::F32(xv), CpuStorage::F32(wv)) = (sx, sw) else {
            candle_core::bail!("linear: expected f32 storage");
        };
        let (x0, w0) = (lx.start_offset(), lw.start_offset());
        let w_t = MatRef::from_row_major_slice(&wv[w0..w0 + out * d_in], out, d_in).transpose();
        let mut y = match matmul::by_rows(&xv[x0..x0 + rows * d_in], rows, w_t) {
            Some(y) => y,
            None => {
                let x2 = Layout::contiguous_with_offset((rows, d_in), x0);
                let wt = lw.transpose(0, 1)?;
                let CpuStorage::F32(y) = sx.matmul(sw, (1, rows, out, d_in), &x2, &wt)? else {
                    candle_core::bail!("linear: expected f32 storage");
                };
                y
            }
        };
        if let Some(b) = bias {
            add_to_rows(&mut y, b);
        }
        Ok((CpuStorage::F32(y), out_shape(lx.shape(), out)))
    }

    /// (dx, dw): the two matmuls of candle's matmul backward on the composed layer's layouts —
    /// dy · W and (x's (rows, in) view)ᵀ · dy, the latter transposed back to W's (out, in).
    fn grads(x: &Tensor, w: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)> {
        let (rows, d_in) = rows_and_width(x.shape())?;
        let out = w.dim(0)?;
        let dy = grad.contiguous()?.reshape((rows, out))?;
        let dx = match input_grad(&dy, w)? {
            Some(dx) => dx,
            None => dy.matmul(&w.detach())?,
        }
        .reshape(x.shape())?;
        let dw = x.detach().reshape((rows, d_in))?.t()?.matmul(&dy)?.t()?;
        Ok((dx, dw))
    }

    /// (dx, dw, db): [`Linear::grads`] and the bias gradient, the output gradient's row-major
    /// column sum — a biased layer's three gradients.
    pub(super) fn grads_with_bias(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Self::grads(x, w, grad)?;
        let db = grad
            .contiguous()?
            .apply_op1_no_bwd(&ColumnSum { d: b.elem_count() })?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

/// `dy · W` split by rows ([`matmul::by_rows`]) when both are contiguous f32 CPU tensors and the
/// split applies; `None` sends the caller to candle's matmul.
fn input_grad(dy: &Tensor, w: &Tensor) -> Result<Option<Tensor>> {
    let ((rows, out), (w_out, d_in)) = (dy.dims2()?, w.dims2()?);
    if w_out != out {
        candle_core::bail!(
            "linear grad: gradient {:?}, weight {:?}",
            dy.shape(),
            w.shape()
        );
    }
    let (sd, ld) = dy.storage_and_layout();
    let (sw, lw) = w.storage_and_layout();
    let (Storage::Cpu(CpuStorage::F32(d)), Storage::Cpu(CpuStorage::F32(wv))) = (&*sd, &*sw) else {
        return Ok(None);
    };
    let (Some((d0, d1)), Some((w0, w1))) = (ld.contiguous_offsets(), lw.contiguous_offsets())
    else {
        return Ok(None);
    };
    let b = MatRef::from_row_major_slice(&wv[w0..w1], out, d_in);
    matmul::by_rows(&d[d0..d1], rows, b)
        .map(|dx| Tensor::from_vec(dx, (rows, d_in), dy.device()))
        .transpose()
}

impl CustomOp2 for Linear {
    fn name(&self) -> &'static str {
        "study-linear"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::forward(sx, lx, sw, lw, None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw) = Self::grads(x, w, grad_res)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl CustomOp3 for Linear {
    fn name(&self) -> &'static str {
        "study-linear-bias"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        Self::forward(sx, lx, sw, lw, Some(f32_slice(sb, lb)?))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        Self::grads_with_bias(x, w, b, grad_res)
    }
}

/// What a [`LinearThen`] node applies to the layer's output `y = x Wᵀ + b`, and its gradient.
pub(super) trait Epilogue: Send + Sync + 'static {
    /// The node's name in candle's graph.
    const NAME: &'static str;
    /// The node's output from `y` (contiguous, of layout `l`).
    fn forward(&self, y: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)>;
    /// The gradient of `y` from `y`, the node's output and that output's gradient.
    fn backward(&self, y: &Tensor, res: &Tensor, grad: &Tensor) -> Result<Tensor>;
}

/// `epilogue(x Wᵀ + b)` as one node: the layer's output is kept for the epilogue's backward,
/// whose gradient goes straight to the layer's three gradients — no zeroed buffer and add for it
/// in between, as two nodes would have.
pub(super) struct LinearThen<E> {
    epilogue: E,
    y: OnceLock<Tensor>,
}

impl<E: Epilogue> LinearThen<E> {
    /// The node's op, before its forward has run.
    pub(super) fn new(epilogue: E) -> Self {
        Self {
            epilogue,
            y: OnceLock::new(),
        }
    }

    /// The node on `x`, `w`, `b` (CPU, f32).
    pub(super) fn apply(epilogue: E, x: &Tensor, w: &Tensor, b: &Tensor) -> Result<Tensor> {
        let op = Self::new(epilogue);
        x.contiguous()?
            .apply_op3(&w.contiguous()?, &b.contiguous()?, op)
    }
}

impl LinearThen<GeluEpilogue> {
    /// The node's output, `gelu(y)`, computed again from the kept `y` and its tanh — the
    /// forward's values to the bit — for a caller that does not keep it.
    pub(super) fn epilogue_output(&self) -> Result<Tensor> {
        let (Some(y), Some(tanh)) = (self.y.get(), self.epilogue.tanh.get()) else {
            candle_core::bail!("{}: output wanted before forward", GeluEpilogue::NAME);
        };
        gelu::from_tanh(y, tanh)
    }
}

impl<E: Epilogue> CustomOp3 for LinearThen<E> {
    fn name(&self) -> &'static str {
        E::NAME
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (y, shape) = Linear::forward(sx, lx, sw, lw, Some(f32_slice(sb, lb)?))?;
        let out = self
            .epilogue
            .forward(&y, &Layout::contiguous(shape.clone()))?;
        let CpuStorage::F32(y) = y else {
            candle_core::bail!("{}: expected f32 storage", E::NAME);
        };
        if self
            .y
            .set(Tensor::from_vec(y, shape, &candle_core::Device::Cpu)?)
            .is_err()
        {
            candle_core::bail!("{}: one node ran its forward twice", E::NAME);
        }
        Ok(out)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let Some(y) = self.y.get() else {
            candle_core::bail!("{}: backward before forward", E::NAME);
        };
        Linear::grads_with_bias(x, w, b, &self.epilogue.backward(y, res, grad_res)?)
    }
}

/// GELU as [`linear_gelu`]'s epilogue. The forward keeps each element's tanh, so that the
/// backward need not compute it again (the same values: [`gelu::grad_with_tanh`]).
pub(super) struct GeluEpilogue {
    kind: Gelu,
    tanh: OnceLock<Tensor>,
}

impl GeluEpilogue {
    pub(super) fn new(kind: Gelu) -> Self {
        Self {
            kind,
            tanh: OnceLock::new(),
        }
    }
}

impl Epilogue for GeluEpilogue {
    const NAME: &'static str = "study-linear-gelu";

    fn forward(&self, y: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let (post, tanh) = gelu::forward_keeping_tanh(self.kind, f32_slice(y, l)?);
        let tanh = Tensor::from_vec(tanh, l.shape(), &candle_core::Device::Cpu)?;
        if self.tanh.set(tanh).is_err() {
            candle_core::bail!("{}: one node ran its forward twice", Self::NAME);
        }
        Ok((CpuStorage::F32(post), l.shape().clone()))
    }

    fn backward(&self, y: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Tensor> {
        let Some(tanh) = self.tanh.get() else {
            candle_core::bail!("{}: backward before forward", Self::NAME);
        };
        gelu::grad_with_tanh(self.kind, y, tanh, grad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::{assert_same_gradient_bits, bits};
    use candle_core::{Device, Var};

    /// Every element of `a` and `b` equal as bits.
    fn assert_bits_equal(a: &Tensor, b: &Tensor, what: &str) {
        assert_eq!(a.dims(), b.dims(), "{what}: shapes");
        assert!(bits(a) == bits(b), "{what}: values differ");
    }

    fn ramp(dev: &Device, n: usize, k: f64, shape: &[usize]) -> Tensor {
        Tensor::arange(0f32, n as f32, dev)
            .and_then(|t| ((t * k)?.sin()? * 1.3)?.reshape(shape))
            .expect("ramp")
    }

    /// The fused layer against the composed one it replaces (with and without bias, a 3-d and a
    /// 2-d input, sizes above gemm's threading threshold so that two threads split the work, and
    /// the cpu shape, whose products [`matmul::by_rows`] splits on the test's two threads): the
    /// output and all three gradients, bit for bit.
    #[test]
    fn the_fused_linear_is_the_composed_one_to_the_bit() {
        rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool")
            .install(fused_linear_is_the_composed_one);
    }

    fn fused_linear_is_the_composed_one() {
        let dev = Device::Cpu;
        for (dims, d_out, bias) in [
            (vec![4usize, 7, 12], 20usize, true),
            (vec![4, 7, 12], 20, false),
            (vec![9, 5], 3, true),
            (vec![64, 27, 48], 192, true),
        ] {
            let d_in = *dims.last().expect("dims");
            let n: usize = dims.iter().product();
            let x = Var::from_tensor(&ramp(&dev, n, 0.37, &dims)).expect("x");
            let w = Var::from_tensor(&ramp(&dev, d_out * d_in, 0.11, &[d_out, d_in])).expect("w");
            let b = Var::from_tensor(&ramp(&dev, d_out, 0.7, &[d_out])).expect("b");
            let mut up_dims = dims.clone();
            *up_dims.last_mut().expect("dims") = d_out;
            let up = ramp(&dev, n / d_in * d_out, 0.13, &up_dims);
            let bias = bias.then(|| b.as_tensor());
            // The composed layer as the model wrote it: the bias through the fused bias add.
            let theirs = {
                let (rows, _) = rows_and_width(x.as_tensor().shape()).expect("rows");
                let y = x
                    .as_tensor()
                    .reshape((rows, d_in))
                    .and_then(|t| t.matmul(&w.as_tensor().t()?))
                    .expect("matmul");
                let y = match bias {
                    Some(b) => crate::ops::add_bias(&y, b).expect("bias"),
                    None => y,
                };
                y.reshape(up_dims.as_slice()).expect("reshape")
            };
            let ours = linear(x.as_tensor(), w.as_tensor(), bias).expect("ours");
            assert_bits_equal(&ours, &theirs, "output");
            let grads = |y: &Tensor| {
                (y * &up)
                    .and_then(|t| t.sum_all()?.backward())
                    .expect("bwd")
            };
            let (ga, gb) = (grads(&ours), grads(&theirs));
            let mut vars = vec![("x", &x), ("w", &w)];
            if bias.is_some() {
                vars.push(("b", &b));
            }
            for (name, v) in vars {
                let (p, q) = (
                    ga.get(v.as_tensor()).expect("ours"),
                    gb.get(v.as_tensor()).expect("theirs"),
                );
                assert_bits_equal(p, q, name);
            }
            if bias.is_none() {
                assert!(ga.get(b.as_tensor()).is_none(), "no bias, no bias gradient");
            }
            assert_bits_equal(
                &composed(x.as_tensor(), w.as_tensor(), bias).expect("composed"),
                &ours,
                "fallback",
            );
        }
    }

    /// The fused layer + GELU against the two nodes it replaces, with either GELU kernel: the
    /// output and all three gradients, bit for bit.
    #[test]
    fn the_fused_linear_gelu_is_linear_then_gelu_to_the_bit() {
        let dev = Device::Cpu;
        for (dims, d_out) in [(vec![4usize, 7, 12], 20usize), (vec![64, 27, 48], 192)] {
            for kind in [Gelu::Exact, Gelu::Vectorised] {
                let d_in = *dims.last().expect("dims");
                let n: usize = dims.iter().product();
                let x = Var::from_tensor(&ramp(&dev, n, 0.37, &dims)).expect("x");
                let w =
                    Var::from_tensor(&ramp(&dev, d_out * d_in, 0.11, &[d_out, d_in])).expect("w");
                let b = Var::from_tensor(&ramp(&dev, d_out, 0.7, &[d_out])).expect("b");
                let mut up_dims = dims.clone();
                *up_dims.last_mut().expect("dims") = d_out;
                let up = ramp(&dev, n / d_in * d_out, 0.13, &up_dims);
                let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), b.as_tensor());
                let theirs = linear(xt, wt, Some(bt))
                    .and_then(|pre| crate::ops::gelu(&pre, kind))
                    .expect("theirs");
                let ours = linear_gelu(xt, wt, bt, kind).expect("ours");
                assert_bits_equal(&ours, &theirs, "output");
                let vars = [("x", &x), ("w", &w), ("b", &b)];
                assert_same_gradient_bits(&ours, &theirs, &up, &vars, &format!("{kind:?}"));
            }
        }
    }

    #[test]
    fn mismatched_shapes_are_an_error_naming_them() {
        let dev = Device::Cpu;
        let x = Tensor::zeros((2, 3, 4), DType::F32, &dev).expect("x");
        let w = Tensor::zeros((5, 6), DType::F32, &dev).expect("w");
        let b = Tensor::zeros(5, DType::F32, &dev).expect("b");
        let err = linear(&x, &w, Some(&b)).expect_err("in 4 vs 6").to_string();
        assert!(err.contains("[2, 3, 4]") && err.contains("[5, 6]"), "{err}");
        let w = Tensor::zeros((5, 4), DType::F32, &dev).expect("w");
        let b = Tensor::zeros(3, DType::F32, &dev).expect("b");
        let err = linear(&x, &w, Some(&b))
            .expect_err("bias 3 vs 5")
            .to_string();
        assert!(err.contains("Some(3)"), "{err}");
    }
}
