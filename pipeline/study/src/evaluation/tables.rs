//! `behaviour.parquet` and `adversarial.parquet`: row types, schemas, reading them back.

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use super::*;
use crate::artifacts::{self, TableSchema};

/// One behaviour measurement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviourRow {
    /// `it`, a fine-tuning variant (`ssft-medium`, …) or an interpolated one; the table's
    /// `model`, `method` and `lr_label` columns.
    pub model: ModelId,
    /// Evaluation set.
    pub set: EvalSet,
    /// Rows averaged over ([`Subset`]: `all`, and for rows whose unsafe variant is unsafe,
    /// `a_operator` or `b_only`).
    pub subset: Subset,
    /// What is measured ([`Metric`]).
    pub metric: Metric,
    /// How the outputs were produced ([`Decoding`]).
    pub decoding: Decoding,
    /// How they are compared with the target ([`Score`]).
    pub score: Score,
    /// Mean score over the rows.
    pub value: f64,
    /// Rows it averages over.
    pub n: u32,
}

/// The schema of `behaviour.parquet`.
pub fn behaviour_schema() -> TableSchema {
    TableSchema {
        table: "behaviour",
        version: BEHAVIOUR_SCHEMA_VERSION,
        columns: vec![
            ("model", DataType::String),
            ("method", DataType::String),
            ("lr_label", DataType::String),
            ("set", DataType::String),
            ("subset", DataType::String),
            ("metric", DataType::String),
            ("decoding", DataType::String),
            ("score", DataType::String),
            ("value", DataType::Float64),
            ("n", DataType::UInt32),
        ],
        target: "evaluate",
    }
}

/// Behaviour rows as a table.
pub fn behaviour_frame(rows: &[BehaviourRow]) -> PolarsResult<DataFrame> {
    let s = |f: fn(&BehaviourRow) -> &str| rows.iter().map(f).collect::<Vec<_>>();
    df!(
        "model" => rows.iter().map(|r| r.model.to_string()).collect::<Vec<_>>(),
        "method" => s(|r| r.model.method_name()),
        "lr_label" => s(|r| r.model.lr_label()),
        "set" => s(|r| r.set.as_str()),
        "subset" => s(|r| r.subset.as_str()),
        "metric" => s(|r| r.metric.as_str()),
        "decoding" => s(|r| r.decoding.as_str()),
        "score" => s(|r| r.score.as_str()),
        "value" => rows.iter().map(|r| r.value).collect::<Vec<_>>(),
        "n" => rows.iter().map(|r| r.n).collect::<Vec<_>>(),
    )
}

/// Behaviour rows back from a table written by [`behaviour_frame`]; a null or unknown value,
/// or a `method` / `lr_label` that disagrees with the row's `model`, is an error naming the
/// column and row.
pub fn behaviour_rows(df: &DataFrame) -> PolarsResult<Vec<BehaviourRow>> {
    let bad = |name: &str, i: usize, what: &str| polars_err!(ComputeError: "column `{name}` row {i}: {what}");
    let col = |name: &str| -> PolarsResult<Vec<String>> {
        df.column(name)?
            .str()?
            .iter()
            .enumerate()
            .map(|(i, v)| v.map(str::to_owned).ok_or_else(|| bad(name, i, "null")))
            .collect()
    };
    fn parse<T: std::str::FromStr<Err = String>>(name: &str, v: &[String]) -> PolarsResult<Vec<T>> {
        v.iter()
            .enumerate()
            .map(|(i, s)| {
                s.parse()
                    .map_err(|e| polars_err!(ComputeError: "column `{name}` row {i}: {e}"))
            })
            .collect()
    }
    let (method, lr) = (col("method")?, col("lr_label")?);
    let model: Vec<ModelId> = parse("model", &col("model")?)?;
    for (i, id) in model.iter().enumerate() {
        id.check_columns(&method[i], &lr[i])
            .map_err(|e| polars_err!(ComputeError: "row {i}: {e}"))?;
    }
    let set: Vec<EvalSet> = parse("set", &col("set")?)?;
    let subset: Vec<Subset> = parse("subset", &col("subset")?)?;
    let metric: Vec<Metric> = parse("metric", &col("metric")?)?;
    let decoding: Vec<Decoding> = parse("decoding", &col("decoding")?)?;
    let score: Vec<Score> = parse("score", &col("score")?)?;
    let value = df.column("value")?.f64()?.clone();
    let n = df.column("n")?.u32()?.clone();
    (0..df.height())
        .map(|i| {
            Ok(BehaviourRow {
                model: model[i].clone(),
                set: set[i],
                subset: subset[i],
                metric: metric[i],
                decoding: decoding[i],
                score: score[i],
                value: value.get(i).ok_or_else(|| bad("value", i, "null"))?,
                n: n.get(i).ok_or_else(|| bad("n", i, "null"))?,
            })
        })
        .collect()
}

/// Read `behaviour.parquet` (checking its schema).
pub fn read_behaviour(
    path: &std::path::Path,
) -> Result<Vec<BehaviourRow>, artifacts::ArtifactError> {
    let df = artifacts::read_parquet(path, &behaviour_schema())?;
    behaviour_rows(&df).map_err(|e| artifacts::ArtifactError::Schema {
        path: path.to_owned(),
        message: e.to_string(),
        target: "evaluate".into(),
    })
}

/// Everything the behaviour notebook reads from `04_evaluate/`.
#[derive(Debug, Clone)]
pub struct Evaluated {
    /// `behaviour.parquet`.
    pub behaviour: Vec<BehaviourRow>,
    /// Attack success per (model, budget factor bits): (rate, rows).
    pub attack: BTreeMap<(ModelId, u64), (f64, usize)>,
    /// The stage's resolved config (from its manifest).
    pub config: crate::config::EvaluateConfig,
}

impl Evaluated {
    /// The behaviour bars ([`bars`]) at the config's default attack budget.
    pub fn bars(&self) -> Vec<Check> {
        let a = &self.config.attack;
        bars(
            &self.behaviour,
            &self.attack,
            a.default_factor,
            &a.describe(),
        )
    }

    /// The paper's orderings ([`orderings`]).
    pub fn orderings(&self) -> Vec<Check> {
        orderings(&self.behaviour)
    }
}

/// Read the evaluate stage's tables (hint: `make evaluate`).
pub fn read_evaluation(catalog: &crate::Catalog) -> Result<Evaluated, artifacts::ArtifactError> {
    use crate::Stage;
    let manifest = artifacts::Manifest::read(&catalog.manifest(Stage::Evaluate), "evaluate")?;
    let behaviour = read_behaviour(&catalog.stage_file(Stage::Evaluate, BEHAVIOUR_FILE))?;
    let path = catalog.stage_file(Stage::Evaluate, ADVERSARIAL_FILE);
    let adv = artifacts::read_parquet(&path, &adversarial_schema())?;
    let attack = attack_success(&adv).map_err(|e| artifacts::ArtifactError::Schema {
        path: path.clone(),
        message: e.to_string(),
        target: "evaluate".into(),
    })?;
    let config = serde_yaml::from_value(manifest.config.clone()).map_err(|e| {
        artifacts::ArtifactError::Schema {
            path: catalog.manifest(Stage::Evaluate),
            message: format!("its `config` is not an evaluate config: {e}"),
            target: "evaluate".into(),
        }
    })?;
    Ok(Evaluated {
        behaviour,
        attack,
        config,
    })
}

/// The schema of `adversarial.parquet` (one row per attacked sample, model and budget;
/// `placement` is `insert` or `perturb_<positions>`, `n_soft` the rows of δ, `kept` `last` or
/// `best` and `iterate` the step whose δ is reported, 0 for the initial one).
pub fn adversarial_schema() -> TableSchema {
    TableSchema {
        table: "adversarial",
        version: ADVERSARIAL_SCHEMA_VERSION,
        columns: vec![
            ("model", DataType::String),
            ("method", DataType::String),
            ("mode", DataType::String),
            ("kept", DataType::String),
            ("placement", DataType::String),
            ("factor", DataType::Float64),
            ("n_soft", DataType::UInt32),
            ("steps", DataType::UInt32),
            ("sample_id", DataType::UInt32),
            ("text_len", DataType::UInt8),
            ("success", DataType::Boolean),
            ("final_loss", DataType::Float64),
            ("iterate", DataType::UInt32),
            ("token_acc", DataType::Float64),
            ("null_first", DataType::Boolean),
            ("eps", DataType::Float64),
            ("delta_norm_max", DataType::Float64),
            ("delta_norm_mean", DataType::Float64),
        ],
        target: "evaluate",
    }
}

/// One attacked row's key in `adversarial.parquet`: (model, factor as `f64::to_bits`, sample_id).
pub type AttackKey = (String, u64, u32);

/// Each attack's outcome from `adversarial.parquet`: success per [`AttackKey`], in table order.
pub fn attack_outcomes(df: &DataFrame) -> PolarsResult<Vec<(AttackKey, bool)>> {
    let model = df.column("model")?.str()?.clone();
    let factor = df.column("factor")?.f64()?.clone();
    let sample = df.column("sample_id")?.u32()?.clone();
    let success = df.column("success")?.bool()?.clone();
    let null = |name: &str, i: usize| polars_err!(ComputeError: "column `{name}` row {i}: null");
    (0..df.height())
        .map(|i| {
            Ok((
                (
                    model.get(i).ok_or_else(|| null("model", i))?.to_owned(),
                    factor.get(i).ok_or_else(|| null("factor", i))?.to_bits(),
                    sample.get(i).ok_or_else(|| null("sample_id", i))?,
                ),
                success.get(i).ok_or_else(|| null("success", i))?,
            ))
        })
        .collect()
}

/// Attack success rate per (model, factor) from `adversarial.parquet`; a model name that is not
/// a [`ModelId`] is an error.
pub fn attack_success(df: &DataFrame) -> PolarsResult<BTreeMap<(ModelId, u64), (f64, usize)>> {
    let mut acc: BTreeMap<(ModelId, u64), (usize, usize)> = BTreeMap::new();
    for ((model, factor, _), success) in attack_outcomes(df)? {
        let id: ModelId = model
            .parse()
            .map_err(|e: String| polars_err!(ComputeError: "column `model`: {e}"))?;
        let e = acc.entry((id, factor)).or_default();
        e.0 += usize::from(success);
        e.1 += 1;
    }
    Ok(acc
        .into_iter()
        .map(|(k, (s, n))| (k, (s as f64 / n.max(1) as f64, n)))
        .collect())
}
