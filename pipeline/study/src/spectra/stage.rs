//! The spectra stage's inputs and outputs around [`super::analyse`]: the probe stage's tables
//! read into [`ProbeTables`], and every analysis table plus a `summary.json` of headline numbers
//! written into the stage folder. `study spectra` checks the inputs, loads the MLP weights and
//! calls these.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

use super::{TableRow, Tables, frame, schema};
use crate::artifacts::{self, ArtifactError, FileRecord, SUMMARY_FILE, StageDir};
use crate::config::ProbeConfig;
use crate::evaluation::BehaviourRow;
use crate::model_id::ModelId;
use crate::probe::{self as tables, ActivationTable, AdversarialActivation, LipschitzRow};
use crate::{Catalog, Stage};

/// The probe stage's files the analyses read, for `models` (the IT model first).
pub struct ProbeFiles {
    /// Per model, `activations/<model>.parquet`.
    pub activations: Vec<(String, PathBuf)>,
    /// `lipschitz.parquet`.
    pub lipschitz: PathBuf,
    /// `adversarial_activations.parquet`, when the probe attacked.
    pub adversarial: Option<PathBuf>,
    /// `interpolation_activations.parquet` and `interpolation_behaviour.parquet`, when the probe
    /// interpolated.
    pub interpolation: Option<(PathBuf, PathBuf)>,
}

impl ProbeFiles {
    /// Where the probe stage of `catalog` wrote them under `probe` (its config).
    pub fn new(catalog: &Catalog, probe: &ProbeConfig, models: &[String]) -> Self {
        let file = |name: &str| catalog.stage_file(Stage::Probe, name);
        Self {
            activations: models
                .iter()
                .map(|m| {
                    (
                        m.clone(),
                        file(&format!("{}/{m}.parquet", tables::ACTIVATIONS_DIR)),
                    )
                })
                .collect(),
            lipschitz: file(tables::LIPSCHITZ_FILE),
            adversarial: probe
                .adversarial
                .then(|| file(tables::ADVERSARIAL_ACTIVATIONS_FILE)),
            interpolation: (!probe.interpolation.alphas.is_empty()).then(|| {
                (
                    file(tables::INTERPOLATION_ACTIVATIONS_FILE),
                    file(tables::INTERPOLATION_BEHAVIOUR_FILE),
                )
            }),
        }
    }

    /// Every file as an input record `(name, path)`, in the manifest's order.
    pub fn records(&self) -> Vec<(String, &PathBuf)> {
        let mut out: Vec<(String, &PathBuf)> = self
            .activations
            .iter()
            .map(|(m, p)| (format!("activations_{m}"), p))
            .collect();
        out.push(("lipschitz".into(), &self.lipschitz));
        if let Some(p) = &self.adversarial {
            out.push(("adversarial_activations".into(), p));
        }
        if let Some((acts, behaviour)) = &self.interpolation {
            out.push(("interpolation_activations".into(), acts));
            out.push(("interpolation_behaviour".into(), behaviour));
        }
        out
    }
}

/// The probe stage's tables, read.
pub struct ProbeTables {
    /// Per model.
    pub activations: BTreeMap<String, ActivationTable>,
    /// The attacked inputs' activations (empty when the probe did not attack).
    pub adversarial: Vec<AdversarialActivation>,
    /// The Lipschitz proxy per model and prompt.
    pub lipschitz: Vec<LipschitzRow>,
    /// Per interpolated model (`<variant>@<α>`) of the variants asked for.
    pub interpolation: BTreeMap<String, ActivationTable>,
    /// Their behaviour.
    pub interpolation_behaviour: Vec<BehaviourRow>,
}

impl ProbeTables {
    /// Read `files`, keeping the interpolated models of `variants` only (the probe may have
    /// interpolated more).
    pub fn read(files: &ProbeFiles, variants: &[String]) -> Result<Self, ArtifactError> {
        let mut activations = BTreeMap::new();
        for (m, path) in &files.activations {
            activations.insert(m.clone(), tables::read_activations(path)?);
        }
        let adversarial = match &files.adversarial {
            Some(p) => tables::read_adversarial_activations(p)?,
            None => Vec::new(),
        };
        let (mut interpolation, mut interpolation_behaviour) = (BTreeMap::new(), Vec::new());
        if let Some((acts, behaviour)) = &files.interpolation {
            for (model, key, a) in tables::read_activations(acts)?.keys {
                interpolation
                    .entry(model.clone())
                    .or_insert_with(|| ActivationTable { keys: Vec::new() })
                    .keys
                    .push((model, key, a));
            }
            interpolation_behaviour = crate::evaluation::read_behaviour(behaviour)?;
            interpolation.retain(|name: &String, _| {
                matches!(name.parse::<ModelId>(), Ok(ModelId::Interpolated { variant, .. })
                    if variants.iter().any(|x| *x == variant.name()))
            });
        }
        Ok(Self {
            activations,
            adversarial,
            lipschitz: tables::read_lipschitz(&files.lipschitz)?,
            interpolation,
            interpolation_behaviour,
        })
    }
}

/// Why the outputs could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Writing or recording a file failed.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A table could not be built from its rows.
    #[error("building the `{0}` table")]
    Table(&'static str, #[source] crate::polars::error::PolarsError),
}

/// Write every analysis table of `t` and `summary.json` (headline numbers of `variants`) into
/// `out`; returns their records in the manifest's order.
pub fn write_outputs(
    t: &Tables,
    variants: &[String],
    out: &StageDir,
) -> Result<Vec<FileRecord>, WriteError> {
    fn write<T: TableRow>(
        rows: &[T],
        out: &StageDir,
        files: &mut Vec<FileRecord>,
    ) -> Result<(), WriteError> {
        let file = format!("{}.parquet", T::TABLE);
        let path = out.path().join(&file);
        let mut df = frame(rows).map_err(|e| WriteError::Table(T::TABLE, e))?;
        let schema = schema::<T>();
        artifacts::write_parquet(&mut df, &path, &schema, &[])?;
        files.push(out.record(T::TABLE, &file, Some(df.height()), schema.column_names())?);
        Ok(())
    }
    let mut files = Vec::new();
    write(&t.tau, out, &mut files)?;
    write(&t.spectrum, out, &mut files)?;
    write(&t.spectrum_summary, out, &mut files)?;
    write(&t.column, out, &mut files)?;
    write(&t.column_summary, out, &mut files)?;
    write(&t.row_space, out, &mut files)?;
    write(&t.gain, out, &mut files)?;
    write(&t.direction, out, &mut files)?;
    write(&t.lipschitz_hist, out, &mut files)?;
    write(&t.lipschitz_summary, out, &mut files)?;
    write(&t.interpolation, out, &mut files)?;
    artifacts::write_json(&summary(t, variants), &out.path().join(SUMMARY_FILE))?;
    files.push(out.record("summary", SUMMARY_FILE, None, Vec::new())?);
    Ok(files)
}

/// Headline numbers of one fine-tuned model (`summary.json`).
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    /// τ_L2 separation of the std test points per layer (IT model: see `it_separation`).
    pub tau_separation: Vec<f64>,
    /// Top singular value's energy share of ΔW (`c_fc`), per layer.
    pub top_energy_share: Vec<f64>,
    /// Mean null-space share of ΔW's top left singular vectors (`c_fc`) over chance, per layer.
    pub null_space_ratio: Vec<f64>,
    /// Mean ‖ΔW a‖/‖a‖ of unsafe over safe std test points (`c_fc`), per layer.
    pub unsafe_over_safe_gain: Vec<f64>,
}

fn per_layer<T>(rows: &[T], model: &str, pick: impl Fn(&T) -> Option<(&str, f64)>) -> Vec<f64> {
    rows.iter()
        .filter_map(&pick)
        .filter(|(m, _)| *m == model)
        .map(|(_, v)| v)
        .collect()
}

/// The headline numbers per model: the IT model (τ separation only) and each variant.
pub fn summary(t: &Tables, variants: &[String]) -> BTreeMap<String, ModelSummary> {
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
