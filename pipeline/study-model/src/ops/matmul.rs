//! The linear layers' products split by rows over threads: each thread one single-threaded
//! `faer` product into its own rows of one output.
//!
//! candle's matmul hands `gemm` the whole product with `Parallelism::Rayon`, into a buffer it
//! first zeroes on the calling thread. At the `cpu` shape's inner width of 48 that barely scales:
//! 1728 × 48 × 144 took 109–138 µs on two threads against 148–168 on one, while PyTorch's took
//! 71–90 (`examples/probe_matmul`, `benches/pytorch_matmul.py`). Rows split in halves, each half
//! one sequential product into a buffer the threads zeroed together, took 88–93 µs.
//!
//! The values are candle's to the bit where the inner dimension is at most [`MAX_INNER`]: both
//! libraries then sum each output's products in one pass, one fused multiply-add at a time in the
//! inner index's order (tested below against candle's matmul on every orientation the linear layers
//! use, and by the fused ops' tests against the composed ops). Above it `faer` and `gemm` block the
//! inner dimension differently (5088 × 768 × 192 differs in the last bits), so candle's matmul
//! runs there, as it does on one thread.

use faer::linalg::matmul::matmul;
use faer::{Accum, MatMut, MatRef, Par};
use rayon::prelude::*;

use super::zeroed;

/// The largest inner dimension at which the split product is checked to equal candle's to the
/// bit: the `cpu` and `paper` shapes' widths (48, 192) and the MLP's at the `cpu` shape (192).
const MAX_INNER: usize = 192;

/// Fewer rows per thread and candle's matmul runs (a floor against splitting tiny products, not
/// tuned: the model's products have 1,728 and 5,088 rows).
const MIN_ROWS_PER_THREAD: usize = 128;

/// `a · b` for `a` row-major (m × k) and `b` any (k × n) view, row-major out, split by rows over
/// the current rayon pool's threads — or `None` where candle's matmul should run instead: one
/// thread, an inner dimension above [`MAX_INNER`], too few rows, or an empty product.
pub(super) fn by_rows(a: &[f32], m: usize, b: MatRef<'_, f32>) -> Option<Vec<f32>> {
    let (k, n) = (b.nrows(), b.ncols());
    let threads = rayon::current_num_threads();
    if threads < 2
        || k == 0
        || n == 0
        || k > MAX_INNER
        || m < threads * MIN_ROWS_PER_THREAD
        || a.len() != m * k
    {
        return None;
    }
    let per = m.div_ceil(threads);
    let mut out = zeroed(m * n);
    out.par_chunks_mut(per * n)
        .zip(a.par_chunks(per * k))
        .for_each(|(o, a)| {
            let rows = a.len() / k;
            matmul(
                MatMut::from_row_major_slice_mut(o, rows, n),
                Accum::Replace,
                MatRef::from_row_major_slice(a, rows, k),
                b,
                1.0,
                Par::Seq,
            );
        });
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor};

    /// Values with every bit pattern class a product meets: signs, zeros of both signs, a wide
    /// exponent range.
    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let h = (i as u32 ^ seed)
                    .wrapping_mul(2_654_435_761)
                    .rotate_left(13);
                match h % 17 {
                    0 => 0.0,
                    1 => -0.0,
                    _ => ((h >> 8) as f32 / (1 << 24) as f32 - 0.5) * 2f32.powi((h % 9) as i32 - 4),
                }
            })
            .collect()
    }

    #[test]
    fn equals_candles_matmul_to_the_bit_on_the_linear_layers_orientations() {
        let dev = Device::Cpu;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        for (m, k, n) in [
            (1728, 48, 144),
            (1728, 48, 192),
            (1728, 192, 48),
            (1728, 144, 48),
            (1728, 48, 48),
            (300, 17, 5),
            (257, 1, 33),
            (5088, 192, 64),
        ] {
            let (a, w) = (values(m * k, 1), values(n * k, 2));
            let at = Tensor::from_slice(&a, (m, k), &dev).expect("a");
            // x Wᵀ, W (n × k) row-major: the forward's orientation.
            let wt = Tensor::from_slice(&w, (n, k), &dev).expect("w");
            let theirs: Vec<f32> = at
                .matmul(&wt.t().expect("t"))
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("candle");
            let ours = pool
                .install(|| by_rows(&a, m, MatRef::from_row_major_slice(&w, n, k).transpose()))
                .expect("split");
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&ours), bits(&theirs), "x Wᵀ at {m}×{k}×{n}");
            // dy W, W (k × n) row-major: the input gradient's orientation.
            let wk = Tensor::from_slice(&w, (k, n), &dev).expect("w");
            let theirs: Vec<f32> = at
                .matmul(&wk)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
                .expect("candle");
            let ours = pool
                .install(|| by_rows(&a, m, MatRef::from_row_major_slice(&w, k, n)))
                .expect("split");
            assert_eq!(bits(&ours), bits(&theirs), "dy W at {m}×{k}×{n}");
        }
    }

    #[test]
    fn declines_where_candle_should_run() {
        let w = vec![1f32; 4 * 300];
        let two = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .expect("pool");
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("pool");
        let b = MatRef::from_row_major_slice(&w, 300, 4);
        // an inner dimension above MAX_INNER
        assert!(
            two.install(|| by_rows(&vec![1.0; 512 * 300], 512, b))
                .is_none()
        );
        let b = MatRef::from_row_major_slice(&w, 4, 300);
        let a = vec![1f32; 512 * 4];
        assert!(one.install(|| by_rows(&a, 512, b)).is_none(), "one thread");
        assert!(
            two.install(|| by_rows(&a[..100 * 4], 100, b)).is_none(),
            "too few rows"
        );
        let ours = two.install(|| by_rows(&a, 512, b)).expect("split");
        assert!(ours.iter().all(|&v| v == 4.0));
    }
}
