//! The probe stage's body as one library call, [`probe_models`]: activations of the IT and
//! fine-tuned models at the hooks the mechanistic analyses read, the Lipschitz proxy, the
//! α-interpolation and the attacked inputs' activations (tables in [`study::probe`], passes in
//! [`crate::probe`]); `study probe` checks the inputs, loads the models and calls it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Instant;

use candle_core::{Device, Tensor};
use study::artifacts::{self, ArtifactError, FileRecord, StageDir, TableSchema};
use study::config::ProbeConfig;
use study::config::evaluate::EvaluateConfig;
use study::config::probe::{Dump, TAU_DUMP};
use study::corpus::Variant;
use study::evaluation::{self, BehaviourRow};
use study::finetune::PairTable;
use study::polars::prelude::{DataFrame, PolarsError};
use study::probe::{self as tables, ActivationKey, Group, ModelActivations, Split};
use study::spectra::STD_SETS;

use crate::attack::{AttackRow, AttackSpec, Placement, adversarial_input};
use crate::behaviour::{ModelId, score_set};
use crate::gpt::Gpt;
use crate::probe::{self, ProbeRow};

mod attacked;
mod interpolation;

pub use attacked::Attacked;
use attacked::adversarial;
use interpolation::interpolation;

/// Errors of a probe run; each names what to re-run.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The IT and a fine-tuned model cannot be interpolated.
    #[error("interpolating the IT model and `{variant}`")]
    Interpolate {
        /// The variant.
        variant: String,
        /// Why.
        #[source]
        source: candle_core::Error,
    },
    /// A model to interpolate is not named as a fine-tuned variant.
    #[error("`{name}` is not a fine-tuned variant to interpolate: {message}")]
    NotAVariant {
        /// The name given.
        name: String,
        /// Why.
        message: String,
    },
    /// The stored soft tokens lack a tensor.
    #[error("{path} has no `{key}`; run `make evaluate` again")]
    MissingEmbedding {
        /// The safetensors file.
        path: PathBuf,
        /// The missing tensor.
        key: String,
    },
    /// An attacked sample is not in the attack set.
    #[error("attacked sample {id} is not in {set}; run `make evaluate` again")]
    UnknownSample {
        /// The sample id.
        id: u32,
        /// The attack set.
        set: String,
    },
    /// An attacked sample has no outcome in `adversarial.parquet`.
    #[error(
        "{path} has no outcome for {model} at budget {factor}, sample {id}; run `make evaluate` again"
    )]
    MissingOutcome {
        /// `adversarial.parquet`.
        path: PathBuf,
        /// The model.
        model: String,
        /// The budget factor.
        factor: f64,
        /// The sample id.
        id: u32,
    },
    /// `interpolation.alphas` is set but no fine-tuned variant was given.
    #[error(
        "probe.yaml `interpolation.alphas` asks for interpolated models but no fine-tuned variant was given; pass --variants or set `alphas: []`"
    )]
    NothingToInterpolate,
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// Reading or writing an artifact failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A table could not be built.
    #[error("building the probe tables")]
    Table(#[from] PolarsError),
    /// The output folder could not be prepared.
    #[error("creating {0}")]
    Io(PathBuf, #[source] std::io::Error),
}

type Result<T, E = ProbeError> = std::result::Result<T, E>;

/// A finished probe run.
#[derive(Debug)]
pub struct Probed {
    /// The output files' records, in the manifest's order.
    pub files: Vec<FileRecord>,
    /// Wall seconds per part.
    pub timings: BTreeMap<String, f64>,
}

fn write_table(
    out: &StageDir,
    name: &str,
    file: &str,
    df: &mut DataFrame,
    schema: &TableSchema,
) -> Result<FileRecord> {
    artifacts::write_parquet(df, &out.path().join(file), schema, &[])?;
    Ok(out.record(name, file, Some(df.height()), schema.column_names())?)
}

/// Probe `models` (the IT model first, named `it`) on `tables_by_set` (every set of `cfg.sets`
/// and the Lipschitz set), interpolate each fine-tuned model with the IT model, and rebuild the
/// attacked inputs of `attacked` (when `cfg.adversarial`); write the tables into `out`.
pub fn probe_models(
    cfg: &ProbeConfig,
    models: &[(String, Gpt)],
    tables_by_set: &BTreeMap<String, PairTable>,
    attacked: Option<&Attacked>,
    device: &Device,
    out: &StageDir,
) -> Result<Probed> {
    let dir = out.path().join(tables::ACTIVATIONS_DIR);
    std::fs::create_dir_all(&dir).map_err(|e| ProbeError::Io(dir, e))?;
    let mut files = Vec::new();
    let (t0, mut lip_rows) = (Instant::now(), Vec::new());
    let lip_table = &tables_by_set[&cfg.lipschitz.set];
    for (name, gpt) in models {
        let mut acts = ModelActivations {
            model: name.clone(),
            rows: Vec::new(),
        };
        for set in &cfg.sets {
            acts.rows
                .extend(probe_set(gpt, &tables_by_set[set], set, cfg, &cfg.dumps)?);
        }
        let file = format!("{}/{name}.parquet", tables::ACTIVATIONS_DIR);
        let (mut df, schema) = (acts.frame()?, tables::activations_schema());
        files.push(write_table(
            out,
            &format!("activations_{name}"),
            &file,
            &mut df,
            &schema,
        )?);
        for (group, variant) in [
            (Group::Safe, Variant::Safe),
            (Group::Unsafe, Variant::UnsafeTarget),
        ] {
            let n = cfg.lipschitz.rows.min(lip_table.len());
            let examples: Vec<_> = (0..n).map(|i| lip_table.example(variant, i)).collect();
            let rows: Vec<ProbeRow<'_>> = examples.iter().map(ProbeRow::from).collect();
            for (i, g) in probe::lipschitz(gpt, &rows)?.into_iter().enumerate() {
                lip_rows.push(tables::LipschitzRow {
                    model: name.clone(),
                    set: cfg.lipschitz.set.clone(),
                    group,
                    row: i as u32,
                    sample_id: lip_table.sample_id[i],
                    prefix_len: study::grammar::layout::Spans::new(examples[i].text_len).eot()
                        as u32,
                    grad_fro: g,
                });
            }
        }
        tracing::info!(model = %name, "probed");
    }
    let (mut df, schema) = (
        tables::lipschitz_frame(&lip_rows)?,
        tables::lipschitz_schema(),
    );
    files.push(write_table(
        out,
        "lipschitz",
        tables::LIPSCHITZ_FILE,
        &mut df,
        &schema,
    )?);
    let probe_seconds = t0.elapsed().as_secs_f64();
    let t2 = Instant::now();
    if !cfg.interpolation.alphas.is_empty() {
        let (behaviour, acts) = interpolation(models, tables_by_set, cfg)?;
        let (mut df, schema) = (
            evaluation::behaviour_frame(&behaviour)?,
            evaluation::behaviour_schema(),
        );
        files.push(write_table(
            out,
            "interpolation_behaviour",
            tables::INTERPOLATION_BEHAVIOUR_FILE,
            &mut df,
            &schema,
        )?);
        let mut frames = acts.iter().map(ModelActivations::frame);
        let mut df = frames.next().ok_or(ProbeError::NothingToInterpolate)??;
        for f in frames {
            df.vstack_mut(&f?)?;
        }
        let schema = tables::activations_schema();
        files.push(write_table(
            out,
            "interpolation_activations",
            tables::INTERPOLATION_ACTIVATIONS_FILE,
            &mut df,
            &schema,
        )?);
    }
    let interpolation_seconds = t2.elapsed().as_secs_f64();
    let t1 = Instant::now();
    if let Some(attacked) = attacked {
        let adv = adversarial(attacked, &models[1..], cfg, device)?;
        let (mut df, schema) = (
            tables::adversarial_activations_frame(&adv)?,
            tables::adversarial_activations_schema(),
        );
        files.push(write_table(
            out,
            "adversarial_activations",
            tables::ADVERSARIAL_ACTIVATIONS_FILE,
            &mut df,
            &schema,
        )?);
    }
    let timings = BTreeMap::from([
        ("probe_seconds".to_owned(), probe_seconds),
        ("interpolation_seconds".to_owned(), interpolation_seconds),
        ("adversarial_seconds".to_owned(), t1.elapsed().as_secs_f64()),
    ]);
    Ok(Probed { files, timings })
}

/// The prompts of one set that are probed: (key, variant, row index).
fn plan(table: &PairTable, set: &str, cfg: &ProbeConfig) -> Vec<(ActivationKey, Variant, usize)> {
    let reference = cfg.reference_sets.iter().any(|s| s == set);
    let splits = [
        (
            Split::Reference,
            0..if reference { cfg.reference_rows } else { 0 },
        ),
        (
            Split::Test,
            cfg.reference_rows..cfg.reference_rows + cfg.test_rows,
        ),
    ];
    let mut out = Vec::new();
    for (split, rows) in splits {
        for i in rows.filter(|&i| i < table.len()) {
            for (group, variant) in [
                (Group::Safe, Variant::Safe),
                (Group::Unsafe, Variant::UnsafeTarget),
            ] {
                let key = ActivationKey {
                    set: set.to_owned(),
                    group,
                    split,
                    row: i as u32,
                    sample_id: table.sample_id[i],
                };
                out.push((key, variant, i));
            }
        }
    }
    out
}

/// Every planned prompt of `set` with its pooled activations (all layers) at `dumps`.
fn probe_set(
    gpt: &Gpt,
    table: &PairTable,
    set: &str,
    cfg: &ProbeConfig,
    dumps: &[Dump],
) -> Result<Vec<(ActivationKey, Vec<tables::Activation>)>> {
    let planned = plan(table, set, cfg);
    let examples: Vec<_> = planned
        .iter()
        .map(|(_, v, i)| table.example(*v, *i))
        .collect();
    let rows: Vec<ProbeRow<'_>> = examples.iter().map(ProbeRow::from).collect();
    let pooled = probe::activations(gpt, &rows, dumps, cfg.output_positions)?;
    Ok(planned.into_iter().map(|(k, _, _)| k).zip(pooled).collect())
}
