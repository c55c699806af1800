//! Where a block's forward + backward time goes at a given context, at the cpu model's width
//! (3 heads × 16) and batch 64: the attention core (heads split, scores, causal softmax, weighted
//! sum, heads merged), composed of candle ops and fused (`ops::causal_attention`), against the four
//! linear layers (`ops::linear`) and the LayerNorm + GELU, then the attention
//! core's parts, the causal softmax both fused (`ops::causal_softmax`) and composed of candle ops.
//! `cargo run --release -p study-model --example probe_attn -- 27 57 63` (contexts to probe).
//! Single ops timed alone overstate their share of a full step (fresh buffers, no overlap);
//! compare against `make bench` before acting on a number.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use candle_core::{D, DType, Device, Tensor, Var};
use std::time::Instant;
use study_model::ops;

fn time(f: impl Fn()) -> f64 {
    f();
    let t = Instant::now();
    for _ in 0..20 {
        f();
    }
    t.elapsed().as_secs_f64() * 1e3 / 20.0
}

fn main() {
    study_model::process_env::on_rayon_worker(probe);
}

fn probe() {
    let dev = Device::Cpu;
    let (b, nh, hs) = (64, 3, 16);
    let d = nh * hs;
    let mut contexts: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if contexts.is_empty() {
        contexts = vec![27, 63];
    }
    let randn = |shape: &[usize], sd: f32| {
        Var::from_tensor(&Tensor::randn(0f32, sd, shape, &dev).unwrap()).unwrap()
    };
    println!("Per block, forward + backward, ms:\n");
    println!(
        "| context | attention core, composed | attention core, fused | linear layers | LayerNorm + GELU |"
    );
    println!("|---|---|---|---|---|");
    for &t in &contexts {
        let mask = ops::causal_mask(t, &dev).unwrap();
        let qkv = randn(&[b, t, 3 * d], 1.0);
        let attn = time(|| {
            let heads = |k: usize| {
                qkv.narrow(2, k * d, d)
                    .unwrap()
                    .reshape((b, t, nh, hs))
                    .unwrap()
                    .transpose(1, 2)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (q, k, v) = (heads(0), heads(1), heads(2));
            let a = ops::causal_softmax(&q.matmul(&k.t().unwrap()).unwrap(), 0.25, &mask).unwrap();
            let y = a
                .matmul(&v)
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .reshape((b, t, d))
                .unwrap();
            y.sum_all().unwrap().backward().unwrap();
        });
        let fused = time(|| {
            let y = ops::causal_attention(&qkv, nh, &mask).unwrap();
            y.sum_all().unwrap().backward().unwrap();
        });
        let x = randn(&[b, t, d], 1.0);
        let (wa, wp, wf, wo) = (
            randn(&[3 * d, d], 0.02),
            randn(&[d, d], 0.02),
            randn(&[4 * d, d], 0.02),
            randn(&[d, 4 * d], 0.02),
        );
        let zeros =
            |n: usize| Var::from_tensor(&Tensor::zeros(n, DType::F32, &dev).unwrap()).unwrap();
        let (ba, bp, bf, bo) = (zeros(3 * d), zeros(d), zeros(4 * d), zeros(d));
        let linear = |x: &Tensor, w: &Tensor, bias: &Tensor| ops::linear(x, w, Some(bias)).unwrap();
        let lin = time(|| {
            let y = linear(&x, &wa, &ba).narrow(2, 0, d).unwrap();
            let y = linear(&y, &wp, &bp);
            let y = linear(&y, &wf, &bf);
            let y = linear(&y, &wo, &bo);
            y.sum_all().unwrap().backward().unwrap();
        });
        let g = Var::from_tensor(&Tensor::ones(d, DType::F32, &dev).unwrap()).unwrap();
        let h = randn(&[b, t, 4 * d], 1.0);
        let other = time(|| {
            let y = ops::layer_norm(&x, &g, &bp, 1e-5).unwrap();
            let z = ops::gelu(&h, ops::Gelu::Vectorised).unwrap();
            (y.sum_all().unwrap() + z.sum_all().unwrap())
                .unwrap()
                .backward()
                .unwrap();
        });
        println!("| {t} | {attn:.2} | {fused:.2} | {lin:.2} | {other:.2} |");
    }
    println!("\nAttention parts, forward + backward, ms (scores (64, 3, T, T)):\n");
    println!("| context | QKᵀ | AV | causal softmax, fused | scale + mask + softmax, composed |");
    println!("|---|---|---|---|---|");
    for &t in &contexts {
        let mask = ops::causal_mask(t, &dev).unwrap();
        let q = randn(&[b, nh, t, hs], 1.0);
        let k = randn(&[b, nh, t, hs], 1.0);
        let s = randn(&[b, nh, t, t], 1.0);
        let qk = time(|| {
            q.matmul(&k.t().unwrap())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        let av = time(|| {
            s.matmul(&k).unwrap().sum_all().unwrap().backward().unwrap();
        });
        let fused = time(|| {
            ops::causal_softmax(&s, 0.25, &mask)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        let composed = time(|| {
            let m = (s.as_tensor() * 0.25)
                .unwrap()
                .broadcast_add(&mask)
                .unwrap();
            candle_nn::ops::softmax(&m, D::Minus1)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
        });
        println!("| {t} | {qk:.2} | {av:.2} | {fused:.2} | {composed:.2} |");
    }
}
