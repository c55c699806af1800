//! `study corpus`: the synthetic data of the study (paper §3 and appendix).

use std::time::SystemTime;

use anyhow::{Context, Result};
use study::Catalog;
use study::artifacts::{Stage, StageDir};
use study::config::CorpusConfig;

use crate::driver::StageArgs;
use crate::runtime::{Bars, Runtime};

/// Bump when the stage's outputs change for the same config.
pub const STAGE_VERSION: u32 = 1;

/// Run the stage.
pub fn run(args: &StageArgs, rt: &Runtime) -> Result<()> {
    let resolved = args.resolve::<CorpusConfig>("corpus", rt)?;
    let cfg = &resolved.cfg;
    let catalog = Catalog::new(&rt.data_root, &args.preset, cfg.seed);
    let manifest_path = catalog.manifest(Stage::Corpus);
    let plan = crate::driver::Plan {
        version: STAGE_VERSION,
        fingerprint: crate::code::fingerprint("corpus"),
        config_hash: &resolved.hash,
        inputs: &[],
    };
    if args.up_to_date(&manifest_path, "corpus", plan, catalog.root())? {
        return Ok(());
    }
    let _span = tracing::info_span!("corpus", preset = %args.preset, seed = cfg.seed).entered();
    tracing::info!(config = %resolved.path.display(), config_hash = %resolved.hash, "generating corpus");
    let started = SystemTime::now();
    let out =
        StageDir::begin(&catalog, Stage::Corpus).context("starting the corpus stage folder")?;
    let written = study::corpus::write_corpus(cfg, &out, &resolved.hash, &Bars::new())?;
    let manifest = crate::driver::manifest(
        Stage::Corpus,
        STAGE_VERSION,
        &args.preset,
        &resolved,
        cfg.seed,
        Vec::new(),
        written.files,
        rt,
        started,
        written.timings.into_iter().collect(),
    )?;
    let mut manifest = manifest;
    manifest.code.fingerprint = crate::code::fingerprint("corpus").to_owned();
    let dir = out
        .commit(&manifest)
        .context("finishing the corpus stage folder")?;
    tracing::info!(
        "corpus written to {} in {:.1} s",
        dir.display(),
        manifest.wall_seconds
    );
    Ok(())
}
