//! The one shape of a stage: resolve the config, record the inputs, skip when up to date, write
//! the outputs into a temporary folder, then the manifest, then swap the folder into place.
//!
//! ```text
//! let mut run = StageRun::open(args, rt, Stage::Probe, STAGE_VERSION, fingerprint, |c| c.seed)?;
//! run.input("vocab", &path, "corpus")?;            // … every input
//! if run.up_to_date()? { return Ok(()); }
//! let out = run.begin()?;                           // write files into out.path()
//! run.finish(out, files, timings)?;                 // manifest last, then the rename
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use study::Catalog;
use study::artifacts::{FileRecord, MODEL_CONFIG_FILE, MODEL_FILE, Stage, StageDir};
use study::config::StageConfig;
use study_model::gpt::{Gpt, GptConfig, Params};

use super::{Inputs, Plan, Resolved, StageArgs};
use crate::runtime::Runtime;

/// A stage in progress.
pub struct StageRun<'a, C> {
    args: &'a StageArgs,
    rt: &'a Runtime,
    stage: Stage,
    version: u32,
    fingerprint: String,
    seed: u64,
    started: SystemTime,
    /// The resolved config.
    pub resolved: Resolved<C>,
    /// The run's catalog.
    pub catalog: Catalog,
    /// The inputs recorded so far.
    pub inputs: Inputs,
}

impl<'a, C: StageConfig> StageRun<'a, C> {
    /// Resolve the stage's config (`seed` reads its seed) and open the run's catalog.
    pub fn open(
        args: &'a StageArgs,
        rt: &'a Runtime,
        stage: Stage,
        version: u32,
        fingerprint: String,
        seed: impl Fn(&C) -> u64,
    ) -> Result<Self> {
        let resolved = args.resolve::<C>(stage.name(), rt)?;
        let seed = seed(&resolved.cfg);
        Ok(Self {
            catalog: Catalog::new(&rt.data_root, &args.preset, seed),
            args,
            rt,
            stage,
            version,
            fingerprint,
            seed,
            started: SystemTime::now(),
            resolved,
            inputs: Inputs::new(),
        })
    }

    /// The config.
    pub fn cfg(&self) -> &C {
        &self.resolved.cfg
    }

    /// Record input `name` at `path`, made by `make <target>` (an error names both when the
    /// file is missing).
    pub fn input(&mut self, name: &str, path: &Path, target: &str) -> Result<()> {
        self.inputs
            .push(self.catalog.input_record(name, path, target)?);
        Ok(())
    }

    /// Whether the recorded outputs follow this config, code and inputs (then the manifest is
    /// touched and the stage has nothing to do).
    pub fn up_to_date(&self) -> Result<bool> {
        self.args.up_to_date(
            &self.catalog.manifest(self.stage),
            self.stage.name(),
            Plan {
                version: self.version,
                fingerprint: &self.fingerprint,
                config_hash: &self.resolved.hash,
                inputs: &self.inputs,
            },
            self.catalog.root(),
        )
    }

    /// Start writing the outputs (a temporary folder beside the stage's).
    pub fn begin(&self) -> Result<StageDir> {
        StageDir::begin(&self.catalog, self.stage)
            .with_context(|| format!("starting {}", self.stage.dir_name()))
    }

    /// Write the manifest (outputs `files`, wall-clock `timings`) and swap the folder in.
    pub fn finish(
        self,
        out: StageDir,
        files: Vec<FileRecord>,
        timings: BTreeMap<String, f64>,
    ) -> Result<PathBuf>
    where
        C: serde::Serialize,
    {
        let mut manifest = super::manifest(
            self.stage,
            self.version,
            &self.args.preset,
            &self.resolved,
            self.seed,
            self.inputs,
            files,
            self.rt,
            self.started,
            timings,
        )?;
        manifest.code.fingerprint = self.fingerprint;
        out.commit(&manifest)
            .with_context(|| format!("finishing {}", self.stage.dir_name()))
    }
}

/// Load the model in `dir` (written by `make <target>`), which must have the IT model's shape.
pub fn load_model(
    dir: &Path,
    it: &GptConfig,
    target: &str,
    device: &candle_core::Device,
) -> Result<Gpt> {
    let cfg_path = dir.join(MODEL_CONFIG_FILE);
    let cfg: GptConfig = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}; run `make {target}`", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is corrupt; run `make {target}`", cfg_path.display()))?;
    if cfg != *it {
        anyhow::bail!(
            "{} has shape {cfg:?}, the IT model {it:?}; run `make {target}` again",
            cfg_path.display()
        );
    }
    let params = Params::load(&cfg, &dir.join(MODEL_FILE), device)
        .with_context(|| format!("loading {}; run `make {target}`", dir.display()))?;
    Ok(Gpt::new(cfg, params)?)
}
