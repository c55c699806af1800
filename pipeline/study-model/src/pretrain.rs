//! Pre-training the instruction-tuned (IT) model (paper §2.1–2.3; training_spec.md §3) as one
//! library call, [`pretrain`]: `study pretrain` resolves the config and the run folder and calls it.
//!
//! It trains with the shared loop and the next-token objective, evaluates every `eval.every`
//! steps (teacher-forced scores on held-out rows and a fresh draw of the training mix; greedy exact
//! match on held-out rows and on std_safe, the accuracy bar), writes a resumable checkpoint every
//! `checkpoint_every` steps, and finally writes the model, its config, the optimiser state, the
//! train state, metrics and a summary into the stage's output folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use study::Catalog;
use study::artifacts::{
    self, ArtifactError, FileRecord, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, Manifest,
    OPTIMIZER_FILE, SUMMARY_FILE, Stage, StageDir, TRAIN_STATE_FILE,
};
use study::config::corpus::PretrainMixConfig;
use study::config::{CorpusConfig, PretrainConfig};
use study::corpus::CorpusSet;
use study::grammar::SampleType;
use study::grammar::vocab::Token;
use study::training::{self, MetricRow, TokenTable};

use crate::gpt::{Gpt, GptConfig, Params};
use crate::optim::AdamW;
use crate::train::{self as tr, Hooks, LoopSpec, NextToken, StepReport, TokenBatch, TrainError};

/// Errors of a pre-training run; each says how to recover.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// The corpus manifest does not hold a corpus config this code reads.
    #[error("the corpus manifest {0} is from another version; run `make corpus`")]
    CorpusManifest(PathBuf, #[source] serde_yaml::Error),
    /// A set training needs has no rows.
    #[error("the corpus has an empty pre-training or std_safe set; check sizes in corpus.yaml")]
    EmptyCorpus,
    /// `resume` without a checkpoint.
    #[error("no checkpoint to resume at {0}; run without --resume to start over")]
    NoCheckpoint(PathBuf),
    /// The checkpoint was written by another config or code version.
    #[error(
        "the checkpoint {dir} is from another config or code version (config {found} vs {expected}); delete it or run without --resume"
    )]
    StaleCheckpoint {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Its config hash.
        found: String,
        /// This run's config hash.
        expected: String,
    },
    /// The checkpoint's model shape is not the config's.
    #[error("the checkpoint {dir} has model shape {found:?}, the config needs {expected:?}")]
    CheckpointShape {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Its shape.
        found: Box<GptConfig>,
        /// The config's shape.
        expected: Box<GptConfig>,
    },
    /// Part of the checkpoint cannot be read.
    #[error(
        "cannot load {what} from the checkpoint {dir}; it is corrupt: delete it and start over"
    )]
    CorruptCheckpoint {
        /// What could not be read.
        what: &'static str,
        /// The checkpoint folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The loss became NaN or infinite.
    #[error(
        "pre-training diverged: lower lr.lr_max or set grad_clip, then rerun with --resume (the last checkpoint is intact)"
    )]
    Diverged(#[source] TrainError),
    /// Training failed otherwise.
    #[error("pre-training")]
    Train(#[source] TrainError),
    /// The run ended without an evaluation at its last step (resumed from a checkpoint written
    /// at the last step).
    #[error(
        "the run has no evaluation at its last step (its checkpoint {0} was written at the end); delete the checkpoint and run again"
    )]
    NoFinalEvaluation(PathBuf),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing an artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A checkpoint file could not be moved or removed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics table could not be built.
    #[error("building the metrics table")]
    Metrics(#[source] study::polars::error::PolarsError),
}

type Result<T, E = PretrainError> = std::result::Result<T, E>;

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PretrainError {
    let path = path.to_owned();
    move |source| PretrainError::Io { what, path, source }
}

/// The resumable state next to a checkpoint's weights and moments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// Hash of the resolved config that produced it.
    pub config_hash: String,
    /// Code fingerprint that produced it.
    pub fingerprint: String,
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

/// The corpus config recorded in the corpus stage's manifest (its pre-training mix drives the
/// batches).
pub fn corpus_config(catalog: &Catalog) -> Result<CorpusConfig> {
    let path = catalog.manifest(Stage::Corpus);
    let manifest = Manifest::read(&path, "corpus")?;
    serde_yaml::from_value(manifest.config).map_err(|e| PretrainError::CorpusManifest(path, e))
}

/// The corpus files pre-training reads (besides the vocabulary), as input records.
pub fn input_records(catalog: &Catalog) -> Result<Vec<FileRecord>> {
    [
        CorpusSet::PretrainTrain,
        CorpusSet::PretrainTest,
        CorpusSet::EvalStdSafe,
    ]
    .into_iter()
    .map(|set| Ok(catalog.input_record(set.name(), &catalog.corpus_set(set), "corpus")?))
    .collect()
}

/// What pre-training reads from the corpus.
pub struct PretrainData {
    /// The curriculum of sample types.
    pub mix: PretrainMixConfig,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The training pool.
    pub pool: TokenTable,
    /// Held-out pre-training rows.
    pub test: TokenTable,
    /// std_safe instructions (the accuracy bar).
    pub std_safe: TokenTable,
}

impl PretrainData {
    /// Read the tables (only when the stage runs).
    pub fn read(catalog: &Catalog, mix: PretrainMixConfig, vocab_size: usize) -> Result<Self> {
        let pool = training::read_tokens(catalog, CorpusSet::PretrainTrain, "tokens", None)?;
        let test = training::read_tokens(catalog, CorpusSet::PretrainTest, "tokens", None)?;
        let std_safe = training::read_tokens(catalog, CorpusSet::EvalStdSafe, "x_safe", None)?;
        if pool.is_empty() || test.is_empty() || std_safe.is_empty() {
            return Err(PretrainError::EmptyCorpus);
        }
        Ok(Self {
            mix,
            vocab_size,
            pool,
            test,
            std_safe,
        })
    }

    /// The model shape `cfg` asks for on this corpus.
    pub fn model_config(&self, cfg: &PretrainConfig) -> GptConfig {
        GptConfig {
            n_layer: cfg.model.n_layer,
            n_head: cfg.model.n_head,
            n_embd: cfg.model.n_embd,
            block_size: self.pool.window - 1,
            vocab_size: self.vocab_size,
            mlp_ratio: cfg.model.mlp_ratio,
            gelu: cfg.model.gelu,
        }
    }
}

/// One pre-training run.
pub struct Run<'a> {
    /// The resolved config.
    pub cfg: &'a PretrainConfig,
    /// The corpus tables.
    pub data: &'a PretrainData,
    /// The resumable checkpoint folder (`02_pretrain.ckpt/`).
    pub checkpoint: PathBuf,
    /// Config hash and code fingerprint, stored with every checkpoint and checked on resume.
    pub stamp: TrainState,
    /// Continue from the checkpoint instead of starting over.
    pub resume: bool,
    /// Stop after this step as if killed (the checkpoint stays), for testing resumption.
    pub stop_after: Option<usize>,
    /// Where the tensors live.
    pub device: &'a Device,
}

/// Progress after each step, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps completed.
    pub step: usize,
    /// Total steps.
    pub steps: usize,
    /// This step's loss.
    pub loss: f64,
    /// Greedy exact match on std_safe at the last evaluation.
    pub std_safe: Option<f64>,
}

/// What a run ended with.
#[derive(Debug)]
pub enum Outcome {
    /// Trained to the end; the outputs are in the stage folder.
    Trained {
        /// The summary written to `summary.json`.
        summary: Summary,
        /// The output files' records, in the manifest's order.
        files: Vec<FileRecord>,
        /// Seconds spent in training steps (evaluation and I/O excluded).
        train_seconds: f64,
    },
    /// Stopped after this step as asked (`stop_after`); the checkpoint stays.
    Stopped(usize),
}

/// Pre-train, from scratch or from the checkpoint, writing the outputs into `out`; `progress` is
/// called after every step.
pub fn pretrain(run: Run<'_>, out: &StageDir, progress: impl FnMut(Progress)) -> Result<Outcome> {
    let cfg = run.cfg;
    let gpt_cfg = run.data.model_config(cfg);
    let (params, start, rows, opt_state) = if run.resume {
        resume(&run.checkpoint, &gpt_cfg, &run.stamp, run.device)?
    } else {
        (
            Params::init(&gpt_cfg, cfg.seed, run.device)?,
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
    let mut hooks = Pretrain {
        cfg,
        data: run.data,
        device: run.device.clone(),
        rows,
        ckpt_dir: run.checkpoint,
        state: TrainState {
            step: start,
            ..run.stamp
        },
        progress,
        stop_after: run.stop_after,
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
            return Ok(Outcome::Stopped(hooks.state.step));
        }
        Err(TrainError::Hook(e)) => match e.downcast::<PretrainError>() {
            Ok(e) => return Err(*e),
            Err(e) => return Err(PretrainError::Train(TrainError::Hook(e))),
        },
        Err(e @ TrainError::NonFinite { .. }) => return Err(PretrainError::Diverged(e)),
        Err(e) => return Err(PretrainError::Train(e)),
    }
    let summary = hooks.summary()?;
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
    Ok(Outcome::Trained {
        summary,
        files,
        train_seconds: hooks.train_seconds,
    })
}

/// After the stage folder `dir` is in place: remove the run's checkpoint and log whether the IT
/// model meets its accuracy bar.
pub fn finished(summary: &Summary, dir: &Path, checkpoint: &Path) -> Result<()> {
    if checkpoint.exists() {
        std::fs::remove_dir_all(checkpoint)
            .map_err(io("removing the finished run's checkpoint", checkpoint))?;
    }
    let (em, bar) = (
        100.0 * summary.std_safe_greedy_em_both,
        100.0 * summary.min_exact_match,
    );
    if summary.meets_bar {
        tracing::info!(
            "IT model in {}: greedy exact match on std_safe {em:.1}% (bar {bar:.0}%)",
            dir.display()
        );
    } else {
        tracing::warn!(
            "IT model in {} is BELOW the accuracy bar: greedy exact match on std_safe {em:.1}% < {bar:.0}%; fine-tuning it would measure nothing (train longer or wider)",
            dir.display()
        );
    }
    Ok(())
}

/// Marker error: `stop_after` reached.
#[derive(Debug, thiserror::Error)]
#[error("stopped as asked")]
struct Stopped;

type OptState = Option<(BTreeMap<String, Tensor>, u64)>;

fn resume(
    dir: &Path,
    cfg: &GptConfig,
    stamp: &TrainState,
    device: &Device,
) -> Result<(Params, usize, Vec<MetricRow>, OptState)> {
    let corrupt = |what: &'static str| {
        let dir = dir.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| PretrainError::CorruptCheckpoint {
            what,
            dir,
            source: e,
        }
    };
    let text = std::fs::read_to_string(dir.join(TRAIN_STATE_FILE))
        .map_err(|_| PretrainError::NoCheckpoint(dir.join(TRAIN_STATE_FILE)))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| corrupt(TRAIN_STATE_FILE)(e.into()))?;
    if state.config_hash != stamp.config_hash || state.fingerprint != stamp.fingerprint {
        return Err(PretrainError::StaleCheckpoint {
            dir: dir.to_owned(),
            found: state.config_hash,
            expected: stamp.config_hash.clone(),
        });
    }
    let saved: GptConfig = std::fs::read_to_string(dir.join(MODEL_CONFIG_FILE))
        .map_err(|e| corrupt(MODEL_CONFIG_FILE)(e.into()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| corrupt(MODEL_CONFIG_FILE)(e.into())))?;
    if saved != *cfg {
        return Err(PretrainError::CheckpointShape {
            dir: dir.to_owned(),
            found: Box::new(saved),
            expected: Box::new(*cfg),
        });
    }
    let params = Params::load(cfg, &dir.join(MODEL_FILE), device)
        .map_err(|e| corrupt("the weights")(e.into()))?;
    let moments = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)
        .map_err(|e| corrupt("the optimiser state")(e.into()))?
        .into_iter()
        .collect();
    let df = artifacts::read_parquet(
        &dir.join(METRICS_FILE),
        &training::metrics_schema("pretrain"),
    )?;
    let rows = training::metrics_rows(&df).map_err(|e| corrupt("the metrics")(e.into()))?;
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
    model.params().save(&dir.join(MODEL_FILE))?;
    artifacts::write_json(model.config(), &dir.join(MODEL_CONFIG_FILE))?;
    opt.save(&dir.join(OPTIMIZER_FILE))?;
    let mut df = training::metrics_frame(rows).map_err(PretrainError::Metrics)?;
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

/// The run's hooks: batches, metrics, evaluation, checkpoints.
struct Pretrain<'a, P> {
    cfg: &'a PretrainConfig,
    data: &'a PretrainData,
    device: Device,
    rows: Vec<MetricRow>,
    ckpt_dir: PathBuf,
    state: TrainState,
    progress: P,
    stop_after: Option<usize>,
    train_seconds: f64,
    train_tokens: usize,
    /// (step, std_safe greedy both, test greedy both, test loss)
    last_eval: Option<(usize, f64, f64, f64)>,
}

impl<'a, P> Pretrain<'a, P> {
    fn evaluate(&mut self, model: &Gpt, step: usize) -> Result<()> {
        let e = &self.cfg.eval;
        let started = Instant::now();
        // Teacher-forced: held-out rows (their own sample types) and a fresh draw of the
        // training mix at this step.
        let test = self.data.test.examples(0..e.rows.min(self.data.test.len()));
        let train = training::pretrain_batch(
            &self.data.pool,
            &self.data.mix,
            self.cfg.seed ^ 0x5eed_e7a1,
            step.min(self.cfg.steps - 1),
            self.cfg.steps,
            e.rows,
        );
        let mut test_loss = 0.0;
        for (split, examples) in [("test", &test), ("train", &train)] {
            let (scores, loss) = tr::teacher_forced(model, examples, tr::EVAL_CHUNK)?;
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
        let row = |t: &'a TokenTable, i: usize| -> (&'a [Token], usize) {
            (t.row(i), usize::from(t.text_len[i]))
        };
        let full: Vec<(&[Token], usize)> = (0..self.data.test.len())
            .filter(|&i| self.data.test.sample_type[i] == SampleType::Full)
            .take(e.greedy_rows)
            .map(|i| row(&self.data.test, i))
            .collect();
        let safe: Vec<(&[Token], usize)> = (0..self.data.std_safe.len().min(e.greedy_rows))
            .map(|i| row(&self.data.std_safe, i))
            .collect();
        let mut both = [0.0; 2];
        for (k, (split, rows)) in [("test", &full), ("std_safe", &safe)]
            .into_iter()
            .enumerate()
        {
            let res = tr::greedy(model, rows, tr::EVAL_CHUNK)?;
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

    /// The summary of the evaluation at the last step (the loop evaluates there; a run resumed
    /// from a checkpoint of the last step has none).
    fn summary(&self) -> Result<Summary> {
        let Some((_, safe, test, loss)) = self.last_eval.filter(|e| e.0 == self.cfg.steps) else {
            return Err(PretrainError::NoFinalEvaluation(self.ckpt_dir.clone()));
        };
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

    /// Write the checkpoint into `<ckpt>.partial/`, then swap it in: a kill mid-write leaves the
    /// previous checkpoint intact.
    fn checkpoint(&self, model: &Gpt, opt: &AdamW) -> Result<()> {
        let partial = self.ckpt_dir.with_extension("ckpt.partial");
        let old = self.ckpt_dir.with_extension("ckpt.old");
        for stale in [&partial, &old] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(io("removing", stale))?;
            }
        }
        std::fs::create_dir_all(&partial).map_err(io("creating", &partial))?;
        write_checkpoint(&partial, model, opt, &self.state, &self.rows)?;
        // Swap: the previous checkpoint moves aside before the new one moves in, and `resume`
        // never reads `.partial` or `.old`.
        if self.ckpt_dir.exists() {
            std::fs::rename(&self.ckpt_dir, &old).map_err(io("moving aside", &self.ckpt_dir))?;
        }
        std::fs::rename(&partial, &self.ckpt_dir)
            .map_err(io("moving the checkpoint into", &self.ckpt_dir))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io("removing", &old))?;
        }
        tracing::info!(
            step = self.state.step,
            "checkpoint written to {}",
            self.ckpt_dir.display()
        );
        Ok(())
    }
}

fn hook_err(e: PretrainError) -> TrainError {
    TrainError::Hook(Box::new(e))
}

impl<P: FnMut(Progress)> Hooks<TokenBatch> for Pretrain<'_, P> {
    fn batch(&mut self, step: usize) -> Result<TokenBatch, TrainError> {
        let examples = training::pretrain_batch(
            &self.data.pool,
            &self.data.mix,
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
        (self.progress)(Progress {
            step: r.step,
            steps: self.cfg.steps,
            loss: r.loss,
            std_safe: self.last_eval.map(|(_, s, _, _)| s),
        });
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
