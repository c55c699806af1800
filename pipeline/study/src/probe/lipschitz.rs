//! `lipschitz.parquet`: the Lipschitz proxy per model, group and row (§4.2).

use super::*;

/// One Lipschitz proxy (§4.2): `grad_fro = ‖∂ max_v z_v(s) / ∂E[0..s]‖_F`, the gradient of the
/// largest logit at EOT with respect to the token embeddings of BOS, the operators, SOT and
/// the text (EOT and later excluded), and `grad_fro / sqrt(s)` (the prefix length s varies with
/// L in the paper's data).
#[derive(Debug, Clone, PartialEq)]
pub struct LipschitzRow {
    /// `it` or the variant.
    pub model: String,
    /// Evaluation set.
    pub set: String,
    /// Which prompt.
    pub group: Group,
    /// Row index in the set.
    pub row: u32,
    /// The row's `sample_id`.
    pub sample_id: u32,
    /// s: positions whose embeddings the gradient covers.
    pub prefix_len: u32,
    /// The proxy.
    pub grad_fro: f64,
}

/// Schema of `lipschitz.parquet`.
pub fn lipschitz_schema() -> TableSchema {
    TableSchema {
        table: "lipschitz",
        version: LIPSCHITZ_SCHEMA_VERSION,
        columns: vec![
            ("model", DataType::String),
            ("set", DataType::String),
            ("group", DataType::String),
            ("row", DataType::UInt32),
            ("sample_id", DataType::UInt32),
            ("prefix_len", DataType::UInt32),
            ("grad_fro", DataType::Float64),
            ("grad_fro_per_token", DataType::Float64),
        ],
        target: "probe",
    }
}

/// The table of [`lipschitz_schema`].
pub fn lipschitz_frame(rows: &[LipschitzRow]) -> PolarsResult<DataFrame> {
    df!(
        "model" => rows.iter().map(|r| r.model.as_str()).collect::<Vec<_>>(),
        "set" => rows.iter().map(|r| r.set.as_str()).collect::<Vec<_>>(),
        "group" => rows.iter().map(|r| r.group.as_str()).collect::<Vec<_>>(),
        "row" => rows.iter().map(|r| r.row).collect::<Vec<_>>(),
        "sample_id" => rows.iter().map(|r| r.sample_id).collect::<Vec<_>>(),
        "prefix_len" => rows.iter().map(|r| r.prefix_len).collect::<Vec<_>>(),
        "grad_fro" => rows.iter().map(|r| r.grad_fro).collect::<Vec<_>>(),
        "grad_fro_per_token" => rows.iter().map(|r| r.grad_fro / f64::from(r.prefix_len).sqrt()).collect::<Vec<_>>(),
    )
}

/// Read `lipschitz.parquet` (hint: `make probe`).
pub fn read_lipschitz(path: &std::path::Path) -> Result<Vec<LipschitzRow>, ArtifactError> {
    let df = artifacts::read_parquet(path, &lipschitz_schema())?;
    let rows = (|| -> PolarsResult<Vec<LipschitzRow>> {
        let model = strings(&df, "model")?;
        let set = strings(&df, "set")?;
        let group: Vec<Group> = parsed(&df, "group")?;
        let row = numbers::<UInt32Type>(&df, "row")?;
        let sample_id = numbers::<UInt32Type>(&df, "sample_id")?;
        let prefix_len = numbers::<UInt32Type>(&df, "prefix_len")?;
        let grad_fro = numbers::<Float64Type>(&df, "grad_fro")?;
        Ok((0..df.height())
            .map(|i| LipschitzRow {
                model: model[i].clone(),
                set: set[i].clone(),
                group: group[i],
                row: row[i],
                sample_id: sample_id[i],
                prefix_len: prefix_len[i],
                grad_fro: grad_fro[i],
            })
            .collect())
    })();
    rows.map_err(|e| ArtifactError::Schema {
        path: path.to_owned(),
        message: e.to_string(),
        target: "probe".into(),
    })
}
