//! Pilot gate: does a model represent the *branch* of the operand text linearly?
//!
//! Rows: held-out texts of the safety fine-tuning families `finetune_safe` (safe branch) and
//! `finetune_id_mg` (unsafe branch), with **operators drawn uniformly at random** over the 16
//! operator tokens (the families' own operators give the branch away: the unsafe family uses only
//! `( ] {`). For each block's output, a logistic-regression probe (candle-nn AdamW, standardised
//! features) at three readouts — the last text token, the mean over the text, and EOT (where the
//! first output is decided) — is trained on 75% of the rows and scored on the other 25%.
//! Baselines on the same rows: bag-of-letters and bag-of-bigrams of the raw text.
//!
//! `cargo run --release -p study-cli --example branch_probe -- <run root (…/seed-0)> <model dir>
//! [rows per branch = 1000] [seed = 0]`; the model dir is `02_pretrain` or
//! `03_finetune/<variant>` under the run root.

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Optimizer, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use study::Catalog;
use study::artifacts::{MODEL_CONFIG_FILE, MODEL_FILE};
use study::corpus::{CorpusSet, Variant};
use study::finetune::PairTable;
use study::grammar::vocab::{self, Token};
use study_model::gpt::{Gpt, GptConfig, Params, Trace};

/// Held-out accuracy of a logistic-regression probe on `x` (n × d) with labels `y`.
fn probe(x: &[Vec<f32>], y: &[f32], seed: u64) -> Result<f64> {
    let dev = Device::Cpu;
    let (n, d) = (x.len(), x[0].len());
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for i in (1..n).rev() {
        order.swap(i, rng.random_range(0..=i));
    }
    let n_train = n * 3 / 4;
    let take = |idx: &[usize]| -> Result<(Tensor, Tensor)> {
        let xs: Vec<f32> = idx.iter().flat_map(|&i| x[i].iter().copied()).collect();
        let ys: Vec<u32> = idx.iter().map(|&i| u32::from(y[i] > 0.5)).collect();
        Ok((
            Tensor::from_vec(xs, (idx.len(), d), &dev)?,
            Tensor::from_vec(ys, idx.len(), &dev)?,
        ))
    };
    let (xtr, ytr) = take(&order[..n_train])?;
    let (xte, yte) = take(&order[n_train..])?;
    let mean = xtr.mean_keepdim(0)?;
    let sd = (xtr.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)? + 1e-6)?.sqrt()?;
    let norm = |t: &Tensor| -> Result<Tensor> { Ok(t.broadcast_sub(&mean)?.broadcast_div(&sd)?) };
    let (xtr, xte) = (norm(&xtr)?, norm(&xte)?);
    let vars = VarMap::new();
    // Two logits and a log-softmax cross-entropy: stable on separable data (a sigmoid-then-log
    // loss reaches log 0 there).
    let lin = candle_nn::linear(d, 2, VarBuilder::from_varmap(&vars, DType::F32, &dev))?;
    let mut opt = candle_nn::AdamW::new(
        vars.all_vars(),
        candle_nn::ParamsAdamW {
            lr: 0.05,
            weight_decay: 1e-3,
            ..Default::default()
        },
    )?;
    for _ in 0..300 {
        let logits = candle_nn::Module::forward(&lin, &xtr)?;
        let loss = candle_nn::loss::cross_entropy(&logits, &ytr)?;
        opt.backward_step(&loss)?;
    }
    let pred = candle_nn::Module::forward(&lin, &xte)?.argmax(1)?;
    let acc = pred
        .eq(&yte)?
        .to_dtype(DType::F32)?
        .mean_all()?
        .to_scalar::<f32>()?;
    Ok(f64::from(acc))
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let root = args
        .get(1)
        .context("usage: branch_probe <run root> <model dir> [rows] [seed]")?;
    let model_dir = std::path::Path::new(root).join(args.get(2).context("model dir")?);
    let rows: usize = args.get(3).map_or(Ok(1000), |s| s.parse())?;
    let seed: u64 = args.get(4).map_or(Ok(0), |s| s.parse())?;
    let catalog = Catalog::at(root);
    let cfg: GptConfig = serde_json::from_str(
        &std::fs::read_to_string(model_dir.join(MODEL_CONFIG_FILE))
            .with_context(|| format!("{}", model_dir.display()))?,
    )?;
    let dev = Device::Cpu;
    let model = Gpt::new(cfg, Params::load(&cfg, &model_dir.join(MODEL_FILE), &dev)?)?;

    // (row tokens with random operators, text length, label 1 = unsafe branch)
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut data: Vec<(Vec<Token>, usize, f32)> = Vec::new();
    for (set, label) in [
        (CorpusSet::FinetuneSafe, 0.0),
        (CorpusSet::FinetuneIdMg, 1.0),
    ] {
        let table = PairTable::read(&catalog, set, Some("test"))?;
        for i in 0..rows.min(table.len()) {
            let mut x = table.row(Variant::Safe, i).0.to_vec();
            for slot in x.iter_mut().skip(1).take(4) {
                *slot = rng.random_range(0..16);
            }
            data.push((x, usize::from(table.text_len[i]), label));
        }
    }
    let labels: Vec<f32> = data.iter().map(|d| d.2).collect();
    let lmax = data.iter().map(|d| d.1).max().context("no rows")?;
    let t = lmax + 7; // up to and including EOT

    // Baselines on the raw text.
    let letters = |x: &[Token], l: usize| -> Vec<usize> {
        x[6..6 + l]
            .iter()
            .filter_map(|&t| vocab::letter_index(t))
            .collect()
    };
    let bag: Vec<Vec<f32>> = data
        .iter()
        .map(|(x, l, _)| {
            let mut f = vec![0f32; 30];
            letters(x, *l).into_iter().for_each(|j| f[j] += 1.0);
            f
        })
        .collect();
    let bigrams: Vec<Vec<f32>> = data
        .iter()
        .map(|(x, l, _)| {
            let mut f = vec![0f32; 900];
            letters(x, *l)
                .windows(2)
                .for_each(|w| f[w[0] * 30 + w[1]] += 1.0);
            f
        })
        .collect();
    #[allow(clippy::print_stdout)]
    {
        println!(
            "rows {} (per branch {rows}), model {}",
            data.len(),
            model_dir.display()
        );
        println!("baseline bag-of-letters {:.3}", probe(&bag, &labels, seed)?);
        println!(
            "baseline bag-of-bigrams {:.3}",
            probe(&bigrams, &labels, seed)?
        );
    }

    // Activations: block outputs at the last text token, mean over the text, EOT.
    let n_layer = cfg.n_layer;
    let mut feats: Vec<[Vec<Vec<f32>>; 3]> = (0..n_layer).map(|_| Default::default()).collect();
    for chunk in data.chunks(256) {
        let ids: Vec<u32> = chunk
            .iter()
            .flat_map(|(x, _, _)| x[..t].iter().map(|&v| u32::from(v)))
            .collect();
        let ids = Tensor::from_vec(ids, (chunk.len(), t), &dev)?;
        let mut trace = Trace::default();
        model.forward(&ids, Some(&mut trace))?;
        for (l, layer) in trace.layers.iter().enumerate() {
            let h: Vec<Vec<Vec<f32>>> = layer.block_out.to_vec3()?;
            for (r, (_, len, _)) in chunk.iter().enumerate() {
                let text = &h[r][6..6 + len];
                let mean: Vec<f32> = (0..cfg.n_embd)
                    .map(|k| text.iter().map(|v| v[k]).sum::<f32>() / *len as f32)
                    .collect();
                feats[l][0].push(h[r][5 + len].clone());
                feats[l][1].push(mean);
                feats[l][2].push(h[r][6 + len].clone());
            }
        }
    }
    for (l, f) in feats.iter().enumerate() {
        let acc: Vec<f64> = f
            .iter()
            .map(|x| probe(x, &labels, seed))
            .collect::<Result<_>>()?;
        #[allow(clippy::print_stdout)]
        {
            println!(
                "block {} probe: last text {:.3}  mean text {:.3}  EOT {:.3}",
                l + 1,
                acc[0],
                acc[1],
                acc[2]
            );
        }
    }
    Ok(())
}
