//! What every stage takes and records: its arguments, the resolved config, the up-to-date plan
//! and the manifest.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};
use clap::Args;
use study::artifacts::{CodeInfo, FileRecord, Manifest};
use study::config::{self, StageConfig};

use crate::runtime::Runtime;

/// Arguments every stage takes.
#[derive(Debug, Clone, Args)]
pub struct StageArgs {
    /// Preset: a folder of `pipeline/configs/` (`tiny`, `cpu`, `paper`).
    #[arg(long, default_value = "cpu")]
    pub preset: String,
    /// Config file (default: `pipeline/configs/<preset>/<stage>.yaml`).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Seed; shorthand for `--set seed=<k>`, and names the run folder `seed-<k>`.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Override a config field, e.g. `--set layout.text_len_max=8` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Re-run even if the manifest says the outputs are up to date.
    #[arg(long)]
    pub force: bool,
}

/// A resolved stage config with its provenance.
pub struct Resolved<C> {
    pub cfg: C,
    pub path: PathBuf,
    pub hash: String,
}

impl StageArgs {
    /// Read and validate the stage's config with overrides.
    pub fn resolve<C: StageConfig>(&self, stage: &str, rt: &Runtime) -> Result<Resolved<C>> {
        let path = self
            .config
            .clone()
            .unwrap_or_else(|| rt.configs.join(&self.preset).join(format!("{stage}.yaml")));
        if !path.exists() {
            let mut presets: Vec<String> = std::fs::read_dir(&rt.configs)
                .map(|d| {
                    d.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            presets.sort();
            anyhow::bail!(
                "no config at {}; known presets in {}: {} (run from the repository root, or pass --config)",
                path.display(),
                rt.configs.display(),
                if presets.is_empty() {
                    "none".into()
                } else {
                    presets.join(", ")
                }
            );
        }
        let mut overrides = self.overrides.clone();
        if let Some(seed) = self.seed {
            overrides.push(format!("seed={seed}"));
        }
        let cfg: C = config::load(&path, &overrides)
            .with_context(|| format!("resolving the {stage} config"))?;
        let hash = config::config_hash(&cfg);
        Ok(Resolved { cfg, path, hash })
    }
}

/// The current source revision, if this is a git checkout.
pub fn code_info() -> CodeInfo {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    CodeInfo {
        git_rev: git(&["rev-parse", "HEAD"]),
        dirty: git(&["status", "--porcelain", "--untracked-files=no"]).map(|s| !s.is_empty()),
        fingerprint: String::new(),
    }
}

/// Runtime environment recorded in manifests (not part of the plan).
pub fn env_info(rt: &Runtime) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("threads".into(), rt.thread_count().to_string()),
        ("device".into(), rt.device.clone()),
        ("study".into(), env!("CARGO_PKG_VERSION").into()),
    ])
}

/// What decides whether a stage's recorded outputs are still valid.
pub struct Plan<'a> {
    /// The stage's code version.
    pub version: u32,
    /// The stage's code fingerprint.
    pub fingerprint: &'a str,
    /// Hash of the resolved config.
    pub config_hash: &'a str,
    /// The input files' records.
    pub inputs: &'a [FileRecord],
}

impl StageArgs {
    /// Whether the outputs recorded by the manifest at `manifest` follow `plan` and are intact
    /// (never when `--force`): if so, log it and leave the manifest as it is — make asks every
    /// time, and an untouched manifest asks nothing downstream to run again.
    pub fn up_to_date(
        &self,
        manifest: &std::path::Path,
        target: &str,
        plan: Plan<'_>,
        run_root: &std::path::Path,
    ) -> Result<bool> {
        let fresh = !self.force
            && Manifest::read(manifest, target).is_ok_and(|old| {
                old.is_up_to_date(
                    plan.version,
                    plan.fingerprint,
                    plan.config_hash,
                    plan.inputs,
                    run_root,
                )
            });
        if fresh {
            tracing::info!(config_hash = %plan.config_hash, "{target} is up to date: {}", manifest.display());
            // A killed run's `<stage>.tmp/` (best effort: a read-only folder keeps it).
            if let Some(dir) = manifest.parent() {
                match study::artifacts::remove_stale_tmp(dir) {
                    Ok(true) => tracing::info!(
                        "removed {}, left by a killed run",
                        dir.with_extension("tmp").display()
                    ),
                    Ok(false) => {}
                    Err(e) => tracing::warn!("{e}"),
                }
            }
        }
        Ok(fresh)
    }
}

/// Inputs of a stage, recorded and compared in manifests.
pub type Inputs = Vec<FileRecord>;

/// Build a manifest from its parts.
#[allow(clippy::too_many_arguments)]
pub fn manifest<C: serde::Serialize>(
    stage: study::Stage,
    stage_version: u32,
    preset: &str,
    resolved: &Resolved<C>,
    seed: u64,
    inputs: Inputs,
    outputs: Vec<FileRecord>,
    rt: &Runtime,
    started: std::time::SystemTime,
    timings: BTreeMap<String, f64>,
) -> Result<Manifest> {
    Ok(Manifest {
        schema: study::artifacts::MANIFEST_SCHEMA,
        stage,
        variant: None,
        stage_version,
        argv: std::env::args().collect(),
        preset: preset.to_owned(),
        config: serde_yaml::to_value(&resolved.cfg)?,
        config_hash: resolved.hash.clone(),
        seed,
        inputs,
        outputs,
        code: code_info(),
        env: env_info(rt),
        started_at: humantime::format_rfc3339_seconds(started).to_string(),
        wall_seconds: started.elapsed().map(|d| d.as_secs_f64()).unwrap_or(0.0),
        timings,
        peak_rss_mib: study::artifacts::peak_rss_mib(),
    })
}
