//! `exp` over f32 slices at the CPU's SIMD width, equal to glibc's `expf` to the bit.
//!
//! Profiled (`perf`, cpu shape, one thread): the attention softmax's forward was 8.8% of a
//! training step, 3.7% of it in libm's scalar `expf`, one call per element. glibc's `expf`
//! (ARM's optimized-routines algorithm, glibc ≥ 2.28, musl ≥ 1.2) is branch-free on its main
//! path: reduce `x·32/ln2` to an integer `k` and a remainder `r` in double precision, take
//! `2^(k/32)` from a 32-entry table and the exponent bits, times a cubic in `r`. [`exp_lane`]
//! states the same operations on the same constants (the table and polynomial are the
//! algorithm's published data), so loops over it vectorise; the one subtlety is that glibc's
//! x86-64 build for FMA machines (`__expf_fma`, the one `f32::exp` calls on any AVX2 or
//! AVX-512 CPU) contracts `x·(32/ln2) − k` into one fused multiply-add, and so does this
//! function. An exhaustive run over every f32 in [−104, 88] (2.24 × 10⁹ values, `cargo test
//! --release -p study-model --lib ops::exp -- --ignored`) found no difference from `f32::exp`
//! on this machine's glibc 2.36; without that contraction, two values differ.

use multiversion::multiversion;

/// `2^(i/32)`'s bits minus `i << 47`, i = 0 … 31: adding `k << 47` for `k ≡ i (mod 32)` gives the
/// bits of `2^(k/32)`.
const TABLE: [u64; 32] = [
    0x3ff0_0000_0000_0000,
    0x3fef_d9b0_d315_8574,
    0x3fef_b558_6cf9_890f,
    0x3fef_9301_d012_5b51,
    0x3fef_72b8_3c7d_517b,
    0x3fef_5487_3168_b9aa,
    0x3fef_387a_6e75_6238,
    0x3fef_1e9d_f51f_dee1,
    0x3fef_06fe_0a31_b715,
    0x3fee_f1a7_373a_a9cb,
    0x3fee_dea6_4c12_3422,
    0x3fee_ce08_6061_892d,
    0x3fee_bfda_d536_2a27,
    0x3fee_b42b_569d_4f82,
    0x3fee_ab07_dd48_5429,
    0x3fee_a47e_b03a_5585,
    0x3fee_a09e_667f_3bcd,
    0x3fee_9f75_e8ec_5f74,
    0x3fee_a114_73eb_0187,
    0x3fee_a589_994c_ce13,
    0x3fee_ace5_422a_a0db,
    0x3fee_b737_b0cd_c5e5,
    0x3fee_c491_82a3_f090,
    0x3fee_d503_b23e_255d,
    0x3fee_e89f_995a_d3ad,
    0x3fee_ff76_f2fb_5e47,
    0x3fef_199b_dd85_529c,
    0x3fef_3720_dcef_9069,
    0x3fef_5818_dcfb_a487,
    0x3fef_7c97_337b_9b5f,
    0x3fef_a4af_a2a4_90da,
    0x3fef_d076_5b6e_4540,
];

/// Table entries per doubling.
const N: f64 = 32.0;
/// `32 / ln 2`.
const INV_LN2_N: f64 = f64::from_bits(0x3ff7_1547_652b_82fe) * N;
/// `1.5 · 2⁵²`: adding it rounds a double of magnitude < 2⁵¹ to an integer, ties to even, in the
/// low bits of the sum.
const SHIFT: f64 = 6_755_399_441_055_744.0;
/// The cubic's coefficients for `2^(r/32)`, r ∈ [−½, ½]: `1 + C2·r + C1·r² + C0·r³`.
const C0: f64 = f64::from_bits(0x3fac_6af8_4b91_2394) / N / N / N;
const C1: f64 = f64::from_bits(0x3fce_bfce_50fa_c4f3) / N / N;
const C2: f64 = f64::from_bits(0x3fe6_2e42_ff0c_52d6) / N;
/// Below this, `expf` underflows to +0 (glibc's bound, −0x1.9fe368p6).
const UNDERFLOW: f32 = f32::from_bits(0xc2cf_f1b4);
/// Above this, `expf` overflows to +∞ (glibc's bound, 0x1.62e42ep6).
const OVERFLOW: f32 = f32::from_bits(0x42b1_7217);

/// `e^x`, equal to glibc's FMA-build `expf(x)` for every f32 (module docs).
#[inline(always)]
fn exp_lane(x: f32) -> f32 {
    let xd = f64::from(x);
    let kd = INV_LN2_N * xd + SHIFT;
    let ki = kd.to_bits();
    let kd = kd - SHIFT;
    let r = INV_LN2_N.mul_add(xd, -kd);
    let s = f64::from_bits(TABLE[(ki & 31) as usize].wrapping_add(ki << 47));
    let y = C0.mul_add(r, C1).mul_add(r * r, C2.mul_add(r, 1.0));
    let v = (y * s) as f32;
    if x.is_nan() {
        x + x
    } else if x < UNDERFLOW {
        0.0
    } else if x > OVERFLOW {
        f32::INFINITY
    } else {
        v
    }
}

/// `v ← e^v` element by element ([`exp_lane`]), built for AVX-512, AVX2 + FMA and SSE4.1 and
/// picked at run time.
#[multiversion(targets("x86_64+avx512f", "x86_64+avx2+fma", "x86_64+sse4.1"))]
pub(super) fn exp_in_place(v: &mut [f32]) {
    for o in v.iter_mut() {
        *o = exp_lane(*o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `f32::exp` here is glibc's FMA build, the one `exp_lane` restates (module docs);
    /// elsewhere libm may round a few values differently and there is nothing to compare to.
    fn libm_is_glibc_fma() -> bool {
        cfg!(all(target_arch = "x86_64", target_env = "gnu"))
            && std::arch::is_x86_feature_detected!("fma")
    }

    fn assert_libm(bits: impl Iterator<Item = u32>) -> usize {
        let x: Vec<f32> = bits.map(f32::from_bits).collect();
        let mut ours = x.clone();
        exp_in_place(&mut ours);
        for (&x, &e) in x.iter().zip(&ours) {
            let libm = x.exp();
            assert!(
                e.to_bits() == libm.to_bits() || (e.is_nan() && libm.is_nan()),
                "exp({x:e}) = {e:e}, libm {libm:e}"
            );
            // The scalar lane, not only the vectorised loop, is the same function.
            assert_eq!(exp_lane(x).to_bits(), e.to_bits(), "lane at {x:e}");
        }
        x.len()
    }

    /// Every 101st bit pattern — both signs, every exponent, subnormals, ±∞, NaNs — plus the
    /// bounds and the two inputs where an uncontracted reduction would round differently.
    #[test]
    #[cfg(target_arch = "x86_64")]
    fn equals_glibc_expf_to_the_bit() {
        if !libm_is_glibc_fma() {
            return;
        }
        let edges = [
            0.0f32,
            -0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::NAN,
            UNDERFLOW,
            UNDERFLOW.next_down(),
            OVERFLOW,
            OVERFLOW.next_up(),
            -63.099_46,
            32.564_632,
            f32::MIN_POSITIVE,
            -f32::MIN_POSITIVE,
        ];
        let n = assert_libm((0..=u32::MAX).step_by(101).chain(edges.map(f32::to_bits)));
        assert!(n > 42_000_000);
    }

    /// The exhaustive check behind the module docs: every f32 of [−104, 88] (≈ 1 min in release).
    #[test]
    #[ignore = "exhaustive, 2.24e9 values: run with --release -- --ignored"]
    #[cfg(target_arch = "x86_64")]
    fn equals_glibc_expf_on_every_f32_it_can_return_finite() {
        assert!(
            libm_is_glibc_fma(),
            "the exhaustive check needs glibc on an FMA CPU"
        );
        // −0 … −104 and +0 … 88, a 2²⁴-value block at a time.
        for (lo, hi) in [(0x8000_0000u32, 0xc2d0_0000u32), (0, 0x42b0_0000)] {
            for start in (lo..=hi).step_by(1 << 24) {
                assert_libm(start..=hi.min(start + ((1 << 24) - 1)));
            }
        }
    }
}
