//! `adversarial_activations.parquet`: the hooks' activations of `04_evaluate`'s attacked
//! inputs, with each attack's budget and success.

use super::*;

/// One attacked input's activations.
#[derive(Debug, Clone, PartialEq)]
pub struct AdversarialActivation {
    /// The attacked model.
    pub model: String,
    /// Budget, as a multiple of the mean token-embedding norm.
    pub factor: f64,
    /// The attacked row's `sample_id`.
    pub sample_id: u32,
    /// Whether the attack succeeded (`04_evaluate/adversarial.parquet`).
    pub success: bool,
    /// The vector.
    pub activation: Activation,
}

/// Schema of `adversarial_activations.parquet`.
pub fn adversarial_activations_schema() -> TableSchema {
    TableSchema {
        table: "adversarial_activations",
        version: ACTIVATIONS_SCHEMA_VERSION,
        columns: vec![
            ("model", DataType::String),
            ("factor", DataType::Float64),
            ("sample_id", DataType::UInt32),
            ("success", DataType::Boolean),
            ("layer", DataType::UInt16),
            ("hook", DataType::String),
            ("pool", DataType::String),
            ("values", list_f32()),
        ],
        target: "probe",
    }
}

/// The table of [`adversarial_activations_schema`].
pub fn adversarial_activations_frame(rows: &[AdversarialActivation]) -> PolarsResult<DataFrame> {
    let mut df = df!(
        "model" => rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        "factor" => rows.iter().map(|r| r.factor).collect::<Vec<_>>(),
        "sample_id" => rows.iter().map(|r| r.sample_id).collect::<Vec<_>>(),
        "success" => rows.iter().map(|r| r.success).collect::<Vec<_>>(),
        "layer" => rows.iter().map(|r| r.activation.layer).collect::<Vec<_>>(),
        "hook" => rows.iter().map(|r| r.activation.hook.as_str()).collect::<Vec<_>>(),
        "pool" => rows.iter().map(|r| r.activation.pool.as_str()).collect::<Vec<_>>(),
    )?;
    df.with_column(Column::from(values_series(
        rows.iter()
            .map(|r| r.activation.values.as_slice())
            .collect(),
    )))?;
    Ok(df)
}

/// Read `adversarial_activations.parquet` (hint: `make probe`).
pub fn read_adversarial_activations(
    path: &std::path::Path,
) -> Result<Vec<AdversarialActivation>, ArtifactError> {
    let df = artifacts::read_parquet(path, &adversarial_activations_schema())?;
    let rows = (|| -> PolarsResult<Vec<AdversarialActivation>> {
        let model = strings(&df, "model")?;
        let factor = numbers::<Float64Type>(&df, "factor")?;
        let sample_id = numbers::<UInt32Type>(&df, "sample_id")?;
        let success: Vec<bool> = df
            .column("success")?
            .bool()?
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.ok_or_else(|| polars_err!(ComputeError: "column `success` row {i}: null"))
            })
            .collect::<PolarsResult<_>>()?;
        let layer = numbers::<UInt16Type>(&df, "layer")?;
        let hook: Vec<Hook> = parsed(&df, "hook")?;
        let pool: Vec<Pool> = parsed(&df, "pool")?;
        let values = vectors(&df)?;
        Ok(values
            .into_iter()
            .enumerate()
            .map(|(i, values)| AdversarialActivation {
                model: model[i].clone(),
                factor: factor[i],
                sample_id: sample_id[i],
                success: success[i],
                activation: Activation {
                    layer: layer[i],
                    hook: hook[i],
                    pool: pool[i],
                    values,
                },
            })
            .collect())
    })();
    rows.map_err(|e| ArtifactError::Schema {
        path: path.to_owned(),
        message: e.to_string(),
        target: "probe".into(),
    })
}
