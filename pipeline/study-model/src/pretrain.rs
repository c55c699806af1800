//! Pre-training the instruction-tuned (IT) model (paper §2.1–2.3; training_spec.md §3) as one
//! library call, [`pretrain`]: `study pretrain` resolves the config and the run folder and calls it.
//!
//! It trains with the shared loop and the next-token objective, evaluates every `eval.every`
//! steps (teacher-forced scores on held-out rows and a fresh draw of the training mix; greedy exact
//! match on held-out rows and on std_safe, the accuracy bar), writes a resumable checkpoint every
//! `checkpoint_every` steps, and finally writes the model, its config, the optimiser state, the
//! train state, metrics and a summary into the stage's output folder.

mod checkpoint;
mod data;
mod error;
mod evaluation;

pub use checkpoint::TrainState;
pub use data::{PretrainData, corpus_config, input_records};
pub use error::PretrainError;
pub use evaluation::Summary;

use std::path::{Path, PathBuf};

use candle_core::Device;
use study::artifacts::{
    self, FileRecord, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, SUMMARY_FILE,
    StageDir, TRAIN_STATE_FILE,
};
use study::config::PretrainConfig;
use study::training::{self, MetricRow};

use crate::gpt::{Gpt, Params};
use crate::optim::AdamW;
use crate::train::{self as tr, Hooks, LoopSpec, NextToken, StepReport, TokenBatch, TrainError};
use checkpoint::{resume, write_checkpoint};
use error::{Result, io};

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
