//! The corpus stage's files: every set and the vocabulary written into the stage folder
//! ([`write_corpus`]), and a set's Parquet file written or read with its schema.

use std::path::Path;
use std::time::Instant;

use polars::prelude::*;

use super::{CorpusSet, Progress, Tables, generate_set, schema};
use crate::artifacts::{self, ArtifactError, FileRecord, StageDir};
use crate::config::CorpusConfig;
use crate::grammar::vocab::Vocab;

/// Errors of the corpus stage.
#[derive(Debug, thiserror::Error)]
pub enum CorpusError {
    /// Building a table failed.
    #[error("building {set}: {source}")]
    Frame {
        /// The set.
        set: &'static str,
        /// Why.
        source: PolarsError,
    },
    /// Writing failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
}

/// What [`write_corpus`] wrote.
#[derive(Debug, Clone)]
pub struct CorpusOutputs {
    /// One record per file, in write order.
    pub files: Vec<FileRecord>,
    /// Seconds per set.
    pub timings: Vec<(String, f64)>,
}

/// Generate every set and the vocabulary into the stage folder `out`.
pub fn write_corpus(
    cfg: &CorpusConfig,
    out: &StageDir,
    config_hash: &str,
    progress: &dyn Progress,
) -> Result<CorpusOutputs, CorpusError> {
    let tables = Tables::new(cfg);
    let mut files = Vec::new();
    let mut timings = Vec::new();
    artifacts::write_json(&Vocab::study(), &out.path().join(artifacts::VOCAB_FILE))?;
    files.push(out.record("vocab", artifacts::VOCAB_FILE, None, Vec::new())?);
    for set in CorpusSet::ALL {
        let t0 = Instant::now();
        let _span = tracing::info_span!("set", name = set.name()).entered();
        progress.start(set.name(), set.rows(cfg) as u64);
        let mut df =
            generate_set(cfg, &tables, set, progress).map_err(|source| CorpusError::Frame {
                set: set.name(),
                source,
            })?;
        progress.finish();
        let file = set.file_name();
        let path = out.path().join(&file);
        write_set(&mut df, &path, set, config_hash)?;
        let columns = df
            .get_column_names()
            .iter()
            .map(|c| c.to_string())
            .collect();
        files.push(out.record(set.name(), &file, Some(df.height()), columns)?);
        let secs = t0.elapsed().as_secs_f64();
        tracing::info!(
            rows = df.height(),
            seconds = format!("{secs:.2}"),
            "wrote {}",
            set.name()
        );
        timings.push((set.name().to_owned(), secs));
    }
    Ok(CorpusOutputs { files, timings })
}

/// Write a set's table with its metadata.
pub fn write_set(
    df: &mut DataFrame,
    path: &Path,
    set: CorpusSet,
    config_hash: &str,
) -> Result<(), ArtifactError> {
    artifacts::write_parquet(
        df,
        path,
        &schema(set),
        &[
            ("study.stage", "corpus".to_owned()),
            ("study.set", set.name().to_owned()),
            ("study.config_hash", config_hash.to_owned()),
        ],
    )
}

/// Read a corpus set through the catalog, checking its schema.
pub fn read_set(catalog: &artifacts::Catalog, set: CorpusSet) -> Result<DataFrame, ArtifactError> {
    artifacts::read_parquet(&catalog.corpus_set(set), &schema(set))
}
