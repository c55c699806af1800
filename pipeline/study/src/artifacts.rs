//! Artifacts: the catalog of paths, stage manifests, atomic stage folders, and Parquet with
//! checked schemas.
//!
//! Layout: `<data root>/<preset>/seed-<k>/<NN>_<stage>/…`, each stage folder holding its outputs
//! and a `manifest.yaml` written last. A stage writes into `<NN>_<stage>.tmp/` and renames it into
//! place only when complete, so a crash leaves nothing that looks finished.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read};
use std::path::{Path, PathBuf};

use polars::prelude::*;
use serde::{Deserialize, Serialize};

/// Version of the manifest format.
pub const MANIFEST_SCHEMA: u32 = 1;

/// Errors reading or writing artifacts. Messages name the file and the make target that
/// produces it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An input artifact is missing.
    #[error("no {what} at {path}; run `make {target}`")]
    Missing {
        /// What was expected.
        what: String,
        /// Where.
        path: PathBuf,
        /// The make target that produces it.
        target: String,
    },
    /// A file exists but cannot be read as what it should be.
    #[error(
        "cannot read {path}: {message}; it may be truncated or from another version: delete it and run `make {target}`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
        /// The make target that produces it.
        target: String,
    },
    /// A table's schema or schema version is not what this code expects.
    #[error("{path} has an unexpected schema: {message}; it is stale: run `make {target}` again")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
        /// The make target that produces it.
        target: String,
    },
    /// Filesystem error while writing.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process is writing the same stage folder.
    #[error(
        "{path} is being written by another process (it holds {lock}); wait for it to finish \
         (the lock is released when that process exits, however it exits)"
    )]
    Locked {
        /// The stage folder.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Parquet writer error.
    #[error("cannot write {path}: {source}")]
    Polars {
        /// The path.
        path: PathBuf,
        /// Why.
        source: PolarsError,
    },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

/// A pipeline stage, in DAG order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Synthetic data.
    Corpus,
    /// The instruction-tuned model.
    Pretrain,
    /// Safety fine-tuned models.
    Finetune,
    /// Behaviour tables.
    Evaluate,
    /// Activations and input-gradient norms.
    Probe,
    /// ΔW spectra.
    Spectra,
}

impl Stage {
    /// The stage's one word: subcommand, config file stem, make target.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Corpus => "corpus",
            Stage::Pretrain => "pretrain",
            Stage::Finetune => "finetune",
            Stage::Evaluate => "evaluate",
            Stage::Probe => "probe",
            Stage::Spectra => "spectra",
        }
    }

    /// Folder name, numbered in DAG order.
    pub fn dir_name(self) -> String {
        let n = self as usize + 1;
        format!("{n:02}_{}", self.name())
    }
}

/// Names every artifact path of one run (`<data root>/<preset>/seed-<k>`); stages never build
/// path strings themselves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    root: PathBuf,
}

impl Catalog {
    /// The catalog of preset `preset`, seed `seed` under `data_root`.
    pub fn new(data_root: impl AsRef<Path>, preset: &str, seed: u64) -> Self {
        Self::at(data_root.as_ref().join(preset).join(format!("seed-{seed}")))
    }

    /// A catalog rooted at `root` (a `<preset>/seed-<k>` folder).
    pub fn at(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// For notebooks: `$STUDY_DATA`, else `../data/cpu/seed-0` (notebooks run from `notebooks/`).
    pub fn from_env() -> Self {
        Self::at(
            std::env::var_os("STUDY_DATA")
                .map_or_else(|| PathBuf::from("../data/cpu/seed-0"), PathBuf::from),
        )
    }

    /// The run's root folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A stage's folder.
    pub fn stage_dir(&self, stage: Stage) -> PathBuf {
        self.root.join(stage.dir_name())
    }

    /// A stage's manifest.
    pub fn manifest(&self, stage: Stage) -> PathBuf {
        self.stage_dir(stage).join("manifest.yaml")
    }

    /// The folder of one variant of a stage with variants (fine-tuning):
    /// `<NN>_<stage>/<variant>/`.
    pub fn variant_dir(&self, stage: Stage, variant: &str) -> PathBuf {
        self.stage_dir(stage).join(variant)
    }

    /// A variant's manifest.
    pub fn variant_manifest(&self, stage: Stage, variant: &str) -> PathBuf {
        self.variant_dir(stage, variant).join("manifest.yaml")
    }

    /// The corpus vocabulary.
    pub fn vocab(&self) -> PathBuf {
        self.stage_dir(Stage::Corpus).join(VOCAB_FILE)
    }

    /// A corpus set's Parquet file.
    pub fn corpus_set(&self, set: crate::corpus::CorpusSet) -> PathBuf {
        self.stage_dir(Stage::Corpus).join(corpus_set_file(set))
    }
}

/// File name of a model's weights (safetensors, official PyTorch parameter names).
pub const MODEL_FILE: &str = "model.safetensors";
/// File name of a model's shape (`GptConfig` as JSON).
pub const MODEL_CONFIG_FILE: &str = "config.json";
/// File name of a training run's resumable state (step, config hash).
pub const TRAIN_STATE_FILE: &str = "train_state.json";
/// File name of a training run's optimiser moments (safetensors).
pub const OPTIMIZER_FILE: &str = "optimizer.safetensors";
/// File name of a training run's metrics table.
pub const METRICS_FILE: &str = "metrics.parquet";
/// File name of a training run's final summary (accuracy bar, final metrics).
pub const SUMMARY_FILE: &str = "summary.json";

impl Catalog {
    /// A file inside a stage's folder (one of the `*_FILE` names).
    pub fn stage_file(&self, stage: Stage, file: &str) -> PathBuf {
        self.stage_dir(stage).join(file)
    }

    /// The record of input file `path` (inside this run) for a manifest: its hash, size and
    /// run-relative path. A missing file names `target`, the make target that produces it.
    pub fn input_record(&self, name: &str, path: &Path, target: &str) -> Result<FileRecord> {
        let missing = || ArtifactError::Missing {
            what: name.to_owned(),
            path: path.to_owned(),
            target: target.to_owned(),
        };
        let hash = hash_file(path).map_err(|_| missing())?;
        let bytes = std::fs::metadata(path).map_err(|_| missing())?.len();
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        Ok(FileRecord {
            name: name.to_owned(),
            path: rel.to_string_lossy().into_owned(),
            hash,
            bytes,
            rows: None,
            columns: Vec::new(),
        })
    }

    /// The resumable checkpoint of a training stage still running (or killed):
    /// `<NN>_<stage>.ckpt/`, removed when the stage completes.
    pub fn checkpoint_dir(&self, stage: Stage) -> PathBuf {
        self.root.join(format!("{}.ckpt", stage.dir_name()))
    }
}

/// File name of the vocabulary inside the corpus folder.
pub const VOCAB_FILE: &str = "vocab.json";

/// File name of a corpus set inside the corpus folder.
pub fn corpus_set_file(set: crate::corpus::CorpusSet) -> String {
    format!("{}.parquet", set.name())
}

/// Where the figures of notebooks go: `$STUDY_REPORTS`, else `../reports` (from `notebooks/`).
pub fn reports_dir_from_env() -> PathBuf {
    std::env::var_os("STUDY_REPORTS").map_or_else(|| PathBuf::from("../reports"), PathBuf::from)
}

/// One input or output file of a stage, as recorded in its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Artifact name.
    pub name: String,
    /// Path relative to the run root.
    pub path: String,
    /// blake3 of the bytes.
    pub hash: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Rows, for tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<usize>,
    /// Column names, for tables.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub columns: Vec<String>,
}

/// The source revision that produced an artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct CodeInfo {
    /// `git rev-parse HEAD`, if available.
    pub git_rev: Option<String>,
    /// Whether the work tree had uncommitted changes.
    pub dirty: Option<bool>,
    /// Hash of the library sources that decide the stage's outputs; a change re-runs the stage.
    #[serde(default)]
    pub fingerprint: String,
}

/// What produced a stage's outputs (DVC's dvc.lock, in spirit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub schema: u32,
    /// Stage name.
    pub stage: Stage,
    /// Variant (fine-tuning), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The stage's code version; bumping it invalidates old outputs.
    pub stage_version: u32,
    /// Command line.
    pub argv: Vec<String>,
    /// Preset name.
    pub preset: String,
    /// Resolved config.
    pub config: serde_yaml::Value,
    /// Hash of the resolved config.
    pub config_hash: String,
    /// Seed of the stage.
    pub seed: u64,
    /// Inputs with hashes.
    pub inputs: Vec<FileRecord>,
    /// Outputs with hashes, rows and columns.
    pub outputs: Vec<FileRecord>,
    /// Source revision.
    pub code: CodeInfo,
    /// Runtime environment (threads, versions); not part of the plan.
    pub env: BTreeMap<String, String>,
    /// RFC 3339 start time.
    pub started_at: String,
    /// Wall time of the stage, seconds.
    pub wall_seconds: f64,
    /// Per-output timings, seconds.
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    /// Peak resident memory of the stage's process, MiB (Linux `VmHWM`; absent where unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib: Option<f64>,
}

/// Peak resident memory of this process so far, MiB (Linux `/proc/self/status` `VmHWM`; `None`
/// elsewhere).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

impl Manifest {
    /// Read a manifest; `target` is the make target named in errors.
    pub fn read(path: &Path, target: &str) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|_| ArtifactError::Missing {
            what: format!("{target} manifest"),
            path: path.to_owned(),
            target: target.to_owned(),
        })?;
        serde_yaml::from_str(&text).map_err(|e| ArtifactError::Corrupt {
            path: path.to_owned(),
            message: e.to_string(),
            target: target.to_owned(),
        })
    }

    /// Whether this manifest records the same plan (stage version, code, config, inputs) and its
    /// outputs are still on disk with the recorded hashes.
    pub fn is_up_to_date(
        &self,
        stage_version: u32,
        fingerprint: &str,
        config_hash: &str,
        inputs: &[FileRecord],
        run_root: &Path,
    ) -> bool {
        self.schema == MANIFEST_SCHEMA
            && self.stage_version == stage_version
            && self.code.fingerprint == fingerprint
            && self.config_hash == config_hash
            && self.inputs == inputs
            && self
                .outputs
                .iter()
                .all(|o| hash_file(&run_root.join(&o.path)).is_ok_and(|h| h == o.hash))
    }
}

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

/// blake3 of a file's bytes, hex.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut f = File::open(path)?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// A stage folder being written: `<stage>.tmp/`, renamed into place by [`StageDir::commit`] and
/// removed if dropped uncommitted. While it lives, it holds an exclusive OS lock on
/// `<stage>.lock` beside the folder, so two runs cannot write the same folder at once (the
/// second fails with [`ArtifactError::Locked`]); the OS releases the lock when the process ends,
/// so a killed run never leaves a folder locked. The empty lock file stays.
#[derive(Debug)]
pub struct StageDir {
    tmp: PathBuf,
    final_dir: PathBuf,
    run_root: PathBuf,
    committed: bool,
    _lock: std::fs::File,
}

impl StageDir {
    /// Start writing `stage` of `catalog` (removing any stale temporary folder).
    pub fn begin(catalog: &Catalog, stage: Stage) -> Result<Self> {
        Self::begin_at(catalog, catalog.stage_dir(stage))
    }

    /// Start writing variant `variant` of `stage` (its own folder inside the stage's).
    pub fn begin_variant(catalog: &Catalog, stage: Stage, variant: &str) -> Result<Self> {
        Self::begin_at(catalog, catalog.variant_dir(stage, variant))
    }

    fn begin_at(catalog: &Catalog, final_dir: PathBuf) -> Result<Self> {
        let tmp = final_dir.with_extension("tmp");
        // Lock first: the stale-folder clean-up below must never remove a live run's folder.
        let lock_path = final_dir.with_extension("lock");
        let Some(lock) = try_lock_stage(&final_dir)? else {
            return Err(ArtifactError::Locked {
                path: final_dir,
                lock: lock_path,
            });
        };
        let write = |source| ArtifactError::Write {
            path: tmp.clone(),
            source,
        };
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(write)?;
        }
        std::fs::create_dir_all(&tmp).map_err(write)?;
        Ok(Self {
            tmp,
            final_dir,
            run_root: catalog.root().to_owned(),
            committed: false,
            _lock: lock,
        })
    }

    /// The temporary folder outputs go into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// A record of output `file` (inside the temporary folder), with its path as it will be
    /// after the rename.
    pub fn record(
        &self,
        name: &str,
        file: &str,
        rows: Option<usize>,
        columns: Vec<String>,
    ) -> Result<FileRecord> {
        let path = self.tmp.join(file);
        let write = |source| ArtifactError::Write {
            path: path.clone(),
            source,
        };
        let bytes = std::fs::metadata(&path).map_err(write)?.len();
        let rel = self.final_dir.join(file);
        let rel = rel.strip_prefix(&self.run_root).unwrap_or(&rel);
        Ok(FileRecord {
            name: name.to_owned(),
            path: rel.to_string_lossy().into_owned(),
            hash: hash_file(&path).map_err(write)?,
            bytes,
            rows,
            columns,
        })
    }

    /// Write the manifest last, then swap the folder into place.
    pub fn commit(mut self, manifest: &Manifest) -> Result<PathBuf> {
        let mpath = self.tmp.join("manifest.yaml");
        let write = |path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactError::Write { path, source }
        };
        let text = serde_yaml::to_string(manifest).expect("manifests serialize");
        std::fs::write(&mpath, text).map_err(write(&mpath))?;
        let old = self.final_dir.with_extension("old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(write(&old))?;
        }
        if self.final_dir.exists() {
            std::fs::rename(&self.final_dir, &old).map_err(write(&self.final_dir))?;
        }
        std::fs::rename(&self.tmp, &self.final_dir).map_err(write(&self.final_dir))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(write(&old))?;
        }
        self.committed = true;
        Ok(self.final_dir.clone())
    }
}

/// An exclusive OS lock on `<final_dir>.lock` (created if missing), or `None` when another
/// process holds it.
fn try_lock_stage(final_dir: &Path) -> Result<Option<std::fs::File>> {
    let lock_path = final_dir.with_extension("lock");
    let err = |source| ArtifactError::Write {
        path: lock_path.clone(),
        source,
    };
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(err)?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
    }
}

/// Remove `<final_dir>.tmp` left behind by a killed run (a SIGKILL skips [`StageDir`]'s clean-up),
/// unless a live run holds the stage's lock. Returns whether a folder was removed.
pub fn remove_stale_tmp(final_dir: &Path) -> Result<bool> {
    let tmp = final_dir.with_extension("tmp");
    if !tmp.exists() {
        return Ok(false);
    }
    let Some(_lock) = try_lock_stage(final_dir)? else {
        return Ok(false);
    };
    std::fs::remove_dir_all(&tmp).map_err(|source| ArtifactError::Write { path: tmp, source })?;
    Ok(true)
}

impl Drop for StageDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: nothing half-written may remain; an error here has nowhere to go.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
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
    let mut kv = vec![
        (META_TABLE.to_owned(), schema.table.to_owned()),
        (META_SCHEMA_VERSION.to_owned(), schema.version.to_string()),
    ];
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
    use super::*;

    fn schema() -> TableSchema {
        TableSchema {
            table: "demo",
            version: 2,
            columns: vec![("a", DataType::UInt32)],
            target: "corpus",
        }
    }

    #[test]
    fn parquet_round_trip_checks_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.parquet");
        let mut df = df!("a" => [1u32, 2, 3]).expect("df");
        write_parquet(
            &mut df,
            &path,
            &schema(),
            &[("study.stage", "corpus".into())],
        )
        .expect("write");
        let back = read_parquet(&path, &schema()).expect("read");
        assert_eq!(back.height(), 3);
        assert_eq!(
            parquet_metadata(&path, "corpus").expect("meta")["study.stage"],
            "corpus"
        );
        let newer = TableSchema {
            version: 3,
            ..schema()
        };
        let err = read_parquet(&path, &newer).expect_err("version");
        assert!(err.to_string().contains("run `make corpus` again"), "{err}");
        let mut wrong = df!("b" => [1u32]).expect("df");
        assert!(write_parquet(&mut wrong, &path, &schema(), &[]).is_err());
    }

    #[test]
    fn truncated_and_missing_files_name_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.parquet");
        let mut df = df!("a" => (0..1000u32).collect::<Vec<_>>()).expect("df");
        write_parquet(&mut df, &path, &schema(), &[]).expect("write");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = read_parquet(&path, &schema()).expect_err("truncated");
        assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("t.parquet"));
        let err = read_parquet(&dir.path().join("none.parquet"), &schema()).expect_err("missing");
        assert!(err.to_string().contains("run `make corpus`"), "{err}");
    }

    #[test]
    fn uncommitted_stage_dirs_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::new(dir.path(), "tiny", 0);
        let tmp = {
            let sd = StageDir::begin(&cat, Stage::Corpus).expect("begin");
            std::fs::write(sd.path().join("half.parquet"), b"x").expect("write");
            sd.path().to_owned()
        };
        assert!(!tmp.exists());
        assert!(!cat.stage_dir(Stage::Corpus).exists());
    }

    #[test]
    fn a_stage_folder_is_written_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::new(dir.path(), "tiny", 0);
        let first = StageDir::begin(&cat, Stage::Corpus).expect("begin");
        std::fs::write(first.path().join("part.parquet"), b"x").expect("write");
        let err = StageDir::begin(&cat, Stage::Corpus).expect_err("second writer");
        assert!(matches!(err, ArtifactError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("01_corpus.lock"), "{err}");
        // The loser did not clean up the winner's temporary folder.
        assert!(first.path().join("part.parquet").exists());
        // Another stage, or a variant folder, is not blocked.
        drop(StageDir::begin(&cat, Stage::Pretrain).expect("other stage"));
        let a = StageDir::begin_variant(&cat, Stage::Finetune, "ssft-medium").expect("variant");
        let b = StageDir::begin_variant(&cat, Stage::Finetune, "dpo-medium").expect("variant");
        drop((a, b));
        // Released on drop: the next run may begin.
        drop(first);
        drop(StageDir::begin(&cat, Stage::Corpus).expect("after release"));
    }

    #[test]
    fn a_killed_runs_temporary_folder_is_removed_unless_a_run_is_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::new(dir.path(), "tiny", 0);
        let stage = cat.stage_dir(Stage::Corpus);
        let tmp = stage.with_extension("tmp");
        assert!(!remove_stale_tmp(&stage).expect("nothing to do"));
        // A live run's folder stays.
        let live = StageDir::begin(&cat, Stage::Corpus).expect("begin");
        assert!(!remove_stale_tmp(&stage).expect("locked"));
        assert!(tmp.exists());
        drop(live);
        // What a SIGKILL leaves: the folder, no Drop, the lock released by the OS. Removed.
        std::fs::create_dir_all(&tmp).expect("mkdir");
        std::fs::write(tmp.join("half.parquet"), b"x").expect("write");
        assert!(remove_stale_tmp(&stage).expect("stale"));
        assert!(!tmp.exists());
    }
}
