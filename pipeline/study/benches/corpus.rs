//! Corpus generation throughput at the paper's span lengths (L 25–35, W 160): samples/s per set
//! on one thread and on all threads, and the process's peak memory. `make bench`.
//!
//! Rows are generated and turned into Parquet-ready tables exactly as the stage does (without the
//! file write, which `make corpus PRESET=paper` times in its manifest).

#![allow(clippy::print_stdout, missing_docs)]

use std::time::Instant;

use study::config::CorpusConfig;
use study::corpus::{self, CorpusSet, NoProgress, Tables};

fn rate(cfg: &CorpusConfig, tables: &Tables, set: CorpusSet, threads: usize) -> f64 {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");
    let t0 = Instant::now();
    let df = pool
        .install(|| corpus::generate_set(cfg, tables, set, &NoProgress))
        .expect("table");
    df.height() as f64 / t0.elapsed().as_secs_f64()
}

fn main() {
    let mut cfg = CorpusConfig::default(); // the paper's lengths: L 25–35, W 160
    let n = std::env::var("BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(50_000);
    cfg.sizes.pretrain_train = n;
    cfg.sizes.pretrain_test = n;
    cfg.sizes.finetune_train = n;
    cfg.sizes.finetune_test = 1;
    cfg.sizes.eval = n;
    let tables = Tables::new(&cfg);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("corpus generation, paper lengths (L 25–35, W 160), {n} rows per set");
    println!("| set | samples/s (1 thread) | samples/s ({cores} threads) |");
    println!("|---|---:|---:|");
    for set in CorpusSet::ALL {
        let one = rate(&cfg, &tables, set, 1);
        let all = rate(&cfg, &tables, set, cores);
        println!("| {} | {:.0} | {:.0} |", set.name(), one, all);
    }
    // The same work in Python, the official generator's way (benches/python_baseline.py).
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/python_baseline.py");
    let py = std::process::Command::new("python3")
        .args([script, "20000"])
        .output();
    match py {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let python: Option<f64> = text
                .split('=')
                .nth(1)
                .and_then(|r| r.split_whitespace().next())
                .and_then(|v| v.parse().ok());
            print!("{text}");
            if let Some(python) = python {
                let rust = rate(&cfg, &tables, CorpusSet::PretrainTrain, 1);
                println!(
                    "pretrain_train on 1 thread: {rust:.0} samples/s = {:.0}× the Python baseline (target ≥ 50×)",
                    rust / python
                );
            }
        }
        _ => println!("python3 not available: no baseline comparison"),
    }
    if let Some(mib) = study::artifacts::peak_rss_mib() {
        println!("peak resident memory: {mib:.0} MiB");
    }
}
