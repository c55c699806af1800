//! Test helpers of the fused ops' tests: comparing values and gradients with candle's.

use candle_core::{Device, Tensor, Var};

/// Largest absolute difference between two tensors of one shape.
pub(super) fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .and_then(|d| d.abs()?.max_all()?.to_scalar::<f32>())
        .expect("diff")
}

/// Asserts that the gradients of Σ ours ⊙ up and Σ theirs ⊙ up agree within `tol` for every
/// variable in `vars`.
pub(super) fn assert_same_gradients(
    ours: &Tensor,
    theirs: &Tensor,
    up: &Tensor,
    vars: &[&Var],
    tol: f32,
) {
    let ga = (ours * up)
        .and_then(|t| t.sum_all()?.backward())
        .expect("bwd");
    let gb = (theirs * up)
        .and_then(|t| t.sum_all()?.backward())
        .expect("bwd");
    for v in vars {
        let (p, q) = (
            ga.get(v.as_tensor()).expect("g"),
            gb.get(v.as_tensor()).expect("g"),
        );
        assert!(
            max_diff(p, q) < tol,
            "gradient differs by {}",
            max_diff(p, q)
        );
    }
}

/// The tensor's values as bit patterns (for comparisons to the bit).
pub(super) fn bits(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .expect("values")
        .into_iter()
        .map(f32::to_bits)
        .collect()
}

/// Asserts that the gradients of Σ ours ⊙ up and Σ theirs ⊙ up are equal bit for bit for every
/// named variable in `vars`; `what` names the case in the message.
pub(super) fn assert_same_gradient_bits(
    ours: &Tensor,
    theirs: &Tensor,
    up: &Tensor,
    vars: &[(&str, &Var)],
    what: &str,
) {
    let grads = |y: &Tensor| (y * up).and_then(|t| t.sum_all()?.backward()).expect("bwd");
    let (ga, gb) = (grads(ours), grads(theirs));
    for (name, v) in vars {
        let (p, q) = (
            ga.get(v.as_tensor()).expect("ours"),
            gb.get(v.as_tensor()).expect("theirs"),
        );
        assert!(bits(p) == bits(q), "{name} gradient differs at {what}");
    }
}

/// `a · sin(k · i)` for i = 0, 1, …, n − 1, in `shape`: smooth, signed test data.
pub(super) fn ramp(dev: &Device, n: usize, k: f64, a: f64, shape: &[usize]) -> Tensor {
    Tensor::arange(0f32, n as f32, dev)
        .and_then(|t| ((t * k)?.sin()? * a)?.reshape(shape))
        .expect("ramp")
}
