//! The fused tanh-GELU ([`gelu`]): libm's scalar `tanhf` or eight lanes at a time, forward and
//! backward in one pass each.

use rayon::prelude::*;
use wide::f32x8;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::{Gelu, f32_slice};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::{assert_same_gradients, max_diff};
    use candle_core::{Device, Var};

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
