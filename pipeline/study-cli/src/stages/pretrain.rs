//! `study pretrain`: the instruction-tuned (IT) model (paper §2.1–2.3; training_spec.md §3).
//!
//! Reads the corpus (pool, held-out rows, std_safe for the accuracy bar), trains with the
//! shared loop and the next-token objective, evaluates every `eval.every` steps, writes a
//! resumable checkpoint to `02_pretrain.ckpt/` every `checkpoint_every` steps, and finally
//! `02_pretrain/` with the model, its config, the optimiser state, metrics and a summary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use study::Catalog;
use study::artifacts::{
    self, FileRecord, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, Manifest, OPTIMIZER_FILE,
    SUMMARY_FILE, Stage, StageDir, TRAIN_STATE_FILE,
};
use study::config::{CorpusConfig, PretrainConfig};
use study::corpus::CorpusSet;
use study::grammar::SampleType;
use study::grammar::vocab::{Token, Vocab};
use study::training::{self, MetricRow, TokenTable};
use study_model::gpt::{Gpt, GptConfig, Params};
use study_model::optim::AdamW;
use study_model::train::{
    self as tr, Hooks, LoopSpec, NextToken, StepReport, TokenBatch, TrainError,
};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::StageArgs;
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Rows per forward pass during evaluation.
const EVAL_CHUNK: usize = 256;

/// Arguments of `study pretrain`.
#[derive(Debug, Clone, Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Continue a killed run from its last checkpoint (`02_pretrain.ckpt/`) instead of
    /// starting over. The checkpoint must come from the same config and code.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps as if killed (the checkpoint stays): for testing --resume.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

/// The resumable state next to a checkpoint's weights and moments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct TrainState {
    /// Steps completed.
    step: usize,
    /// Hash of the resolved config that produced it.
    config_hash: String,
    /// Code fingerprint that produced it.
    fingerprint: String,
}

/// The stage's final summary (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Steps trained.
    pub steps: usize,
    /// Greedy exact match of both outputs on held-out std_safe instructions.
    pub std_safe_greedy_em_both: f64,
    /// Greedy exact match of both outputs on held-out pre-training rows (`full` type).
    pub test_greedy_em_both: f64,
    /// The config's bar.
    pub min_exact_match: f64,
    /// Whether the bar holds (fine-tuning refuses a model that fails it).
    pub meets_bar: bool,
    /// Final held-out loss.
    pub test_loss: f64,
    /// Mean training throughput, tokens per second.
    pub tokens_per_s: f64,
}

/// The code that decides the stage's outputs.
pub fn code_fingerprint() -> String {
    artifacts::source_fingerprint(&[
        &study_model::code_fingerprint(),
        include_str!("pretrain.rs"),
    ])
}

/// What the stage reads from the corpus.
struct Data {
    corpus: CorpusConfig,
    vocab_size: usize,
    pool: TokenTable,
    test: TokenTable,
    std_safe: TokenTable,
    inputs: Vec<FileRecord>,
}

/// What decides whether the stage is up to date: the corpus config, the vocabulary size and the
/// input files' records (hashes). Cheap: no table is read.
struct Inputs {
    corpus: CorpusConfig,
    vocab_size: usize,
    records: Vec<FileRecord>,
}

fn check_inputs(catalog: &Catalog) -> Result<Inputs> {
    let manifest = Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let corpus: CorpusConfig =
        serde_yaml::from_value(manifest.config.clone()).with_context(|| {
            format!(
                "the corpus manifest {} is from another version; run `make corpus`",
                catalog.manifest(Stage::Corpus).display()
            )
        })?;
    let vocab_path = catalog.vocab();
    let vocab: Vocab =
        serde_json::from_str(&std::fs::read_to_string(&vocab_path).with_context(|| {
            format!(
                "no vocabulary at {}; run `make corpus`",
                vocab_path.display()
            )
        })?)
        .with_context(|| {
            format!(
                "{} is not a vocabulary; run `make corpus`",
                vocab_path.display()
            )
        })?;
    if vocab != Vocab::study() {
        anyhow::bail!(
            "the vocabulary {} ({} tokens) differs from this code's ({} tokens); run `make corpus` again",
            vocab_path.display(),
            vocab.len(),
            Vocab::study().len()
        );
    }
    let mut inputs = vec![catalog.input_record("vocab", &vocab_path, "corpus")?];
    for set in [
        CorpusSet::PretrainTrain,
        CorpusSet::PretrainTest,
        CorpusSet::EvalStdSafe,
    ] {
        inputs.push(catalog.input_record(set.name(), &catalog.corpus_set(set), "corpus")?);
    }
    Ok(Inputs {
        corpus,
        vocab_size: vocab.len(),
        records: inputs,
    })
}

/// Read the tables training needs (only when the stage runs).
fn read_inputs(catalog: &Catalog, inputs: Inputs) -> Result<Data> {
    let pool = training::read_tokens(catalog, CorpusSet::PretrainTrain, "tokens", None)?;
    let test = training::read_tokens(catalog, CorpusSet::PretrainTest, "tokens", None)?;
    let std_safe = training::read_tokens(catalog, CorpusSet::EvalStdSafe, "x_safe", None)?;
    if pool.is_empty() || test.is_empty() || std_safe.is_empty() {
        anyhow::bail!(
            "the corpus has an empty pre-training or std_safe set; check sizes in corpus.yaml"
        );
    }
    Ok(Data {
        corpus: inputs.corpus,
        vocab_size: inputs.vocab_size,
        pool,
        test,
        std_safe,
        inputs: inputs.records,
    })
}

/// Run the stage.
pub fn run(args: &PretrainArgs, rt: &Runtime) -> Result<()> {
    let resolved = args.stage.resolve::<PretrainConfig>("pretrain", rt)?;
    let cfg = &resolved.cfg;
    let catalog = Catalog::new(&rt.data_root, &args.stage.preset, cfg.seed);
    let inputs = check_inputs(&catalog)?;
    let fingerprint = code_fingerprint();
    let manifest_path = catalog.manifest(Stage::Pretrain);
    let plan = super::Plan {
        version: STAGE_VERSION,
        fingerprint: &fingerprint,
        config_hash: &resolved.hash,
        inputs: &inputs.records,
    };
    if args
        .stage
        .up_to_date(&manifest_path, "pretrain", plan, catalog.root())?
    {
        return Ok(());
    }
    // Held from here: no other run may write this folder or its checkpoints meanwhile.
    let out =
        StageDir::begin(&catalog, Stage::Pretrain).context("starting the pretrain stage folder")?;
    let data = read_inputs(&catalog, inputs)?;
    let device = rt.open_device()?;
    let gpt_cfg = GptConfig {
        n_layer: cfg.model.n_layer,
        n_head: cfg.model.n_head,
        n_embd: cfg.model.n_embd,
        block_size: data.pool.window - 1,
        vocab_size: data.vocab_size,
        mlp_ratio: cfg.model.mlp_ratio,
        gelu: cfg.model.gelu,
    };
    let started = SystemTime::now();
    let ckpt_dir = catalog.checkpoint_dir(Stage::Pretrain);
    let (params, start, rows, opt_state) = if args.resume {
        resume(&ckpt_dir, &gpt_cfg, &resolved.hash, &fingerprint, &device)?
    } else {
        (
            Params::init(&gpt_cfg, cfg.seed, &device)?,
            0,
            Vec::new(),
            None,
        )
    };
    let model = Gpt::new(gpt_cfg, params)?;
    let mut opt = AdamW::new(model.params(), cfg.adamw)?;
    if let Some((tensors, step)) = opt_state {
        opt.restore(tensors, step)?;
    }
    let _span =
        tracing::info_span!("pretrain", preset = %args.stage.preset, seed = cfg.seed).entered();
    tracing::info!(
        params = gpt_cfg.num_parameters(),
        context = gpt_cfg.block_size,
        start,
        steps = cfg.steps,
        "training the IT model ({} layers × {} heads × width {})",
        gpt_cfg.n_layer,
        gpt_cfg.n_head,
        gpt_cfg.n_embd
    );
    let bar = tracing::info_span!("steps");
    bar.pb_set_style(
        &indicatif::ProgressStyle::with_template(
            "{span_child_prefix}{spinner} [{bar:30}] {pos}/{len} steps {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.pb_set_length(cfg.steps as u64);
    bar.pb_set_position(start as u64);
    bar.pb_start();
    let mut hooks = Pretrain {
        cfg,
        data: &data,
        device: device.clone(),
        rows,
        ckpt_dir: ckpt_dir.clone(),
        state: TrainState {
            step: start,
            config_hash: resolved.hash.clone(),
            fingerprint: fingerprint.clone(),
        },
        bar: bar.clone(),
        stop_after: args.stop_after,
        train_seconds: 0.0,
        train_tokens: 0,
        last_eval: None,
    };
    let spec = LoopSpec {
        schedule: cfg.lr,
        grad_clip: cfg.grad_clip,
        start,
        steps: cfg.steps,
    };
    if start == 0 {
        hooks.evaluate(&model, 0)?;
    }
    match tr::run(&model, &mut opt, &NextToken, spec, &mut hooks) {
        Ok(()) => {}
        Err(TrainError::Hook(e)) if e.downcast_ref::<Stopped>().is_some() => {
            tracing::warn!(
                "stopped after step {} as asked; resume with --resume",
                hooks.state.step
            );
            return Ok(());
        }
        Err(e @ TrainError::NonFinite { .. }) => {
            return Err(e).context(
                "pre-training diverged: lower lr.lr_max or set grad_clip, then rerun with --resume \
                 (the last checkpoint is intact)",
            );
        }
        Err(e) => return Err(e).context("pre-training"),
    }
    drop(bar);
    let summary = hooks.summary()?;
    // Final outputs, atomically.
    write_checkpoint(out.path(), &model, &opt, &hooks.state, &hooks.rows)?;
    artifacts::write_json(&summary, &out.path().join(SUMMARY_FILE))?;
    let mut files = Vec::new();
    for (name, file) in [
        ("model", MODEL_FILE),
        ("model_config", MODEL_CONFIG_FILE),
        ("optimizer", OPTIMIZER_FILE),
        ("train_state", TRAIN_STATE_FILE),
        ("summary", SUMMARY_FILE),
    ] {
        files.push(out.record(name, file, None, Vec::new())?);
    }
    let schema = training::metrics_schema("pretrain");
    files.push(out.record(
        "metrics",
        METRICS_FILE,
        Some(hooks.rows.len()),
        schema.column_names(),
    )?);
    let timings = BTreeMap::from([
        ("train_seconds".to_owned(), hooks.train_seconds),
        ("tokens_per_s".to_owned(), summary.tokens_per_s),
    ]);
    let mut manifest = super::manifest(
        Stage::Pretrain,
        STAGE_VERSION,
        &args.stage.preset,
        &resolved,
        cfg.seed,
        data.inputs.clone(),
        files,
        rt,
        started,
        timings,
    )?;
    manifest.code.fingerprint = fingerprint;
    let dir = out
        .commit(&manifest)
        .context("finishing the pretrain stage folder")?;
    if ckpt_dir.exists() {
        std::fs::remove_dir_all(&ckpt_dir).with_context(|| {
            format!(
                "removing the finished run's checkpoint {}",
                ckpt_dir.display()
            )
        })?;
    }
    if summary.meets_bar {
        tracing::info!(
            "IT model in {}: greedy exact match on std_safe {:.1}% (bar {:.0}%)",
            dir.display(),
            100.0 * summary.std_safe_greedy_em_both,
            100.0 * summary.min_exact_match
        );
    } else {
        tracing::warn!(
            "IT model in {} is BELOW the accuracy bar: greedy exact match on std_safe {:.1}% < {:.0}%; fine-tuning it would measure nothing (train longer or wider)",
            dir.display(),
            100.0 * summary.std_safe_greedy_em_both,
            100.0 * summary.min_exact_match
        );
    }
    Ok(())
}

/// Marker error: `--stop-after` reached.
#[derive(Debug, thiserror::Error)]
#[error("stopped as asked")]
struct Stopped;

type OptState = Option<(BTreeMap<String, candle_core::Tensor>, u64)>;

fn resume(
    dir: &Path,
    cfg: &GptConfig,
    hash: &str,
    fingerprint: &str,
    device: &candle_core::Device,
) -> Result<(Params, usize, Vec<MetricRow>, OptState)> {
    let state_path = dir.join(TRAIN_STATE_FILE);
    let text = std::fs::read_to_string(&state_path).with_context(|| {
        format!(
            "no checkpoint to resume at {}; run without --resume to start over",
            state_path.display()
        )
    })?;
    let state: TrainState = serde_json::from_str(&text).with_context(|| {
        format!(
            "{} is corrupt; delete {} and start over",
            state_path.display(),
            dir.display()
        )
    })?;
    if state.config_hash != hash || state.fingerprint != fingerprint {
        anyhow::bail!(
            "the checkpoint {} is from another config or code version (config {} vs {}); delete it or run without --resume",
            dir.display(),
            state.config_hash,
            hash
        );
    }
    let corrupt = |what: &str| {
        format!(
            "cannot load {what} from the checkpoint {}; it is corrupt: delete it and start over",
            dir.display()
        )
    };
    let saved: GptConfig = serde_json::from_str(
        &std::fs::read_to_string(dir.join(MODEL_CONFIG_FILE))
            .with_context(|| corrupt("config.json"))?,
    )
    .with_context(|| corrupt("config.json"))?;
    if saved != *cfg {
        anyhow::bail!(
            "the checkpoint {} has model shape {saved:?}, the config needs {cfg:?}",
            dir.display()
        );
    }
    let params =
        Params::load(cfg, &dir.join(MODEL_FILE), device).with_context(|| corrupt("the weights"))?;
    let moments = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)
        .with_context(|| corrupt("the optimiser state"))?
        .into_iter()
        .collect();
    let metrics_path = dir.join(METRICS_FILE);
    let df = artifacts::read_parquet(&metrics_path, &training::metrics_schema("pretrain"))?;
    let rows = training::metrics_rows(&df).with_context(|| corrupt("the metrics"))?;
    tracing::info!(step = state.step, "resuming from {}", dir.display());
    Ok((params, state.step, rows, Some((moments, state.step as u64))))
}

/// Write weights, config, optimiser moments, train state and metrics into `dir`.
fn write_checkpoint(
    dir: &Path,
    model: &Gpt,
    opt: &AdamW,
    state: &TrainState,
    rows: &[MetricRow],
) -> Result<()> {
    model
        .params()
        .save(&dir.join(MODEL_FILE))
        .context("writing the weights")?;
    artifacts::write_json(model.config(), &dir.join(MODEL_CONFIG_FILE))?;
    opt.save(&dir.join(OPTIMIZER_FILE))
        .context("writing the optimiser state")?;
    let mut df = training::metrics_frame(rows)?;
    artifacts::write_parquet(
        &mut df,
        &dir.join(METRICS_FILE),
        &training::metrics_schema("pretrain"),
        &[],
    )?;
    // train_state.json last: a checkpoint without it is not resumable, and is never half-read.
    artifacts::write_json(state, &dir.join(TRAIN_STATE_FILE))?;
    Ok(())
}

/// The stage's hooks: batches, metrics, evaluation, checkpoints.
struct Pretrain<'a> {
    cfg: &'a PretrainConfig,
    data: &'a Data,
    device: candle_core::Device,
    rows: Vec<MetricRow>,
    ckpt_dir: PathBuf,
    state: TrainState,
    bar: tracing::Span,
    stop_after: Option<usize>,
    train_seconds: f64,
    train_tokens: usize,
    /// (step, std_safe greedy both, test greedy both, test loss)
    last_eval: Option<(usize, f64, f64, f64)>,
}

impl Pretrain<'_> {
    fn evaluate(&mut self, model: &Gpt, step: usize) -> Result<()> {
        let e = &self.cfg.eval;
        let started = Instant::now();
        // Teacher-forced: held-out rows (their own sample types) and a fresh draw of the
        // training mix at this step.
        let test = self.data.test.examples(0..e.rows.min(self.data.test.len()));
        let train = training::pretrain_batch(
            &self.data.pool,
            &self.data.corpus.pretrain_mix,
            self.cfg.seed ^ 0x5eed_e7a1,
            step.min(self.cfg.steps - 1),
            self.cfg.steps,
            e.rows,
        );
        let mut test_loss = 0.0;
        for (split, examples) in [("test", &test), ("train", &train)] {
            let (scores, loss) = tr::teacher_forced(model, examples, EVAL_CHUNK)?;
            if split == "test" {
                test_loss = loss;
            }
            self.rows.push(MetricRow::new(
                step,
                split,
                "all",
                "eval_loss",
                loss,
                examples.len(),
            ));
            for (ty, w, acc, em, n) in scores.rows() {
                for (metric, value) in [("acc", acc), ("em", em)] {
                    let name = format!("{metric}_{}", w.as_str());
                    self.rows
                        .push(MetricRow::new(step, split, ty.as_str(), &name, value, n));
                }
            }
        }
        // Greedy: held-out full rows, and std_safe instructions (the accuracy bar).
        let full: Vec<(&[Token], usize)> = (0..self.data.test.len())
            .filter(|&i| self.data.test.sample_type[i] == SampleType::Full)
            .take(e.greedy_rows)
            .map(|i| {
                (
                    self.data.test.row(i),
                    usize::from(self.data.test.text_len[i]),
                )
            })
            .collect();
        let safe: Vec<(&[Token], usize)> = (0..self.data.std_safe.len().min(e.greedy_rows))
            .map(|i| {
                (
                    self.data.std_safe.row(i),
                    usize::from(self.data.std_safe.text_len[i]),
                )
            })
            .collect();
        let mut both = [0.0; 2];
        for (k, (split, rows)) in [("test", &full), ("std_safe", &safe)]
            .into_iter()
            .enumerate()
        {
            let res = tr::greedy(model, rows, EVAL_CHUNK)?;
            let n = res.len().max(1) as f64;
            let s1 = res.iter().filter(|r| r.0).count() as f64 / n;
            let s2 = res.iter().filter(|r| r.1).count() as f64 / n;
            let b = res.iter().filter(|r| r.0 && r.1).count() as f64 / n;
            both[k] = b;
            for (m, v) in [
                ("greedy_em_s1", s1),
                ("greedy_em_s2", s2),
                ("greedy_em_both", b),
            ] {
                self.rows
                    .push(MetricRow::new(step, split, "full", m, v, res.len()));
            }
        }
        self.last_eval = Some((step, both[1], both[0], test_loss));
        tracing::info!(
            step,
            test_loss = format!("{test_loss:.4}"),
            greedy_std_safe = format!("{:.3}", both[1]),
            greedy_test = format!("{:.3}", both[0]),
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "evaluation"
        );
        Ok(())
    }

    fn summary(&self) -> Result<Summary> {
        let (step, safe, test, loss) = self.last_eval.context("no evaluation ran")?;
        anyhow::ensure!(
            step == self.cfg.steps,
            "the last evaluation is not at the last step"
        );
        Ok(Summary {
            steps: self.cfg.steps,
            std_safe_greedy_em_both: safe,
            test_greedy_em_both: test,
            min_exact_match: self.cfg.eval.min_exact_match,
            meets_bar: safe >= self.cfg.eval.min_exact_match,
            test_loss: loss,
            tokens_per_s: self.train_tokens as f64 / self.train_seconds.max(1e-9),
        })
    }
}

fn hook_err(e: impl Into<anyhow::Error>) -> TrainError {
    TrainError::Hook(e.into().into())
}

impl Hooks<TokenBatch> for Pretrain<'_> {
    fn batch(&mut self, step: usize) -> Result<TokenBatch, TrainError> {
        let examples = training::pretrain_batch(
            &self.data.pool,
            &self.data.corpus.pretrain_mix,
            self.cfg.seed,
            step,
            self.cfg.steps,
            self.cfg.batch_size,
        );
        Ok(TokenBatch::new(&examples, &self.device)?)
    }

    fn after_step(&mut self, model: &Gpt, opt: &AdamW, r: &StepReport) -> Result<(), TrainError> {
        let tokens = self.cfg.batch_size * (self.data.pool.window - 1);
        self.train_seconds += r.seconds;
        self.train_tokens += tokens;
        let tps = tokens as f64 / r.seconds.max(1e-9);
        for (m, v) in [
            ("loss", r.loss),
            ("lr", r.lr),
            ("grad_norm", r.grad_norm),
            ("tokens_per_s", tps),
        ] {
            self.rows
                .push(MetricRow::new(r.step, "train", "all", m, v, 1));
        }
        self.state.step = r.step;
        debug_assert_eq!(opt.steps_taken(), r.step as u64, "one update per step");
        self.bar.pb_inc(1);
        let acc = self.last_eval.map_or(String::new(), |(_, s, _, _)| {
            format!(", std_safe em {:.0}%", 100.0 * s)
        });
        self.bar.pb_set_message(&format!("loss {:.3}{acc}", r.loss));
        if r.step.is_multiple_of(self.cfg.eval.every) || r.step == self.cfg.steps {
            self.evaluate(model, r.step).map_err(hook_err)?;
        }
        let every = self.cfg.checkpoint_every;
        let stop = self.stop_after == Some(r.step);
        if (every > 0 && r.step.is_multiple_of(every) && r.step < self.cfg.steps) || stop {
            self.checkpoint(model, opt).map_err(hook_err)?;
        }
        if stop {
            return Err(TrainError::Hook(Box::new(Stopped)));
        }
        Ok(())
    }
}

impl Pretrain<'_> {
    /// Write the checkpoint into `<ckpt>.partial/`, then swap it in: a kill mid-write leaves the
    /// previous checkpoint intact.
    fn checkpoint(&self, model: &Gpt, opt: &AdamW) -> Result<()> {
        let partial = self.ckpt_dir.with_extension("ckpt.partial");
        if partial.exists() {
            std::fs::remove_dir_all(&partial)?;
        }
        std::fs::create_dir_all(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        write_checkpoint(&partial, model, opt, &self.state, &self.rows)?;
        // Swap: the previous checkpoint moves aside before the new one moves in, and `resume`
        // never reads `.partial` or `.old`.
        let old = self.ckpt_dir.with_extension("ckpt.old");
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        if self.ckpt_dir.exists() {
            std::fs::rename(&self.ckpt_dir, &old)?;
        }
        std::fs::rename(&partial, &self.ckpt_dir)
            .with_context(|| format!("moving the checkpoint into {}", self.ckpt_dir.display()))?;
        if old.exists() {
            std::fs::remove_dir_all(&old)?;
        }
        tracing::info!(
            step = self.state.step,
            "checkpoint written to {}",
            self.ckpt_dir.display()
        );
        Ok(())
    }
}
