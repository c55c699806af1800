//! Stage manifests: what a stage read and wrote, with hashes, config, code and timings.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::*;

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
