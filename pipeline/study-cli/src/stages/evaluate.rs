//! `study evaluate`: behaviour of the IT and safety fine-tuned models on every evaluation set
//! (paper Table 1), and the adversarial soft-token attack on the fine-tuned models.
//!
//! Writes `04_evaluate/`: `behaviour.parquet` (per model × set × metric × decoding),
//! `adversarial.parquet` (per attacked sample × model × budget), the attacked inputs' soft tokens
//! (`adversarial_embeddings.safetensors`, for the probe stage) and `summary.json` with the
//! behaviour bars and the paper's orderings.

use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use study::Catalog;
use study::artifacts::{
    self, MODEL_CONFIG_FILE, MODEL_FILE, Manifest, SUMMARY_FILE, Stage, StageDir,
};
use study::config::EvaluateConfig;
use study::config::evaluate::AttackModeConfig;
use study::corpus::{CorpusSet, Variant};
use study::evaluation::{
    self, ADVERSARIAL_EMBEDDINGS_FILE, ADVERSARIAL_FILE, BEHAVIOUR_FILE, Check,
};
use study::finetune::PairTable;
use study_model::attack::{
    AttackMode, AttackOutcome, AttackRow, AttackSpec, Placement, attack_placed,
};
use study_model::behaviour::{ModelId, score_set};
use study_model::gpt::Gpt;

use super::StageArgs;
use super::driver::{DEFAULT_VARIANTS, check_it_model, check_vocab, eval_set, load_model};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study evaluate`.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Fine-tuned variants to evaluate besides the IT model (comma-separated; each needs
    /// `make finetune`).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_VARIANTS)]
    pub variants: Vec<String>,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
struct Summary {
    models: Vec<String>,
    rows_per_set: usize,
    bars: Vec<Check>,
    orderings: Vec<Check>,
    behaviour_seconds: f64,
    attack_seconds: f64,
}

/// The code that decides the stage's outputs.
pub fn code_fingerprint() -> String {
    artifacts::source_fingerprint(&[
        &study_model::code_fingerprint(),
        include_str!("evaluate.rs"),
        include_str!("../../../study-model/src/attack.rs"),
        include_str!("../../../study-model/src/behaviour.rs"),
        include_str!("../../../study/src/evaluation/mod.rs"),
        include_str!("../../../study/src/evaluation/scoring.rs"),
        include_str!("../../../study/src/finetune.rs"),
        include_str!("../../../study/src/config/evaluate.rs"),
    ])
}

/// One model under evaluation.
struct Model {
    name: String,
    method: String,
    lr_label: String,
    gpt: Gpt,
}

/// Run the stage.
pub fn run(args: &EvaluateArgs, rt: &Runtime) -> Result<()> {
    let resolved = args.stage.resolve::<EvaluateConfig>("evaluate", rt)?;
    let cfg = &resolved.cfg;
    let catalog = Catalog::new(&rt.data_root, &args.stage.preset, cfg.seed);
    Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let (vocab_len, vocab_record) = check_vocab(&catalog)?;
    let mut inputs = vec![vocab_record];
    let sets: Vec<CorpusSet> = evaluation::SETS
        .iter()
        .map(|s| eval_set(s))
        .collect::<Result<_>>()?;
    let attack_set = eval_set(&cfg.attack.set).context("evaluate.yaml `attack.set`")?;
    for set in &sets {
        inputs.push(catalog.input_record(set.name(), &catalog.corpus_set(*set), "corpus")?);
    }
    let tables: Vec<PairTable> = sets
        .iter()
        .map(|s| PairTable::read(&catalog, *s, None))
        .collect::<Result<_, _>>()?;
    let window = tables.first().map_or(0, |t| t.window);
    let it = check_it_model(&catalog, vocab_len, window)?;
    inputs.extend(it.records.iter().cloned());
    let variants = super::driver::variant_names(&args.variants)?;
    for v in &variants {
        let dir = catalog.variant_dir(Stage::Finetune, v);
        super::driver::check_variant_lineage(&catalog, v, &it.records)?;
        for (what, file) in [("model", MODEL_FILE), ("config", MODEL_CONFIG_FILE)] {
            inputs.push(catalog.input_record(
                &format!("{v}_{what}"),
                &dir.join(file),
                "finetune",
            )?);
        }
    }
    let fingerprint = code_fingerprint();
    let manifest_path = catalog.manifest(Stage::Evaluate);
    let plan = super::Plan {
        version: STAGE_VERSION,
        fingerprint: &fingerprint,
        config_hash: &resolved.hash,
        inputs: &inputs,
    };
    if args
        .stage
        .up_to_date(&manifest_path, "evaluate", plan, catalog.root())?
    {
        return Ok(());
    }
    let started = SystemTime::now();
    let device = rt.open_device()?;
    let mut models = vec![Model {
        name: "it".into(),
        method: "it".into(),
        lr_label: String::new(),
        gpt: load_model(
            &catalog.stage_dir(Stage::Pretrain),
            &it.cfg,
            "pretrain",
            &device,
        )?,
    }];
    for v in &variants {
        let (method, label) = v.split_once('-').unwrap_or((v.as_str(), ""));
        models.push(Model {
            name: v.clone(),
            method: method.to_owned(),
            lr_label: label.to_owned(),
            gpt: load_model(
                &catalog.variant_dir(Stage::Finetune, v),
                &it.cfg,
                "finetune",
                &device,
            )?,
        });
    }
    let _span = tracing::info_span!("evaluate", preset = %args.stage.preset).entered();
    let t0 = Instant::now();
    let mut behaviour = Vec::new();
    for m in &models {
        let id = ModelId {
            name: m.name.clone(),
            method: m.method.clone(),
            lr_label: m.lr_label.clone(),
        };
        for (set_name, table) in evaluation::SETS.iter().zip(&tables) {
            let subsets = *set_name != "std_safe";
            behaviour.extend(score_set(
                &m.gpt, &id, set_name, table, cfg.rows, cfg.greedy, subsets,
            )?);
        }
        tracing::info!(model = %m.name, "behaviour scored");
    }
    let behaviour_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let attack_table = tables
        .iter()
        .find(|t| t.set == attack_set)
        .context("the attack set is one of the evaluation sets")?;
    let (adv_rows, embeddings) = run_attacks(&models, attack_table, cfg, &device)?;
    let attack_seconds = t1.elapsed().as_secs_f64();
    // Tables, bars, outputs.
    let out = StageDir::begin(&catalog, Stage::Evaluate).context("starting 04_evaluate")?;
    let mut bdf = evaluation::behaviour_frame(&behaviour)?;
    let bschema = evaluation::behaviour_schema();
    artifacts::write_parquet(&mut bdf, &out.path().join(BEHAVIOUR_FILE), &bschema, &[])?;
    let mut adf = adversarial_frame(&adv_rows)?;
    let aschema = evaluation::adversarial_schema();
    artifacts::write_parquet(&mut adf, &out.path().join(ADVERSARIAL_FILE), &aschema, &[])?;
    let embeddings: std::collections::HashMap<_, _> = embeddings.into_iter().collect();
    candle_core::safetensors::save(&embeddings, out.path().join(ADVERSARIAL_EMBEDDINGS_FILE))
        .context("writing the adversarial soft tokens")?;
    let success = evaluation::attack_success(&adf)?;
    let summary = Summary {
        models: models.iter().map(|m| m.name.clone()).collect(),
        rows_per_set: cfg.rows,
        bars: evaluation::bars(
            &behaviour,
            &success,
            cfg.attack.default_factor,
            &cfg.attack.describe(),
        ),
        orderings: evaluation::orderings(&behaviour),
        behaviour_seconds,
        attack_seconds,
    };
    artifacts::write_json(&summary, &out.path().join(SUMMARY_FILE))?;
    let files = vec![
        out.record(
            "behaviour",
            BEHAVIOUR_FILE,
            Some(bdf.height()),
            bschema.column_names(),
        )?,
        out.record(
            "adversarial",
            ADVERSARIAL_FILE,
            Some(adf.height()),
            aschema.column_names(),
        )?,
        out.record(
            "adversarial_embeddings",
            ADVERSARIAL_EMBEDDINGS_FILE,
            None,
            Vec::new(),
        )?,
        out.record("summary", SUMMARY_FILE, None, Vec::new())?,
    ];
    let timings = BTreeMap::from([
        ("behaviour_seconds".to_owned(), behaviour_seconds),
        ("attack_seconds".to_owned(), attack_seconds),
    ]);
    let mut manifest = super::manifest(
        Stage::Evaluate,
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
    manifest.code.fingerprint = fingerprint;
    let dir = out.commit(&manifest).context("finishing 04_evaluate")?;
    let failed: Vec<&Check> = summary.bars.iter().filter(|c| !c.pass).collect();
    tracing::info!(
        "behaviour of {} models in {} ({behaviour_seconds:.0} s, attack {attack_seconds:.0} s); bars: {} of {} hold",
        models.len(),
        dir.display(),
        summary.bars.len() - failed.len(),
        summary.bars.len()
    );
    for c in failed {
        tracing::warn!("bar not met: {} ({})", c.name, c.detail);
    }
    Ok(())
}

/// One row of `adversarial.parquet`.
struct AdvRow {
    model: String,
    method: String,
    mode: &'static str,
    placement: String,
    factor: f64,
    n_soft: u32,
    steps: u32,
    sample_id: u32,
    text_len: u8,
    outcome: AttackOutcome,
}

type Embeddings = BTreeMap<String, candle_core::Tensor>;

fn run_attacks(
    models: &[Model],
    table: &PairTable,
    cfg: &EvaluateConfig,
    device: &candle_core::Device,
) -> Result<(Vec<AdvRow>, Embeddings)> {
    let a = &cfg.attack;
    let picked: Vec<usize> = (0..table.len())
        .filter(|&i| !table.apply_second[i])
        .take(a.rows)
        .collect();
    let rows: Vec<AttackRow<'_>> = picked
        .iter()
        .map(|&i| AttackRow {
            row: table.row(Variant::UnsafeTarget, i).0,
            text_len: usize::from(table.text_len[i]),
        })
        .collect();
    let mode = match a.mode {
        AttackModeConfig::Intended => AttackMode::Intended,
        AttackModeConfig::Literal => AttackMode::Literal,
    };
    let placement = Placement::from_config(a);
    let placement_name = match a.perturbed() {
        None => "insert".to_owned(),
        Some(p) => format!("perturb_{}", p.as_str()),
    };
    let mut out = Vec::new();
    let mut emb = Embeddings::new();
    for m in models.iter().filter(|m| m.method != "it") {
        for &factor in &a.budget_factors {
            let spec = AttackSpec {
                n_soft: a.n_soft,
                steps: a.steps,
                factor,
                mode,
                seed: a.seed,
            };
            let outcomes = attack_placed(&m.gpt, &rows, &spec, placement)
                .with_context(|| format!("attacking {} at budget {factor}", m.name))?;
            // Rows of δ per attacked input; they must agree to stack into one tensor.
            let lens: std::collections::BTreeSet<usize> = rows
                .iter()
                .map(|r| placement.delta_len(&spec, r.text_len))
                .collect();
            let n = match lens.into_iter().collect::<Vec<_>>()[..] {
                [n] => n,
                ref many => anyhow::bail!(
                    "evaluate.yaml `attack`: {placement_name} gives {many:?} perturbed positions for rows of different text lengths, which cannot be stored as one tensor; use `perturb_positions: prefix` or `operators`"
                ),
            };
            let d = m.gpt.config().n_embd;
            let flat: Vec<f32> = outcomes
                .iter()
                .flat_map(|o| o.delta.iter().copied())
                .collect();
            let key = format!("{}/{factor}", m.name);
            emb.insert(
                format!("{key}/delta"),
                candle_core::Tensor::from_vec(flat, (outcomes.len(), n, d), device)?,
            );
            let ids: Vec<u32> = picked.iter().map(|&i| table.sample_id[i]).collect();
            let len = ids.len();
            emb.insert(
                format!("{key}/sample_id"),
                candle_core::Tensor::from_vec(ids, len, device)?,
            );
            let rate = outcomes.iter().filter(|o| o.success).count() as f64 / len.max(1) as f64;
            tracing::info!(model = %m.name, factor, "soft-token attack success {:.1}%", 100.0 * rate);
            for (k, o) in outcomes.into_iter().enumerate() {
                let i = picked[k];
                out.push(AdvRow {
                    model: m.name.clone(),
                    method: m.method.clone(),
                    mode: match mode {
                        AttackMode::Intended => "intended",
                        AttackMode::Literal => "literal",
                    },
                    placement: placement_name.clone(),
                    factor,
                    n_soft: n as u32,
                    steps: a.steps as u32,
                    sample_id: table.sample_id[i],
                    text_len: table.text_len[i],
                    outcome: o,
                });
            }
        }
    }
    Ok((out, emb))
}

fn adversarial_frame(rows: &[AdvRow]) -> Result<study::polars::prelude::DataFrame> {
    use study::polars::prelude::*;
    Ok(df!(
        "model" => rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        "method" => rows.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        "mode" => rows.iter().map(|r| r.mode).collect::<Vec<_>>(),
        "placement" => rows.iter().map(|r| r.placement.as_str()).collect::<Vec<_>>(),
        "factor" => rows.iter().map(|r| r.factor).collect::<Vec<_>>(),
        "n_soft" => rows.iter().map(|r| r.n_soft).collect::<Vec<_>>(),
        "steps" => rows.iter().map(|r| r.steps).collect::<Vec<_>>(),
        "sample_id" => rows.iter().map(|r| r.sample_id).collect::<Vec<_>>(),
        "text_len" => rows.iter().map(|r| r.text_len).collect::<Vec<_>>(),
        "success" => rows.iter().map(|r| r.outcome.success).collect::<Vec<_>>(),
        "final_loss" => rows.iter().map(|r| r.outcome.final_loss).collect::<Vec<_>>(),
        "token_acc" => rows.iter().map(|r| r.outcome.token_acc).collect::<Vec<_>>(),
        "null_first" => rows.iter().map(|r| r.outcome.null_first).collect::<Vec<_>>(),
        "eps" => rows.iter().map(|r| r.outcome.eps).collect::<Vec<_>>(),
        "delta_norm_max" => rows.iter().map(|r| r.outcome.delta_norm_max).collect::<Vec<_>>(),
        "delta_norm_mean" => rows.iter().map(|r| r.outcome.delta_norm_mean).collect::<Vec<_>>(),
    )?)
}
