//! The evaluation stage's body as one library call, [`evaluate`]: behaviour of the IT and safety
//! fine-tuned models on every evaluation set (paper Table 1) and the soft-token attack on the
//! fine-tuned models; `study evaluate` checks the inputs, loads the models and calls it.
//!
//! Writes `behaviour.parquet` (per model × set × subset × metric × decoding × score),
//! `adversarial.parquet` (per attacked sample × model × budget), the attacked inputs' soft tokens
//! (`adversarial_embeddings.safetensors`, for the probe stage) and `summary.json` with the
//! behaviour bars and the paper's orderings.

use std::collections::BTreeMap;
use std::time::Instant;

use candle_core::{Device, Tensor};
use rayon::prelude::*;
use serde::Serialize;
use study::artifacts::{self, ArtifactError, FileRecord, SUMMARY_FILE, StageDir};
use study::config::EvaluateConfig;
use study::corpus::{CorpusSet, Variant};
use study::evaluation::{
    self, ADVERSARIAL_EMBEDDINGS_FILE, ADVERSARIAL_FILE, BEHAVIOUR_FILE, BehaviourRow, Check,
    EvalSet,
};
use study::finetune::PairTable;
use study::polars::prelude::*;

use crate::attack::{
    AttackIterate, AttackMode, AttackOutcome, AttackRow, AttackSpec, Placement, attack_placed,
};
use crate::behaviour::{ModelId, score_set};
use crate::gpt::Gpt;

/// Errors of an evaluation run.
#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    /// The attack set is not among the evaluation tables.
    #[error("evaluate.yaml `attack.set`: {0} is not one of the evaluation sets read")]
    AttackSet(String),
    /// An evaluation set's table was not given.
    #[error("the evaluation table {0} was not read; every evaluation set is scored")]
    MissingSet(String),
    /// The attack's perturbed positions differ between rows, so δ cannot be stored as one tensor.
    #[error(
        "evaluate.yaml `attack`: {placement} gives {lens:?} perturbed positions for rows of different text lengths, which cannot be stored as one tensor; use `perturb_positions: prefix` or `operators`"
    )]
    RaggedAttack {
        /// The placement's name.
        placement: String,
        /// The different lengths.
        lens: Vec<usize>,
    },
    /// Attacking a model failed.
    #[error("attacking {model} at budget {factor}")]
    Attack {
        /// The model.
        model: String,
        /// The budget factor.
        factor: f64,
        /// Why.
        #[source]
        source: candle_core::Error,
    },
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing an artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A table could not be built.
    #[error("building the evaluation tables")]
    Table(#[from] PolarsError),
}

type Result<T, E = EvaluateError> = std::result::Result<T, E>;

/// One model under evaluation.
pub struct EvalModel {
    /// `it` or the variant name, its method and learning-rate label.
    pub id: ModelId,
    /// The weights.
    pub gpt: Gpt,
}

/// `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Models evaluated (the IT model first).
    pub models: Vec<String>,
    /// Rows scored per set.
    pub rows_per_set: usize,
    /// The behaviour bars.
    pub bars: Vec<Check>,
    /// The paper's orderings.
    pub orderings: Vec<Check>,
    /// Wall time of the behaviour scoring, seconds.
    pub behaviour_seconds: f64,
    /// Wall time of the attack, seconds.
    pub attack_seconds: f64,
}

/// A finished evaluation.
#[derive(Debug)]
pub struct Evaluated {
    /// The summary written to `summary.json`.
    pub summary: Summary,
    /// The output files' records, in the manifest's order.
    pub files: Vec<FileRecord>,
}

/// Score every model on every evaluation set (`tables`: one per [`evaluation::EvalSet`]; rows
/// in Table 1 order), attack the fine-tuned ones on `attack_set`, and write the outputs into
/// `out`.
pub fn evaluate(
    cfg: &EvaluateConfig,
    models: &[EvalModel],
    tables: &[PairTable],
    attack_set: CorpusSet,
    device: &Device,
    out: &StageDir,
) -> Result<Evaluated> {
    let t0 = Instant::now();
    let by_set = EvalSet::ALL
        .iter()
        .map(|&set| {
            let corpus = CorpusSet::eval(set);
            let table = tables.iter().find(|t| t.set == corpus);
            table
                .map(|t| (set, t))
                .ok_or_else(|| EvaluateError::MissingSet(corpus.name().to_owned()))
        })
        .collect::<Result<Vec<_>>>()?;
    // Every (model, set) is scored on its own — side by side, since one small model cannot keep
    // two cores busy — and the rows are kept in the sequential order.
    let jobs: Vec<(&EvalModel, EvalSet, &PairTable)> = models
        .iter()
        .flat_map(|m| by_set.iter().map(move |&(set, table)| (m, set, table)))
        .collect();
    let scored: Vec<Vec<BehaviourRow>> = jobs
        .into_par_iter()
        .map(|(m, set, table)| {
            let subsets = set.has_unsafe_subsets();
            score_set(&m.gpt, &m.id, set, table, cfg.rows, cfg.greedy, subsets)
        })
        .collect::<candle_core::Result<_>>()?;
    let behaviour: Vec<BehaviourRow> = scored.into_iter().flatten().collect();
    tracing::info!(models = models.len(), "behaviour scored");
    let behaviour_seconds = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    let attack_table = tables
        .iter()
        .find(|t| t.set == attack_set)
        .ok_or_else(|| EvaluateError::AttackSet(attack_set.name().to_owned()))?;
    let (adv_rows, embeddings) = run_attacks(models, attack_table, cfg, device)?;
    let attack_seconds = t1.elapsed().as_secs_f64();
    let mut bdf = evaluation::behaviour_frame(&behaviour)?;
    let bschema = evaluation::behaviour_schema();
    artifacts::write_parquet(&mut bdf, &out.path().join(BEHAVIOUR_FILE), &bschema, &[])?;
    let mut adf = adversarial_frame(&adv_rows)?;
    let aschema = evaluation::adversarial_schema();
    artifacts::write_parquet(&mut adf, &out.path().join(ADVERSARIAL_FILE), &aschema, &[])?;
    let embeddings: std::collections::HashMap<_, _> = embeddings.into_iter().collect();
    candle_core::safetensors::save(&embeddings, out.path().join(ADVERSARIAL_EMBEDDINGS_FILE))?;
    let success = evaluation::attack_success(&adf)?;
    let summary = Summary {
        models: models.iter().map(|m| m.id.to_string()).collect(),
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
    Ok(Evaluated { summary, files })
}

/// After the stage folder `dir` is in place: log how many bars hold and each one that fails.
pub fn finished(summary: &Summary, dir: &std::path::Path) {
    let failed: Vec<&Check> = summary.bars.iter().filter(|c| !c.pass).collect();
    tracing::info!(
        "behaviour of {} models in {} ({:.0} s, attack {:.0} s); bars: {} of {} hold",
        summary.models.len(),
        dir.display(),
        summary.behaviour_seconds,
        summary.attack_seconds,
        summary.bars.len() - failed.len(),
        summary.bars.len()
    );
    for c in failed {
        tracing::warn!("bar not met: {} ({})", c.name, c.detail);
    }
}

/// One row of `adversarial.parquet`.
struct AdvRow {
    model: String,
    method: String,
    mode: &'static str,
    /// `last` or `best` (evaluate.yaml `attack.iterate`).
    kept: &'static str,
    placement: String,
    factor: f64,
    n_soft: u32,
    steps: u32,
    sample_id: u32,
    text_len: u8,
    outcome: AttackOutcome,
}

type Embeddings = BTreeMap<String, Tensor>;

fn run_attacks(
    models: &[EvalModel],
    table: &PairTable,
    cfg: &EvaluateConfig,
    device: &Device,
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
    let placement = Placement::from_config(a);
    let placement_name = match a.perturbed() {
        None => "insert".to_owned(),
        Some(p) => format!("perturb_{}", p.as_str()),
    };
    // One (model, budget) attack after the other: side by side they were slower (27.9 vs 24.4 s
    // on the `cpu` seed-0 models at 2 threads), each attack's backward already using the pool.
    let mut out = Vec::new();
    let mut emb = Embeddings::new();
    for m in models.iter().filter(|m| !m.id.is_it()) {
        for &factor in &a.budget_factors {
            let spec = AttackSpec::from_config(a, factor);
            let outcomes = attack_placed(&m.gpt, &rows, &spec, placement).map_err(|source| {
                EvaluateError::Attack {
                    model: m.id.to_string(),
                    factor,
                    source,
                }
            })?;
            // Rows of δ per attacked input; they must agree to stack into one tensor.
            let lens: std::collections::BTreeSet<usize> = rows
                .iter()
                .map(|r| placement.delta_len(&spec, r.text_len))
                .collect();
            let n = match lens.into_iter().collect::<Vec<_>>()[..] {
                [n] => n,
                ref many => {
                    return Err(EvaluateError::RaggedAttack {
                        placement: placement_name,
                        lens: many.to_vec(),
                    });
                }
            };
            let d = m.gpt.config().n_embd;
            let flat: Vec<f32> = outcomes
                .iter()
                .flat_map(|o| o.delta.iter().copied())
                .collect();
            let key = format!("{}/{factor}", m.id);
            emb.insert(
                format!("{key}/delta"),
                Tensor::from_vec(flat, (outcomes.len(), n, d), device)?,
            );
            let ids: Vec<u32> = picked.iter().map(|&i| table.sample_id[i]).collect();
            let len = ids.len();
            emb.insert(
                format!("{key}/sample_id"),
                Tensor::from_vec(ids, len, device)?,
            );
            let rate = outcomes.iter().filter(|o| o.success).count() as f64 / len.max(1) as f64;
            tracing::info!(model = %m.id, factor, "soft-token attack success {:.1}%", 100.0 * rate);
            for (k, o) in outcomes.into_iter().enumerate() {
                let i = picked[k];
                out.push(AdvRow {
                    model: m.id.to_string(),
                    method: m.id.method_name().to_owned(),
                    mode: match spec.mode {
                        AttackMode::Intended => "intended",
                        AttackMode::Literal => "literal",
                    },
                    kept: match spec.iterate {
                        AttackIterate::Last => "last",
                        AttackIterate::Best => "best",
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

fn adversarial_frame(rows: &[AdvRow]) -> PolarsResult<DataFrame> {
    df!(
        "model" => rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        "method" => rows.iter().map(|r| r.method.as_str()).collect::<Vec<_>>(),
        "mode" => rows.iter().map(|r| r.mode).collect::<Vec<_>>(),
        "kept" => rows.iter().map(|r| r.kept).collect::<Vec<_>>(),
        "placement" => rows.iter().map(|r| r.placement.as_str()).collect::<Vec<_>>(),
        "factor" => rows.iter().map(|r| r.factor).collect::<Vec<_>>(),
        "n_soft" => rows.iter().map(|r| r.n_soft).collect::<Vec<_>>(),
        "steps" => rows.iter().map(|r| r.steps).collect::<Vec<_>>(),
        "sample_id" => rows.iter().map(|r| r.sample_id).collect::<Vec<_>>(),
        "text_len" => rows.iter().map(|r| r.text_len).collect::<Vec<_>>(),
        "success" => rows.iter().map(|r| r.outcome.success).collect::<Vec<_>>(),
        "final_loss" => rows.iter().map(|r| r.outcome.final_loss).collect::<Vec<_>>(),
        "iterate" => rows.iter().map(|r| r.outcome.iterate as u32).collect::<Vec<_>>(),
        "token_acc" => rows.iter().map(|r| r.outcome.token_acc).collect::<Vec<_>>(),
        "null_first" => rows.iter().map(|r| r.outcome.null_first).collect::<Vec<_>>(),
        "eps" => rows.iter().map(|r| r.outcome.eps).collect::<Vec<_>>(),
        "delta_norm_max" => rows.iter().map(|r| r.outcome.delta_norm_max).collect::<Vec<_>>(),
        "delta_norm_mean" => rows.iter().map(|r| r.outcome.delta_norm_mean).collect::<Vec<_>>(),
    )
}
