//! `study`: one subcommand per stage of the safety fine-tuning study pipeline.
//!
//! ```text
//! study corpus --preset cpu [--seed 0] [--set layout.text_len_max=8]
//! study pretrain --preset cpu [--resume]
//! study finetune --preset cpu --variant ssft-medium
//! study evaluate --preset cpu [--variants ssft-medium,dpo-medium]
//! ```
//! Run from the repository root (the Makefile does); configs are read from
//! `pipeline/configs/<preset>/<stage>.yaml` and outputs go to `data/<preset>/seed-<k>/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod runtime;
mod stages;

/// The safety fine-tuning study (Jain et al., NeurIPS 2024) as a staged pipeline.
#[derive(Debug, Parser)]
#[command(name = "study", version, about)]
struct Cli {
    #[command(flatten)]
    runtime: runtime::Runtime,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate the synthetic data: pre-training, fine-tuning and evaluation sets (Parquet).
    Corpus(stages::StageArgs),
    /// Pre-train the instruction-tuned (IT) model on the corpus (safetensors, metrics).
    Pretrain(stages::pretrain::PretrainArgs),
    /// Safety fine-tune the IT model: one variant `<method>-<lr label>` (SSFT, DPO, unlearning).
    Finetune(stages::finetune::FinetuneArgs),
    /// Behaviour of the IT and fine-tuned models on every evaluation set, and the soft-token attack.
    Evaluate(stages::evaluate::EvaluateArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _guard = cli.runtime.init();
    let result = match &cli.command {
        Command::Corpus(args) => stages::corpus::run(args, &cli.runtime),
        Command::Pretrain(args) => stages::pretrain::run(args, &cli.runtime),
        Command::Finetune(args) => stages::finetune::run(args, &cli.runtime),
        Command::Evaluate(args) => stages::evaluate::run(args, &cli.runtime),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The one place that prints: the error chain, with its fix hint.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}
