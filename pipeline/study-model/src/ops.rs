//! Fused CPU kernels with their own backward pass, where candle's composed autograd is slow.
//!
//! Profiled first (`examples/probe_ops.rs`, a (2112, 192) f32 tensor, 2 threads): candle's
//! `gelu` forward + backward took 19 ms — its backward is a chain of elementwise tensor ops —
//! against 4 ms for a 192×192 matmul of the same rows. [`gelu`] computes candle's f32 expression
//! and its derivative in one pass each, with libm's `tanhf` ([`Gelu::Exact`], equal to candle's
//! forward to the bit; glibc's `tanhf` restated lane by lane, `tanh`, so that it vectorises) or
//! `wide`'s exp-based `tanh` at the CPU's SIMD width ([`Gelu::Vectorised`], within 2e-6).
//! On other devices, or other dtypes, it falls back to candle's `gelu`.
//!
//! Likewise a LayerNorm composed of tensor ops took 18 ms forward + backward at that size, mostly
//! in the reductions over rows that the weight and bias gradients need (candle reduces over a
//! leading axis ~50× slower than over the last); [`layer_norm`] does the forward in one pass and
//! the three gradients in another. (candle-nn's own fused `layer_norm` has no backward at all.)
//!
//! [`linear`] makes `x Wᵀ + b` one autograd node instead of five, sparing the backward the
//! zeroed buffer and copy candle gives each node's gradient; its values are candle's to the bit.
//! [`causal_attention`] does the same for attention's core — seventeen nodes from the fused
//! projection to the merged heads — and runs its per-head products in parallel over batch rows.
//! [`projected_causal_attention`] joins that core to its input projection, [`linear_gelu`] the
//! MLP's first layer to its activation; [`cross_entropy`] makes the loss, thirteen nodes from the
//! logits, one; [`block`] a whole transformer block, seven of those nodes. The softmaxes of
//! attention and of the loss take their exponentials at SIMD width (`exp`: glibc's `expf`
//! restated lane by lane, equal to it to the bit).

mod attention;
mod bias;
mod block;
mod cross_entropy;
mod exp;
mod gelu;
mod layer_norm;
mod linear;
mod matmul;
mod softmax;
mod tanh;

#[cfg(test)]
mod check;

pub use crate::gpt::Gelu;
pub use attention::{causal_attention, projected_causal_attention};
pub use bias::add_bias;
pub use block::{BlockParams, block};
pub use cross_entropy::cross_entropy;
pub use gelu::gelu;
pub use layer_norm::layer_norm;
pub use linear::{linear, linear_gelu};
pub use softmax::{causal_mask, causal_softmax};

use candle_core::{CpuStorage, Layout, Result};
use rayon::prelude::*;

/// Rows of a row-wise kernel per rayon task: enough work to pay for the task at the narrowest
/// width (48), small enough to split the cpu preset's 1,728 rows.
const ROWS_PER_TASK: usize = 64;

/// Column sums over the rows `r = 0, 1, …, rows − 1` of row-major data: for each
/// row, `add_row(block, r, j0)` adds row `r`'s columns `j0 .. j0 + block.len()` into `block`, a
/// slice of `out`. The columns are split into blocks over threads and each block takes the rows
/// in order, so every column's additions run in the one-thread loop's order, to the bit.
fn column_sums(out: &mut [f32], rows: usize, add_row: impl Fn(&mut [f32], usize, usize) + Sync) {
    let block = out.len().div_ceil(rayon::current_num_threads()).max(16);
    out.par_chunks_mut(block).enumerate().for_each(|(k, cols)| {
        for r in 0..rows {
            add_row(cols, r, k * block);
        }
    });
}

/// Elements per rayon task of the element-wise passes ([`zip_map`], the block's residual adds).
const ELEMENTS_PER_TASK: usize = 4096;

/// `f(a[i], b[i])` element by element over two contiguous f32 CPU tensors of one shape, in
/// parallel (a value never depends on the split): the body of a two-input element-wise op;
/// `what` names the op in the error.
fn zip_map(
    what: &str,
    (s1, l1): (&CpuStorage, &Layout),
    (s2, l2): (&CpuStorage, &Layout),
    f: impl Fn(f32, f32) -> f32 + Sync + Send,
) -> Result<(CpuStorage, candle_core::Shape)> {
    if l1.shape() != l2.shape() {
        candle_core::bail!("{what}: shapes {:?} and {:?}", l1.shape(), l2.shape());
    }
    let (a, b) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?);
    let mut out = Vec::with_capacity(a.len());
    a.par_iter()
        .zip(b)
        .with_min_len(ELEMENTS_PER_TASK)
        .map(|(&a, &b)| f(a, b))
        .collect_into_vec(&mut out);
    Ok((CpuStorage::F32(out), l1.shape().clone()))
}

/// `n` zeros for a kernel to write over, filled by all threads: `vec![0.0; n]` zeroes on the
/// calling thread alone, while the other waits. A page (1,024 floats) per item, which the compiler
/// fills with `memset`; one float per item it filled 16 bytes at a time (paper shape, one thread:
/// 4% of the step in the fill, 1.10 → 1.12 steps/s with pages).
fn zeroed(n: usize) -> Vec<f32> {
    const PAGE: usize = 1024;
    let mut pages = Vec::with_capacity(n.div_ceil(PAGE));
    (0..n.div_ceil(PAGE))
        .into_par_iter()
        .with_min_len(ELEMENTS_PER_TASK / PAGE)
        .map(|_| [0f32; PAGE])
        .collect_into_vec(&mut pages);
    let mut zeros = pages.into_flattened();
    zeros.truncate(n);
    zeros
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

#[cfg(test)]
mod tests {
    #[test]
    fn zeroed_is_n_zeros_at_every_length_around_a_page() {
        for n in [0, 1, 1023, 1024, 1025, 4096 * 3 + 7] {
            let z = super::zeroed(n);
            assert_eq!(z.len(), n);
            assert!(z.iter().all(|v| v.to_bits() == 0), "n = {n}");
        }
    }
}
