//! How candle's f32 matmul (the `gemm` crate underneath) scales with threads at the shapes the
//! model multiplies: the linear layers' `x Wᵀ` at the cpu shape (1,728 rows, width 48, MLP 192)
//! and at the paper shape (5,088 rows, width 192, MLP 768). Run it at 1 and at 2 threads:
//! `RAYON_NUM_THREADS=1 cargo run --release -p study-model --example probe_matmul`, then `=2`,
//! and alternate a few times — this machine's speed drifts. `benches/pytorch_matmul.py --ours
//! <this example>` runs it alternately with PyTorch's products at the same shapes and prints both.

#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]
use candle_core::{Device, Tensor};
use std::time::Instant;

fn main() {
    if let Err(why) = study_model::process_env::reexec_with_runtime_env(None) {
        println!("warning: the allocator keeps its defaults ({why})");
    }
    study_model::process_env::on_rayon_worker(probe);
}

fn probe() {
    let dev = Device::Cpu;
    println!("threads: {}", candle_core::utils::get_num_threads());
    println!("| rows × in × out | µs | GFLOP/s |");
    println!("|---|---|---|");
    for (m, k, n) in [
        (1728, 48, 144),
        (1728, 48, 192),
        (1728, 192, 48),
        (1728, 48, 48),
        (5088, 192, 576),
        (5088, 192, 768),
        (5088, 768, 192),
    ] {
        let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
        let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
        let flop = 2.0 * (m * n * k) as f64;
        let reps = (2e9 / flop) as usize;
        let run = || x.matmul(&w.t().unwrap()).unwrap();
        for _ in 0..3 {
            run();
        }
        let t0 = Instant::now();
        for _ in 0..reps {
            std::hint::black_box(run());
        }
        let s = t0.elapsed().as_secs_f64() / reps as f64;
        println!(
            "| {m} × {k} × {n} | {:.1} | {:.1} |",
            s * 1e6,
            flop / s / 1e9
        );
    }
}
