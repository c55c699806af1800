//! The stage's tables as Parquet: each row type's columns and schema, and the conversions both
//! ways.

use super::*;

/// A column's type in the stage's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// UTF-8.
    Str,
    /// Unsigned integer (layers, indices, counts).
    U32,
    /// Float; an undefined value (a ratio to a chance mean of 0) is NaN.
    F64,
}

/// A row type of one of the stage's tables: its file stem and columns (the row's serialized
/// fields, in this order, flattened controls included).
pub trait TableRow: Serialize {
    /// Table kind and file stem.
    const TABLE: &'static str;
    /// Columns in order.
    const COLUMNS: &'static [(&'static str, Col)];
}

/// Version of every spectra table's schema.
pub const SPECTRA_SCHEMA_VERSION: u32 = 1;

/// The schema of table `T`.
pub fn schema<T: TableRow>() -> crate::artifacts::TableSchema {
    crate::artifacts::TableSchema {
        table: T::TABLE,
        version: SPECTRA_SCHEMA_VERSION,
        columns: T::COLUMNS
            .iter()
            .map(|&(name, c)| {
                let dtype = match c {
                    Col::Str => DataType::String,
                    Col::U32 => DataType::UInt32,
                    Col::F64 => DataType::Float64,
                };
                (name, dtype)
            })
            .collect(),
        target: "spectra",
    }
}

/// Rows of `T` as a DataFrame in [`TableRow::COLUMNS`] order; a field the list misses (or the
/// other way round) is an error.
pub fn frame<T: TableRow>(rows: &[T]) -> PolarsResult<DataFrame> {
    let values: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) if m.len() == T::COLUMNS.len() => Ok(m),
            _ => Err(polars_err!(ComputeError: "a `{}` row does not serialize to its {} columns", T::TABLE, T::COLUMNS.len())),
        })
        .collect::<PolarsResult<_>>()?;
    let bad = |name: &str, i: usize| polars_err!(ComputeError: "table `{}` column `{name}` row {i}: missing or mistyped", T::TABLE);
    let columns = T::COLUMNS
        .iter()
        .map(|&(name, c)| -> PolarsResult<Column> {
            let get = |i: usize| values[i].get(name);
            let n = values.len();
            let series = match c {
                Col::Str => Series::new(
                    name.into(),
                    (0..n)
                        .map(|i| get(i).and_then(|v| v.as_str()).ok_or_else(|| bad(name, i)))
                        .collect::<PolarsResult<Vec<_>>>()?,
                ),
                Col::U32 => Series::new(
                    name.into(),
                    (0..n)
                        .map(|i| {
                            get(i)
                                .and_then(serde_json::Value::as_u64)
                                .and_then(|v| u32::try_from(v).ok())
                                .ok_or_else(|| bad(name, i))
                        })
                        .collect::<PolarsResult<Vec<u32>>>()?,
                ),
                Col::F64 => Series::new(
                    name.into(),
                    (0..n)
                        .map(|i| match get(i) {
                            Some(serde_json::Value::Null) => Ok(f64::NAN),
                            v => v
                                .and_then(serde_json::Value::as_f64)
                                .ok_or_else(|| bad(name, i)),
                        })
                        .collect::<PolarsResult<Vec<f64>>>()?,
                ),
            };
            Ok(Column::from(series))
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    DataFrame::new(values.len(), columns)
}

/// Rows of `T` back from a table written by [`frame`] (columns checked by
/// [`crate::artifacts::read_parquet`] first); a null where a value is required is an error naming
/// the table, column and row.
pub fn rows_of<T: TableRow + serde::de::DeserializeOwned>(df: &DataFrame) -> PolarsResult<Vec<T>> {
    let cols: Vec<(&str, Col, &Column)> = T::COLUMNS
        .iter()
        .map(|&(name, c)| df.column(name).map(|col| (name, c, col)))
        .collect::<PolarsResult<_>>()?;
    (0..df.height())
        .map(|i| {
            let mut m = serde_json::Map::new();
            for (name, c, col) in &cols {
                let v = col.get(i)?;
                let json = match (c, v) {
                    (Col::Str, v) if v.get_str().is_some() => serde_json::Value::from(v.get_str().unwrap_or_default()),
                    (Col::U32, AnyValue::UInt32(x)) => serde_json::Value::from(x),
                    (Col::F64, AnyValue::Float64(x)) => serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number),
                    (_, v) => polars_bail!(ComputeError: "table `{}` column `{name}` row {i}: unexpected {v:?}", T::TABLE),
                };
                m.insert((*name).to_owned(), json);
            }
            serde_json::from_value(serde_json::Value::Object(m))
                .map_err(|e| polars_err!(ComputeError: "table `{}` row {i}: {e}", T::TABLE))
        })
        .collect()
}

/// Read table `T` of `06_spectra/` (hint: `make spectra`).
pub fn read_table<T: TableRow + serde::de::DeserializeOwned>(
    catalog: &crate::Catalog,
) -> Result<Vec<T>, crate::artifacts::ArtifactError> {
    let path = catalog.stage_file(crate::Stage::Spectra, &format!("{}.parquet", T::TABLE));
    let df = crate::artifacts::read_parquet(&path, &schema::<T>())?;
    rows_of(&df).map_err(|e| crate::artifacts::ArtifactError::Schema {
        path,
        message: e.to_string(),
        target: "spectra".into(),
    })
}

impl Tables {
    /// Every table of `06_spectra/`.
    pub fn read(catalog: &crate::Catalog) -> Result<Self, crate::artifacts::ArtifactError> {
        Ok(Self {
            tau: read_table(catalog)?,
            spectrum: read_table(catalog)?,
            spectrum_summary: read_table(catalog)?,
            column: read_table(catalog)?,
            column_summary: read_table(catalog)?,
            row_space: read_table(catalog)?,
            gain: read_table(catalog)?,
            direction: read_table(catalog)?,
            lipschitz_hist: read_table(catalog)?,
            lipschitz_summary: read_table(catalog)?,
            interpolation: read_table(catalog)?,
        })
    }
}

macro_rules! table_row {
    ($t:ty, $name:literal, [$($col:literal : $kind:ident),+ $(,)?]) => {
        impl TableRow for $t {
            const TABLE: &'static str = $name;
            const COLUMNS: &'static [(&'static str, Col)] = &[$(($col, Col::$kind)),+];
        }
    };
}

table_row!(TauRow, "tau", [
    "model": Str, "layer": U32, "metric": Str, "set": Str, "group": Str, "n": U32, "mean": F64,
    "sd": F64, "assignment_accuracy": F64, "separation": F64,
]);
table_row!(SpectrumRow, "spectrum", [
    "model": Str, "layer": U32, "matrix": Str, "index": U32, "sigma": F64, "cumulative_energy": F64,
]);
table_row!(SpectrumSummary, "spectrum_summary", [
    "model": Str, "layer": U32, "matrix": Str, "frobenius_norm": F64, "top_energy_share": F64,
    "effective_rank": F64, "stable_rank": F64, "numerical_rank": U32,
]);
table_row!(ColumnRow, "column_space", [
    "model": Str, "layer": U32, "matrix": Str, "index": U32, "sigma": F64, "null_projection": F64,
]);
table_row!(ColumnSummary, "column_summary", [
    "model": Str, "layer": U32, "matrix": Str, "k": U32, "it_rank": U32, "out_dim": U32,
    "observed": F64, "chance_mean": F64, "chance_sd": F64, "ratio": F64, "z": F64,
]);
table_row!(RowSpaceRow, "row_space", [
    "model": Str, "layer": U32, "set": Str, "group": Str, "j": U32, "sigma": F64,
    "mean_abs_projection": F64, "sd_abs_projection": F64,
]);
table_row!(GainRow, "gain", [
    "model": Str, "layer": U32, "set": Str, "group": Str, "n": U32, "sd": F64,
    "observed": F64, "chance_mean": F64, "chance_sd": F64, "ratio": F64, "z": F64,
]);
table_row!(DirectionRow, "direction", [
    "model": Str, "layer": U32, "mean_difference_norm": F64, "best": U32,
    "observed": F64, "chance_mean": F64, "chance_sd": F64, "ratio": F64, "z": F64,
]);
table_row!(HistRow, "lipschitz_hist", [
    "model": Str, "group": Str, "bin": U32, "lo": F64, "hi": F64, "count": U32,
]);
table_row!(LipschitzSummary, "lipschitz_summary", [
    "model": Str, "group": Str, "n": U32, "mean": F64, "median": F64, "q05": F64, "q95": F64,
]);
table_row!(SeedRow, "seeds", [
    "table": Str, "model": Str, "key": Str, "quantity": Str, "n_seeds": U32, "mean": F64, "sd": F64,
    "ci95_lo": F64, "ci95_hi": F64,
]);
table_row!(InterpolationRow, "interpolation", [
    "model": Str, "alpha": F64, "refusal": F64, "refusal_b_only": F64, "instruct": F64, "n": U32,
    "layer": U32, "tau_safe": F64, "tau_unsafe": F64, "tau_separation": F64,
]);
