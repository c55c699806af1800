//! The fused tanh-GELU ([`gelu`]): libm's `tanhf` (glibc's, restated lane by lane: `ops::tanh`),
//! or `wide`'s exp-based `tanh`, each compiled for the CPU's widest SIMD; forward and backward in
//! one pass each.

use multiversion::multiversion;
use rayon::prelude::*;

use candle_core::{
    CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Result, Shape, Tensor,
};

use super::{Gelu, f32_slice, zeroed, zip_map};

const C: f32 = 0.797_884_6; // √(2/π), as candle's f32 GELU
const A: f32 = 0.044_715;

/// Elements per rayon task of an elementwise kernel.
const PAR_CHUNK: usize = 4096;

/// `tanh(s)` as `wide`'s `f32x8::tanh` (1.7) computes it on a CPU without FMA — `exp_m1(−2|s|)`
/// by range reduction and a degree-5 polynomial, then `−t / (t + 2)` with `s`'s sign, `s` itself
/// below 2e-4, ±1 above 9.011 — restated one lane at a time, operation for operation, so that
/// the compiler vectorises it at the CPU's full width (16 lanes with AVX-512, where `wide`
/// without compile-time target features runs two 4-lane SSE halves with branches). The test
/// `the_lane_kernel_is_wides_tanh_to_the_bit` holds it to `wide` bit for bit: a model trained
/// with [`Gelu::Vectorised`] before this kernel is the same model after it.
///
/// Lanes past `wide`'s early exits (|s| > 9.011) compute values that the final selects discard,
/// as `wide`'s own masked paths do; Rust never contracts `a * b + c` into an FMA, so every
/// SIMD width rounds alike.
#[inline(always)]
fn tanh_lane(s: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4; // 0.693359375, exact
    const LN2_LO: f32 = -2.121_944_4e-4;
    const P: [f32; 6] = [
        1.0 / 2.0,
        1.0 / 6.0,
        1.0 / 24.0,
        1.0 / 120.0,
        1.0 / 720.0,
        1.0 / 5040.0,
    ];
    let a = s.abs();
    // exp_m1(y), y = −2|s| ≤ 0.
    let y = -2.0 * a;
    let r = (y * LOG2_E).round_ties_even();
    let x = y - r * LN2_HI;
    let x = x - r * LN2_LO;
    let x2 = x * x;
    let x4 = x2 * x2;
    let z = (P[3] * x + P[2]) * x2 + ((P[5] * x + P[4]) * x4 + (P[1] * x + P[0]));
    let z = z * x2 + x;
    // 2^r from the exponent bits (r ≥ −126 wherever the result is kept).
    let two_r = f32::from_bits((r + 8_388_735.0).to_bits() << 23);
    let em1 = if r == 0.0 { z } else { (z + 1.0) * two_r - 1.0 };
    let em1 = if y < -103.63 { -1.0 } else { em1 };
    let t = if y == 0.0 { y } else { em1 };
    let sign = s.to_bits() & 0x8000_0000;
    let tanh = f32::from_bits((-t / (t + 2.0)).to_bits() ^ sign);
    let tanh = if a < 2e-4 { s } else { tanh };
    if a > 9.011 {
        f32::from_bits(1f32.to_bits() ^ sign)
    } else {
        tanh
    }
}

/// `tanh` of GELU's argument at `v`, `tanh(√(2/π)·v·(1 + 0.044715·v²))`, and `v²`.
#[inline(always)]
fn gelu_tanh(v: f32) -> (f32, f32) {
    let v2 = v * v;
    (tanh_lane(C * v * (1.0 + A * v2)), v2)
}

/// `out[i] = gelu(x[i])` with [`tanh_lane`].
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma", "x86_64+sse4.1"))]
fn gelu_fwd_lanes(out: &mut [f32], x: &[f32]) {
    for (o, &v) in out.iter_mut().zip(x) {
        let (t, _) = gelu_tanh(v);
        *o = 0.5 * v * (1.0 + t);
    }
}

/// `out[i] = g[i] · gelu'(x[i])` with [`tanh_lane`].
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma", "x86_64+sse4.1"))]
fn gelu_bwd_lanes(out: &mut [f32], x: &[f32], g: &[f32]) {
    for ((o, &v), &gr) in out.iter_mut().zip(x).zip(g) {
        let (t, v2) = gelu_tanh(v);
        let du = C * (1.0 + 3.0 * A * v2);
        *o = gr * (0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du);
    }
}

/// `out[i] = gelu(x[i])` and `th[i]` its tanh, with `kind`'s tanh (the forward that keeps its
/// tanh for the backward). Each kind's loop is its own, free of branches, and vectorises.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma", "x86_64+sse4.1"))]
fn fwd_keep_lanes(kind: Gelu, out: &mut [f32], th: &mut [f32], x: &[f32]) {
    #[inline(always)]
    fn keep(out: &mut [f32], th: &mut [f32], x: &[f32], tanh: impl Fn(f32) -> f32) {
        for ((o, th), &v) in out.iter_mut().zip(th.iter_mut()).zip(x) {
            let t = tanh(v);
            *th = t;
            *o = 0.5 * v * (1.0 + t);
        }
    }
    // A closure, not the fn item: passed as `scalar_tanh` itself, the (large) restated tanhf
    // stayed a call and the loop did not vectorise (cpu shape, exact GELU: 36 → 22 steps/s).
    #[allow(clippy::redundant_closure)]
    match kind {
        Gelu::Exact => keep(out, th, x, |v| scalar_tanh(v)),
        Gelu::Vectorised => keep(out, th, x, |v| gelu_tanh(v).0),
    }
}

/// `out[i] = g[i] · gelu'(x[i])` from the tanh the forward kept: each kind's derivative
/// ([`gelu_bwd_lanes`]'s, [`scalar_derivative`]) on the same values, without a tanh.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma", "x86_64+sse4.1"))]
fn bwd_kept_lanes(kind: Gelu, out: &mut [f32], x: &[f32], th: &[f32], g: &[f32]) {
    #[inline(always)]
    fn apply(out: &mut [f32], x: &[f32], th: &[f32], g: &[f32], d: impl Fn(f32, f32) -> f32) {
        for (((o, &v), &t), &gr) in out.iter_mut().zip(x).zip(th).zip(g) {
            *o = gr * d(v, t);
        }
    }
    #[allow(clippy::redundant_closure)] // as in `fwd_keep_lanes`
    match kind {
        Gelu::Exact => apply(out, x, th, g, |v, t| scalar_derivative(v, t)),
        Gelu::Vectorised => apply(out, x, th, g, |v, t| {
            let v2 = v * v;
            let du = C * (1.0 + 3.0 * A * v2);
            0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
        }),
    }
}

/// tanh-approximation GELU, `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`, differentiable.
/// `kind` picks the CPU kernel ([`Gelu::Exact`]: glibc's `tanhf` to the bit, bit-identical to
/// every earlier run; [`Gelu::Vectorised`]: [`tanh_lane`], as wide as the CPU allows).
pub fn gelu(x: &Tensor, kind: Gelu) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(GeluOp(kind))
    } else {
        x.gelu()
    }
}

/// `(gelu(v), gelu'(v))` with libm's `tanhf` ([`scalar_tanh`]).
fn gelu_scalar(v: f32) -> (f32, f32) {
    let t = scalar_tanh(v);
    (0.5 * v * (1.0 + t), scalar_derivative(v, t))
}

/// `tanhf` of GELU's argument at `v` (the [`Gelu::Exact`] kernel): glibc's, restated lane by
/// lane ([`super::tanh::tanhf_lane`], equal to libm's `f32::tanh` to the bit).
#[inline(always)]
fn scalar_tanh(v: f32) -> f32 {
    super::tanh::tanhf_lane(C * v * (1.0 + A * v * v))
}

/// `gelu'(v)` from `v` and its tanh `t` (the [`Gelu::Exact`] kernel).
#[inline(always)]
fn scalar_derivative(v: f32, t: f32) -> f32 {
    let du = C * (1.0 + 3.0 * A * v * v);
    0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * du
}

/// `out[i] = f(x[i], g[i])` with `kind`'s kernel; elementwise, so splitting the work across
/// threads cannot change a value.
fn gelu_map(
    kind: Gelu,
    x: &[f32],
    g: &[f32],
    scalar: impl Fn(f32, f32) -> f32 + Sync,
    lanes: impl Fn(&mut [f32], &[f32], &[f32]) + Sync,
) -> Vec<f32> {
    let mut out = zeroed(x.len());
    let parts = out
        .par_chunks_mut(PAR_CHUNK)
        .zip(x.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK)));
    match kind {
        Gelu::Exact => parts.for_each(|(o, (x, g))| {
            for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                *o = scalar(x, g);
            }
        }),
        Gelu::Vectorised => parts.for_each(|(o, (x, g))| lanes(o, x, g)),
    }
    out
}

struct GeluOp(Gelu);

impl CustomOp1 for GeluOp {
    fn name(&self) -> &'static str {
        "study-gelu"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let y = forward(self.0, f32_slice(s, l)?);
        Ok((CpuStorage::F32(y), l.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad(self.0, arg, grad_res)?))
    }
}

/// `gelu(x)` elementwise with `kind`'s kernel (the fused op's forward; the fused linear layer's
/// epilogue keeps the tanh as well, [`forward_keeping_tanh`]).
pub(super) fn forward(kind: Gelu, x: &[f32]) -> Vec<f32> {
    gelu_map(
        kind,
        x,
        x,
        |v, _| gelu_scalar(v).0,
        |o, x, _| gelu_fwd_lanes(o, x),
    )
}

/// `(gelu(x), tanh)` elementwise with `kind`'s kernel: the forward that keeps, per element, the
/// tanh its backward would otherwise compute again ([`grad_with_tanh`]).
pub(super) fn forward_keeping_tanh(kind: Gelu, x: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let (mut out, mut th) = (zeroed(x.len()), zeroed(x.len()));
    let parts = out
        .par_chunks_mut(PAR_CHUNK)
        .zip(th.par_chunks_mut(PAR_CHUNK))
        .zip(x.par_chunks(PAR_CHUNK));
    parts.for_each(|((o, th), x)| fwd_keep_lanes(kind, o, th, x));
    (out, th)
}

/// `gelu(x)` from `x` and the tanh [`forward_keeping_tanh`] kept: its output to the bit, `0.5 ·
/// x · (1 + tanh)` as both kernels compute it. Not differentiable.
pub(super) fn from_tanh(x: &Tensor, th: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&th.contiguous()?, &FromTanh)
}

struct FromTanh;

impl CustomOp2 for FromTanh {
    fn name(&self) -> &'static str {
        "study-gelu-from-tanh"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        zip_map(self.name(), (s1, l1), (s2, l2), |v, t| 0.5 * v * (1.0 + t))
    }
}

/// `grad · gelu'(x)` from `x` and the tanh [`forward_keeping_tanh`] kept: [`grad`]'s values to
/// the bit (the same operations on the same values), without a tanh. Not differentiable.
pub(super) fn grad_with_tanh(kind: Gelu, x: &Tensor, th: &Tensor, grad: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op3_no_bwd(&th.contiguous()?, &grad.contiguous()?, &GeluGradKept(kind))
}

/// `grad · gelu'(x)` in one pass, from the kept tanh.
struct GeluGradKept(Gelu);

impl CustomOp3 for GeluGradKept {
    fn name(&self) -> &'static str {
        "study-gelu-grad-kept"
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
        let (x, th, g) = (f32_slice(s1, l1)?, f32_slice(s2, l2)?, f32_slice(s3, l3)?);
        if x.len() != th.len() || x.len() != g.len() {
            candle_core::bail!(
                "fused gelu grad: {} inputs, {} kept tanh values, {} gradients",
                x.len(),
                th.len(),
                g.len()
            );
        }
        let mut out = zeroed(x.len());
        let parts = out.par_chunks_mut(PAR_CHUNK).zip(
            x.par_chunks(PAR_CHUNK)
                .zip(th.par_chunks(PAR_CHUNK).zip(g.par_chunks(PAR_CHUNK))),
        );
        parts.for_each(|(o, (x, (th, g)))| bwd_kept_lanes(self.0, o, x, th, g));
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// `grad · gelu'(x)`, not differentiable (the fused op's backward; the fused linear layer's
/// reads the kept tanh, [`grad_with_tanh`]).
pub(super) fn grad(kind: Gelu, x: &Tensor, grad: &Tensor) -> Result<Tensor> {
    x.contiguous()?
        .apply_op2_no_bwd(&grad.contiguous()?, &GeluGrad(kind))
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
        let out = gelu_map(self.0, x, g, |v, gr| gr * gelu_scalar(v).1, gelu_bwd_lanes);
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::check::{assert_same_gradients, max_diff};
    use candle_core::{Device, Var};

    /// The previous kernel: `wide`'s `f32x8` eight lanes at a time, the reference of
    /// [`tanh_lane`] (it trained every `Gelu::Vectorised` model before it).
    fn wide_gelu(v: wide::f32x8) -> (wide::f32x8, wide::f32x8) {
        use wide::f32x8;
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

    #[test]
    fn the_lane_kernel_is_wides_tanh_to_the_bit() {
        // Every 61st f32 of either sign up to 4e4 (about 2.2 M values: GELU's whole bend, the
        // polynomial's every range-reduction step, both early exits, subnormals and ±0), plus
        // the tails; gradients 1 and a spread of magnitudes and signs.
        let mut x: Vec<f32> = (0..0x4720_0000u32)
            .step_by(61)
            .flat_map(|b| [f32::from_bits(b), -f32::from_bits(b)])
            .collect();
        x.extend([
            1e30,
            -1e30,
            f32::MAX,
            f32::MIN,
            8.66,
            -8.66,
            9.011,
            -9.011,
            2e-4,
            -2e-4,
        ]);
        let g: Vec<f32> = (0..x.len())
            .map(|i| [1.0, -0.37, 3.1e-3, 250.0][i % 4])
            .collect();
        let (mut fwd, mut bwd) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        gelu_fwd_lanes(&mut fwd, &x);
        gelu_bwd_lanes(&mut bwd, &x, &g);
        let mut checked = 0;
        for (i, ((xs, gs), (f, b))) in x
            .chunks_exact(8)
            .zip(g.chunks_exact(8))
            .zip(fwd.chunks_exact(8).zip(bwd.chunks_exact(8)))
            .enumerate()
        {
            let (value, slope) = wide_gelu(wide::f32x8::new(xs.try_into().expect("8")));
            let grad = wide::f32x8::new(gs.try_into().expect("8")) * slope;
            for (k, (want, got)) in value.to_array().iter().zip(f).enumerate() {
                assert_eq!(want.to_bits(), got.to_bits(), "gelu({}) #{i}", xs[k]);
            }
            for (k, (want, got)) in grad.to_array().iter().zip(b).enumerate() {
                assert_eq!(want.to_bits(), got.to_bits(), "gelu'({}) #{i}", xs[k]);
            }
            checked += 8;
        }
        assert!(checked > 2_000_000, "{checked}");
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
