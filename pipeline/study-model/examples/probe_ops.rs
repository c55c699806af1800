//! Micro-profile of the training step's building blocks at the cpu preset's rows (64 × 33) and
//! width 192: forward + backward of single ops, to see which ones candle's autograd makes slow.
//! `cargo run --release -p study-model --example probe_ops`. Findings are in `ops.rs`.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use candle_core::{D, Device, Tensor, Var};
use std::time::Instant;
fn time(name: &str, f: impl Fn()) {
    f();
    let t = Instant::now();
    for _ in 0..20 {
        f();
    }
    println!("{name}: {:.3} ms", t.elapsed().as_secs_f64() * 1e3 / 20.0);
}
fn main() {
    let dev = Device::Cpu;
    let (n, d) = (64 * 33, 192);
    let x = Var::from_tensor(&Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap()).unwrap();
    let b = Var::from_tensor(&Tensor::randn(0f32, 1.0, d, &dev).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (d, d), &dev).unwrap()).unwrap();
    time("bias add fwd+bwd", || {
        let y = x.broadcast_add(&b).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    time("matmul fwd+bwd", || {
        let y = x.matmul(&w.t().unwrap()).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    time("sum over rows (keepdim 0)", || {
        let _ = x.sum_keepdim(0).unwrap();
    });
    time("mean last dim", || {
        let _ = x.mean_keepdim(D::Minus1).unwrap();
    });
    let x3 = x.reshape((64, 33, d)).unwrap();
    time("candle gelu fwd+bwd", || {
        let y = x3.gelu().unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    let s = Var::from_tensor(&Tensor::randn(0f32, 1.0, (64, 3, 33, 33), &dev).unwrap()).unwrap();
    time("softmax fwd+bwd", || {
        let y = candle_nn::ops::softmax(&s, D::Minus1).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    let q = Var::from_tensor(&Tensor::randn(0f32, 1.0, (64, 3, 33, 16), &dev).unwrap()).unwrap();
    time("qk^T fwd+bwd", || {
        let y = q.matmul(&q.t().unwrap()).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    time("fused gelu fwd+bwd", || {
        let y = study_model::ops::gelu(&x3, study_model::ops::Gelu::Vectorised).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    time("fused bias add fwd+bwd", || {
        let y = study_model::ops::add_bias(&x, &b).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
    let g = Var::from_tensor(&Tensor::randn(0f32, 1.0, d, &dev).unwrap()).unwrap();
    time("fused layernorm fwd+bwd", || {
        let y = study_model::gpt::layer_norm(&x3, &g, &b, 1e-5).unwrap();
        y.sum_all().unwrap().backward().unwrap();
    });
}
