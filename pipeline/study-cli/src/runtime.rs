//! Runtime knobs shared by every stage (never part of a config or its hash), logging and
//! progress bars.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::Args;
use tracing_indicatif::IndicatifLayer;
use tracing_indicatif::span_ext::IndicatifSpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

/// Runtime flags.
#[derive(Debug, Clone, Args)]
pub struct Runtime {
    /// Root of all artifacts; a run lives in `<data-root>/<preset>/seed-<k>/`.
    #[arg(long, global = true, default_value = "data", env = "STUDY_DATA_ROOT")]
    pub data_root: PathBuf,
    /// Folder of the preset configs.
    #[arg(long, global = true, default_value = "pipeline/configs")]
    pub configs: PathBuf,
    /// Worker threads (default: all cores). Results do not depend on it.
    #[arg(long, global = true, env = "STUDY_THREADS")]
    pub threads: Option<usize>,
    /// Device for model stages: `cpu` or `cuda`.
    #[arg(long, global = true, default_value = "cpu", env = "STUDY_DEVICE")]
    pub device: String,
    /// No progress bars and only warnings.
    #[arg(long, short, global = true)]
    pub quiet: bool,
}

/// Keeps logging alive.
pub struct Guard;

impl Runtime {
    /// Set up logging (tracing to stderr, progress bars when stderr is a terminal) and the thread
    /// pool.
    pub fn init(&self) -> Guard {
        let filter = EnvFilter::try_from_env("STUDY_LOG")
            .unwrap_or_else(|_| EnvFilter::new(if self.quiet { "warn" } else { "info" }));
        if self.quiet {
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    fmt::layer()
                        .with_writer(std::io::stderr)
                        .with_target(false)
                        .with_ansi(std::io::stderr().is_terminal()),
                )
                .init();
        } else {
            let bars = IndicatifLayer::new();
            tracing_subscriber::registry()
                .with(filter)
                .with(
                    fmt::layer()
                        .with_writer(bars.get_stderr_writer())
                        .with_target(false)
                        .with_ansi(std::io::stderr().is_terminal()),
                )
                .with(bars)
                .init();
        }
        if let Some(n) = self.threads
            && let Err(e) = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build_global()
        {
            tracing::warn!("cannot set {n} threads: {e}");
        }
        Guard
    }

    /// Threads in use.
    pub fn thread_count(&self) -> usize {
        rayon::current_num_threads()
    }

    /// Open the `--device` the stage computes on.
    pub fn open_device(&self) -> anyhow::Result<candle_core::Device> {
        use anyhow::Context;
        self.device
            .parse::<study_model::device::DeviceKind>()
            .and_then(study_model::device::DeviceKind::open)
            .context("opening the device")
    }
}

/// Progress of the corpus stage as a bar per set (a tracing span with an indicatif bar).
pub struct Bars {
    span: std::sync::Mutex<Option<tracing::Span>>,
}

impl Bars {
    /// No bar yet.
    pub fn new() -> Self {
        Self {
            span: std::sync::Mutex::new(None),
        }
    }
}

impl study::corpus::Progress for Bars {
    fn start(&self, name: &str, total: u64) {
        let span = tracing::info_span!("rows", set = name);
        span.pb_set_style(
            &indicatif::ProgressStyle::with_template("{span_child_prefix}{spinner} {span_fields} [{bar:30}] {human_pos}/{human_len} rows, ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        span.pb_set_length(total);
        span.pb_start();
        if let Ok(mut s) = self.span.lock() {
            *s = Some(span);
        }
    }
    fn inc(&self, n: u64) {
        if let Ok(s) = self.span.lock()
            && let Some(span) = s.as_ref()
        {
            span.pb_inc(n);
        }
    }
    fn finish(&self) {
        if let Ok(mut s) = self.span.lock() {
            s.take();
        }
    }
}

/// A progress bar over `steps` training steps (a `steps` span; drop it to finish).
pub fn step_bar(steps: usize) -> tracing::Span {
    let bar = tracing::info_span!("steps");
    bar.pb_set_style(
        &indicatif::ProgressStyle::with_template(
            "{span_child_prefix}{spinner} [{bar:30}] {pos}/{len} steps {msg} ETA {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.pb_set_length(steps as u64);
    bar.pb_start();
    bar
}
