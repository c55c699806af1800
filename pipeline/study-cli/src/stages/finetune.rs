//! `study finetune --variant <method>-<lr>`: one safety fine-tuned (ST) model (paper §2.3;
//! training_spec.md §4–6).
//!
//! Arguments, the input checks (corpus, vocabulary, the IT model and its bar) and the stage driver
//! around one call, `study_model::finetune`, which writes `03_finetune/<variant>/`.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use study::artifacts::{MODEL_FILE, Manifest, Stage};
use study::config::FinetuneConfig;
use study::config::finetune::VariantName;
use study_model::finetune::{self as lib, FinetuneData, Run};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::driver::StageArgs;
use crate::driver::{StageRun, check_it_model, check_vocab};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study finetune`.
#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// The variant: `<method>-<lr label>`, method one of ssft, dpo, unlearn and the label a key
    /// of `lrs` in finetune.yaml (e.g. `ssft-medium`, `dpo-small`).
    #[arg(long)]
    pub variant: String,
}

/// The code that decides the stage's outputs (`src/code_tree.rs`, computed by `build.rs`).
pub fn code_fingerprint() -> String {
    crate::code::fingerprint("finetune").to_owned()
}

/// Run the stage.
pub fn run(args: &FinetuneArgs, rt: &Runtime) -> Result<()> {
    let run = StageRun::<FinetuneConfig>::open(
        &args.stage,
        rt,
        Stage::Finetune,
        STAGE_VERSION,
        code_fingerprint(),
        |c| c.seed,
    )?;
    let variant = VariantName::parse(&args.variant, run.cfg()).map_err(anyhow::Error::msg)?;
    let mut run = run.for_variant(&variant.name());
    // A variant is stale only when what it reads changed (not another method's settings).
    run.resolved.hash = run.cfg().variant_hash(&variant);
    let catalog = &run.catalog;
    Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let (vocab_len, vocab) = check_vocab(catalog)?;
    let mut inputs = vec![vocab];
    inputs.extend(lib::input_records(catalog)?);
    let it = check_it_model(catalog, vocab_len, lib::window(catalog)?)?;
    inputs.extend(it.records.iter().cloned());
    run.inputs.extend(inputs);
    if run.cfg().require_bar && !it.meets_bar {
        anyhow::bail!(
            "the IT model in {} is below its accuracy bar (greedy exact match on std_safe {:.1}%): refusal would measure nothing. Train it until it passes (pipeline/configs/{}/pretrain.yaml), or set `require_bar: false` in finetune.yaml to fine-tune it anyway",
            run.catalog.stage_dir(Stage::Pretrain).display(),
            100.0 * it.std_safe_em,
            args.stage.preset
        );
    }
    if run.up_to_date()? {
        return Ok(());
    }
    let data = FinetuneData::read(&run.catalog)?;
    let device = rt.open_device()?;
    // Held from here: no other run may fine-tune this variant into its folder meanwhile.
    let out = run.begin()?;
    let model_path = run.catalog.stage_file(Stage::Pretrain, MODEL_FILE);
    let _span = tracing::info_span!("finetune", variant = %variant.name()).entered();
    let bar = crate::runtime::step_bar(run.cfg().steps);
    let trained = lib::finetune(
        Run {
            cfg: run.cfg(),
            variant: &variant,
            data: &data,
            it_model: (&model_path, it.cfg),
            device: &device,
        },
        &out,
        |p| {
            bar.pb_set_position(p.step as u64);
            bar.pb_set_message(&format!("loss {:.4}", p.loss));
        },
    )?;
    drop(bar);
    let timings = BTreeMap::from([("train_seconds".to_owned(), trained.summary.train_seconds)]);
    let dir = run.finish(out, trained.files, timings)?;
    lib::finished(&trained.summary, &dir);
    Ok(())
}
