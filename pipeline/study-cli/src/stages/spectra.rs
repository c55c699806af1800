//! `study spectra`: the mechanistic analyses ([`study::spectra::analyse`]) on the models' MLP
//! weights and the probe stage's tables → `06_spectra/` (one Parquet table per analysis and a
//! `summary.json` of the headline numbers per model).
//!
//! Arguments, the input checks and the stage driver around `study::spectra::stage` (read the
//! probe tables, write the outputs) and one call of `analyse`.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use study::Stage;
use study::artifacts::{MODEL_CONFIG_FILE, MODEL_FILE};
use study::config::{ProbeConfig, SpectraConfig};
use study::spectra::stage::{ProbeFiles, ProbeTables, write_outputs};
use study::spectra::{self, Inputs};

use crate::driver::StageArgs;
use crate::driver::{
    DEFAULT_VARIANTS, StageRun, it_config, load_models, upstream_config, variant_inputs,
    variant_names,
};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study spectra`.
#[derive(Debug, Clone, Args)]
pub struct SpectraArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Fine-tuned variants to analyse (comma-separated; each needs `make probe`).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_VARIANTS)]
    pub variants: Vec<String>,
}

/// The code that decides the stage's outputs (`src/code_tree.rs`, computed by `build.rs`).
pub fn code_fingerprint() -> String {
    crate::code::fingerprint("spectra").to_owned()
}

/// Run the stage.
pub fn run(args: &SpectraArgs, rt: &Runtime) -> Result<()> {
    let mut run = StageRun::<SpectraConfig>::open(
        &args.stage,
        rt,
        Stage::Spectra,
        STAGE_VERSION,
        code_fingerprint(),
        |c| c.seed,
    )?;
    let catalog = run.catalog.clone();
    let probe_cfg: ProbeConfig = upstream_config(&catalog, Stage::Probe)?;
    let variants = variant_names(&args.variants)?;
    let models: Vec<String> = std::iter::once("it".to_owned())
        .chain(variants.iter().cloned())
        .collect();
    let files = ProbeFiles::new(&catalog, &probe_cfg, &models);
    for (name, path) in files.records() {
        run.input(&name, path, "probe")?;
    }
    let it_dir = catalog.stage_dir(Stage::Pretrain);
    for (what, file) in [("model", MODEL_FILE), ("config", MODEL_CONFIG_FILE)] {
        run.input(&format!("it_{what}"), &it_dir.join(file), "pretrain")?;
    }
    let records = variant_inputs(&catalog, &variants, &run.inputs)?;
    run.inputs.extend(records);
    if run.up_to_date()? {
        return Ok(());
    }
    let _span = tracing::info_span!("spectra", preset = %args.stage.preset).entered();
    let t0 = Instant::now();
    let it_cfg = it_config(&catalog)?;
    let mut weights = BTreeMap::new();
    for (id, gpt) in load_models(&catalog, &variants, &it_cfg, &candle_core::Device::Cpu)? {
        weights.insert(id.to_string(), study_model::probe::mlp_weights(&gpt)?);
    }
    let it = weights
        .remove("it")
        .context("the IT model is loaded first")?;
    let probe = ProbeTables::read(&files, &variants)?;
    let inputs = Inputs {
        it: &it,
        variants: &weights,
        activations: &probe.activations,
        adversarial: &probe.adversarial,
        lipschitz: &probe.lipschitz,
        sets: &probe_cfg.sets,
        reference_sets: &probe_cfg.reference_sets,
        interpolation: &probe.interpolation,
        interpolation_behaviour: &probe.interpolation_behaviour,
    };
    let tables = spectra::analyse(&inputs, run.cfg())?;
    let out = run.begin()?;
    let written = write_outputs(&tables, &variants, &out)?;
    let seconds = t0.elapsed().as_secs_f64();
    let dir = run.finish(
        out,
        written,
        BTreeMap::from([("analysis_seconds".to_owned(), seconds)]),
    )?;
    tracing::info!(
        "analysed {} models in {} ({seconds:.1} s)",
        models.len(),
        dir.display()
    );
    Ok(())
}
