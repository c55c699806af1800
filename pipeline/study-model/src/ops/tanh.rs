//! glibc's `tanhf` restated lane by lane ([`tanhf_lane`]), for the [`super::Gelu::Exact`]
//! kernel.
//!
//! glibc's x86-64 `tanhf` is fdlibm's (`s_tanhf.c`, which calls `s_expm1f.c`), compiled without
//! FMA contraction: a line-by-line port equals `f32::tanh` on all 2³² inputs on this project's
//! machines (glibc 2.36). Here its branches are selects — every path computed, the lane's kept —
//! so that a loop over it vectorises where libm's scalar call cannot. The opt-in test compares
//! it with `f32::tanh` on every f32 (`cargo test --release -p study-model --lib ops::tanh --
//! --ignored`); the unit test on a sample of bit patterns and the edges of every branch.

/// `expm1(y)` as fdlibm's `expm1f` (`s_expm1f.c`) computes it, its branches as selects — for the
/// arguments [`tanhf_lane`] gives it, |y| < 44: fdlibm's filters for overflow and for y below
/// −27·ln2 (where it returns −1) are left out, so this is not a general `expm1f`. The constants
/// are fdlibm's, written as it writes them (each rounds to the f32 it uses).
#[allow(clippy::excessive_precision)]
#[inline(always)]
fn expm1_lane(y: f32) -> f32 {
    const LN2_HI: f32 = 6.9313812256e-01;
    const LN2_LO: f32 = 9.0580006145e-06;
    const INVLN2: f32 = 1.4426950216e+00;
    const Q1: f32 = -3.3333335072e-02;
    const Q2: f32 = 1.5873016091e-03;
    const Q3: f32 = -7.9365076090e-05;
    const Q4: f32 = 4.0082177293e-06;
    const Q5: f32 = -2.0109921195e-07;
    let hx = y.to_bits() & 0x7fff_ffff;
    let neg = y.to_bits() >> 31 != 0;
    // Argument reduction (hx > 0x3eb17218): k = ±1 below 1.5·ln2, else rounded.
    let near = hx < 0x3F851592;
    let kf = (INVLN2 * y + if neg { -0.5 } else { 0.5 }) as i32;
    let k1 = if neg { -1 } else { 1 };
    let t = kf as f32;
    let hi_far = y - t * LN2_HI;
    let lo_far = t * LN2_LO;
    let hi_near = if neg { y + LN2_HI } else { y - LN2_HI };
    let lo_near = if neg { -LN2_LO } else { LN2_LO };
    let reduce = hx > 0x3eb17218;
    let (hi, lo, k) = if near {
        (hi_near, lo_near, k1)
    } else {
        (hi_far, lo_far, kf)
    };
    let xr = hi - lo;
    let c = (hi - xr) - lo;
    let (x, c, k) = if reduce { (xr, c, k) } else { (y, 0.0, 0) };
    let hfx = 0.5 * x;
    let hxs = x * hfx;
    let r1 = 1.0 + hxs * (Q1 + hxs * (Q2 + hxs * (Q3 + hxs * (Q4 + hxs * Q5))));
    let t = 3.0 - r1 * hfx;
    let e0 = hxs * ((r1 - t) / (6.0 - x * t));
    let r_k0 = x - (x * e0 - hxs);
    let e = x * (e0 - c) - c;
    let e = e - hxs;
    let r_m1 = 0.5 * (x - e) - 0.5;
    let r_p1 = if x < -0.25 {
        -2.0 * (e - (x + 0.5))
    } else {
        1.0 + 2.0 * (x - e)
    };
    let add_k =
        |v: f32| f32::from_bits((v.to_bits() as i32).wrapping_add(k.wrapping_shl(23)) as u32);
    let r_big = add_k(1.0 - (e - x)) - 1.0;
    let kl = k.clamp(0, 22);
    let r_lt23 = add_k(f32::from_bits((0x3f80_0000i32 - (0x0100_0000i32 >> kl)) as u32) - (e - x));
    let kh = k.clamp(23, 126);
    let r_ge23 = add_k((x - (e + f32::from_bits(((0x7f - kh) << 23) as u32))) + 1.0);
    // fdlibm's results by k: the primary range (k = 0); k = ±1; 2^k·(1 − (e − x)) − 1 for k ≤ −2
    // or k > 56; (1 − 2^−k − (e − x))·2^k for 1 < k < 23; (x − (e + 2^−k) + 1)·2^k up to 56 —
    // each 2^k an add to the exponent bits. Every lane computes all of them (clamped shifts keep
    // the unused ones in range) and keeps its own.
    let r = if k == 0 {
        r_k0
    } else if k == -1 {
        r_m1
    } else if k == 1 {
        r_p1
    } else if k <= -2 || k > 56 {
        r_big
    } else if k < 23 {
        r_lt23
    } else {
        r_ge23
    };
    // |y| < 2^-25: y itself.
    if hx < 0x3300_0000 { y } else { r }
}

/// `tanh(s)` as fdlibm's `tanhf` (`s_tanhf.c`, through [`expm1_lane`]) computes it, one lane at
/// a time, branches as selects, so that a loop over it vectorises.
#[inline(always)]
pub(super) fn tanhf_lane(s: f32) -> f32 {
    let ix = s.to_bits() & 0x7fff_ffff;
    let a = s.abs();
    let ge1 = ix >= 0x3f80_0000;
    let t = expm1_lane(if ge1 { 2.0 * a } else { -2.0 * a });
    let q = (if ge1 { 2.0 } else { -t }) / (t + 2.0);
    let z = if ge1 { 1.0 - q } else { q };
    let z = if ix >= 0x41b0_0000 { 1.0 - 1.0e-30 } else { z };
    let z = if s.to_bits() >> 31 != 0 { -z } else { z };
    let z = if ix < 0x2400_0000 { s * (1.0 + s) } else { z };
    if ix >= 0x7f80_0000 {
        if s.to_bits() >> 31 == 0 {
            1.0 / s + 1.0
        } else {
            1.0 / s - 1.0
        }
    } else {
        z
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Where `f32::tanh` is the libm the lane restates (x86-64 glibc, fdlibm's code); elsewhere it
    /// may be another implementation, and nothing here claims to match it.
    const GLIBC_X86_64: bool = cfg!(all(
        target_os = "linux",
        target_env = "gnu",
        target_arch = "x86_64"
    ));

    /// Bit equality, NaNs equal whatever their payload.
    fn same(a: f32, b: f32) -> bool {
        a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
    }

    fn check(bits: impl Iterator<Item = u32>) -> (u64, Option<(f32, f32, f32)>) {
        let (mut diffs, mut first) = (0, None);
        for b in bits {
            let x = f32::from_bits(b);
            let (ours, libm) = (tanhf_lane(x), x.tanh());
            if !same(ours, libm) {
                diffs += 1;
                first.get_or_insert((x, ours, libm));
            }
        }
        (diffs, first)
    }

    /// Every 97th bit pattern of the f32 range, and the edges of every branch of `tanhf` and
    /// `expm1f` (as inputs of tanh: ±2⁻⁵⁵, ±1, ±22, the k = ±1 band of expm1's reduction, k = 23
    /// and 56), against libm where it is the one restated ([`GLIBC_X86_64`]).
    #[test]
    fn the_lane_is_glibcs_tanhf_to_the_bit() {
        if !GLIBC_X86_64 {
            return;
        }
        let edges = [
            0x2400_0000u32,
            0x3f80_0000,
            0x41b0_0000,
            0x3e31_7218,
            0x3f05_1592,
            0x3f80_0001,
            0x4130_0000,
            0x419c_0000,
            0x7f80_0000,
            0x7fc0_0000,
            0,
            1,
            0x0080_0000,
        ];
        let around = edges.iter().flat_map(|&e| {
            (e.saturating_sub(64)..e.saturating_add(64)).flat_map(|b| [b, b | 0x8000_0000])
        });
        let (diffs, first) = check(around.chain((0..u32::MAX).step_by(97)));
        assert_eq!(diffs, 0, "first: {first:?}");
    }

    /// Every f32 (2³² values, about four minutes on two cores in release): opt-in.
    #[test]
    #[ignore = "exhaustive: run with --ignored in release"]
    fn the_lane_is_glibcs_tanhf_on_every_f32() {
        if !GLIBC_X86_64 {
            return;
        }
        let parts: Vec<_> = (0..4u64)
            .map(|p| {
                std::thread::spawn(move || check((p << 30) as u32..=(((p + 1) << 30) - 1) as u32))
            })
            .collect();
        for p in parts {
            let (diffs, first) = p.join().expect("thread");
            assert_eq!(diffs, 0, "first: {first:?}");
        }
    }
}
