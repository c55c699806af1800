//! The per-step metrics table (`metrics.parquet`) of the training stages.

use polars::prelude::*;

/// One row of a training run's metrics table (tidy: one metric per row).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Steps completed when measured.
    pub step: u32,
    /// `train` (the training loss and, at evaluations, a fresh draw from the training mix),
    /// `test` (held-out pre-training rows) or an evaluation set (`std_safe`, …).
    pub split: String,
    /// A sample type, or `all`.
    pub sample_type: String,
    /// `loss`, `lr`, `grad_norm`, `tokens_per_s`, `acc_<window>` (teacher-forced token
    /// accuracy), `em_<window>` (teacher-forced exact match), `greedy_em_s1`, `greedy_em_s2`,
    /// `greedy_em_both`.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Rows (or tokens, for `loss`) it averages over; 1 for scalars.
    pub n: u32,
}

impl MetricRow {
    /// A row of `metric` at `step`.
    pub fn new(step: usize, split: &str, ty: &str, metric: &str, value: f64, n: usize) -> Self {
        Self {
            step: step as u32,
            split: split.to_owned(),
            sample_type: ty.to_owned(),
            metric: metric.to_owned(),
            value,
            n: n as u32,
        }
    }
}

/// Version of the metrics table's schema.
pub const METRICS_SCHEMA_VERSION: u32 = 1;

/// The schema of `metrics.parquet`; `target` is the make target that writes it.
pub fn metrics_schema(target: &'static str) -> crate::artifacts::TableSchema {
    crate::artifacts::TableSchema {
        table: "training_metrics",
        version: METRICS_SCHEMA_VERSION,
        columns: vec![
            ("step", DataType::UInt32),
            ("split", DataType::String),
            ("sample_type", DataType::String),
            ("metric", DataType::String),
            ("value", DataType::Float64),
            ("n", DataType::UInt32),
        ],
        target,
    }
}

/// Metric rows as a table.
pub fn metrics_frame(rows: &[MetricRow]) -> PolarsResult<DataFrame> {
    df!(
        "step" => rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        "split" => rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(),
        "sample_type" => rows.iter().map(|r| r.sample_type.as_str()).collect::<Vec<_>>(),
        "metric" => rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(),
        "value" => rows.iter().map(|r| r.value).collect::<Vec<_>>(),
        "n" => rows.iter().map(|r| r.n).collect::<Vec<_>>(),
    )
}

/// Metric rows back from a table written by [`metrics_frame`].
pub fn metrics_rows(df: &DataFrame) -> PolarsResult<Vec<MetricRow>> {
    let step = df.column("step")?.u32()?.clone();
    let split = df.column("split")?.str()?.clone();
    let ty = df.column("sample_type")?.str()?.clone();
    let metric = df.column("metric")?.str()?.clone();
    let value = df.column("value")?.f64()?.clone();
    let n = df.column("n")?.u32()?.clone();
    (0..df.height())
        .map(|i| {
            Ok(MetricRow {
                step: present(step.get(i), "step", i)?,
                split: present(split.get(i), "split", i)?.to_owned(),
                sample_type: present(ty.get(i), "sample_type", i)?.to_owned(),
                metric: present(metric.get(i), "metric", i)?.to_owned(),
                value: present(value.get(i), "value", i)?,
                n: present(n.get(i), "n", i)?,
            })
        })
        .collect()
}

/// A value of a column that must have no nulls: a null is an error naming the column and row
/// (the callers add the file).
pub fn present<T>(v: Option<T>, column: &str, row: usize) -> PolarsResult<T> {
    v.ok_or_else(|| {
        polars::prelude::polars_err!(ComputeError: "column `{column}` is null at row {row}; the table was not written by this pipeline or is damaged: rerun the stage that writes it")
    })
}
