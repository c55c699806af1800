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
use study::artifacts::{FileRecord, Stage, StageDir};
use study::config::StageConfig;

mod args;
mod upstream;

use crate::runtime::Runtime;
pub use args::{Inputs, Plan, Resolved, StageArgs, manifest};
pub use upstream::*;

/// A stage in progress.
pub struct StageRun<'a, C> {
    args: &'a StageArgs,
    rt: &'a Runtime,
    stage: Stage,
    version: u32,
    fingerprint: String,
    seed: u64,
    started: SystemTime,
    /// The variant folder written (fine-tuning: `03_finetune/<variant>/`), if any.
    variant: Option<String>,
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
            variant: None,
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

    /// Write variant `name`'s folder (`<stage>/<name>/`) instead of the stage's.
    pub fn for_variant(mut self, name: &str) -> Self {
        self.variant = Some(name.to_owned());
        self
    }

    fn manifest_path(&self) -> PathBuf {
        match &self.variant {
            Some(v) => self.catalog.variant_manifest(self.stage, v),
            None => self.catalog.manifest(self.stage),
        }
    }

    /// Whether the recorded outputs follow this config, code and inputs (then the stage has
    /// nothing to do and writes nothing).
    pub fn up_to_date(&self) -> Result<bool> {
        self.args.up_to_date(
            &self.manifest_path(),
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
        match &self.variant {
            Some(v) => StageDir::begin_variant(&self.catalog, self.stage, v)
                .with_context(|| format!("starting the folder of {v}")),
            None => StageDir::begin(&self.catalog, self.stage)
                .with_context(|| format!("starting {}", self.stage.dir_name())),
        }
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
        let mut manifest = manifest(
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
        manifest.variant = self.variant;
        out.commit(&manifest)
            .with_context(|| format!("finishing {}", self.stage.dir_name()))
    }
}
