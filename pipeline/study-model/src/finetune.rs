//! Safety fine-tuning one variant (paper §2.3; training_spec.md §4–6) as one library call,
//! [`finetune`]: `study finetune --variant <method>-<lr>` checks the inputs and calls it.
//!
//! Starts from the IT model with a fresh AdamW, trains `steps` steps of the variant's objective
//! (SSFT, DPO or unlearning) through the shared loop, scores held-out rows of both branches at the
//! end, and writes the weights, their config, metrics and a summary into the variant's folder.

use std::path::{Path, PathBuf};

use candle_core::Device;
use serde::{Deserialize, Serialize};
use study::Catalog;
use study::artifacts::{
    self, ArtifactError, FileRecord, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, StageDir,
};
use study::config::FinetuneConfig;
use study::config::finetune::{Method, VariantName};
use study::config::train::LrSchedule;
use study::corpus::{CorpusSet, Variant};
use study::finetune::{BatchSpec, PairTable, finetune_batch};
use study::training::{self, MetricRow, outputs_match_teacher_forced};

use crate::gpt::{Gpt, GptConfig, Params};
use crate::objectives::{Dpo, PairBatch, Ssft, Unlearn};
use crate::optim::AdamW;
use crate::train::{self as tr, Hooks, LoopSpec, Objective, StepReport, TrainError};

/// The two fine-tuning families: safe-branch and unsafe-branch (in-distribution) texts.
const SETS: [CorpusSet; 2] = [CorpusSet::FinetuneSafe, CorpusSet::FinetuneIdMg];

/// Errors of a fine-tuning run; each says how to recover.
#[derive(Debug, thiserror::Error)]
pub enum FinetuneError {
    /// A split fine-tuning needs has no rows.
    #[error(
        "the corpus has an empty fine-tuning train or test split; check `sizes` in corpus.yaml"
    )]
    EmptyCorpus,
    /// The IT model's weights cannot be loaded.
    #[error("cannot load the IT model {0}; run `make pretrain`")]
    ItModel(PathBuf, #[source] candle_core::Error),
    /// The loss became NaN or infinite.
    #[error(
        "fine-tuning {variant} diverged: lower lrs.{lr_label} or set grad_clip in finetune.yaml and rerun (fine-tuning keeps no checkpoint; nothing of {variant} was written)"
    )]
    Diverged {
        /// The variant.
        variant: String,
        /// Its learning-rate label.
        lr_label: String,
        /// The loop's error.
        #[source]
        source: Box<TrainError>,
    },
    /// Training failed otherwise.
    #[error("fine-tuning {variant}")]
    Train {
        /// The variant.
        variant: String,
        /// The loop's error.
        #[source]
        source: Box<TrainError>,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing an artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// The metrics table could not be built.
    #[error("building the metrics table")]
    Metrics(#[source] study::polars::error::PolarsError),
}

type Result<T, E = FinetuneError> = std::result::Result<T, E>;

/// The variant's final summary (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// The variant.
    pub variant: String,
    /// Steps trained.
    pub steps: usize,
    /// Peak learning rate.
    pub lr: f64,
    /// Refusal-batch probability used.
    pub prob_unsafe: f64,
    /// Teacher-forced exact match of the safe instruction's outputs (held-out, both branches).
    pub instruct_em: f64,
    /// Teacher-forced exact match of the refusal on unsafe instructions.
    pub refusal_em: f64,
    /// Teacher-forced exact match of the compliant output on unsafe instructions.
    pub compliance_em: f64,
    /// Training wall time (steps only), seconds.
    pub train_seconds: f64,
}

/// The corpus files fine-tuning reads (besides the vocabulary), as input records.
pub fn input_records(catalog: &Catalog) -> Result<Vec<FileRecord>> {
    SETS.into_iter()
        .map(|set| Ok(catalog.input_record(set.name(), &catalog.corpus_set(set), "corpus")?))
        .collect()
}

/// The fine-tuning rows' window (tokens per row), read from the safe family's test split.
pub fn window(catalog: &Catalog) -> Result<usize> {
    Ok(PairTable::read(catalog, CorpusSet::FinetuneSafe, Some("test"))?.window)
}

/// What fine-tuning reads from the corpus: train and test splits of both families.
pub struct FinetuneData {
    /// Training rows, safe then unsafe branch.
    pub train: [PairTable; 2],
    /// Held-out rows, safe then unsafe branch.
    pub test: [PairTable; 2],
}

impl FinetuneData {
    /// Read the tables (only when the stage runs).
    pub fn read(catalog: &Catalog) -> Result<Self> {
        let read = |set, split| PairTable::read(catalog, set, Some(split));
        let data = Self {
            train: [read(SETS[0], "train")?, read(SETS[1], "train")?],
            test: [read(SETS[0], "test")?, read(SETS[1], "test")?],
        };
        if data.train.iter().chain(&data.test).any(PairTable::is_empty) {
            return Err(FinetuneError::EmptyCorpus);
        }
        Ok(data)
    }
}

/// One fine-tuning run.
pub struct Run<'a> {
    /// The resolved config.
    pub cfg: &'a FinetuneConfig,
    /// The variant to train.
    pub variant: &'a VariantName,
    /// The corpus tables.
    pub data: &'a FinetuneData,
    /// The IT model's weights and shape.
    pub it_model: (&'a Path, GptConfig),
    /// Where the tensors live.
    pub device: &'a Device,
}

/// Progress after each step, for a progress bar.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    /// Steps completed.
    pub step: usize,
    /// This step's loss.
    pub loss: f64,
}

/// A finished run.
#[derive(Debug)]
pub struct Trained {
    /// The summary written to `summary.json`.
    pub summary: Summary,
    /// The output files' records, in the manifest's order.
    pub files: Vec<FileRecord>,
}

/// Fine-tune `run.variant` from the IT model, writing the outputs into `out`; `progress` is called
/// after every step.
pub fn finetune(run: Run<'_>, out: &StageDir, progress: impl FnMut(Progress)) -> Result<Trained> {
    let (cfg, variant) = (run.cfg, run.variant);
    let name = variant.name();
    let (model_path, it_cfg) = run.it_model;
    let load = || -> Result<Gpt> {
        let params = Params::load(&it_cfg, model_path, run.device)
            .map_err(|e| FinetuneError::ItModel(model_path.to_owned(), e))?;
        Ok(Gpt::new(it_cfg, params)?)
    };
    let model = load()?;
    let mut opt = AdamW::new(model.params(), cfg.adamw)?;
    let lr = cfg.lrs[&variant.lr_label];
    let schedule = cfg.schedule(variant.method);
    let spec = LoopSpec {
        schedule: LrSchedule {
            lr_max: lr,
            lr_min: lr * cfg.lr_min_ratio,
            warmup: schedule.warmup,
            decay_end: schedule.decay_end,
        },
        grad_clip: cfg.grad_clip,
        start: 0,
        steps: schedule.steps,
    };
    let prob_unsafe = cfg.prob_unsafe(variant.method, &variant.lr_label);
    let mut hooks = Finetune {
        batches: BatchSpec {
            safe_branch: &run.data.train[0],
            unsafe_branch: &run.data.train[1],
            prob_unsafe,
            unsafe_branch_prob: cfg.unsafe_branch_prob,
            batch_size: cfg.batch_size,
            seed: cfg.seed,
            variant: &name,
            masks: cfg.score_masks,
        },
        device: run.device.clone(),
        rows: Vec::new(),
        progress,
        train_seconds: 0.0,
        unsafe_batch: false,
    };
    tracing::info!(
        lr,
        prob_unsafe,
        steps = schedule.steps,
        "safety fine-tuning the IT model: {name}"
    );
    let method_cfg = cfg.methods.get(variant.method);
    // SSFT has no rejected term; DPO and unlearning name a weight per learning-rate label.
    let w_rejected = method_cfg
        .w_rejected
        .get(&variant.lr_label)
        .copied()
        .unwrap_or(0.0);
    let result = match variant.method {
        Method::Ssft => train_with(&model, &mut opt, &Ssft, spec, &mut hooks),
        Method::Dpo => {
            let objective = Dpo {
                reference: load()?,
                w_chosen: method_cfg.w_chosen,
                w_rejected,
                w_anchor: method_cfg.w_anchor.at(&variant.lr_label),
            };
            train_with(&model, &mut opt, &objective, spec, &mut hooks)
        }
        Method::Unlearn => {
            let objective = Unlearn {
                w_chosen: method_cfg.w_chosen,
                w_rejected,
                w_anchor: method_cfg.w_anchor.at(&variant.lr_label),
            };
            train_with(&model, &mut opt, &objective, spec, &mut hooks)
        }
    };
    match result {
        Ok(()) => {}
        Err(source @ TrainError::NonFinite { .. }) => {
            return Err(FinetuneError::Diverged {
                variant: name.clone(),
                lr_label: variant.lr_label.clone(),
                source: Box::new(source),
            });
        }
        Err(source) => {
            return Err(FinetuneError::Train {
                variant: name,
                source: Box::new(source),
            });
        }
    }
    let (em, rows) = evaluate(&model, &run.data.test, cfg.eval_rows, schedule.steps)?;
    hooks.rows.extend(rows);
    let summary = Summary {
        variant: name.clone(),
        steps: schedule.steps,
        lr,
        prob_unsafe,
        instruct_em: em[0],
        refusal_em: em[1],
        compliance_em: em[2],
        train_seconds: hooks.train_seconds,
    };
    model.params().save(&out.path().join(MODEL_FILE))?;
    artifacts::write_json(model.config(), &out.path().join(MODEL_CONFIG_FILE))?;
    artifacts::write_json(&summary, &out.path().join(artifacts::SUMMARY_FILE))?;
    let schema = training::metrics_schema("finetune");
    let mut df = training::metrics_frame(&hooks.rows).map_err(FinetuneError::Metrics)?;
    artifacts::write_parquet(&mut df, &out.path().join(METRICS_FILE), &schema, &[])?;
    let mut files = Vec::new();
    for (what, file) in [
        ("model", MODEL_FILE),
        ("model_config", MODEL_CONFIG_FILE),
        ("summary", artifacts::SUMMARY_FILE),
    ] {
        files.push(out.record(what, file, None, Vec::new())?);
    }
    files.push(out.record(
        "metrics",
        METRICS_FILE,
        Some(hooks.rows.len()),
        schema.column_names(),
    )?);
    Ok(Trained { summary, files })
}

/// After the variant's folder `dir` is in place: log what it learned.
pub fn finished(summary: &Summary, dir: &Path) {
    tracing::info!(
        "{} in {} ({:.0} s): held-out instruction following {:.1}%, refusal {:.1}%, compliance {:.1}%",
        summary.variant,
        dir.display(),
        summary.train_seconds,
        100.0 * summary.instruct_em,
        100.0 * summary.refusal_em,
        100.0 * summary.compliance_em
    );
}

fn train_with<O: Objective<Batch = PairBatch>, P: FnMut(Progress)>(
    model: &Gpt,
    opt: &mut AdamW,
    objective: &O,
    spec: LoopSpec,
    hooks: &mut Finetune<'_, P>,
) -> Result<(), TrainError> {
    tr::run(model, opt, objective, spec, hooks)
}

/// Held-out teacher-forced exact match of the instruction-following (safe variant), refusal
/// (unsafe) and compliance (unsafe_target) outputs over both branches' test rows; returns the
/// pooled values and the metric rows (per branch and pooled).
fn evaluate(
    model: &Gpt,
    test: &[PairTable; 2],
    rows: usize,
    step: usize,
) -> Result<([f64; 3], Vec<MetricRow>)> {
    let mut out = Vec::new();
    let mut pooled = [[0usize; 2]; 3];
    for table in test {
        let branch = match table.set {
            CorpusSet::FinetuneSafe => "safe_branch",
            _ => "unsafe_branch",
        };
        let n = rows.min(table.len());
        for (k, (variant, metric)) in [
            (Variant::Safe, "em_instruct"),
            (Variant::Unsafe, "em_refusal"),
            (Variant::UnsafeTarget, "em_compliance"),
        ]
        .into_iter()
        .enumerate()
        {
            let examples: Vec<_> = (0..n).map(|i| table.example(variant, i)).collect();
            let x: Vec<Vec<u32>> = examples.iter().map(|e| e.x.clone()).collect();
            let pred = tr::argmax_rows(model, &x, tr::EVAL_CHUNK)?;
            let (mut hit, mut count) = (0, 0);
            for (e, p) in examples.iter().zip(&pred) {
                if let Some(ok) = outputs_match_teacher_forced(e, p) {
                    count += 1;
                    hit += usize::from(ok);
                }
            }
            pooled[k][0] += hit;
            pooled[k][1] += count;
            out.push(MetricRow::new(
                step,
                "test",
                branch,
                metric,
                hit as f64 / count.max(1) as f64,
                count,
            ));
        }
    }
    let em = pooled.map(|[h, c]| h as f64 / c.max(1) as f64);
    for (k, metric) in ["em_instruct", "em_refusal", "em_compliance"]
        .into_iter()
        .enumerate()
    {
        out.push(MetricRow::new(
            step,
            "test",
            "all",
            metric,
            em[k],
            pooled[k][1],
        ));
    }
    Ok((em, out))
}

/// The run's hooks: batches, metrics, progress.
struct Finetune<'a, P> {
    batches: BatchSpec<'a>,
    device: Device,
    rows: Vec<MetricRow>,
    progress: P,
    train_seconds: f64,
    /// Kind of the batch of the step in flight.
    unsafe_batch: bool,
}

impl<P: FnMut(Progress)> Hooks<PairBatch> for Finetune<'_, P> {
    fn batch(&mut self, step: usize) -> Result<PairBatch, TrainError> {
        let pairs = finetune_batch(&self.batches, step);
        self.unsafe_batch = pairs.unsafe_batch;
        Ok(PairBatch::new(&pairs, &self.device)?)
    }

    fn after_step(&mut self, _model: &Gpt, _opt: &AdamW, r: &StepReport) -> Result<(), TrainError> {
        self.train_seconds += r.seconds;
        let kind = f64::from(u8::from(self.unsafe_batch));
        for (m, v) in [
            ("loss", r.loss),
            ("lr", r.lr),
            ("grad_norm", r.grad_norm),
            ("unsafe_batch", kind),
        ] {
            self.rows
                .push(MetricRow::new(r.step, "train", "all", m, v, 1));
        }
        (self.progress)(Progress {
            step: r.step,
            loss: r.loss,
        });
        Ok(())
    }
}
