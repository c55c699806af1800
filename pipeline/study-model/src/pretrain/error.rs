//! The errors of a pre-training run ([`PretrainError`]), each saying how to recover.

use std::path::{Path, PathBuf};

use study::artifacts::ArtifactError;

use crate::gpt::GptConfig;
use crate::train::TrainError;

/// Errors of a pre-training run; each says how to recover.
#[derive(Debug, thiserror::Error)]
pub enum PretrainError {
    /// The corpus manifest does not hold a corpus config this code reads.
    #[error("the corpus manifest {0} is from another version; run `make corpus`")]
    CorpusManifest(PathBuf, #[source] serde_yaml::Error),
    /// A set training needs has no rows.
    #[error("the corpus has an empty pre-training or std_safe set; check sizes in corpus.yaml")]
    EmptyCorpus,
    /// `resume` without a checkpoint.
    #[error("no checkpoint to resume at {0}; run without --resume to start over")]
    NoCheckpoint(PathBuf),
    /// The checkpoint was written by another config or code version.
    #[error(
        "the checkpoint {dir} is from another config or code version (config {found} vs {expected}); delete it or run without --resume"
    )]
    StaleCheckpoint {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Its config hash.
        found: String,
        /// This run's config hash.
        expected: String,
    },
    /// The checkpoint's model shape is not the config's.
    #[error("the checkpoint {dir} has model shape {found:?}, the config needs {expected:?}")]
    CheckpointShape {
        /// The checkpoint folder.
        dir: PathBuf,
        /// Its shape.
        found: Box<GptConfig>,
        /// The config's shape.
        expected: Box<GptConfig>,
    },
    /// Part of the checkpoint cannot be read.
    #[error(
        "cannot load {what} from the checkpoint {dir}; it is corrupt: delete it and start over"
    )]
    CorruptCheckpoint {
        /// What could not be read.
        what: &'static str,
        /// The checkpoint folder.
        dir: PathBuf,
        /// Why.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The loss became NaN or infinite.
    #[error(
        "pre-training diverged: lower lr.lr_max or set grad_clip, then rerun with --resume (the last checkpoint is intact)"
    )]
    Diverged(#[source] TrainError),
    /// Training failed otherwise.
    #[error("pre-training")]
    Train(#[source] TrainError),
    /// The run ended without an evaluation at its last step (resumed from a checkpoint written
    /// at the last step).
    #[error(
        "the run has no evaluation at its last step (its checkpoint {0} was written at the end); delete the checkpoint and run again"
    )]
    NoFinalEvaluation(PathBuf),
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing an artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A checkpoint file could not be moved or removed.
    #[error("{what} {}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The metrics table could not be built.
    #[error("building the metrics table")]
    Metrics(#[source] study::polars::error::PolarsError),
}

pub(super) type Result<T, E = PretrainError> = std::result::Result<T, E>;

pub(super) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PretrainError {
    let path = path.to_owned();
    move |source| PretrainError::Io { what, path, source }
}
