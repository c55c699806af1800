//! Learnability probe: can the model learn to copy (and to apply a fixed permutation to) a
//! random span at a fixed offset, from fresh random batches? A broken attention or position
//! path fails this while still memorising a fixed batch.
//!
//! `cargo run --release -p study-model --example copy_task -- [steps] [n_layer n_head n_embd] [lr] [perms]`

use candle_core::{Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use study_model::gpt::{Gpt, GptConfig, Params};
use study_model::optim::{AdamW, AdamWConfig};
use study_model::train::{NextToken, Objective, TokenBatch, argmax_rows};

const PAD: u32 = 20;

fn main() -> candle_core::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    let num = |i: usize, d: f64| a.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let steps = num(1, 1000.0) as usize;
    let (nl, nh, ne) = (
        num(2, 3.0) as usize,
        num(3, 3.0) as usize,
        num(4, 48.0) as usize,
    );
    let lr = num(5, 3e-3);
    // Number of distinct permutations selected by an operator token (1 = copy only).
    let perms = num(6, 1.0) as usize;
    let l = 6;
    let t = 2 * l + 4;
    let cfg = GptConfig {
        n_layer: nl,
        n_head: nh,
        n_embd: ne,
        block_size: t,
        vocab_size: 59,
        mlp_ratio: 4,
        gelu: study_model::gpt::Gelu::Vectorised,
    };
    let model = Gpt::new(cfg, Params::init(&cfg, 0, &Device::Cpu)?)?;
    let mut opt = AdamW::new(model.params(), AdamWConfig::default())?;
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let tables: Vec<Vec<u32>> = (0..perms)
        .map(|k| {
            let mut p: Vec<u32> = (0..30).collect();
            if k > 0 {
                for i in (1..30).rev() {
                    p.swap(i, rng.random_range(0..=i));
                }
            }
            p
        })
        .collect();
    // Row: BOS op SOT text(L) EOT out(L) STOP ; x = row[..T], y = row[1..] with loss on out.
    let batch = |rng: &mut ChaCha8Rng, b: usize| {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for _ in 0..b {
            let op = rng.random_range(0..perms);
            let text: Vec<u32> = (0..l).map(|_| rng.random_range(0..30)).collect();
            let mut row = vec![17, op as u32, 19];
            row.extend(text.iter().map(|&c| 22 + c));
            row.push(16);
            row.extend(text.iter().map(|&c| 22 + tables[op][c as usize]));
            row.push(21);
            let mut target = row[1..].to_vec();
            for v in target.iter_mut().take(l + 2) {
                *v = PAD;
            }
            x.extend_from_slice(&row[..t]);
            y.extend(target);
        }
        (x, y)
    };
    let dev = Device::Cpu;
    for step in 0..steps {
        let (x, y) = batch(&mut rng, 64);
        let b = TokenBatch {
            x: Tensor::from_vec(x, (64, t), &dev)?,
            y: Tensor::from_vec(y, (64, t), &dev)?,
        };
        let warm = ((step + 1) as f64 / 100.0).min(1.0);
        let loss = NextToken.loss(&model, &b)?;
        opt.step(&loss.backward()?, lr * warm)?;
        if step % 100 == 0 || step + 1 == steps {
            let (x, y) = batch(&mut ChaCha8Rng::seed_from_u64(99), 256);
            let xs: Vec<Vec<u32>> = x.chunks(t).map(<[u32]>::to_vec).collect();
            let pred = argmax_rows(&model, &xs, 256)?;
            let (mut ok, mut n) = (0, 0);
            for (p, yr) in pred.iter().zip(y.chunks(t)) {
                for (a, b) in p.iter().zip(yr) {
                    if *b != PAD {
                        n += 1;
                        ok += usize::from(a == b);
                    }
                }
            }
            #[allow(clippy::print_stdout)]
            {
                println!(
                    "step {step:5} loss {:.4} held-out output accuracy {:.3}",
                    loss.to_scalar::<f32>()?,
                    ok as f64 / n as f64
                );
            }
        }
    }
    Ok(())
}
