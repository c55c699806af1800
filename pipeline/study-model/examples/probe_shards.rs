//! Would data parallelism inside a step pay? Times forward + backward of one batch, either whole
//! (candle's own kernels split each op over `CANDLE_NUM_THREADS`) or cut into `shards` equal parts,
//! each run on its own OS thread with candle at one thread, the parts' gradients summed.
//!
//! `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 cargo run --release -p study-model --example
//! probe_shards -- <layers> <width> <heads> <T> <batch> <shards> <steps>` (set both variables to 2
//! for candle's own two threads; `GLIBC_TUNABLES` as the `study` binary sets it). Prints the median
//! step. Measured results and the decision: README "Tests and benchmarks".

#![allow(clippy::print_stdout, clippy::print_stderr, clippy::unwrap_used)]
use candle_core::{Device, Tensor};
use std::time::Instant;
use study::grammar::vocab::VOCAB_SIZE;
use study_model::gpt::{Gelu, Gpt, GptConfig, Params};
use study_model::train::{NextToken, Objective, TokenBatch};

fn batch(b: usize, t: usize) -> TokenBatch {
    let x: Vec<u32> = (0..b * t)
        .map(|i| ((i * 7 + 3) % (VOCAB_SIZE - 1)) as u32)
        .collect();
    let y: Vec<u32> = (0..b * t)
        .map(|i| ((i * 11 + 5) % (VOCAB_SIZE - 1)) as u32)
        .collect();
    TokenBatch {
        x: Tensor::from_vec(x, (b, t), &Device::Cpu).unwrap(),
        y: Tensor::from_vec(y, (b, t), &Device::Cpu).unwrap(),
    }
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap_or(0))
        .collect();
    if args.len() != 7 || args.contains(&0) || !args[4].is_multiple_of(args[5]) {
        eprintln!(
            "usage: probe_shards <layers> <width> <heads> <T> <batch> <shards> <steps> (positive integers; shards divides batch)"
        );
        std::process::exit(2);
    }
    let (layers, width, heads, t, b, shards, steps) = (
        args[0], args[1], args[2], args[3], args[4], args[5], args[6],
    );
    let cfg = GptConfig {
        n_layer: layers,
        n_head: heads,
        n_embd: width,
        block_size: t,
        vocab_size: VOCAB_SIZE,
        mlp_ratio: 4,
        gelu: Gelu::Vectorised,
    };
    let model = Gpt::new(cfg, Params::init(&cfg, 1, &Device::Cpu).unwrap()).unwrap();
    let parts: Vec<TokenBatch> = (0..shards).map(|_| batch(b / shards, t)).collect();
    let mut times = Vec::new();
    for step in 0..steps + 3 {
        let s = Instant::now();
        if shards == 1 {
            let l = NextToken.loss(&model, &parts[0]).unwrap();
            let _g = l.backward().unwrap();
        } else {
            std::thread::scope(|sc| {
                let hs: Vec<_> = parts
                    .iter()
                    .map(|p| {
                        let m = &model;
                        sc.spawn(move || {
                            let l = NextToken.loss(m, p).unwrap();
                            l.backward().unwrap()
                        })
                    })
                    .collect();
                let gs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
                for (_, v) in model.params().iter() {
                    if let Some(a) = gs[0].get(v.as_tensor()) {
                        let mut acc = a.clone();
                        for g in &gs[1..] {
                            acc = (acc + g.get(v.as_tensor()).unwrap()).unwrap();
                        }
                        let _ = acc;
                    }
                }
            });
        }
        if step >= 3 {
            times.push(s.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    println!(
        "layers {layers} width {width} T {t} B {b} shards {shards}: median {:.2} ms, {:.1} steps/s",
        times[times.len() / 2] * 1e3,
        1.0 / times[times.len() / 2]
    );
}
