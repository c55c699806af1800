//! `study evaluate`: behaviour of the IT and safety fine-tuned models on every evaluation set
//! (paper Table 1), and the adversarial soft-token attack on the fine-tuned models.
//!
//! Arguments, the input checks (evaluation sets, the IT model, each variant's lineage) and the
//! stage driver around one call, `study_model::evaluate`, which writes `04_evaluate/`.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use study::artifacts::{Manifest, Stage};
use study::config::EvaluateConfig;
use study::corpus::CorpusSet;
use study::evaluation::EvalSet;
use study::finetune::PairTable;
use study_model::evaluate::{self as lib, EvalModel};

use crate::driver::StageArgs;
use crate::driver::{
    DEFAULT_VARIANTS, StageRun, check_it_model, check_vocab, load_models, variant_inputs,
    variant_names,
};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study evaluate`.
#[derive(Debug, Clone, Args)]
pub struct EvaluateArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Fine-tuned variants to evaluate besides the IT model (comma-separated; each needs
    /// `make finetune`).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_VARIANTS)]
    pub variants: Vec<String>,
}

/// The code that decides the stage's outputs (`src/code_tree.rs`, computed by `build.rs`).
pub fn code_fingerprint() -> String {
    crate::code::fingerprint("evaluate").to_owned()
}

/// Run the stage.
pub fn run(args: &EvaluateArgs, rt: &Runtime) -> Result<()> {
    let mut run = StageRun::<EvaluateConfig>::open(
        &args.stage,
        rt,
        Stage::Evaluate,
        STAGE_VERSION,
        code_fingerprint(),
        |c| c.seed,
    )?;
    let catalog = &run.catalog;
    Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let (vocab_len, vocab) = check_vocab(catalog)?;
    let mut inputs = vec![vocab];
    let sets: Vec<CorpusSet> = EvalSet::ALL.iter().map(|&s| CorpusSet::eval(s)).collect();
    let attack_set = CorpusSet::eval(run.cfg().attack.set);
    for set in &sets {
        inputs.push(catalog.input_record(set.name(), &catalog.corpus_set(*set), "corpus")?);
    }
    let tables: Vec<PairTable> = sets
        .iter()
        .map(|s| PairTable::read(catalog, *s, None))
        .collect::<Result<_, _>>()?;
    let it = check_it_model(catalog, vocab_len, tables.first().map_or(0, |t| t.window))?;
    inputs.extend(it.records.iter().cloned());
    let variants = variant_names(&args.variants)?;
    inputs.extend(variant_inputs(catalog, &variants, &it.records)?);
    run.inputs.extend(inputs);
    if run.up_to_date()? {
        return Ok(());
    }
    let device = rt.open_device()?;
    let models: Vec<EvalModel> = load_models(&run.catalog, &variants, &it.cfg, &device)?
        .into_iter()
        .map(|(id, gpt)| EvalModel { id, gpt })
        .collect();
    let out = run.begin()?;
    let _span = tracing::info_span!("evaluate", preset = %args.stage.preset).entered();
    let evaluated = lib::evaluate(run.cfg(), &models, &tables, attack_set, &device, &out)?;
    let s = &evaluated.summary;
    let timings = BTreeMap::from([
        ("behaviour_seconds".to_owned(), s.behaviour_seconds),
        ("attack_seconds".to_owned(), s.attack_seconds),
    ]);
    let dir = run.finish(out, evaluated.files, timings)?;
    lib::finished(&evaluated.summary, &dir);
    Ok(())
}
