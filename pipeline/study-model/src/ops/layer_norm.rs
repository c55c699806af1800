//! The fused LayerNorm ([`layer_norm`]): the forward in one pass, the three gradients in another.

use candle_core::{CpuStorage, CustomOp3, D, DType, Layout, Result, Shape, Tensor};

use rayon::prelude::*;

use super::{ROWS_PER_TASK, column_sums, f32_slice, zeroed};

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

pub(super) struct LayerNorm {
    pub(super) eps: f32,
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
        let mut y = zeroed(x.len());
        // Row by row, rows split over threads (a row's values never depend on the split).
        y.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(out, row)| {
                let (mean, rstd) = row_stats(row, self.eps);
                for (((o, v), g), c) in out.iter_mut().zip(row).zip(w).zip(b) {
                    *o = (v - mean) * rstd * g + c;
                }
            });
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
        let mut out = zeroed((rows + 2) * d);
        let (dx_all, rest) = out.split_at_mut(rows * d);
        let (dw, db) = rest.split_at_mut(d);
        // dx row by row, rows split over threads; x̂ kept for the weight gradient.
        let mut xhat = zeroed(rows * d);
        dx_all
            .par_chunks_mut(d)
            .zip(xhat.par_chunks_mut(d))
            .zip(x.par_chunks(d).zip(dy.par_chunks(d)))
            .with_min_len(ROWS_PER_TASK)
            .for_each(|((dx, xh), (row, g))| {
                let (mean, rstd) = row_stats(row, self.eps);
                let (mut m1, mut m2) = (0f32, 0f32);
                for j in 0..d {
                    xh[j] = (row[j] - mean) * rstd;
                    let gw = g[j] * w[j];
                    m1 += gw;
                    m2 += gw * xh[j];
                }
                let (m1, m2) = (m1 / d as f32, m2 / d as f32);
                for j in 0..d {
                    dx[j] = rstd * (g[j] * w[j] - m1 - xh[j] * m2);
                }
            });
        // dweight = Σ_rows dy ⊙ x̂ and dbias = Σ_rows dy, each column summed over rows in order.
        column_sums(dw, rows, |cols, r, j0| {
            let at = r * d + j0;
            for ((o, g), xh) in cols.iter_mut().zip(&dy[at..]).zip(&xhat[at..]) {
                *o += g * xh;
            }
        });
        column_sums(db, rows, |cols, r, j0| {
            for (o, g) in cols.iter_mut().zip(&dy[r * d + j0..]) {
                *o += g;
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((rows + 2, d))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::{assert_same_gradients, max_diff};
    use candle_core::{Device, Var};

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
}
