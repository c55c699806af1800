//! Training-step benchmark: forward + backward + AdamW for the tiny, cpu and paper model shapes,
//! as a table of steps/s, tokens/s, achieved GFLOP/s (training_spec §9.1 FLOP model: 3× the
//! forward FLOPs) and its ratio to an f32 matmul peak measured here, plus peak memory.
//!
//! `cargo bench -p study-model --bench train` (`make bench`). Set `BENCH_STEPS` to change the
//! timed steps per shape (default 5, after 2 warm-up steps) and `BENCH_SHAPES` to a comma list
//! (`tiny,cpu,cpu-l18,paper`).
//!
//! For the side-by-side with PyTorch (`make bench-pytorch`, `benches/pytorch_mirror.py`):
//! `BENCH_GELU=exact|vectorised` picks the GELU kernel (default `vectorised`);
//! `BENCH_JSON=<file>` also writes one JSON object per shape, and `BENCH_FIXTURE=<dir>` first
//! writes a parity fixture — weights, a batch, and this model's logits, loss and gradients at the
//! `cpu` shape — that the PyTorch mirror must reproduce before its times count.

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use study::grammar::vocab::{PAD, VOCAB_SIZE};
use study_model::gpt::{Gelu, Gpt, GptConfig, Params};
use study_model::optim::{AdamW, AdamWConfig};
use study_model::train::{NextToken, Objective, TokenBatch};

struct Shape {
    name: &'static str,
    cfg: GptConfig,
    batch: usize,
}

/// `BENCH_GELU=exact|vectorised` (default `vectorised`): the GELU kernel the shapes use.
fn gelu_kind() -> Gelu {
    match std::env::var("BENCH_GELU").as_deref() {
        Ok("exact") => Gelu::Exact,
        Ok("vectorised") | Err(_) => Gelu::Vectorised,
        Ok(other) => panic!("BENCH_GELU={other}: expected exact or vectorised"),
    }
}

fn shapes() -> Vec<Shape> {
    let cfg = |n_layer, n_head, n_embd, block_size| GptConfig {
        n_layer,
        n_head,
        n_embd,
        block_size,
        vocab_size: VOCAB_SIZE,
        mlp_ratio: 4,
        gelu: gelu_kind(),
    };
    vec![
        Shape {
            name: "tiny",
            cfg: cfg(2, 2, 16, 27),
            batch: 16,
        },
        // The cpu preset's model (pipeline/configs/cpu/pretrain.yaml): spans of 6, window 28.
        Shape {
            name: "cpu",
            cfg: cfg(4, 3, 48, 27),
            batch: 64,
        },
        // The 3-layer model of the behaviour pilots on spans of up to 18 (window 64).
        Shape {
            name: "cpu-l18",
            cfg: cfg(3, 3, 48, 63),
            batch: 64,
        },
        Shape {
            name: "paper",
            cfg: cfg(6, 6, 192, 159),
            batch: 32,
        },
    ]
}

/// GFLOP/s of an n×n by n×n f32 matmul (best of 5).
fn matmul_peak(dev: &Device, n: usize) -> f64 {
    let a = Tensor::randn(0f32, 1.0, (n, n), dev).unwrap();
    let b = Tensor::randn(0f32, 1.0, (n, n), dev).unwrap();
    let _ = a.matmul(&b).unwrap();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let t = Instant::now();
        let c = a.matmul(&b).unwrap();
        let _ = c.sum_all().unwrap().to_scalar::<f32>().unwrap();
        best = best.min(t.elapsed().as_secs_f64());
    }
    2.0 * (n as f64).powi(3) / best / 1e9
}

/// The bench's fixed batch: inputs `(7i + 3) mod V`, targets `(11i + 5) mod V` (PAD ignored).
fn fixed_batch(batch: usize, t: usize, dev: &Device) -> TokenBatch {
    let ids = |a: usize, b: usize| -> Vec<u32> {
        (0..batch * t)
            .map(|i| ((i * a + b) % VOCAB_SIZE) as u32)
            .collect()
    };
    TokenBatch {
        x: Tensor::from_vec(ids(7, 3), (batch, t), dev).unwrap(),
        y: Tensor::from_vec(ids(11, 5), (batch, t), dev).unwrap(),
    }
}

/// Weights, batch and this model's logits, loss and gradients at the `cpu` shape (batch 4), for
/// the PyTorch mirror's parity check.
fn write_fixture(dir: &Path, dev: &Device) {
    std::fs::create_dir_all(dir).unwrap();
    let s = shapes().into_iter().find(|s| s.name == "cpu").unwrap();
    let model = Gpt::new(s.cfg, Params::init(&s.cfg, 7, dev).unwrap()).unwrap();
    model.params().save(&dir.join("model.safetensors")).unwrap();
    let batch = fixed_batch(4, s.cfg.block_size, dev);
    let logits = model.forward(&batch.x, None).unwrap();
    let loss = NextToken.loss(&model, &batch).unwrap();
    let grads = loss.backward().unwrap();
    let mut out: HashMap<String, Tensor> = HashMap::from([
        ("x".into(), batch.x.to_dtype(DType::I64).unwrap()),
        ("y".into(), batch.y.to_dtype(DType::I64).unwrap()),
        ("logits".into(), logits),
        ("loss".into(), loss.reshape(1).unwrap()),
    ]);
    // `ln_2` is in the model but not in the graph (the official block never uses it): no gradient.
    for (name, var) in model.params().iter() {
        if let Some(g) = grads.get(var.as_tensor()) {
            out.insert(format!("grad.{name}"), g.clone());
        }
    }
    candle_core::safetensors::save(&out, dir.join("fixture.safetensors")).unwrap();
    let meta = serde_json::json!({
        "n_layer": s.cfg.n_layer, "n_head": s.cfg.n_head, "n_embd": s.cfg.n_embd,
        "block_size": s.cfg.block_size, "vocab_size": s.cfg.vocab_size,
        "mlp_ratio": s.cfg.mlp_ratio, "pad": PAD,
        "shapes": shapes().iter().map(|s| serde_json::json!({
            "name": s.name, "n_layer": s.cfg.n_layer, "n_head": s.cfg.n_head,
            "n_embd": s.cfg.n_embd, "block_size": s.cfg.block_size, "batch": s.batch,
        })).collect::<Vec<_>>(),
    });
    std::fs::write(dir.join("config.json"), meta.to_string()).unwrap();
}

fn main() {
    // The process environment the `study` binary runs with (without it every op pays page
    // faults, and candle's element-wise pool spins beside rayon's workers); `RAYON_NUM_THREADS`
    // sets the threads.
    if let Err(why) = study_model::process_env::reexec_with_runtime_env(None) {
        println!("warning: the allocator keeps its defaults ({why})");
    }
    study_model::process_env::on_rayon_worker(bench);
}

fn bench() {
    let dev = Device::Cpu;
    if let Ok(dir) = std::env::var("BENCH_FIXTURE") {
        write_fixture(Path::new(&dir), &dev);
    }
    let mut json = std::env::var("BENCH_JSON")
        .ok()
        .map(|p| std::fs::File::create(p).unwrap());
    let steps: usize = std::env::var("BENCH_STEPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let wanted = std::env::var("BENCH_SHAPES").unwrap_or_else(|_| "tiny,cpu,cpu-l18,paper".into());
    let peak = matmul_peak(&dev, 1024);
    println!(
        "f32 matmul peak (1024³, best of 5): {peak:.1} GFLOP/s; threads: {}",
        candle_core::utils::get_num_threads()
    );
    println!(
        "| shape | layers×heads×width | batch×context | steps/s | tokens/s | GFLOP/s | % of matmul peak | fwd / bwd / AdamW ms | peak RSS MiB |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for s in shapes()
        .into_iter()
        .filter(|s| wanted.split(',').any(|w| w == s.name))
    {
        let t = s.cfg.block_size;
        let model = Gpt::new(s.cfg, Params::init(&s.cfg, 0, &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(model.params(), AdamWConfig::default()).unwrap();
        let batch = fixed_batch(s.batch, t, &dev);
        // Phases, to see where a step's time goes: forward (loss), backward, optimiser.
        let mut phase = [0f64; 3];
        let mut step = |phase: &mut [f64; 3]| {
            let t0 = Instant::now();
            let loss = NextToken.loss(&model, &batch).unwrap();
            let _ = loss.to_scalar::<f32>().unwrap();
            let t1 = Instant::now();
            let grads = loss.backward().unwrap();
            let t2 = Instant::now();
            opt.step(&grads, 1e-4).unwrap();
            let t3 = Instant::now();
            phase[0] += (t1 - t0).as_secs_f64();
            phase[1] += (t2 - t1).as_secs_f64();
            phase[2] += (t3 - t2).as_secs_f64();
        };
        for _ in 0..2 {
            step(&mut [0.0; 3]);
        }
        let start = Instant::now();
        for _ in 0..steps {
            step(&mut phase);
        }
        let secs = start.elapsed().as_secs_f64() / steps as f64;
        let ms = phase.map(|p| 1e3 * p / steps as f64);
        let tokens = (s.batch * t) as f64;
        let gflops = 3.0 * s.cfg.forward_flops_per_token(t) * tokens / secs / 1e9;
        println!(
            "| {} | {}×{}×{} | {}×{} | {:.2} | {:.0} | {:.1} | {:.0}% | {:.0} / {:.0} / {:.0} | {:.0} |",
            s.name,
            s.cfg.n_layer,
            s.cfg.n_head,
            s.cfg.n_embd,
            s.batch,
            t,
            1.0 / secs,
            tokens / secs,
            gflops,
            100.0 * gflops / peak,
            ms[0],
            ms[1],
            ms[2],
            study::artifacts::peak_rss_mib().unwrap_or(f64::NAN)
        );
        if let Some(f) = json.as_mut() {
            let row = serde_json::json!({
                "impl": "ours (candle)", "shape": s.name,
                "threads": candle_core::utils::get_num_threads(),
                "gelu": format!("{:?}", s.cfg.gelu).to_lowercase(),
                "steps_per_s": 1.0 / secs, "gflops": gflops, "peak_gflops": peak,
                "fwd_ms": ms[0], "bwd_ms": ms[1], "opt_ms": ms[2],
            });
            writeln!(f, "{row}").unwrap();
        }
    }
}
