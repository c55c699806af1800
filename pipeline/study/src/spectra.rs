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
mod seeds;
pub mod stage;

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
            "ssft-medium".to_owned(),
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
            (
                "ssft-medium".to_owned(),
                table("ssft-medium", &p.safe, &p.unsafe_acts),
            ),
        ]);
        let lipschitz = vec![
            lip("it", Group::Safe, 1.0),
            lip("it", Group::Unsafe, 2.0),
            lip("ssft-medium", Group::Unsafe, 0.5),
            lip("ssft-medium", Group::Safe, 1.5),
        ];
        let sets = vec!["std_safe".to_owned(), "std_unsafe".to_owned()];
        // α = 0 is the IT model's activations, α = 1 the fine-tuned model's.
        let interpolation = BTreeMap::from([
            (
                "ssft-medium@1".to_owned(),
                table("ssft-medium@1", &p.safe, &p.unsafe_acts),
            ),
            (
                "ssft-medium@0".to_owned(),
                table("ssft-medium@0", &p.safe, &it_unsafe),
            ),
        ]);
        let behaviour: Vec<BehaviourRow> =
            [("ssft-medium@0", 0.1, 0.9), ("ssft-medium@1", 0.8, 0.85)]
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
            sep("ssft-medium") > 2.0,
            "planted clusters separate: {}",
            sep("ssft-medium")
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
        assert_eq!(a0.model, "ssft-medium");
        assert!((a0.tau_separation - sep("it")).abs() < 1e-12, "{a0:?}");
        assert!(
            (a1.tau_separation - sep("ssft-medium")).abs() < 1e-12,
            "{a1:?}"
        );
        assert_eq!((a0.refusal, a0.instruct, a1.refusal), (0.1, 0.9, 0.8));
        assert!(a0.refusal_b_only.is_nan(), "no b_only cell: NaN, not 0");
        let no_behaviour = Inputs {
            interpolation_behaviour: &behaviour[..2],
            ..inputs
        };
        let err = analyse(&no_behaviour, &cfg).expect_err("ssft-medium@1 has no behaviour");
        assert!(
            err.to_string().contains("ssft-medium@1") && err.to_string().contains("make probe"),
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
            model: model.parse().expect("model id"),
            set: set.parse().expect("evaluation set"),
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
