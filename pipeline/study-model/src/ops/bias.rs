//! The fused bias add ([`add_bias`]), whose bias gradient is a row-major column sum.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use super::{ROWS_PER_TASK, column_sums, f32_slice};

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
        let mut out = y.to_vec();
        add_to_rows(&mut out, b);
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

/// Adds `b` to every row of the row-major (rows, `b.len()`) buffer `y`, in place (the fused bias
/// add and the fused linear layer's epilogue).
pub(super) fn add_to_rows(y: &mut [f32], b: &[f32]) {
    y.par_chunks_exact_mut(b.len())
        .with_min_len(ROWS_PER_TASK)
        .for_each(|row| {
            for (v, c) in row.iter_mut().zip(b) {
                *v += c;
            }
        });
}

/// Sum of the rows of a row-major (rows, d) tensor → (d).
pub(super) struct ColumnSum {
    pub(super) d: usize,
}

impl CustomOp1 for ColumnSum {
    fn name(&self) -> &'static str {
        "study-column-sum"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let g = f32_slice(s, l)?;
        if self.d == 0 || !g.len().is_multiple_of(self.d) {
            candle_core::bail!("column sum: {:?} is not rows of {}", l.shape(), self.d);
        }
        let (d, mut out) = (self.d, vec![0f32; self.d]);
        column_sums(&mut out, g.len() / d, |cols, r, j0| {
            for (o, v) in cols.iter_mut().zip(&g[r * d + j0..]) {
                *o += v;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from(self.d)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::{assert_same_gradients, max_diff};
    use candle_core::{Device, Var};

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
}
