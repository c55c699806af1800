//! `study pretrain`: the instruction-tuned (IT) model (paper §2.1–2.3; training_spec.md §3).
//!
//! Arguments, the stage driver and a progress bar around one call, `study_model::pretrain`; a
//! resumable checkpoint lives in `02_pretrain.ckpt/` until the stage folder is in place.

use std::collections::BTreeMap;

use anyhow::Result;
use clap::Args;
use study::artifacts::Stage;
use study::config::PretrainConfig;
use study_model::pretrain::{self as lib, Outcome, PretrainData, Run, TrainState};
use tracing_indicatif::span_ext::IndicatifSpanExt;

use crate::driver::StageArgs;
use crate::driver::{StageRun, check_vocab};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study pretrain`.
#[derive(Debug, Clone, Args)]
pub struct PretrainArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Continue a killed run from its last checkpoint (`02_pretrain.ckpt/`) instead of
    /// starting over. The checkpoint must come from the same config and code.
    #[arg(long)]
    pub resume: bool,
    /// Stop after this many steps as if killed (the checkpoint stays): for testing --resume.
    #[arg(long, hide = true)]
    pub stop_after: Option<usize>,
}

/// The code that decides the stage's outputs (`src/code_tree.rs`, computed by `build.rs`).
pub fn code_fingerprint() -> String {
    crate::code::fingerprint("pretrain").to_owned()
}

/// Run the stage.
pub fn run(args: &PretrainArgs, rt: &Runtime) -> Result<()> {
    let mut run = StageRun::<PretrainConfig>::open(
        &args.stage,
        rt,
        Stage::Pretrain,
        STAGE_VERSION,
        code_fingerprint(),
        |c| c.seed,
    )?;
    let corpus = lib::corpus_config(&run.catalog)?;
    let (vocab_size, vocab) = check_vocab(&run.catalog)?;
    run.inputs.push(vocab);
    run.inputs.extend(lib::input_records(&run.catalog)?);
    if run.up_to_date()? {
        return Ok(());
    }
    // Held from here: no other run may write this folder or its checkpoints meanwhile.
    let out = run.begin()?;
    let data = PretrainData::read(&run.catalog, corpus.pretrain_mix, vocab_size)?;
    let device = rt.open_device()?;
    let cfg = run.cfg();
    let _span =
        tracing::info_span!("pretrain", preset = %args.stage.preset, seed = cfg.seed).entered();
    let bar = crate::runtime::step_bar(cfg.steps);
    let checkpoint = run.catalog.checkpoint_dir(Stage::Pretrain);
    let outcome = lib::pretrain(
        Run {
            cfg,
            data: &data,
            checkpoint: checkpoint.clone(),
            stamp: TrainState {
                step: 0,
                config_hash: run.resolved.hash.clone(),
                fingerprint: code_fingerprint(),
            },
            resume: args.resume,
            stop_after: args.stop_after,
            device: &device,
        },
        &out,
        |p| {
            bar.pb_set_position(p.step as u64);
            let acc = p.std_safe.map_or(String::new(), |s| {
                format!(", std_safe em {:.0}%", 100.0 * s)
            });
            bar.pb_set_message(&format!("loss {:.3}{acc}", p.loss));
        },
    )?;
    drop(bar);
    let Outcome::Trained {
        summary,
        files,
        train_seconds,
    } = outcome
    else {
        return Ok(()); // stopped as asked: the checkpoint stays, the stage folder is not written
    };
    let timings = BTreeMap::from([
        ("train_seconds".to_owned(), train_seconds),
        ("tokens_per_s".to_owned(), summary.tokens_per_s),
    ]);
    let dir = run.finish(out, files, timings)?;
    lib::finished(&summary, &dir, &checkpoint)?;
    Ok(())
}
