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
    /// Activations at the MLP hooks, the Lipschitz proxy and the attacked inputs' activations.
    Probe(stages::probe::ProbeArgs),
    /// The mechanistic analyses: τ, ΔW spectra, null and row space, refusal direction, Lipschitz.
    Spectra(stages::spectra::SpectraArgs),
    /// Every figure quantity over several seeds: mean and 95 % CI (after `spectra` per seed).
    Seeds(stages::seeds::SeedsArgs),
}

/// What the process's environment must hold before candle and the allocator start, and what it
/// holds now: `(variable, wanted value)` for each one that differs.
///
/// - `CANDLE_NUM_THREADS`: candle's CPU kernels run on a pool of their own, sized once from it
///   (else `RAYON_NUM_THREADS`, else the physical cores), whose workers spin while they wait.
///   `--threads` sizes rayon's pool; unless candle's pool has the same size, its workers spin for
///   cores that are busy elsewhere — measured: `--threads 1` beside other work ran 1.8 instead of
///   14 training steps/s.
/// - `GLIBC_TUNABLES` (glibc's malloc): candle allocates a fresh buffer for every tensor op, and
///   glibc serves large ones with `mmap` and gives them back with `munmap`, so every op paid page
///   faults and page zeroing in the kernel — 7.2–7.6 s of system time against 10.6–11.5 s of user
///   time for 60 DPO steps of the `cpu` model (README "Tests and benchmarks"). Serving them from
///   the heap and keeping freed memory ([`MALLOC_TUNABLES`]) removes that: 0.7 s. A user's own
///   malloc tunables are kept; other libcs ignore the variable. (jemalloc, tried as the global
///   allocator instead, faulted even more: it hands out fresh pages for zeroed buffers.)
///
/// Neither changes a value: the thread count splits work only where results do not depend on
/// it, and the allocator never touches the arithmetic.
fn runtime_env(
    threads: Option<usize>,
    get: impl Fn(&str) -> Option<String>,
) -> Vec<(&'static str, String)> {
    let mut wanted = Vec::new();
    if let Some(n) = threads.map(|n| n.to_string())
        && get("CANDLE_NUM_THREADS").as_deref() != Some(n.as_str())
    {
        wanted.push(("CANDLE_NUM_THREADS", n));
    }
    match get("GLIBC_TUNABLES") {
        None => wanted.push(("GLIBC_TUNABLES", MALLOC_TUNABLES.to_owned())),
        Some(t) if t.contains("glibc.malloc.") => {}
        Some(t) if t.is_empty() => wanted.push(("GLIBC_TUNABLES", MALLOC_TUNABLES.to_owned())),
        Some(t) => wanted.push(("GLIBC_TUNABLES", format!("{t}:{MALLOC_TUNABLES}"))),
    }
    wanted
}

/// Buffers up to 32 MiB (glibc's largest mmap threshold) come from the heap, and freed heap
/// memory is kept for the next op (trimmed back to the system only above 1 GiB).
const MALLOC_TUNABLES: &str =
    "glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=1073741824";

/// Both variables must be set before the process starts (the allocator and candle's pool read
/// them once), and setting them in-process is `unsafe` (edition 2024), so the binary replaces
/// itself by a copy with them set (Unix `exec`). Returns only when nothing needs doing, or with
/// the reason it could not.
fn reexec_with_runtime_env(threads: Option<usize>) -> Result<(), String> {
    let wanted = runtime_env(threads, |k| std::env::var(k).ok());
    if wanted.is_empty() {
        return Ok(());
    }
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let err = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .envs(wanted)
            .exec();
        Err(err.to_string())
    }
    #[cfg(not(unix))]
    Err(format!(
        "set {} yourself on this platform",
        wanted
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    ))
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
    let reexec = reexec_with_runtime_env(cli.runtime.threads);
    let _guard = cli.runtime.init();
    if let Err(why) = reexec {
        tracing::warn!("candle's thread pool and the allocator keep their defaults ({why})");
    }
    let result = match &cli.command {
        Command::Corpus(args) => stages::corpus::run(args, &cli.runtime),
        Command::Pretrain(args) => stages::pretrain::run(args, &cli.runtime),
        Command::Finetune(args) => stages::finetune::run(args, &cli.runtime),
        Command::Evaluate(args) => stages::evaluate::run(args, &cli.runtime),
        Command::Probe(args) => stages::probe::run(args, &cli.runtime),
        Command::Spectra(args) => stages::spectra::run(args, &cli.runtime),
        Command::Seeds(args) => stages::seeds::run(args, &cli.runtime),
    };
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

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn the_runtime_env_sets_what_is_missing_and_keeps_what_the_user_set() {
        assert_eq!(
            runtime_env(Some(2), env(&[])),
            [
                ("CANDLE_NUM_THREADS", "2".to_owned()),
                ("GLIBC_TUNABLES", MALLOC_TUNABLES.to_owned())
            ]
        );
        // After the re-exec nothing is left to do (no exec loop).
        let done = [
            ("CANDLE_NUM_THREADS", "2"),
            ("GLIBC_TUNABLES", MALLOC_TUNABLES),
        ];
        assert!(runtime_env(Some(2), env(&done)).is_empty());
        assert!(runtime_env(None, env(&done[1..])).is_empty());
        // A different thread count is replaced; the user's malloc tunables are kept as they are;
        // other tunables are kept beside ours.
        let mine = [
            ("CANDLE_NUM_THREADS", "4"),
            ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1"),
        ];
        assert_eq!(
            runtime_env(Some(1), env(&mine)),
            [("CANDLE_NUM_THREADS", "1".to_owned())]
        );
        let other = [("GLIBC_TUNABLES", "glibc.pthread.rseq=0")];
        assert_eq!(
            runtime_env(None, env(&other)),
            [(
                "GLIBC_TUNABLES",
                format!("glibc.pthread.rseq=0:{MALLOC_TUNABLES}")
            )]
        );
    }
}
