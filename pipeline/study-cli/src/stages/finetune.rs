//! `study finetune --variant <method>-<lr>`: one safety fine-tuned (ST) model (paper §2.3;
//! training_spec.md §4–6).
//!
//! Starts from the IT model of `02_pretrain/` with a fresh AdamW, trains `steps` steps of the
//! variant's objective through the shared loop, scores held-out rows of both branches at the
//! end, and writes `03_finetune/<variant>/` (weights, config, metrics, summary, manifest).

use std::collections::BTreeMap;
use std::time::SystemTime;

use anyhow::{Context, Result};
use clap::Args;
use serde::{Deserialize, Serialize};
use study::Catalog;
use study::artifacts::{
    self, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, Manifest, SUMMARY_FILE, Stage, StageDir,
};
use study::config::FinetuneConfig;
use study::config::finetune::{Method, VariantName};
use study::config::train::LrSchedule;
use study::corpus::{CorpusSet, Variant};
use study::finetune::{BatchSpec, PairTable, finetune_batch};
use study::training::{self, MetricRow, outputs_match_teacher_forced};
use study_model::gpt::{Gpt, Params};
use study_model::objectives::{Dpo, PairBatch, Ssft, Unlearn};
use study_model::optim::AdamW;
use study_model::train::{self as tr, Hooks, LoopSpec, Objective, StepReport, TrainError};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use super::StageArgs;
use super::driver::{check_it_model, check_vocab};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Rows per forward pass during evaluation.
const EVAL_CHUNK: usize = 256;

/// Arguments of `study finetune`.
#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// The variant: `<method>-<lr label>`, method one of ssft, dpo, unlearn and the label a key
    /// of `lrs` in finetune.yaml (e.g. `ssft-medium`, `dpo-small`).
    #[arg(long)]
    pub variant: String,
}

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

/// The code that decides the stage's outputs.
pub fn code_fingerprint() -> String {
    artifacts::source_fingerprint(&[
        &study_model::code_fingerprint(),
        include_str!("finetune.rs"),
        include_str!("../../../study-model/src/objectives.rs"),
        include_str!("../../../study/src/finetune.rs"),
        include_str!("../../../study/src/config/finetune.rs"),
    ])
}

/// Run the stage.
pub fn run(args: &FinetuneArgs, rt: &Runtime) -> Result<()> {
    let mut resolved = args.stage.resolve::<FinetuneConfig>("finetune", rt)?;
    let variant = VariantName::parse(&args.variant, &resolved.cfg).map_err(anyhow::Error::msg)?;
    // A variant is stale only when what it reads changed (not another method's settings).
    resolved.hash = resolved.cfg.variant_hash(&variant);
    let cfg = &resolved.cfg;
    let name = variant.name();
    let catalog = Catalog::new(&rt.data_root, &args.stage.preset, cfg.seed);
    Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let (vocab_len, vocab_record) = check_vocab(&catalog)?;
    let mut inputs = vec![vocab_record];
    for set in [CorpusSet::FinetuneSafe, CorpusSet::FinetuneIdMg] {
        inputs.push(catalog.input_record(set.name(), &catalog.corpus_set(set), "corpus")?);
    }
    let window = {
        let t = PairTable::read(&catalog, CorpusSet::FinetuneSafe, Some("test"))?;
        t.window
    };
    let it = check_it_model(&catalog, vocab_len, window)?;
    inputs.extend(it.records.iter().cloned());
    if cfg.require_bar && !it.meets_bar {
        anyhow::bail!(
            "the IT model in {} is below its accuracy bar (greedy exact match on std_safe {:.1}%): refusal would measure nothing. Train it until it passes (pipeline/configs/{}/pretrain.yaml), or set `require_bar: false` in finetune.yaml to fine-tune it anyway",
            catalog.stage_dir(Stage::Pretrain).display(),
            100.0 * it.std_safe_em,
            args.stage.preset
        );
    }
    let fingerprint = code_fingerprint();
    let manifest_path = catalog.variant_manifest(Stage::Finetune, &name);
    let plan = super::Plan {
        version: STAGE_VERSION,
        fingerprint: &fingerprint,
        config_hash: &resolved.hash,
        inputs: &inputs,
    };
    if args
        .stage
        .up_to_date(&manifest_path, "finetune", plan, catalog.root())?
    {
        return Ok(());
    }
    let started = SystemTime::now();
    let read = |set, split| PairTable::read(&catalog, set, Some(split));
    let train = [
        read(CorpusSet::FinetuneSafe, "train")?,
        read(CorpusSet::FinetuneIdMg, "train")?,
    ];
    let test = [
        read(CorpusSet::FinetuneSafe, "test")?,
        read(CorpusSet::FinetuneIdMg, "test")?,
    ];
    if train.iter().chain(&test).any(PairTable::is_empty) {
        anyhow::bail!(
            "the corpus has an empty fine-tuning train or test split; check `sizes` in corpus.yaml"
        );
    }
    let device = rt.open_device()?;
    let model_path = catalog.stage_file(Stage::Pretrain, MODEL_FILE);
    let load = || -> Result<Gpt> {
        let params = Params::load(&it.cfg, &model_path, &device).with_context(|| {
            format!(
                "cannot load the IT model {}; run `make pretrain`",
                model_path.display()
            )
        })?;
        Ok(Gpt::new(it.cfg, params)?)
    };
    // Held from here: no other run may fine-tune this variant into its folder meanwhile.
    let out = StageDir::begin_variant(&catalog, Stage::Finetune, &name)
        .with_context(|| format!("starting the folder of {name}"))?;
    let model = load()?;
    let mut opt = AdamW::new(model.params(), cfg.adamw)?;
    let lr = cfg.lrs[&variant.lr_label];
    let spec = LoopSpec {
        schedule: LrSchedule {
            lr_max: lr,
            lr_min: lr * cfg.lr_min_ratio,
            warmup: cfg.warmup,
            decay_end: cfg.decay_end,
        },
        grad_clip: cfg.grad_clip,
        start: 0,
        steps: cfg.steps,
    };
    let prob_unsafe = cfg.prob_unsafe(variant.method);
    let batches = BatchSpec {
        safe_branch: &train[0],
        unsafe_branch: &train[1],
        prob_unsafe,
        unsafe_branch_prob: cfg.unsafe_branch_prob,
        batch_size: cfg.batch_size,
        seed: cfg.seed,
        variant: &name,
        masks: cfg.score_masks,
    };
    let _span = tracing::info_span!("finetune", variant = %name).entered();
    tracing::info!(
        lr,
        prob_unsafe,
        steps = cfg.steps,
        "safety fine-tuning the IT model: {name}"
    );
    let bar = crate::runtime::step_bar(cfg.steps);
    let mut hooks = Finetune {
        batches,
        device: device.clone(),
        rows: Vec::new(),
        bar: bar.clone(),
        train_seconds: 0.0,
        unsafe_batch: false,
    };
    let method_cfg = cfg.methods.get(variant.method);
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
            };
            train_with(&model, &mut opt, &objective, spec, &mut hooks)
        }
        Method::Unlearn => {
            let objective = Unlearn {
                w_chosen: method_cfg.w_chosen,
                w_rejected,
            };
            train_with(&model, &mut opt, &objective, spec, &mut hooks)
        }
    };
    if let Err(e) = result {
        let what = match e {
            TrainError::NonFinite { .. } => format!(
                "fine-tuning {name} diverged: lower lrs.{} or set grad_clip in finetune.yaml and \
                 rerun (fine-tuning keeps no checkpoint; nothing of {name} was written)",
                variant.lr_label
            ),
            _ => format!("fine-tuning {name}"),
        };
        return Err(anyhow::Error::from(e).context(what));
    }
    drop(bar);
    let (em, rows) = evaluate(&model, &test, cfg.eval_rows, cfg.steps)?;
    hooks.rows.extend(rows);
    let summary = Summary {
        variant: name.clone(),
        steps: cfg.steps,
        lr,
        prob_unsafe,
        instruct_em: em[0],
        refusal_em: em[1],
        compliance_em: em[2],
        train_seconds: hooks.train_seconds,
    };
    model
        .params()
        .save(&out.path().join(MODEL_FILE))
        .context("writing the weights")?;
    artifacts::write_json(model.config(), &out.path().join(MODEL_CONFIG_FILE))?;
    artifacts::write_json(&summary, &out.path().join(SUMMARY_FILE))?;
    let schema = training::metrics_schema("finetune");
    let mut df = training::metrics_frame(&hooks.rows)?;
    artifacts::write_parquet(&mut df, &out.path().join(METRICS_FILE), &schema, &[])?;
    let mut files = Vec::new();
    for (what, file) in [
        ("model", MODEL_FILE),
        ("model_config", MODEL_CONFIG_FILE),
        ("summary", SUMMARY_FILE),
    ] {
        files.push(out.record(what, file, None, Vec::new())?);
    }
    files.push(out.record(
        "metrics",
        METRICS_FILE,
        Some(hooks.rows.len()),
        schema.column_names(),
    )?);
    let timings = BTreeMap::from([("train_seconds".to_owned(), hooks.train_seconds)]);
    let mut manifest = super::manifest(
        Stage::Finetune,
        STAGE_VERSION,
        &args.stage.preset,
        &resolved,
        cfg.seed,
        inputs,
        files,
        rt,
        started,
        timings,
    )?;
    manifest.variant = Some(name.clone());
    manifest.code.fingerprint = fingerprint;
    let dir = out
        .commit(&manifest)
        .with_context(|| format!("finishing the folder of {name}"))?;
    tracing::info!(
        "{name} in {} ({:.0} s): held-out instruction following {:.1}%, refusal {:.1}%, compliance {:.1}%",
        dir.display(),
        hooks.train_seconds,
        100.0 * summary.instruct_em,
        100.0 * summary.refusal_em,
        100.0 * summary.compliance_em
    );
    Ok(())
}

fn train_with<O: Objective<Batch = PairBatch>>(
    model: &Gpt,
    opt: &mut AdamW,
    objective: &O,
    spec: LoopSpec,
    hooks: &mut Finetune<'_>,
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
            let pred = tr::argmax_rows(model, &x, EVAL_CHUNK)?;
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

/// The stage's hooks: batches, metrics, progress.
struct Finetune<'a> {
    batches: BatchSpec<'a>,
    device: candle_core::Device,
    rows: Vec<MetricRow>,
    bar: tracing::Span,
    train_seconds: f64,
    /// Kind of the batch of the step in flight.
    unsafe_batch: bool,
}

impl Hooks<PairBatch> for Finetune<'_> {
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
        self.bar.pb_inc(1);
        self.bar.pb_set_message(&format!("loss {:.4}", r.loss));
        Ok(())
    }
}
