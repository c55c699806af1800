//! `study spectra`: the mechanistic analyses ([`study::spectra::analyse`]) on the models' MLP
//! weights and the probe stage's tables → `06_spectra/` (one Parquet table per analysis and a
//! `summary.json` of the headline numbers per model).

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use study::Stage;
use study::artifacts::{self, MODEL_CONFIG_FILE, MODEL_FILE, SUMMARY_FILE};
use study::config::{ProbeConfig, SpectraConfig};
use study::probe as tables;
use study::spectra::{self, Inputs, TableRow, Tables};

use super::StageArgs;
use super::driver::{DEFAULT_VARIANTS, StageRun, load_model, write_table};
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

/// The code that decides the stage's outputs.
pub fn code_fingerprint() -> String {
    let mechanism = [
        include_str!("../../../study/src/mechanism.rs"),
        include_str!("../../../study/src/mechanism/alignment.rs"),
        include_str!("../../../study/src/mechanism/alignment/column.rs"),
        include_str!("../../../study/src/mechanism/alignment/row.rs"),
        include_str!("../../../study/src/mechanism/clusters.rs"),
        include_str!("../../../study/src/mechanism/controls.rs"),
        include_str!("../../../study/src/mechanism/direction.rs"),
        include_str!("../../../study/src/mechanism/linalg.rs"),
        include_str!("../../../study/src/mechanism/lipschitz.rs"),
        include_str!("../../../study/src/mechanism/matrix.rs"),
        include_str!("../../../study/src/mechanism/spectra.rs"),
    ];
    let mut parts: Vec<&str> = vec![
        include_str!("spectra.rs"),
        include_str!("../../../study/src/spectra.rs"),
        include_str!("../../../study/src/probe.rs"),
        include_str!("../../../study/src/config/spectra.rs"),
    ];
    parts.extend(mechanism);
    artifacts::source_fingerprint(&parts)
}

/// Headline numbers of one fine-tuned model (`summary.json`).
#[derive(Debug, Serialize)]
struct ModelSummary {
    /// τ_L2 separation of the std test points per layer (IT model: see `it_separation`).
    tau_separation: Vec<f64>,
    /// Top singular value's energy share of ΔW (`c_fc`), per layer.
    top_energy_share: Vec<f64>,
    /// Mean null-space share of ΔW's top left singular vectors (`c_fc`) over chance, per layer.
    null_space_ratio: Vec<f64>,
    /// Mean ‖ΔW a‖/‖a‖ of unsafe over safe std test points (`c_fc`), per layer.
    unsafe_over_safe_gain: Vec<f64>,
}

fn per_layer<T>(rows: &[T], model: &str, pick: impl Fn(&T) -> Option<(&str, f64)>) -> Vec<f64> {
    rows.iter()
        .filter_map(&pick)
        .filter(|(m, _)| *m == model)
        .map(|(_, v)| v)
        .collect()
}

fn summary(t: &Tables, variants: &[String]) -> BTreeMap<String, ModelSummary> {
    let sep = |model: &str| {
        per_layer(&t.tau, model, |r| {
            (r.metric == "l2" && r.set == "std" && r.group == "unsafe")
                .then_some((r.model.as_str(), r.separation))
        })
    };
    let mut out = BTreeMap::from([(
        "it".to_owned(),
        ModelSummary {
            tau_separation: sep("it"),
            top_energy_share: vec![],
            null_space_ratio: vec![],
            unsafe_over_safe_gain: vec![],
        },
    )]);
    for v in variants {
        let gain = |group: &str| {
            per_layer(&t.gain, v, |r| {
                (r.set == "std" && r.group == group)
                    .then_some((r.model.as_str(), r.mean_gain.observed))
            })
        };
        let (u, s) = (gain("unsafe"), gain("safe"));
        out.insert(
            v.clone(),
            ModelSummary {
                tau_separation: sep(v),
                top_energy_share: per_layer(&t.spectrum_summary, v, |r| {
                    (r.matrix == "c_fc").then_some((r.model.as_str(), r.top_energy_share))
                }),
                null_space_ratio: per_layer(&t.column_summary, v, |r| {
                    (r.matrix == "c_fc").then_some((r.model.as_str(), r.mean_null_projection.ratio))
                }),
                unsafe_over_safe_gain: u.iter().zip(&s).map(|(u, s)| u / s).collect(),
            },
        );
    }
    out
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
    let probe_manifest = artifacts::Manifest::read(&catalog.manifest(Stage::Probe), "probe")?;
    let probe_cfg: ProbeConfig = serde_yaml::from_value(probe_manifest.config.clone())
        .with_context(|| {
            format!(
                "{}: its `config` is not a probe config; run `make probe` again",
                catalog.manifest(Stage::Probe).display()
            )
        })?;
    let variants = super::driver::variant_names(&args.variants)?;
    let models: Vec<String> = std::iter::once("it".to_owned())
        .chain(variants.iter().cloned())
        .collect();
    let activation_file = |m: &str| {
        catalog.stage_file(
            Stage::Probe,
            &format!("{}/{m}.parquet", tables::ACTIVATIONS_DIR),
        )
    };
    for m in &models {
        run.input(&format!("activations_{m}"), &activation_file(m), "probe")?;
    }
    let lip_path = catalog.stage_file(Stage::Probe, tables::LIPSCHITZ_FILE);
    run.input("lipschitz", &lip_path, "probe")?;
    let adv_path = catalog.stage_file(Stage::Probe, tables::ADVERSARIAL_ACTIVATIONS_FILE);
    if probe_cfg.adversarial {
        run.input("adversarial_activations", &adv_path, "probe")?;
    }
    let interpolated = !probe_cfg.interpolation.alphas.is_empty();
    let interp_acts = catalog.stage_file(Stage::Probe, tables::INTERPOLATION_ACTIVATIONS_FILE);
    let interp_behaviour = catalog.stage_file(Stage::Probe, tables::INTERPOLATION_BEHAVIOUR_FILE);
    if interpolated {
        run.input("interpolation_activations", &interp_acts, "probe")?;
        run.input("interpolation_behaviour", &interp_behaviour, "probe")?;
    }
    let it_dir = catalog.stage_dir(Stage::Pretrain);
    for (what, file) in [("model", MODEL_FILE), ("config", MODEL_CONFIG_FILE)] {
        run.input(&format!("it_{what}"), &it_dir.join(file), "pretrain")?;
    }
    for v in &variants {
        super::driver::check_variant_lineage(&catalog, v, &run.inputs)?;
        let dir = catalog.variant_dir(Stage::Finetune, v);
        for (what, file) in [("model", MODEL_FILE), ("config", MODEL_CONFIG_FILE)] {
            run.input(
                &format!("{v}_{what}"),
                &dir.join(file),
                &format!("finetune VARIANTS={v}"),
            )?;
        }
    }
    if run.up_to_date()? {
        return Ok(());
    }
    let _span = tracing::info_span!("spectra", preset = %args.stage.preset).entered();
    let t0 = Instant::now();
    let device = candle_core::Device::Cpu;
    let it_cfg: study_model::gpt::GptConfig =
        serde_json::from_str(&std::fs::read_to_string(it_dir.join(MODEL_CONFIG_FILE))?)
            .with_context(|| {
                format!(
                    "{} is corrupt; run `make pretrain`",
                    it_dir.join(MODEL_CONFIG_FILE).display()
                )
            })?;
    let weights = |dir: &std::path::Path, target: &str| -> Result<spectra::ModelWeights> {
        Ok(study_model::probe::mlp_weights(&load_model(
            dir, &it_cfg, target, &device,
        )?)?)
    };
    let it = weights(&it_dir, "pretrain")?;
    let mut st = BTreeMap::new();
    for v in &variants {
        st.insert(
            v.clone(),
            weights(&catalog.variant_dir(Stage::Finetune, v), "finetune")?,
        );
    }
    let mut activations = BTreeMap::new();
    for m in &models {
        activations.insert(m.clone(), tables::read_activations(&activation_file(m))?);
    }
    let adversarial = if probe_cfg.adversarial {
        tables::read_adversarial_activations(&adv_path)?
    } else {
        Vec::new()
    };
    let lipschitz = tables::read_lipschitz(&lip_path)?;
    let (mut interpolation, mut interpolation_behaviour) = (BTreeMap::new(), Vec::new());
    if interpolated {
        for (model, key, a) in tables::read_activations(&interp_acts)?.keys {
            interpolation
                .entry(model.clone())
                .or_insert_with(|| tables::ActivationTable { keys: Vec::new() })
                .keys
                .push((model, key, a));
        }
        interpolation_behaviour = study::evaluation::read_behaviour(&interp_behaviour)?;
        // Only the variants asked for (the probe may have interpolated more).
        interpolation.retain(|name: &String, _| {
            tables::parse_interpolated(name).is_ok_and(|(v, _)| variants.iter().any(|x| x == v))
        });
    }
    let inputs = Inputs {
        it: &it,
        variants: &st,
        activations: &activations,
        adversarial: &adversarial,
        lipschitz: &lipschitz,
        sets: &probe_cfg.sets,
        reference_sets: &probe_cfg.reference_sets,
        interpolation: &interpolation,
        interpolation_behaviour: &interpolation_behaviour,
    };
    let t = spectra::analyse(&inputs, run.cfg())?;
    let out = run.begin()?;
    let mut files = Vec::new();
    fn write<T: TableRow>(
        rows: &[T],
        out: &artifacts::StageDir,
        files: &mut Vec<artifacts::FileRecord>,
    ) -> Result<()> {
        let (mut df, schema) = (spectra::frame(rows)?, spectra::schema::<T>());
        let file = format!("{}.parquet", T::TABLE);
        files.push(write_table(out, T::TABLE, &file, &mut df, &schema)?);
        Ok(())
    }
    write(&t.tau, &out, &mut files)?;
    write(&t.spectrum, &out, &mut files)?;
    write(&t.spectrum_summary, &out, &mut files)?;
    write(&t.column, &out, &mut files)?;
    write(&t.column_summary, &out, &mut files)?;
    write(&t.row_space, &out, &mut files)?;
    write(&t.gain, &out, &mut files)?;
    write(&t.direction, &out, &mut files)?;
    write(&t.lipschitz_hist, &out, &mut files)?;
    write(&t.lipschitz_summary, &out, &mut files)?;
    write(&t.interpolation, &out, &mut files)?;
    artifacts::write_json(&summary(&t, &variants), &out.path().join(SUMMARY_FILE))?;
    files.push(out.record("summary", SUMMARY_FILE, None, Vec::new())?);
    let seconds = t0.elapsed().as_secs_f64();
    let dir = run.finish(
        out,
        files,
        BTreeMap::from([("analysis_seconds".to_owned(), seconds)]),
    )?;
    tracing::info!(
        "analysed {} models in {} ({seconds:.1} s)",
        models.len(),
        dir.display()
    );
    Ok(())
}
