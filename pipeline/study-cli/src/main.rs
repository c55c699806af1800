//! `study`: one subcommand per stage of the safety fine-tuning study pipeline.
//!
//! ```text
//! study corpus --preset cpu [--seed 0] [--set layout.text_len_max=8]
//! study pretrain --preset cpu [--resume]
//! study finetune --preset cpu --variant ssft-medium
//! study evaluate --preset cpu [--variants ssft-medium,dpo-medium]
//! study probe --preset cpu
//! study spectra --preset cpu
//! ```
//! Run from the repository root (the Makefile does); configs are read from
//! `pipeline/configs/<preset>/<stage>.yaml` and outputs go to `data/<preset>/seed-<k>/`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod code;
#[cfg(test)]
mod code_tree;
mod driver;
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
    Corpus(driver::StageArgs),
    /// Pre-train the instruction-tuned (IT) model on the corpus (safetensors, metrics).
    Pretrain(stages::pretrain::PretrainArgs),
    /// Safety fine-tune the IT model: one variant `<method>-<lr label>` (SSFT, DPO, unlearning).
    Finetune(stages::finetune::FinetuneArgs),
    /// Behaviour of the IT and fine-tuned models on every evaluation set, and the soft-token attack.
    Evaluate(stages::evaluate::EvaluateArgs),
    /// Activations at the MLP hooks, the Lipschitz proxy and the attacked inputs' activations.
    Probe(stages::probe::ProbeArgs),
    /// The mechanistic analyses: τ, ΔW spectra, null and row space, refusal direction, Lipschitz.
    Spectra(stages::spectra::SpectraArgs),
    /// Every figure quantity over several seeds: mean and 95 % CI (after `spectra` per seed).
    Seeds(stages::seeds::SeedsArgs),
}

/// The error and its causes joined by ": ", each cause once: library errors quote their source
/// in their own message (so they read whole on their own), which `{:#}` would print twice.
fn error_chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.ends_with(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let reexec = study_model::process_env::reexec_with_runtime_env(cli.runtime.threads);
    let _guard = cli.runtime.init();
    if let Err(why) = reexec {
        tracing::warn!("candle's thread pool and the allocator keep their defaults ({why})");
    }
    let result = study_model::process_env::on_rayon_worker(|| match &cli.command {
        Command::Corpus(args) => stages::corpus::run(args, &cli.runtime),
        Command::Pretrain(args) => stages::pretrain::run(args, &cli.runtime),
        Command::Finetune(args) => stages::finetune::run(args, &cli.runtime),
        Command::Evaluate(args) => stages::evaluate::run(args, &cli.runtime),
        Command::Probe(args) => stages::probe::run(args, &cli.runtime),
        Command::Spectra(args) => stages::spectra::run(args, &cli.runtime),
        Command::Seeds(args) => stages::seeds::run(args, &cli.runtime),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The one place that prints: the error chain, with its fix hint.
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {}", error_chain(&e));
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_printed_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let lib = study::artifacts::ArtifactError::Write {
            path: "/x/01_corpus.lock".into(),
            source: io,
        };
        let e = anyhow::Error::new(lib).context("starting the corpus stage folder");
        assert_eq!(
            error_chain(&e),
            "starting the corpus stage folder: cannot write /x/01_corpus.lock: no such file"
        );
        // A cause not quoted by its parent is still shown.
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(error_chain(&plain), "outer: inner");
    }
}
