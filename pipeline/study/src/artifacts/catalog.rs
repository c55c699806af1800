//! Where a run's files live: the stages, the catalog of paths, the file names.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::*;

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

/// Where the figures of notebooks go: `$STUDY_REPORTS`, else `../reports` (from `notebooks/`).
pub fn reports_dir_from_env() -> PathBuf {
    std::env::var_os("STUDY_REPORTS").map_or_else(|| PathBuf::from("../reports"), PathBuf::from)
}
