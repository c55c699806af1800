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

mod analyse;
mod io;
mod row_space;
mod seeds;
pub mod stage;
mod tau;

pub use analyse::{analyse, fig3_markdown};
pub use io::{Col, SPECTRA_SCHEMA_VERSION, TableRow, frame, read_table, rows_of, schema};
pub use seeds::{SeedRow, combine_seeds};

use std::collections::{BTreeMap, HashSet};

use polars::prelude::*;
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::probe::TAU_DUMP;
use crate::config::spectra::{SpectraConfig, TauReferences};
use crate::evaluation::{BehaviourRow, EvalSet, Metric, ModelId, Subset};
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
    /// [`ModelId::Interpolated`] name (may be empty).
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

#[cfg(test)]
mod tests;
