//! The fused token-mean cross-entropy ([`cross_entropy`]): one autograd node from the logits to
//! the loss.
//!
//! Composed of tensor ops (`log_softmax`, `gather`, a weighted `sum_all`, a division), the loss is
//! thirteen nodes, six of them the size of the logits, each with a zeroed gradient buffer and an
//! add in the backward, and the max's backward four more full-size passes. Here the forward is
//! one pass per row and the backward one more: at the `cpu` shape (1 thread) the training step
//! went from 36.65 to 37.68 steps/s (medians of three interleaved runs).
//!
//! The values are the composed graph's to the bit, because every f32 operation of that graph is
//! restated in the same order: the max, `x − max`, libm's `expf` and `logf`, candle's row sum
//! (its AVX kernel, [`candle_sum`]), and in the backward the same products, quotient and sums that
//! candle's backward of each node computes (the derivation is at [`Saved`]). The test holds the
//! loss and the logits' gradient to the composed graph bit for bit; where candle would sum
//! differently (no AVX2, not x86-64) the composed graph runs instead.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp2, D, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::exp::exp_in_place;
use super::{ROWS_PER_TASK, f32_slice};

/// Token-mean cross-entropy of `logits` (B, T, V) against `targets` (B, T), ignoring positions
/// whose target is `ignore`: the mean over all non-ignored tokens of the batch. Returns (loss,
/// number of counted tokens). One fused node on an x86-64 CPU with AVX2 for f32 logits and u32
/// targets; the composed graph elsewhere, with the same values.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor, ignore: u32) -> Result<(Tensor, usize)> {
    let fused = logits.device().is_cpu()
        && logits.dtype() == DType::F32
        && targets.dtype() == DType::U32
        && candle_sums_like_ours();
    if !fused {
        return composed(logits, targets, ignore);
    }
    let (bsz, t, v) = logits.dims3()?;
    if v == 0 || targets.dims() != [bsz, t] {
        candle_core::bail!(
            "cross_entropy: logits {:?} against targets {:?}",
            logits.dims(),
            targets.dims()
        );
    }
    let targets = targets.flatten_all()?.contiguous()?;
    let count = targets
        .to_vec1::<u32>()?
        .iter()
        .filter(|&&y| y != ignore)
        .count();
    let op = CrossEntropy {
        vocab: v,
        ignore,
        mul: (1.0 / count.max(1) as f64) as f32,
        saved: OnceLock::new(),
    };
    let loss = logits.contiguous()?.apply_op2(&targets, op)?;
    Ok((loss, count))
}

/// The loss as tensor ops: the fallback, and the fused op's reference in the tests.
fn composed(logits: &Tensor, targets: &Tensor, ignore: u32) -> Result<(Tensor, usize)> {
    let (bsz, t, v) = logits.dims3()?;
    let logits = logits.reshape((bsz * t, v))?;
    let targets = targets.flatten_all()?;
    let keep = targets.ne(ignore)?;
    let weight = keep.to_dtype(DType::F32)?;
    let count = weight.sum_all()?.to_scalar::<f32>()? as usize;
    let safe_targets = keep.where_cond(&targets, &targets.zeros_like()?)?;
    let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
    let picked = logp.gather(&safe_targets.unsqueeze(1)?, 1)?.squeeze(1)?;
    let total = (picked * weight)?.sum_all()?;
    let loss = (total.neg()? / count.max(1) as f64)?;
    Ok((loss, count))
}

/// Whether candle's f32 row sum on this CPU is its AVX kernel, the one [`candle_sum`] restates.
fn candle_sums_like_ours() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// candle's f32 sum of a contiguous slice on an AVX2 CPU (`candle_core::cpu::avx::vec_sum`),
/// operation for operation: four 8-lane accumulators over whole 32-element chunks, the four
/// added pairwise, the eight lanes folded (halves, then two horizontal adds), then the remaining
/// elements one at a time. Rust never reassociates f32 additions, so the bits are candle's.
fn candle_sum(xs: &[f32]) -> f32 {
    candle_sum_of(xs, |x| x)
}

/// [`candle_sum`] of `f(x)` over `xs`, without materialising the mapped values.
fn candle_sum_of(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let whole = xs.len() & !31;
    let mut acc = [[0f32; 8]; 4];
    for chunk in xs[..whole].chunks_exact(32) {
        for (a, part) in acc.iter_mut().zip(chunk.chunks_exact(8)) {
            for (lane, &x) in a.iter_mut().zip(part) {
                *lane += f(x);
            }
        }
    }
    let x0: [f32; 8] = std::array::from_fn(|l| (acc[0][l] + acc[1][l]) + (acc[2][l] + acc[3][l]));
    let t0: [f32; 4] = std::array::from_fn(|l| x0[l] + x0[l + 4]);
    let mut sum = (t0[0] + t0[1]) + (t0[2] + t0[3]);
    for &x in &xs[whole..] {
        sum += f(x);
    }
    sum
}

/// What the forward keeps for the backward, per row `i` of the (N, V) logits `x` with target
/// `t_i` (0 where ignored, as the composed graph's `where_cond` makes it) and weight `w_i`
/// (1 or 0): `e = exp(x − max)`, `s = candle_sum(e)`, and where `x` equals its row's max.
///
/// The composed graph's backward, node by node from `loss = (−Σ_i w_i·logp_{i,t_i})·mul`
/// (`mul` = 1/count as f32) gives `g_logp[i, t_i] = −mul·w_i` and 0 elsewhere; through
/// `logp = d − ln s` (d = x − max) the log-sum's gradient is the row sum of `−g_logp`, exactly
/// `mul·w_i` (one non-zero term), so `g_s = mul·w_i / s`; through `s = Σ e`, `e = exp(d)`:
/// `g_d = g_logp + g_s·e`. Through `d = x − max`, the max's gradient is `S = candle_sum(0 − g_d)`
/// and reaches `x` where `x == max`: `g_x = g_d + [x == max]·S`. Ignored rows are 0 throughout.
struct Saved {
    e: Vec<f32>,
    s: Vec<f32>,
    is_max: Vec<bool>,
    /// The gathered index per row (the target, or 0 where ignored) and whether it counts.
    picked: Vec<(usize, bool)>,
}

struct CrossEntropy {
    vocab: usize,
    ignore: u32,
    /// `1 / count` as the composed graph's division makes it (f64, then f32).
    mul: f32,
    saved: OnceLock<Saved>,
}

impl CustomOp2 for CrossEntropy {
    fn name(&self) -> &'static str {
        "study-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_slice(s1, l1)?;
        let CpuStorage::U32(targets) = s2 else {
            candle_core::bail!("cross_entropy: targets must be u32");
        };
        let Some((a, b)) = l2.contiguous_offsets() else {
            candle_core::bail!("cross_entropy: targets must be contiguous");
        };
        let (v, targets) = (self.vocab, &targets[a..b]);
        if x.len() != targets.len() * v {
            candle_core::bail!(
                "cross_entropy: {} logits for {} targets",
                x.len(),
                targets.len()
            );
        }
        let picked = targets
            .iter()
            .map(|&y| match y {
                y if y == self.ignore => Ok((0, false)),
                y if (y as usize) < v => Ok((y as usize, true)),
                y => Err(candle_core::Error::Msg(format!(
                    "cross_entropy: target {y} is outside the vocabulary of {v} (and not the ignored {})",
                    self.ignore
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        let n = targets.len();
        let (mut e, mut s, mut is_max) = (vec![0f32; x.len()], vec![0f32; n], vec![false; x.len()]);
        let mut weighted = vec![0f32; n];
        e.par_chunks_mut(v)
            .zip(is_max.par_chunks_mut(v))
            .zip(s.par_iter_mut().zip(weighted.par_iter_mut()))
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(i, ((e, is_max), (s, weighted)))| {
                let row = &x[i * v..(i + 1) * v];
                let max = row.iter().copied().fold(row[0], f32::max);
                for ((e, m), &xj) in e.iter_mut().zip(is_max.iter_mut()).zip(row) {
                    *e = xj - max;
                    *m = xj == max;
                }
                exp_in_place(e); // libm's `expf` to the bit, at SIMD width
                *s = candle_sum(e);
                let (t, counts) = picked[i];
                let logp = (row[t] - max) - s.ln();
                *weighted = logp * if counts { 1.0 } else { 0.0 };
            });
        let loss = -candle_sum(&weighted) * self.mul + 0.0;
        let saved = Saved {
            e,
            s,
            is_max,
            picked,
        };
        if self.saved.set(saved).is_err() {
            candle_core::bail!("cross_entropy: one node ran its forward twice");
        }
        Ok((CpuStorage::F32(vec![loss]), Shape::from(())))
    }

    fn bwd(
        &self,
        logits: &Tensor,
        _targets: &Tensor,
        _res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let Some(saved) = self.saved.get() else {
            candle_core::bail!("cross_entropy: backward before forward");
        };
        // The loss's own gradient scales every term (1 for `loss.backward()`), through the
        // division's backward: `up · mul + 0`, as candle's affine computes it.
        let up = grad_res.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        let mul = up * self.mul + 0.0;
        let v = self.vocab;
        let mut g = vec![0f32; saved.e.len()];
        g.par_chunks_mut(v)
            .enumerate()
            .with_min_len(ROWS_PER_TASK)
            .for_each(|(i, g)| {
                let (t, counts) = saved.picked[i];
                if !counts {
                    return;
                }
                let (e, is_max) = (
                    &saved.e[i * v..(i + 1) * v],
                    &saved.is_max[i * v..(i + 1) * v],
                );
                let g_s = mul / saved.s[i];
                for (gj, &ej) in g.iter_mut().zip(e) {
                    *gj = g_s * ej;
                }
                g[t] += -mul;
                let max_grad = candle_sum_of(g, |gj| 0.0 - gj);
                for (gj, &m) in g.iter_mut().zip(is_max) {
                    *gj += if m { 1.0 } else { 0.0 } * max_grad;
                }
            });
        let g = Tensor::from_vec(g, logits.shape(), logits.device())?;
        Ok((Some(g), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::bits;
    use candle_core::{Device, Var};

    /// The fused loss against the composed graph it replaces: the loss and the logits' gradient
    /// bit for bit, over vocabularies below, at and above candle's 32-element sum chunk, with
    /// ignored targets, tied maxima and large logits.
    #[test]
    fn the_fused_loss_is_the_composed_one_to_the_bit() {
        if !candle_sums_like_ours() {
            return;
        }
        let dev = Device::Cpu;
        for (bsz, t, v) in [
            (3usize, 5usize, 7usize),
            (4, 27, 59),
            (2, 9, 70),
            (64, 27, 59),
        ] {
            let n = bsz * t * v;
            let mut x: Vec<f32> = (0..n)
                .map(|k| ((k as f32 * 0.61).sin() * 7.3) + ((k % 5) as f32))
                .collect();
            // Ties for the max in row 1, a row far from zero in row 2.
            for j in 0..v {
                x[v + j] = if j % 3 == 0 { 4.0 } else { -1.0 };
                x[2 * v + j] += 80.0;
            }
            let x =
                Var::from_tensor(&Tensor::from_vec(x, (bsz, t, v), &dev).expect("x")).expect("var");
            let y: Vec<u32> = (0..bsz * t)
                .map(|k| if k % 4 == 3 { 99 } else { ((k * 7) % v) as u32 })
                .collect();
            let y = Tensor::from_vec(y, (bsz, t), &dev).expect("y");
            let (ours, n_ours) = cross_entropy(x.as_tensor(), &y, 99).expect("fused");
            let (theirs, n_theirs) = composed(x.as_tensor(), &y, 99).expect("composed");
            assert_eq!(n_ours, n_theirs, "count");
            assert_eq!(bits(&ours), bits(&theirs), "loss at {bsz}×{t}×{v}");
            for scale in [1.0, 0.37] {
                let ga = (&ours * scale).and_then(|l| l.backward()).expect("bwd");
                let gb = (&theirs * scale).and_then(|l| l.backward()).expect("bwd");
                let (p, q) = (
                    ga.get(x.as_tensor()).expect("ours"),
                    gb.get(x.as_tensor()).expect("theirs"),
                );
                assert_eq!(bits(p), bits(q), "gradient at {bsz}×{t}×{v}, scale {scale}");
            }
        }
    }

    #[test]
    fn the_sum_restates_candles() {
        if !candle_sums_like_ours() {
            return;
        }
        let dev = Device::Cpu;
        for len in [1usize, 7, 31, 32, 33, 59, 64, 100, 1728] {
            let xs: Vec<f32> = (0..len)
                .map(|k| (k as f32 * 1.37).sin() * 10f32.powi(k as i32 % 9 - 4))
                .collect();
            let t = Tensor::from_vec(xs.clone(), len, &dev).expect("t");
            let theirs = t.sum_all().and_then(|s| s.to_scalar::<f32>()).expect("sum");
            assert_eq!(candle_sum(&xs).to_bits(), theirs.to_bits(), "length {len}");
        }
    }

    #[test]
    fn a_target_outside_the_vocabulary_is_an_error() {
        let dev = Device::Cpu;
        if candle_sums_like_ours() {
            let empty = Tensor::zeros((1, 2, 0), DType::F32, &dev).expect("x");
            let y = Tensor::new(&[[0u32, 0]], &dev).expect("y");
            assert!(cross_entropy(&empty, &y, 9).is_err(), "an empty vocabulary");
        }
        let x = Tensor::zeros((1, 2, 5), DType::F32, &dev).expect("x");
        let y = Tensor::new(&[[1u32, 7]], &dev).expect("y");
        let err = cross_entropy(&x, &y, 9).expect_err("7 ≥ 5").to_string();
        assert!(err.contains('7') && err.contains('5'), "{err}");
    }
}
