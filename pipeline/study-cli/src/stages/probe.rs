//! `study probe`: activations of the IT and fine-tuned models at the hooks the mechanistic
//! analyses read, the Lipschitz proxy, and the attacked inputs' activations → `05_probe/`.
//!
//! Arguments, the input checks and the stage driver around one call, `study_model::probing`
//! (tables in [`study::probe`], passes in [`study_model::probe`]).

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use clap::Args;
use study::Stage;
use study::artifacts::Manifest;
use study::config::ProbeConfig;
use study::corpus::CorpusSet;
use study::evaluation::{self, ADVERSARIAL_EMBEDDINGS_FILE, ADVERSARIAL_FILE};
use study::finetune::PairTable;
use study_model::gpt::Gpt;
use study_model::probing::{self as lib, Attacked};

use crate::driver::StageArgs;
use crate::driver::{
    DEFAULT_VARIANTS, StageRun, check_it_model, check_vocab, eval_set, load_models, variant_inputs,
    variant_names,
};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Fine-tuned variants to probe besides the IT model (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_VARIANTS)]
    pub variants: Vec<String>,
}

/// The code that decides the stage's outputs (`src/code_tree.rs`, computed by `build.rs`).
pub fn code_fingerprint() -> String {
    crate::code::fingerprint("probe").to_owned()
}

/// Run the stage.
pub fn run(args: &ProbeArgs, rt: &Runtime) -> Result<()> {
    let mut run = StageRun::<ProbeConfig>::open(
        &args.stage,
        rt,
        Stage::Probe,
        STAGE_VERSION,
        code_fingerprint(),
        |c| c.seed,
    )?;
    let (cfg, catalog) = (run.cfg().clone(), run.catalog.clone());
    Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let (vocab_len, vocab) = check_vocab(&catalog)?;
    run.inputs.push(vocab);
    let mut tables_by_set = BTreeMap::new();
    for name in cfg.sets.iter().chain([&cfg.lipschitz.set]) {
        let set = eval_set(name).context("probe.yaml")?;
        run.input(set.name(), &catalog.corpus_set(set), "corpus")?;
        tables_by_set.insert(name.clone(), PairTable::read(&catalog, set, None)?);
    }
    let window = tables_by_set.values().next().map_or(0, |t| t.window);
    let it = check_it_model(&catalog, vocab_len, window)?;
    run.inputs.extend(it.records.iter().cloned());
    let variants = variant_names(&args.variants)?;
    run.inputs
        .extend(variant_inputs(&catalog, &variants, &it.records)?);
    let [outcomes_path, embeddings_path] = [ADVERSARIAL_FILE, ADVERSARIAL_EMBEDDINGS_FILE]
        .map(|file| catalog.stage_file(Stage::Evaluate, file));
    if cfg.adversarial {
        run.input(ADVERSARIAL_FILE, &outcomes_path, "evaluate")?;
        run.input(ADVERSARIAL_EMBEDDINGS_FILE, &embeddings_path, "evaluate")?;
    }
    if run.up_to_date()? {
        return Ok(());
    }
    let attacked = if cfg.adversarial {
        let config = evaluation::read_evaluation(&catalog)?.config;
        let table = PairTable::read(&catalog, CorpusSet::eval(config.attack.set), None)?;
        Some(Attacked {
            config,
            table,
            outcomes_path,
            embeddings_path,
        })
    } else {
        None
    };
    let device = rt.open_device()?;
    let models: Vec<(String, Gpt)> = load_models(&catalog, &variants, &it.cfg, &device)?
        .into_iter()
        .map(|(id, gpt)| (id.to_string(), gpt))
        .collect();
    let _span = tracing::info_span!("probe", preset = %args.stage.preset).entered();
    let out = run.begin()?;
    let probed = lib::probe_models(
        &cfg,
        &models,
        &tables_by_set,
        attacked.as_ref(),
        &device,
        &out,
    )?;
    let dir = run.finish(out, probed.files, probed.timings)?;
    tracing::info!("probed {} models into {}", models.len(), dir.display());
    Ok(())
}
