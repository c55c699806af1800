//! The `spectra` stage's body as one pure function: the mechanistic analyses of
//! [`crate::mechanism`] applied to every safety fine-tuned model's MLP weights and to the probe
//! stage's activations and Lipschitz proxies, as typed tables (no I/O, no drawing).
//!
//! | table | paper | analysis |
//! |---|---|---|
//! | [`Tables::tau`] | Fig. 3, Sec. 5 (jailbreaks, attacks) | [`clusters::tau_analysis`] on `mlp_post@output` |
//! | [`Tables::spectrum`], [`Tables::spectrum_summary`] | ΔW is low-rank (C13) | [`spectra::spectrum`] |
//! | [`Tables::column`], [`Tables::column_summary`] | Fig. 4 (C12) | [`alignment::column_space_control`] |
//! | [`Tables::row_space`], [`Tables::gain`] | Fig. 5, Fig. 7 (C14) | [`alignment::row_space_control`] on `mlp_in@eot` |
//! | [`Tables::direction`] | refusal direction vs ΔW | [`direction::direction_control`] |
//! | [`Tables::lipschitz_hist`], [`Tables::lipschitz_summary`] | Fig. 6 (C16) | [`lipschitz`] |

pub mod stage;

use std::collections::{BTreeMap, HashSet};

use polars::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::probe::TAU_DUMP;
use crate::config::spectra::{SpectraConfig, TauReferences};
use crate::evaluation::{BehaviourRow, Metric, Subset};
use crate::mechanism::alignment::{self, ColumnSpaceMatrix, ColumnSpaceOptions, RowSpaceOptions};
use crate::mechanism::clusters::{self, HiddenUnits, ReferenceOverlap, TauMetric, TauOptions};
use crate::mechanism::controls::{Chance, ControlSpec};
use crate::mechanism::direction::{self, DirectionOptions, Side};
use crate::mechanism::{Matrix, lipschitz, spectra};
use crate::probe::{
    ActivationTable, AdversarialActivation, Group, Hook, LipschitzRow, Pool, Select, Split,
};

/// The two MLP matrices of one block, PyTorch layout (out × in).
#[derive(Debug, Clone, PartialEq)]
pub struct MlpWeights {
    /// `c_fc.weight` (4d × d).
    pub c_fc: Matrix,
    /// `c_proj.weight` (d × 4d).
    pub c_proj: Matrix,
}

/// One model's MLP weights, per layer.
pub type ModelWeights = Vec<MlpWeights>;

/// What the analyses read.
#[derive(Clone, Copy)]
pub struct Inputs<'a> {
    /// The IT model's weights.
    pub it: &'a ModelWeights,
    /// Each fine-tuned variant's weights, by name.
    pub variants: &'a BTreeMap<String, ModelWeights>,
    /// Each model's activations (`it` and every variant).
    pub activations: &'a BTreeMap<String, ActivationTable>,
    /// The attacked inputs' activations (may be empty).
    pub adversarial: &'a [AdversarialActivation],
    /// The Lipschitz proxies of every model.
    pub lipschitz: &'a [LipschitzRow],
    /// The probe's sets, and the ones with reference rows.
    pub sets: &'a [String],
    /// Sets with reference rows.
    pub reference_sets: &'a [String],
    /// The interpolated models' τ activations (last layer), by
    /// [`crate::probe::interpolated_model`] name (may be empty).
    pub interpolation: &'a BTreeMap<String, ActivationTable>,
    /// The interpolated models' behaviour rows.
    pub interpolation_behaviour: &'a [BehaviourRow],
}

pub use crate::config::spectra::STD_SETS;

/// τ of one group of test points at one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TauRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `l2` or `cos`.
    pub metric: String,
    /// `std` (both standard sets), a jailbreak set, or `adversarial@<factor>`.
    pub set: String,
    /// `safe`, `unsafe`, or for attacks `attack_success` / `attack_failure`.
    pub group: String,
    /// Rows.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Population standard deviation.
    pub sd: f64,
    /// Fraction on the side of its own group's cluster (`attack_*`: on the unsafe side).
    pub assignment_accuracy: f64,
    /// Standardised mean difference of this group against the std safe test points (safe side
    /// positive); 0 for the safe group itself.
    pub separation: f64,
}

/// One singular value of ΔW.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `c_fc` or `c_proj`.
    pub matrix: String,
    /// Position in descending order of σ (0-based).
    pub index: u32,
    /// Singular value.
    pub sigma: f64,
    /// Σ_{r≤index} σ_r² / Σ σ².
    pub cumulative_energy: f64,
}

/// The shape of ΔW's spectrum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpectrumSummary {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `c_fc` or `c_proj`.
    pub matrix: String,
    /// ‖ΔW‖_F.
    pub frobenius_norm: f64,
    /// σ_1² / Σ σ².
    pub top_energy_share: f64,
    /// exp of the entropy of σ² / Σ σ².
    pub effective_rank: f64,
    /// ‖ΔW‖_F² / σ_1².
    pub stable_rank: f64,
    /// Singular values above the rank tolerance.
    pub numerical_rank: u32,
}

/// One of ΔW's top left singular vectors against W_IT's column space (Fig. 4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `c_fc` or `c_proj`.
    pub matrix: String,
    /// Position in descending order of σ (0-based).
    pub index: u32,
    /// Singular value.
    pub sigma: f64,
    /// ‖(I − P_IT) u_i‖: its share outside W_IT's column space.
    pub null_projection: f64,
}

/// A statistic beside its random control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Control {
    /// The statistic on the real matrix.
    pub observed: f64,
    /// Its mean over the random draws.
    pub chance_mean: f64,
    /// Its standard deviation over the draws.
    pub chance_sd: f64,
    /// `observed / chance_mean`; NaN (stored as such) when undefined.
    #[serde(deserialize_with = "nan_if_null")]
    pub ratio: f64,
    /// `(observed − chance_mean) / chance_sd`; NaN when undefined.
    #[serde(deserialize_with = "nan_if_null")]
    pub z: f64,
}

/// JSON has no NaN: an undefined ratio round-trips through `null`.
fn nan_if_null<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

impl From<&Chance> for Control {
    fn from(c: &Chance) -> Self {
        Self {
            observed: c.observed,
            chance_mean: c.mean,
            chance_sd: c.sd,
            ratio: c.ratio,
            z: c.z_score(),
        }
    }
}

/// Fig. 4 per matrix: the mean null-space share beside random matrices with ΔW's spectrum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnSummary {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `c_fc` or `c_proj`.
    pub matrix: String,
    /// Directions (90 % of ΔW's energy).
    pub k: u32,
    /// Numerical rank of W_IT.
    pub it_rank: u32,
    /// Output width of the matrix.
    pub out_dim: u32,
    /// Mean null-space share of the top directions, beside chance.
    #[serde(flatten)]
    pub mean_null_projection: Control,
}

/// Fig. 5: mean |σ_j cos(a, v_j)| over one group, per top direction j of ΔW (`c_fc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSpaceRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `std` (both standard sets), a jailbreak set, or `adversarial@<factor>`.
    pub set: String,
    /// `safe`, `unsafe`, `attack_success` or `attack_failure`.
    pub group: String,
    /// Singular direction (0-based, descending σ).
    pub j: u32,
    /// Singular value.
    pub sigma: f64,
    /// Mean |σ_j cos(a, v_j)|.
    pub mean_abs_projection: f64,
    /// Population sd of |σ_j cos(a, v_j)|.
    pub sd_abs_projection: f64,
}

/// ‖ΔW a‖ / ‖a‖ over one group beside random matrices with ΔW's spectrum.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GainRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// `std` (both standard sets), a jailbreak set, or `adversarial@<factor>`.
    pub set: String,
    /// `safe`, `unsafe`, `attack_success` or `attack_failure`.
    pub group: String,
    /// Rows.
    pub n: usize,
    /// Population standard deviation.
    pub sd: f64,
    /// Mean gain, beside chance.
    #[serde(flatten)]
    pub mean_gain: Control,
}

/// The refusal direction (unsafe − safe mean of `mlp_in@eot` on the reference rows) against
/// ΔW's top right singular vectors (`c_fc`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DirectionRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// Layer (0-based).
    pub layer: u16,
    /// ‖μ_unsafe − μ_safe‖ of the reference rows.
    pub mean_difference_norm: f64,
    /// The singular direction with the largest |cos| (0-based).
    pub best: u32,
    /// Largest |cos| with ΔW's top right singular vectors, beside chance.
    #[serde(flatten)]
    pub max_abs_cosine: Control,
}

/// One histogram bin of the Lipschitz proxy (edges shared by every model and group).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistRow {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// `safe` or `unsafe` (the Lipschitz rows of `probe.yaml`'s `lipschitz.set`).
    pub group: String,
    /// Bin (0-based).
    pub bin: u32,
    /// Lower edge.
    pub lo: f64,
    /// Upper edge (the last bin is closed).
    pub hi: f64,
    /// Rows in the bin.
    pub count: u64,
}

/// Summary of the Lipschitz proxy of one model and group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LipschitzSummary {
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// `safe` or `unsafe` (the Lipschitz rows of `probe.yaml`'s `lipschitz.set`).
    pub group: String,
    /// Rows.
    pub n: usize,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub median: f64,
    /// 5 % quantile.
    pub q05: f64,
    /// 95 % quantile.
    pub q95: f64,
}

/// C15: one interpolated model `W_IT + α ΔW` (analysis_spec §8): its behaviour on the std sets
/// and τ at the last layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterpolationRow {
    /// The fine-tuned variant ΔW comes from.
    pub model: String,
    /// α (0: the IT model, 1: the fine-tuned model).
    pub alpha: f64,
    /// Greedy exact-match refusal on std_unsafe.
    pub refusal: f64,
    /// The same on its `b_only` rows (unsafe only through the text's branch; NaN without such
    /// rows).
    pub refusal_b_only: f64,
    /// Greedy exact-match instruction following on std_safe.
    pub instruct: f64,
    /// Rows scored per set.
    pub n: usize,
    /// The layer of the τ columns (the last).
    pub layer: u16,
    /// Mean τ_L2 of the safe std test points.
    pub tau_safe: f64,
    /// Mean τ_L2 of the unsafe std test points.
    pub tau_unsafe: f64,
    /// τ_L2 separation of unsafe from safe (as [`TauRow::separation`]).
    pub tau_separation: f64,
}

/// Every table of the stage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tables {
    /// Fig. 3 and Sec. 5.
    pub tau: Vec<TauRow>,
    /// ΔW's singular values.
    pub spectrum: Vec<SpectrumRow>,
    /// ΔW's spectrum in numbers.
    pub spectrum_summary: Vec<SpectrumSummary>,
    /// Fig. 4 per direction.
    pub column: Vec<ColumnRow>,
    /// Fig. 4 with its control.
    pub column_summary: Vec<ColumnSummary>,
    /// Fig. 5 per direction.
    pub row_space: Vec<RowSpaceRow>,
    /// ‖ΔW a‖/‖a‖ with its control.
    pub gain: Vec<GainRow>,
    /// Refusal direction vs ΔW.
    pub direction: Vec<DirectionRow>,
    /// Fig. 6 histograms.
    pub lipschitz_hist: Vec<HistRow>,
    /// Fig. 6 in numbers.
    pub lipschitz_summary: Vec<LipschitzSummary>,
    /// C15: the α-interpolation.
    pub interpolation: Vec<InterpolationRow>,
}

/// Why the analyses could not run: the failing analysis with its model and layer.
#[derive(Debug, thiserror::Error)]
#[error("{what}: {message}")]
pub struct SpectraError {
    /// Which analysis, model and layer.
    pub what: String,
    /// The cause.
    pub message: String,
}

fn ctx<T, E: std::fmt::Display>(
    r: Result<T, E>,
    what: impl FnOnce() -> String,
) -> Result<T, SpectraError> {
    r.map_err(|e| SpectraError {
        what: what(),
        message: e.to_string(),
    })
}

fn tau_metric_name(m: TauMetric) -> &'static str {
    match m {
        TauMetric::L2 => "l2",
        TauMetric::Cosine => "cos",
    }
}

/// Drop the rows of `test` that equal a reference row bit for bit (the same prompt drawn twice
/// by the grammar): rows are disjoint by index, but τ must not see a reference vector again.
fn without_references(test: &Matrix, references: &[&Matrix]) -> Matrix {
    let key = |r: &[f64]| r.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
    let seen: HashSet<Vec<u64>> = references
        .iter()
        .flat_map(|m| m.row_iter().map(key))
        .collect();
    let kept: Vec<Vec<f64>> = test
        .row_iter()
        .filter(|r| !seen.contains(&key(r)))
        .map(<[f64]>::to_vec)
        .collect();
    Matrix::from_rows(&kept).unwrap_or_else(|_| Matrix::zeros(0, test.cols()))
}

fn sel<'a>(
    sets: &'a [&'a str],
    group: Group,
    split: Split,
    layer: u16,
    hook: Hook,
    pool: Pool,
) -> Select<'a> {
    Select {
        sets,
        group,
        split,
        layer,
        hook,
        pool,
    }
}

/// τ rows of one model.
/// The probed sets of one τ analysis: all of them, and those with reference rows.
#[derive(Clone, Copy)]
struct TauSets<'a> {
    sets: &'a [String],
    reference_sets: &'a [String],
}

fn tau_rows(
    model: &str,
    acts: &ActivationTable,
    adversarial: &[AdversarialActivation],
    layers: std::ops::Range<u16>,
    inputs: TauSets<'_>,
    cfg: &SpectraConfig,
) -> Result<Vec<TauRow>, SpectraError> {
    let refs: Vec<&str> = match cfg.tau.references {
        TauReferences::Pooled => inputs.reference_sets.iter().map(String::as_str).collect(),
        TauReferences::Literal => vec!["std_safe"],
    };
    let std: Vec<&str> = STD_SETS
        .iter()
        .copied()
        .filter(|s| inputs.sets.iter().any(|x| x == s))
        .collect();
    let units = cfg
        .tau
        .first_units
        .map_or(HiddenUnits::All, HiddenUnits::First);
    let (hook, pool) = (TAU_DUMP.hook, TAU_DUMP.pool);
    let mut out = Vec::new();
    for layer in layers {
        let what = || format!("τ of {model} at layer {layer}");
        let m = |sets: &[&str], g, s| {
            ctx(
                acts.matrix(&sel(sets, g, s, layer, hook, pool))
                    .map(|x| x.0),
                what,
            )
        };
        let ref_safe = m(&refs, Group::Safe, Split::Reference)?;
        let ref_unsafe = m(&refs, Group::Unsafe, Split::Reference)?;
        let clean = |t: Matrix| without_references(&t, &[&ref_safe, &ref_unsafe]);
        let test_safe = clean(m(&std, Group::Safe, Split::Test)?);
        let mut groups: Vec<(String, String, Matrix)> = vec![(
            "std".into(),
            "unsafe".into(),
            clean(m(&std, Group::Unsafe, Split::Test)?),
        )];
        for set in inputs
            .sets
            .iter()
            .filter(|s| !STD_SETS.contains(&s.as_str()))
        {
            groups.push((
                set.clone(),
                "unsafe".into(),
                clean(m(&[set.as_str()], Group::Unsafe, Split::Test)?),
            ));
        }
        let mut by_attack: BTreeMap<(u64, bool), Vec<Vec<f64>>> = BTreeMap::new();
        for a in adversarial.iter().filter(|a| {
            a.model == model
                && a.activation.layer == layer
                && a.activation.hook == hook
                && a.activation.pool == pool
        }) {
            by_attack
                .entry((a.factor.to_bits(), a.success))
                .or_default()
                .push(a.activation.values.iter().map(|&x| f64::from(x)).collect());
        }
        for ((bits, success), rows) in by_attack {
            let g = if success {
                "attack_success"
            } else {
                "attack_failure"
            };
            groups.push((
                format!("adversarial@{}", f64::from_bits(bits)),
                g.into(),
                ctx(Matrix::from_rows(&rows), what)?,
            ));
        }
        for metric in [TauMetric::L2, TauMetric::Cosine] {
            let opts = TauOptions {
                units,
                overlap: ReferenceOverlap::Reject,
                metric,
            };
            for (k, (set, group, test)) in groups.iter().enumerate() {
                if test.rows() == 0 {
                    continue;
                }
                let t = ctx(
                    clusters::tau_analysis(&ref_safe, &ref_unsafe, &test_safe, test, &opts),
                    what,
                )?;
                if k == 0 {
                    out.push(TauRow {
                        model: model.into(),
                        layer,
                        metric: tau_metric_name(metric).into(),
                        set: "std".into(),
                        group: "safe".into(),
                        n: t.safe.n,
                        mean: t.safe.mean,
                        sd: t.safe.sd,
                        assignment_accuracy: t.safe.assignment_accuracy,
                        separation: 0.0,
                    });
                }
                let u = t.unsafe_group;
                out.push(TauRow {
                    model: model.into(),
                    layer,
                    metric: tau_metric_name(metric).into(),
                    set: set.clone(),
                    group: group.clone(),
                    n: u.n,
                    mean: u.mean,
                    sd: u.sd,
                    assignment_accuracy: u.assignment_accuracy,
                    separation: t.separation,
                });
            }
        }
    }
    Ok(out)
}

/// Run every analysis.
pub fn analyse(inputs: &Inputs<'_>, cfg: &SpectraConfig) -> Result<Tables, SpectraError> {
    let spec = ctx(ControlSpec::new(cfg.seed, cfg.control_draws), || {
        "control".into()
    })?;
    let layers = inputs.it.len() as u16;
    let mut t = Tables::default();
    let tau_sets = TauSets {
        sets: inputs.sets,
        reference_sets: inputs.reference_sets,
    };
    let acts = |model: &str| {
        inputs.activations.get(model).ok_or_else(|| SpectraError {
            what: format!("activations of `{model}`"),
            message: "missing from the probe stage's output; run `make probe`".into(),
        })
    };
    t.tau
        .extend(tau_rows("it", acts("it")?, &[], 0..layers, tau_sets, cfg)?);
    for (model, weights) in inputs.variants {
        if weights.len() != inputs.it.len() {
            return Err(SpectraError {
                what: format!("weights of `{model}`"),
                message: format!("{} layers, the IT model {}", weights.len(), inputs.it.len()),
            });
        }
        let a = acts(model)?;
        t.tau.extend(tau_rows(
            model,
            a,
            inputs.adversarial,
            0..layers,
            tau_sets,
            cfg,
        )?);
        for (layer, (st, it)) in weights.iter().zip(inputs.it).enumerate() {
            let layer = layer as u16;
            for (matrix, w_st, w_it) in [
                ("c_fc", &st.c_fc, &it.c_fc),
                ("c_proj", &st.c_proj, &it.c_proj),
            ] {
                let what = || format!("ΔW of {model} layer {layer} {matrix}");
                let dw = ctx(spectra::delta_w(w_st, w_it), what)?;
                let sp = ctx(spectra::spectrum(&dw), what)?;
                for (i, (&sigma, &cum)) in sp
                    .singular_values
                    .iter()
                    .zip(&sp.cumulative_energy)
                    .enumerate()
                {
                    t.spectrum.push(SpectrumRow {
                        model: model.clone(),
                        layer,
                        matrix: matrix.into(),
                        index: i as u32,
                        sigma,
                        cumulative_energy: cum,
                    });
                }
                t.spectrum_summary.push(SpectrumSummary {
                    model: model.clone(),
                    layer,
                    matrix: matrix.into(),
                    frobenius_norm: sp.frobenius_norm,
                    top_energy_share: sp.top_energy_share,
                    effective_rank: sp.effective_rank,
                    stable_rank: sp.stable_rank,
                    numerical_rank: sp.numerical_rank as u32,
                });
                let opts = ColumnSpaceOptions {
                    matrix: ColumnSpaceMatrix::DeltaW,
                    ..Default::default()
                };
                let c = ctx(
                    alignment::column_space_control(w_st, w_it, &opts, spec),
                    what,
                )?;
                let al = &c.alignment;
                for (i, (&sigma, &v)) in al
                    .singular_values
                    .iter()
                    .zip(&al.null_projection)
                    .enumerate()
                {
                    t.column.push(ColumnRow {
                        model: model.clone(),
                        layer,
                        matrix: matrix.into(),
                        index: i as u32,
                        sigma,
                        null_projection: v,
                    });
                }
                t.column_summary.push(ColumnSummary {
                    model: model.clone(),
                    layer,
                    matrix: matrix.into(),
                    k: al.null_projection.len() as u32,
                    it_rank: al.it_rank as u32,
                    out_dim: al.out_dim as u32,
                    mean_null_projection: (&c.mean_null_projection).into(),
                });
            }
            row_space(&mut t, model, a, inputs, layer, st, it, cfg, &spec)?;
        }
    }
    lipschitz_tables(&mut t, inputs.lipschitz, cfg.lipschitz_bins)?;
    t.interpolation = interpolation_rows(inputs, layers, cfg)?;
    Ok(t)
}

#[allow(clippy::too_many_arguments)]
fn row_space(
    t: &mut Tables,
    model: &str,
    acts: &ActivationTable,
    inputs: &Inputs<'_>,
    layer: u16,
    st: &MlpWeights,
    it: &MlpWeights,
    cfg: &SpectraConfig,
    spec: &ControlSpec,
) -> Result<(), SpectraError> {
    let what = || format!("row space of {model} at layer {layer}");
    let (hook, pool) = (Hook::MlpIn, Pool::Eot);
    let m = |sets: &[&str], g, s| {
        ctx(
            acts.matrix(&sel(sets, g, s, layer, hook, pool))
                .map(|x| x.0),
            what,
        )
    };
    let std: Vec<&str> = STD_SETS.to_vec();
    let safe = m(&std, Group::Safe, Split::Test)?;
    let mut groups: Vec<(String, &'static str, Matrix)> =
        vec![("std".into(), "unsafe", m(&std, Group::Unsafe, Split::Test)?)];
    for set in inputs
        .sets
        .iter()
        .filter(|s| !STD_SETS.contains(&s.as_str()))
    {
        groups.push((
            set.clone(),
            "unsafe",
            m(&[set.as_str()], Group::Unsafe, Split::Test)?,
        ));
    }
    let mut by_attack: BTreeMap<(u64, bool), Vec<Vec<f64>>> = BTreeMap::new();
    for a in inputs.adversarial.iter().filter(|a| {
        a.model == model
            && a.activation.layer == layer
            && a.activation.hook == hook
            && a.activation.pool == pool
    }) {
        by_attack
            .entry((a.factor.to_bits(), a.success))
            .or_default()
            .push(a.activation.values.iter().map(|&x| f64::from(x)).collect());
    }
    for ((bits, success), rows) in by_attack {
        let g = if success {
            "attack_success"
        } else {
            "attack_failure"
        };
        groups.push((
            format!("adversarial@{}", f64::from_bits(bits)),
            g,
            ctx(Matrix::from_rows(&rows), what)?,
        ));
    }
    let opts = RowSpaceOptions {
        top_k: cfg.row_space_top_k,
        ..Default::default()
    };
    for (k, (set, group, acts_g)) in groups.iter().enumerate() {
        let a = ctx(
            alignment::row_space_analysis(&st.c_fc, &it.c_fc, &safe, acts_g, &opts),
            what,
        )?;
        let c = ctx(
            alignment::row_space_control(&st.c_fc, &it.c_fc, &safe, acts_g, &opts, *spec),
            what,
        )?;
        let mut push = |set: &str, group: &str, s: &alignment::RowSpaceSummary, ch: &Chance| {
            for (j, (&mu, &sd)) in s
                .mean_abs_projection
                .iter()
                .zip(&s.sd_abs_projection)
                .enumerate()
            {
                t.row_space.push(RowSpaceRow {
                    model: model.into(),
                    layer,
                    set: set.into(),
                    group: group.into(),
                    j: j as u32,
                    sigma: a.safe.singular_values[j],
                    mean_abs_projection: mu,
                    sd_abs_projection: sd,
                });
            }
            t.gain.push(GainRow {
                model: model.into(),
                layer,
                set: set.into(),
                group: group.into(),
                n: s.n,
                sd: s.sd_gain,
                mean_gain: ch.into(),
            });
        };
        if k == 0 {
            push("std", "safe", &a.safe_summary, &c.safe_gain);
        }
        push(set, group, &a.unsafe_summary, &c.unsafe_gain);
    }
    // The refusal direction from the model's own reference rows.
    let refs: Vec<&str> = inputs.reference_sets.iter().map(String::as_str).collect();
    let rs = m(&refs, Group::Safe, Split::Reference)?;
    let ru = m(&refs, Group::Unsafe, Split::Reference)?;
    let d = ctx(direction::refusal_direction(&rs, &ru), what)?;
    let dopts = DirectionOptions {
        side: Side::Input,
        top_k: cfg.direction_top_k,
    };
    let dc = ctx(
        direction::direction_control(&d.direction, &st.c_fc, &it.c_fc, &dopts, *spec),
        what,
    )?;
    t.direction.push(DirectionRow {
        model: model.into(),
        layer,
        mean_difference_norm: d.mean_difference_norm,
        best: dc.alignment.best as u32,
        max_abs_cosine: (&dc.max_abs_cosine).into(),
    });
    Ok(())
}

fn interpolation_rows(
    inputs: &Inputs<'_>,
    layers: u16,
    cfg: &SpectraConfig,
) -> Result<Vec<InterpolationRow>, SpectraError> {
    let std: Vec<String> = STD_SETS.iter().map(|s| (*s).to_owned()).collect();
    let sets = TauSets {
        sets: &std,
        reference_sets: &std,
    };
    let last = layers.saturating_sub(1);
    let mut out = Vec::new();
    for (name, acts) in inputs.interpolation {
        let what = || format!("interpolated model `{name}`");
        let (variant, alpha) = ctx(crate::probe::parse_interpolated(name), what)?;
        let tau = tau_rows(name, acts, &[], last..last + 1, sets, cfg)?;
        let tau_of = |group: &str| {
            tau.iter()
                .find(|r| r.metric == "l2" && r.set == "std" && r.group == group)
                .ok_or_else(|| SpectraError {
                    what: what(),
                    message: format!("no τ of the {group} std test points"),
                })
        };
        let (safe, unsafe_) = (tau_of("safe")?, tau_of("unsafe")?);
        let cell = |set: &str, metric: Metric, subset: Subset| {
            inputs.interpolation_behaviour.iter().find(|r| {
                r.model == *name
                    && r.set == set
                    && crate::evaluation::is_greedy_exact(r, metric, subset)
            })
        };
        let missing = |cell: &str| SpectraError {
            what: what(),
            message: format!(
                "no greedy exact-match {cell} in the behaviour table; run `make probe`"
            ),
        };
        let refusal = cell("std_unsafe", Metric::Refusal, Subset::All)
            .ok_or_else(|| missing("refusal on std_unsafe"))?;
        let instruct = cell("std_safe", Metric::Instruct, Subset::All)
            .ok_or_else(|| missing("instruction following on std_safe"))?;
        out.push(InterpolationRow {
            model: variant.to_owned(),
            alpha,
            refusal: refusal.value,
            refusal_b_only: cell("std_unsafe", Metric::Refusal, Subset::BOnly)
                .map_or(f64::NAN, |r| r.value),
            instruct: instruct.value,
            n: refusal.n as usize,
            layer: last,
            tau_safe: safe.mean,
            tau_unsafe: unsafe_.mean,
            tau_separation: unsafe_.separation,
        });
    }
    out.sort_by(|a, b| a.model.cmp(&b.model).then(a.alpha.total_cmp(&b.alpha)));
    Ok(out)
}

fn lipschitz_tables(
    t: &mut Tables,
    rows: &[LipschitzRow],
    bins: usize,
) -> Result<(), SpectraError> {
    let mut groups: BTreeMap<(String, Group), Vec<f64>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.model.clone(), r.group))
            .or_default()
            .push(r.grad_fro);
    }
    let what = || "Lipschitz histograms".to_owned();
    let values: Vec<&[f64]> = groups.values().map(Vec::as_slice).collect();
    if values.is_empty() {
        return Err(SpectraError {
            what: what(),
            message: "no Lipschitz rows; run `make probe`".into(),
        });
    }
    let h = ctx(lipschitz::shared_histograms(&values, bins), what)?;
    for (((model, group), v), counts) in groups.iter().zip(&h.counts) {
        for (b, &count) in counts.iter().enumerate() {
            t.lipschitz_hist.push(HistRow {
                model: model.clone(),
                group: group.as_str().into(),
                bin: b as u32,
                lo: h.edges[b],
                hi: h.edges[b + 1],
                count,
            });
        }
        let s = ctx(lipschitz::summarize(v), what)?;
        t.lipschitz_summary.push(LipschitzSummary {
            model: model.clone(),
            group: group.as_str().into(),
            n: s.n,
            mean: s.mean,
            median: s.median,
            q05: s.q05,
            q95: s.q95,
        });
    }
    Ok(())
}

/// Our τ at the last layer beside the paper's Fig. 3 reading at its last layer (6 of 6), as a
/// markdown table (the paper's models have 6 layers; the presets may have fewer, so the depth is
/// printed with each number).
pub fn fig3_markdown(tau: &[TauRow]) -> String {
    use crate::mechanism::reference::{self, Group as RefGroup, Model};
    let mut out = String::from(
        "| model | group | ours: τ_L2 (mean ± sd) | our layer | paper: τ_L2 at layer 6 of 6 |\n|---|---|---:|---:|---:|\n",
    );
    let last = tau.iter().map(|r| r.layer).max().unwrap_or(0);
    for r in tau
        .iter()
        .filter(|r| r.metric == "l2" && r.set == "std" && r.layer == last)
    {
        let group = if r.group == "safe" {
            RefGroup::Safe
        } else {
            RefGroup::Unsafe
        };
        let paper: Vec<String> = Model::from_name(&r.model)
            .into_iter()
            .flat_map(|m| reference::fig3_tau(m, 6, group))
            .map(|p| {
                if p.low == p.high {
                    format!("{:.1} ({})", p.low, p.claim)
                } else {
                    format!("{:.1} … {:.1} ({})", p.low, p.high, p.claim)
                }
            })
            .collect();
        let paper = if paper.is_empty() {
            "—".to_owned()
        } else {
            paper.join("; ")
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} ± {:.2} | {} of {} | {paper} |\n",
            r.model,
            r.group,
            r.mean,
            r.sd,
            r.layer + 1,
            last + 1
        ));
    }
    out
}

/// A column's type in the stage's tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    /// UTF-8.
    Str,
    /// Unsigned integer (layers, indices, counts).
    U32,
    /// Float; an undefined value (a ratio to a chance mean of 0) is NaN.
    F64,
}

/// A row type of one of the stage's tables: its file stem and columns (the row's serialized
/// fields, in this order, flattened controls included).
pub trait TableRow: Serialize {
    /// Table kind and file stem.
    const TABLE: &'static str;
    /// Columns in order.
    const COLUMNS: &'static [(&'static str, Col)];
}

/// Version of every spectra table's schema.
pub const SPECTRA_SCHEMA_VERSION: u32 = 1;

/// The schema of table `T`.
pub fn schema<T: TableRow>() -> crate::artifacts::TableSchema {
    crate::artifacts::TableSchema {
        table: T::TABLE,
        version: SPECTRA_SCHEMA_VERSION,
        columns: T::COLUMNS
            .iter()
            .map(|&(name, c)| {
                let dtype = match c {
                    Col::Str => DataType::String,
                    Col::U32 => DataType::UInt32,
                    Col::F64 => DataType::Float64,
                };
                (name, dtype)
            })
            .collect(),
        target: "spectra",
    }
}

/// Rows of `T` as a DataFrame in [`TableRow::COLUMNS`] order; a field the list misses (or the
/// other way round) is an error.
pub fn frame<T: TableRow>(rows: &[T]) -> PolarsResult<DataFrame> {
    let values: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|r| match serde_json::to_value(r) {
            Ok(serde_json::Value::Object(m)) if m.len() == T::COLUMNS.len() => Ok(m),
            _ => Err(polars_err!(ComputeError: "a `{}` row does not serialize to its {} columns", T::TABLE, T::COLUMNS.len())),
        })
        .collect::<PolarsResult<_>>()?;
    let bad = |name: &str, i: usize| polars_err!(ComputeError: "table `{}` column `{name}` row {i}: missing or mistyped", T::TABLE);
    let columns = T::COLUMNS
        .iter()
        .map(|&(name, c)| -> PolarsResult<Column> {
            let get = |i: usize| values[i].get(name);
            let n = values.len();
            let series = match c {
                Col::Str => Series::new(
                    name.into(),
                    (0..n)
                        .map(|i| get(i).and_then(|v| v.as_str()).ok_or_else(|| bad(name, i)))
                        .collect::<PolarsResult<Vec<_>>>()?,
                ),
                Col::U32 => Series::new(
                    name.into(),
                    (0..n)
                        .map(|i| {
                            get(i)
                                .and_then(serde_json::Value::as_u64)
                                .and_then(|v| u32::try_from(v).ok())
                                .ok_or_else(|| bad(name, i))
                        })
                        .collect::<PolarsResult<Vec<u32>>>()?,
                ),
                Col::F64 => Series::new(
                    name.into(),
                    (0..n)
                        .map(|i| match get(i) {
                            Some(serde_json::Value::Null) => Ok(f64::NAN),
                            v => v
                                .and_then(serde_json::Value::as_f64)
                                .ok_or_else(|| bad(name, i)),
                        })
                        .collect::<PolarsResult<Vec<f64>>>()?,
                ),
            };
            Ok(Column::from(series))
        })
        .collect::<PolarsResult<Vec<_>>>()?;
    DataFrame::new(values.len(), columns)
}

/// Rows of `T` back from a table written by [`frame`] (columns checked by
/// [`crate::artifacts::read_parquet`] first); a null where a value is required is an error naming
/// the table, column and row.
pub fn rows_of<T: TableRow + serde::de::DeserializeOwned>(df: &DataFrame) -> PolarsResult<Vec<T>> {
    let cols: Vec<(&str, Col, &Column)> = T::COLUMNS
        .iter()
        .map(|&(name, c)| df.column(name).map(|col| (name, c, col)))
        .collect::<PolarsResult<_>>()?;
    (0..df.height())
        .map(|i| {
            let mut m = serde_json::Map::new();
            for (name, c, col) in &cols {
                let v = col.get(i)?;
                let json = match (c, v) {
                    (Col::Str, v) if v.get_str().is_some() => serde_json::Value::from(v.get_str().unwrap_or_default()),
                    (Col::U32, AnyValue::UInt32(x)) => serde_json::Value::from(x),
                    (Col::F64, AnyValue::Float64(x)) => serde_json::Number::from_f64(x).map_or(serde_json::Value::Null, serde_json::Value::Number),
                    (_, v) => polars_bail!(ComputeError: "table `{}` column `{name}` row {i}: unexpected {v:?}", T::TABLE),
                };
                m.insert((*name).to_owned(), json);
            }
            serde_json::from_value(serde_json::Value::Object(m))
                .map_err(|e| polars_err!(ComputeError: "table `{}` row {i}: {e}", T::TABLE))
        })
        .collect()
}

/// Read table `T` of `06_spectra/` (hint: `make spectra`).
pub fn read_table<T: TableRow + serde::de::DeserializeOwned>(
    catalog: &crate::Catalog,
) -> Result<Vec<T>, crate::artifacts::ArtifactError> {
    let path = catalog.stage_file(crate::Stage::Spectra, &format!("{}.parquet", T::TABLE));
    let df = crate::artifacts::read_parquet(&path, &schema::<T>())?;
    rows_of(&df).map_err(|e| crate::artifacts::ArtifactError::Schema {
        path,
        message: e.to_string(),
        target: "spectra".into(),
    })
}

impl Tables {
    /// Every table of `06_spectra/`.
    pub fn read(catalog: &crate::Catalog) -> Result<Self, crate::artifacts::ArtifactError> {
        Ok(Self {
            tau: read_table(catalog)?,
            spectrum: read_table(catalog)?,
            spectrum_summary: read_table(catalog)?,
            column: read_table(catalog)?,
            column_summary: read_table(catalog)?,
            row_space: read_table(catalog)?,
            gain: read_table(catalog)?,
            direction: read_table(catalog)?,
            lipschitz_hist: read_table(catalog)?,
            lipschitz_summary: read_table(catalog)?,
            interpolation: read_table(catalog)?,
        })
    }
}

/// One figure quantity over seeds: mean, sd and the 95 % confidence interval of the mean
/// (Student t with n − 1 degrees of freedom), from [`combine_seeds`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRow {
    /// The spectra table it comes from (`tau`, `gain`, …).
    pub table: String,
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// The row's coordinates in its table, readable (`layer=2 set=std group=unsafe metric=l2`).
    pub key: String,
    /// The column (`separation`, `ratio`, …).
    pub quantity: String,
    /// Seeds with this row.
    pub n_seeds: usize,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (NaN with one seed).
    pub sd: f64,
    /// Lower end of the 95 % CI of the mean (NaN with one seed).
    pub ci95_lo: f64,
    /// Upper end of the 95 % CI of the mean (NaN with one seed).
    pub ci95_hi: f64,
}

/// The figure quantities of one seed's tables: (table, model, key, quantity, value).
fn figure_quantities(t: &Tables) -> Vec<(&'static str, String, String, &'static str, f64)> {
    let mut out = Vec::new();
    let mut push = |table, model: &str, key: String, q: &[(&'static str, f64)]| {
        for &(name, v) in q {
            out.push((table, model.to_owned(), key.clone(), name, v));
        }
    };
    for r in &t.tau {
        let key = format!(
            "layer={} set={} group={} metric={}",
            r.layer, r.set, r.group, r.metric
        );
        push(
            "tau",
            &r.model,
            key,
            &[
                ("mean", r.mean),
                ("separation", r.separation),
                ("assignment_accuracy", r.assignment_accuracy),
            ],
        );
    }
    for r in &t.spectrum_summary {
        let key = format!("layer={} matrix={}", r.layer, r.matrix);
        push(
            "spectrum_summary",
            &r.model,
            key,
            &[
                ("top_energy_share", r.top_energy_share),
                ("effective_rank", r.effective_rank),
                ("stable_rank", r.stable_rank),
            ],
        );
    }
    for r in &t.column_summary {
        let key = format!("layer={} matrix={}", r.layer, r.matrix);
        let c = &r.mean_null_projection;
        push(
            "column_summary",
            &r.model,
            key,
            &[("observed", c.observed), ("ratio", c.ratio)],
        );
    }
    for r in &t.row_space {
        let key = format!(
            "layer={} set={} group={} j={}",
            r.layer, r.set, r.group, r.j
        );
        push(
            "row_space",
            &r.model,
            key,
            &[("mean_abs_projection", r.mean_abs_projection)],
        );
    }
    for r in &t.gain {
        let key = format!("layer={} set={} group={}", r.layer, r.set, r.group);
        let c = &r.mean_gain;
        push(
            "gain",
            &r.model,
            key,
            &[("observed", c.observed), ("ratio", c.ratio)],
        );
    }
    for r in &t.direction {
        let key = format!("layer={}", r.layer);
        let c = &r.max_abs_cosine;
        push(
            "direction",
            &r.model,
            key,
            &[("observed", c.observed), ("ratio", c.ratio)],
        );
    }
    for r in &t.lipschitz_summary {
        let key = format!("group={}", r.group);
        push(
            "lipschitz_summary",
            &r.model,
            key,
            &[("median", r.median), ("mean", r.mean)],
        );
    }
    for r in &t.interpolation {
        let key = format!("alpha={}", r.alpha);
        push(
            "interpolation",
            &r.model,
            key,
            &[
                ("refusal", r.refusal),
                ("refusal_b_only", r.refusal_b_only),
                ("instruct", r.instruct),
                ("tau_separation", r.tau_separation),
            ],
        );
    }
    out
}

/// Every figure quantity of the seeds' tables as mean and 95 % CI over seeds (issue #12's
/// seeds table). A quantity missing in some seeds is combined over the seeds that have it
/// (`n_seeds` says how many); non-finite values (a NaN `refusal_b_only`) are left out the same way.
pub fn combine_seeds(seeds: &[Tables]) -> Result<Vec<SeedRow>, SpectraError> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let mut values: BTreeMap<(&'static str, String, String, &'static str), Vec<f64>> =
        BTreeMap::new();
    for t in seeds {
        for (table, model, key, q, v) in figure_quantities(t) {
            if v.is_finite() {
                values.entry((table, model, key, q)).or_default().push(v);
            }
        }
    }
    let mut out = Vec::with_capacity(values.len());
    for ((table, model, key, quantity), v) in values {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let (sd, half) = if n < 2 {
            (f64::NAN, f64::NAN)
        } else {
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
            let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).map_err(|e| SpectraError {
                what: "the seeds' CI".into(),
                message: e.to_string(),
            })?;
            (sd, t.inverse_cdf(0.975) * sd / (n as f64).sqrt())
        };
        out.push(SeedRow {
            table: table.into(),
            model,
            key,
            quantity: quantity.into(),
            n_seeds: n,
            mean,
            sd,
            ci95_lo: mean - half,
            ci95_hi: mean + half,
        });
    }
    Ok(out)
}

macro_rules! table_row {
    ($t:ty, $name:literal, [$($col:literal : $kind:ident),+ $(,)?]) => {
        impl TableRow for $t {
            const TABLE: &'static str = $name;
            const COLUMNS: &'static [(&'static str, Col)] = &[$(($col, Col::$kind)),+];
        }
    };
}

table_row!(TauRow, "tau", [
    "model": Str, "layer": U32, "metric": Str, "set": Str, "group": Str, "n": U32, "mean": F64,
    "sd": F64, "assignment_accuracy": F64, "separation": F64,
]);
table_row!(SpectrumRow, "spectrum", [
    "model": Str, "layer": U32, "matrix": Str, "index": U32, "sigma": F64, "cumulative_energy": F64,
]);
table_row!(SpectrumSummary, "spectrum_summary", [
    "model": Str, "layer": U32, "matrix": Str, "frobenius_norm": F64, "top_energy_share": F64,
    "effective_rank": F64, "stable_rank": F64, "numerical_rank": U32,
]);
table_row!(ColumnRow, "column_space", [
    "model": Str, "layer": U32, "matrix": Str, "index": U32, "sigma": F64, "null_projection": F64,
]);
table_row!(ColumnSummary, "column_summary", [
    "model": Str, "layer": U32, "matrix": Str, "k": U32, "it_rank": U32, "out_dim": U32,
    "observed": F64, "chance_mean": F64, "chance_sd": F64, "ratio": F64, "z": F64,
]);
table_row!(RowSpaceRow, "row_space", [
    "model": Str, "layer": U32, "set": Str, "group": Str, "j": U32, "sigma": F64,
    "mean_abs_projection": F64, "sd_abs_projection": F64,
]);
table_row!(GainRow, "gain", [
    "model": Str, "layer": U32, "set": Str, "group": Str, "n": U32, "sd": F64,
    "observed": F64, "chance_mean": F64, "chance_sd": F64, "ratio": F64, "z": F64,
]);
table_row!(DirectionRow, "direction", [
    "model": Str, "layer": U32, "mean_difference_norm": F64, "best": U32,
    "observed": F64, "chance_mean": F64, "chance_sd": F64, "ratio": F64, "z": F64,
]);
table_row!(HistRow, "lipschitz_hist", [
    "model": Str, "group": Str, "bin": U32, "lo": F64, "hi": F64, "count": U32,
]);
table_row!(LipschitzSummary, "lipschitz_summary", [
    "model": Str, "group": Str, "n": U32, "mean": F64, "median": F64, "q05": F64, "q95": F64,
]);
table_row!(SeedRow, "seeds", [
    "table": Str, "model": Str, "key": Str, "quantity": Str, "n_seeds": U32, "mean": F64, "sd": F64,
    "ci95_lo": F64, "ci95_hi": F64,
]);
table_row!(InterpolationRow, "interpolation", [
    "model": Str, "alpha": F64, "refusal": F64, "refusal_b_only": F64, "instruct": F64, "n": U32,
    "layer": U32, "tau_safe": F64, "tau_unsafe": F64, "tau_separation": F64,
]);

#[cfg(test)]
mod tests {
    use super::*;

    const CONTROL: [&str; 5] = ["observed", "chance_mean", "chance_sd", "ratio", "z"];

    fn has_control<T: TableRow>() -> bool {
        CONTROL
            .iter()
            .all(|c| T::COLUMNS.iter().any(|(n, _)| n == c))
    }

    use crate::mechanism::testing::{N, planted, random_update};
    use crate::probe::{Activation, ActivationKey};

    /// One model's table: `safe`/`unsafe` rows split half reference (std_safe), half test
    /// (std_unsafe), stored both as `mlp_in@eot` and `mlp_post@output` at layer 0.
    fn table(model: &str, safe: &Matrix, unsafe_acts: &Matrix) -> ActivationTable {
        let mut keys = Vec::new();
        for (group, m) in [(Group::Safe, safe), (Group::Unsafe, unsafe_acts)] {
            for i in 0..m.rows() {
                let (set, split) = if i < N / 2 {
                    ("std_safe", Split::Reference)
                } else {
                    ("std_unsafe", Split::Test)
                };
                let key = ActivationKey {
                    set: set.into(),
                    group,
                    split,
                    row: i as u32,
                    sample_id: i as u32,
                };
                for (hook, pool) in [(Hook::MlpIn, Pool::Eot), (Hook::MlpPost, Pool::Output)] {
                    let values = m.row(i).iter().map(|&x| x as f32).collect();
                    keys.push((
                        model.to_owned(),
                        key.clone(),
                        Activation {
                            layer: 0,
                            hook,
                            pool,
                            values,
                        },
                    ));
                }
            }
        }
        ActivationTable { keys }
    }

    fn lip(model: &str, group: Group, v: f64) -> LipschitzRow {
        LipschitzRow {
            model: model.into(),
            set: "std_unsafe".into(),
            group,
            row: 0,
            sample_id: 0,
            prefix_len: 12,
            grad_fro: v,
        }
    }

    #[test]
    fn a_planted_update_is_found_and_a_random_one_is_chance() {
        let p = planted(&[3.0, 2.0], 11).expect("planted");
        let (rand_st, rand_it) = random_update(12).expect("random");
        let it = vec![MlpWeights {
            c_fc: p.w_it.clone(),
            c_proj: rand_it,
        }];
        let variants = BTreeMap::from([(
            "ssft".to_owned(),
            vec![MlpWeights {
                c_fc: p.w_st.clone(),
                c_proj: rand_st,
            }],
        )]);
        // The IT model does not separate: its unsafe rows are drawn like its safe rows.
        let it_unsafe = Matrix::from_fn(p.safe.rows(), p.safe.cols(), |i, j| {
            p.safe.get((i + 7) % p.safe.rows(), j) * 1.01
        });
        let activations = BTreeMap::from([
            ("it".to_owned(), table("it", &p.safe, &it_unsafe)),
            ("ssft".to_owned(), table("ssft", &p.safe, &p.unsafe_acts)),
        ]);
        let lipschitz = vec![
            lip("it", Group::Safe, 1.0),
            lip("it", Group::Unsafe, 2.0),
            lip("ssft", Group::Unsafe, 0.5),
            lip("ssft", Group::Safe, 1.5),
        ];
        let sets = vec!["std_safe".to_owned(), "std_unsafe".to_owned()];
        // α = 0 is the IT model's activations, α = 1 the fine-tuned model's.
        let interpolation = BTreeMap::from([
            (
                "ssft@1".to_owned(),
                table("ssft@1", &p.safe, &p.unsafe_acts),
            ),
            ("ssft@0".to_owned(), table("ssft@0", &p.safe, &it_unsafe)),
        ]);
        let behaviour: Vec<BehaviourRow> = [("ssft@0", 0.1, 0.9), ("ssft@1", 0.8, 0.85)]
            .into_iter()
            .flat_map(|(m, refusal, instruct)| {
                [
                    behaviour_row(m, "std_unsafe", Metric::Refusal, refusal),
                    behaviour_row(m, "std_safe", Metric::Instruct, instruct),
                ]
            })
            .collect();
        let inputs = Inputs {
            it: &it,
            variants: &variants,
            activations: &activations,
            adversarial: &[],
            lipschitz: &lipschitz,
            sets: &sets,
            reference_sets: &sets,
            interpolation: &interpolation,
            interpolation_behaviour: &behaviour,
        };
        let cfg = SpectraConfig {
            seed: 3,
            control_draws: 24,
            tau: crate::config::spectra::TauConfig {
                references: TauReferences::Pooled,
                first_units: None,
            },
            row_space_top_k: 5,
            direction_top_k: 3,
            lipschitz_bins: 4,
        };
        let t = analyse(&inputs, &cfg).expect("analyses run");
        let col = |m: &str| {
            t.column_summary
                .iter()
                .find(|r| r.matrix == m)
                .expect("summary")
        };
        let (fc, proj) = (col("c_fc"), col("c_proj"));
        assert_eq!(fc.k, 2, "two planted directions carry 90 % of ΔW's energy");
        assert!(
            fc.mean_null_projection.ratio > 3.0 && fc.mean_null_projection.z > 5.0,
            "{fc:?}"
        );
        assert!(
            (0.8..1.25).contains(&proj.mean_null_projection.ratio),
            "random ΔW is chance: {proj:?}"
        );
        let sp = t
            .spectrum_summary
            .iter()
            .find(|r| r.matrix == "c_fc")
            .expect("spectrum");
        assert!((sp.top_energy_share - 9.0 / 13.0).abs() < 0.01, "{sp:?}");
        let gain = |g: &str| {
            t.gain
                .iter()
                .find(|r| r.set == "std" && r.group == g)
                .expect("gain")
        };
        assert!(gain("unsafe").mean_gain.observed > 100.0 * gain("safe").mean_gain.observed);
        assert!(gain("unsafe").mean_gain.ratio > 3.0, "{:?}", gain("unsafe"));
        let sep = |m: &str| {
            t.tau
                .iter()
                .find(|r| r.model == m && r.metric == "l2" && r.group == "unsafe")
                .expect("τ")
                .separation
        };
        assert!(
            sep("ssft") > 2.0,
            "planted clusters separate: {}",
            sep("ssft")
        );
        assert!(
            sep("it").abs() < 0.5,
            "the IT model does not: {}",
            sep("it")
        );
        let d = &t.direction[0];
        assert!(
            d.max_abs_cosine.observed > 0.95 && d.max_abs_cosine.ratio > 3.0,
            "{d:?}"
        );
        let counts: u64 = t.lipschitz_hist.iter().map(|h| h.count).sum();
        assert_eq!(counts, 4);
        assert_eq!(t.lipschitz_summary.len(), 4, "two models × two groups");
        let alphas: Vec<f64> = t.interpolation.iter().map(|r| r.alpha).collect();
        assert_eq!(alphas, [0.0, 1.0], "one row per α, in α order");
        let (a0, a1) = (&t.interpolation[0], &t.interpolation[1]);
        assert_eq!(a0.model, "ssft");
        assert!((a0.tau_separation - sep("it")).abs() < 1e-12, "{a0:?}");
        assert!((a1.tau_separation - sep("ssft")).abs() < 1e-12, "{a1:?}");
        assert_eq!((a0.refusal, a0.instruct, a1.refusal), (0.1, 0.9, 0.8));
        assert!(a0.refusal_b_only.is_nan(), "no b_only cell: NaN, not 0");
        let no_behaviour = Inputs {
            interpolation_behaviour: &behaviour[..2],
            ..inputs
        };
        let err = analyse(&no_behaviour, &cfg).expect_err("ssft@1 has no behaviour");
        assert!(
            err.to_string().contains("ssft@1") && err.to_string().contains("make probe"),
            "{err}"
        );
    }

    #[test]
    fn seeds_combine_to_mean_and_a_student_t_interval() {
        let lip = |model: &str, median: f64| LipschitzSummary {
            model: model.into(),
            group: "unsafe".into(),
            n: 10,
            mean: median,
            median,
            q05: 0.0,
            q95: 1.0,
        };
        let seed = |median: f64, extra: bool| Tables {
            lipschitz_summary: std::iter::once(lip("it", median))
                .chain(extra.then(|| lip("dpo-medium", 7.0)))
                .collect(),
            ..Tables::default()
        };
        let rows = combine_seeds(&[seed(1.0, true), seed(2.0, false), seed(6.0, false)])
            .expect("combined");
        let get = |model: &str, q: &str| {
            rows.iter()
                .find(|r| r.model == model && r.quantity == q)
                .expect("row")
        };
        let m = get("it", "median");
        assert_eq!(
            (m.table.as_str(), m.key.as_str(), m.n_seeds),
            ("lipschitz_summary", "group=unsafe", 3)
        );
        assert!((m.mean - 3.0).abs() < 1e-12);
        // sd = √((4 + 1 + 9) / 2) = √7; t(0.975, 2) = 4.302653 (tables); half = t·sd/√3.
        assert!((m.sd - 7f64.sqrt()).abs() < 1e-12, "{m:?}");
        let half = 4.302_652_729_911 * 7f64.sqrt() / 3f64.sqrt();
        assert!(
            (m.ci95_hi - 3.0 - half).abs() < 1e-6 && (3.0 - m.ci95_lo - half).abs() < 1e-6,
            "{m:?}"
        );
        let one = get("dpo-medium", "median");
        assert_eq!((one.n_seeds, one.mean), (1, 7.0));
        assert!(
            one.sd.is_nan() && one.ci95_lo.is_nan(),
            "one seed has no interval: {one:?}"
        );
    }

    fn behaviour_row(model: &str, set: &str, metric: Metric, value: f64) -> BehaviourRow {
        BehaviourRow {
            model: model.into(),
            method: "ssft".into(),
            lr_label: String::new(),
            set: set.into(),
            subset: Subset::All,
            metric,
            decoding: crate::evaluation::Decoding::Greedy,
            score: crate::evaluation::Score::ExactMatch,
            value,
            n: 10,
        }
    }

    #[test]
    fn frames_follow_their_declared_columns() {
        let row = GainRow {
            model: "ssft-medium".into(),
            layer: 2,
            set: "std".into(),
            group: "unsafe".into(),
            n: 5,
            sd: 0.5,
            mean_gain: Control {
                observed: 2.0,
                chance_mean: 0.0,
                chance_sd: 0.1,
                ratio: f64::INFINITY,
                z: 20.0,
            },
        };
        let df = frame(&[row]).expect("frame");
        let names: Vec<String> = df
            .get_column_names()
            .iter()
            .map(|s| s.to_string())
            .collect();
        let want: Vec<&str> = GainRow::COLUMNS.iter().map(|c| c.0).collect();
        assert_eq!(names, want);
        assert!(
            df.column("ratio")
                .expect("col")
                .f64()
                .expect("f64")
                .get(0)
                .expect("value")
                .is_nan(),
            "∞ is stored as undefined"
        );
        assert!(
            has_control::<GainRow>()
                && has_control::<ColumnSummary>()
                && has_control::<DirectionRow>()
        );
        let back: Vec<GainRow> = rows_of(&df).expect("rows");
        assert!(
            back[0].mean_gain.ratio.is_nan() && back[0].mean_gain.observed == 2.0 && back[0].n == 5
        );
        let empty = frame::<TauRow>(&[]).expect("empty frame");
        assert_eq!(empty.width(), TauRow::COLUMNS.len());
        assert_eq!(empty.height(), 0);
    }
}
