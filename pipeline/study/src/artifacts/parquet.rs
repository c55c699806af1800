//! Parquet (and JSON) with checked schemas and clear errors naming the file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use polars::prelude::*;
use serde::Serialize;

use super::*;

/// The rows of a `list<u8>` column.
pub fn token_lists(df: &DataFrame, name: &str) -> PolarsResult<Vec<Vec<u8>>> {
    let list = df.column(name)?.list()?;
    list.amortized_iter()
        .enumerate()
        .map(|(i, s)| match s {
            Some(s) => s
                .as_ref()
                .u8()?
                .iter()
                .map(|v| v.ok_or_else(|| polars_err!(ComputeError: "row {i} holds a null token")))
                .collect(),
            None => Err(polars_err!(ComputeError: "row {i} is null")),
        })
        .collect()
}

/// The expected schema of a table: name, version and typed columns.
#[derive(Debug, Clone)]
pub struct TableSchema {
    /// Table kind, stored as `study.table`.
    pub table: &'static str,
    /// Version, stored as `study.schema_version`; bump on any column change.
    pub version: u32,
    /// Columns and their types, in order.
    pub columns: Vec<(&'static str, DataType)>,
    /// The make target that produces the table.
    pub target: &'static str,
}

impl TableSchema {
    /// The column names, as a manifest's file record lists them.
    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|(c, _)| (*c).to_owned()).collect()
    }
}

/// Key of the table kind in Parquet key-value metadata.
pub const META_TABLE: &str = "study.table";
/// Key of the schema version in Parquet key-value metadata.
pub const META_SCHEMA_VERSION: &str = "study.schema_version";

/// Write `df` to `path` with key-value metadata (`study.table`, `study.schema_version` and the
/// given extras such as stage and config hash). Checks the frame against `schema` first.
pub fn write_parquet(
    df: &mut DataFrame,
    path: &Path,
    schema: &TableSchema,
    extra: &[(&str, String)],
) -> Result<()> {
    check_columns(df, schema).map_err(|message| ArtifactError::Schema {
        path: path.to_owned(),
        message,
        target: schema.target.to_owned(),
    })?;
    // The footer's Arrow schema at the oldest compat level: strings as `large_string`, which
    // every Arrow reader knows, not polars' default `string_view` (pyarrow < 16, older pandas
    // and DuckDB cannot read it). The data pages are the same either way.
    let arrow_schema = df.schema().to_arrow(CompatLevel::oldest());
    let arrow = polars_parquet::write::schema_to_metadata_key(&arrow_schema);
    let mut kv: Vec<(String, String)> = arrow.value.map(|v| (arrow.key, v)).into_iter().collect();
    kv.extend([
        (META_TABLE.to_owned(), schema.table.to_owned()),
        (META_SCHEMA_VERSION.to_owned(), schema.version.to_string()),
    ]);
    kv.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    let file = File::create(path).map_err(|source| ArtifactError::Write {
        path: path.to_owned(),
        source,
    })?;
    ParquetWriter::new(BufWriter::new(file))
        .with_compression(ParquetCompression::Zstd(None))
        .with_key_value_metadata(Some(KeyValueMetadata::from_static(kv)))
        .finish(df)
        .map_err(|source| ArtifactError::Polars {
            path: path.to_owned(),
            source,
        })?;
    Ok(())
}

fn check_columns(df: &DataFrame, schema: &TableSchema) -> std::result::Result<(), String> {
    let got: Vec<(String, DataType)> = df
        .columns()
        .iter()
        .map(|c| (c.name().to_string(), c.dtype().clone()))
        .collect();
    for (i, (name, dtype)) in schema.columns.iter().enumerate() {
        match got.get(i) {
            Some((n, d)) if n == name && d == dtype => {}
            Some((n, d)) => {
                return Err(format!(
                    "column {i} is `{n}: {d}`, expected `{name}: {dtype}`"
                ));
            }
            None => return Err(format!("missing column `{name}: {dtype}`")),
        }
    }
    if got.len() != schema.columns.len() {
        return Err(format!(
            "{} columns, expected {}",
            got.len(),
            schema.columns.len()
        ));
    }
    Ok(())
}

/// Read the key-value metadata of a Parquet file.
pub fn parquet_metadata(path: &Path, target: &str) -> Result<BTreeMap<String, String>> {
    let file = open(path, target)?;
    let mut reader = ParquetReader::new(file);
    let meta = reader
        .get_metadata()
        .map_err(|e| corrupt(path, &e, target))?;
    Ok(meta
        .key_value_metadata()
        .iter()
        .flatten()
        .filter_map(|kv| kv.value.clone().map(|v| (kv.key.clone(), v)))
        .collect())
}

fn open(path: &Path, target: &str) -> Result<File> {
    File::open(path).map_err(|_| ArtifactError::Missing {
        what: "table".into(),
        path: path.to_owned(),
        target: target.to_owned(),
    })
}

fn corrupt(path: &Path, e: &dyn std::fmt::Display, target: &str) -> ArtifactError {
    ArtifactError::Corrupt {
        path: path.to_owned(),
        message: e.to_string(),
        target: target.to_owned(),
    }
}

/// Read a table written by [`write_parquet`], checking its table kind, schema version and
/// columns. Errors name the file and the make target that rebuilds it.
pub fn read_parquet(path: &Path, schema: &TableSchema) -> Result<DataFrame> {
    let meta = parquet_metadata(path, schema.target)?;
    let stale = |message: String| ArtifactError::Schema {
        path: path.to_owned(),
        message,
        target: schema.target.to_owned(),
    };
    match (meta.get(META_TABLE), meta.get(META_SCHEMA_VERSION)) {
        (Some(t), Some(v)) if t == schema.table && *v == schema.version.to_string() => {}
        (t, v) => {
            return Err(stale(format!(
                "table {:?} version {:?}, expected {:?} version {}",
                t, v, schema.table, schema.version
            )));
        }
    }
    let df = ParquetReader::new(open(path, schema.target)?)
        .finish()
        .map_err(|e| corrupt(path, &e, schema.target))?;
    check_columns(&df, schema).map_err(stale)?;
    Ok(df)
}

/// Write JSON atomically enough for a file inside a stage's temporary folder.
pub fn write_json<T: Serialize>(value: &T, path: &Path) -> Result<()> {
    let text = serde_json::to_string_pretty(value).expect("artifacts serialize to JSON");
    std::fs::write(path, text + "\n").map_err(|source| ArtifactError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use polars_parquet::write::schema_to_metadata_key;

    use super::*;

    #[test]
    fn strings_are_written_as_large_string_for_every_arrow_reader() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.parquet");
        let mut df = df!("name" => ["a", "b"], "n" => [1u32, 2]).expect("frame");
        let schema = TableSchema {
            table: "t",
            version: 1,
            columns: vec![("name", DataType::String), ("n", DataType::UInt32)],
            target: "test",
        };
        write_parquet(&mut df, &path, &schema, &[]).expect("write");
        // The footer holds the oldest-compat Arrow schema (`large_string`), not polars' own
        // (`string_view`); polars' reader maps both to its strings, so the check is on the bytes.
        let kv = parquet_metadata(&path, "test").expect("kv");
        let footer = kv.get("ARROW:schema").expect("an Arrow schema");
        let at = |level| schema_to_metadata_key(&df.schema().to_arrow(level)).value;
        assert_eq!(Some(footer.clone()), at(CompatLevel::oldest()));
        assert_ne!(at(CompatLevel::oldest()), at(CompatLevel::newest()));
        // Our own reader still sees polars strings, and the table's metadata is kept.
        let back = read_parquet(&path, &schema).expect("read back");
        assert!(back.equals(&df));
        assert_eq!(kv.get(META_TABLE).map(String::as_str), Some("t"));
    }
}
