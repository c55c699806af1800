//! The paper's reference numbers for Figs. 3–7, each tagged with its claim id from
//! reference/paper_claims.md (C3–C18). All numbers are read off figures (source S8, the repo's
//! `activation_space_analysis.png`, which the README labels Fig. 3) or taken from a secondary
//! summary (S11); read-off error is about ±10 % of the axis range. Claims the paper states
//! without a recoverable number are listed in [`CLAIMS`] as statements.
//!
//! Layers are 1-based, as the paper labels them (the official code counts from 0).

use crate::config::finetune::Method;

/// Safety fine-tuning learning rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lr {
    /// η_M = 1e-4 (`*_1em4`).
    Medium,
    /// η_S = 1e-5 (`*_1em5`).
    Small,
}

/// The model a reference number belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    /// The instruction-tuned (pretrained) synthetic model.
    It,
    /// A safety fine-tuned synthetic model.
    St(Method, Lr),
    /// Llama-2 7B base.
    Llama2Base,
    /// Llama-2 7B chat.
    Llama2Chat,
    /// Llama-3 8B base.
    Llama3Base,
    /// Llama-3 8B Instruct ("chat").
    Llama3Chat,
}

/// Test group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// Safe inputs (green in Fig. 3).
    Safe,
    /// Unsafe inputs (red in Fig. 3).
    Unsafe,
}

/// One mean-τ reading of Fig. 3 (τ_L2, positive = closer to the safe cluster).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TauReference {
    /// Claim id in reference/paper_claims.md.
    pub claim: &'static str,
    /// Model.
    pub model: Model,
    /// First and last layer (1-based, inclusive) the reading applies to.
    pub layers: (u8, u8),
    /// Group.
    pub group: Group,
    /// Lower end of the read-off value (equal to `high` for a point reading).
    pub low: f64,
    /// Upper end of the read-off value.
    pub high: f64,
}

impl TauReference {
    /// Midpoint of the read-off range.
    pub fn value(&self) -> f64 {
        (self.low + self.high) / 2.0
    }

    /// Whether `layer` (1-based) lies in the reading's layers.
    pub fn covers(&self, layer: u8) -> bool {
        (self.layers.0..=self.layers.1).contains(&layer)
    }
}

const fn tau(
    claim: &'static str,
    model: Model,
    layers: (u8, u8),
    group: Group,
    low: f64,
    high: f64,
) -> TauReference {
    TauReference {
        claim,
        model,
        layers,
        group,
        low,
        high,
    }
}

use Group::{Safe, Unsafe};
use Method::{Dpo, Ssft, Unlearn};
use Model::{It, Llama2Base, Llama2Chat, Llama3Base, Llama3Chat, St};

/// Fig. 3, mean τ_L2 per layer and group (S8). The Llama rows (Fig. 3 bottom) are as plotted:
/// the official Llama τ is a **sum** over 5 test triplets (reference/analysis_spec.md §9.4,
/// D18), so a per-prompt mean is about a fifth of these.
pub const FIG3_TAU: &[TauReference] = &[
    tau("C3", It, (1, 3), Safe, 0.0, 0.0),
    tau("C3", It, (1, 3), Unsafe, 0.0, 0.0),
    tau("C3", It, (4, 4), Safe, 1.4, 1.4),
    tau("C3", It, (4, 4), Unsafe, -0.75, -0.75),
    tau("C3", It, (6, 6), Safe, 0.55, 0.55),
    tau("C3", It, (6, 6), Unsafe, -0.1, -0.1),
    tau("C4", St(Unlearn, Lr::Medium), (1, 3), Safe, 0.0, 0.0),
    tau("C4", St(Unlearn, Lr::Medium), (1, 3), Unsafe, 0.0, 0.0),
    tau("C4", St(Unlearn, Lr::Medium), (5, 5), Safe, 18.0, 18.0),
    tau("C4", St(Unlearn, Lr::Medium), (5, 5), Unsafe, -14.0, -14.0),
    tau("C4", St(Unlearn, Lr::Medium), (6, 6), Safe, 53.0, 53.0),
    tau("C4", St(Unlearn, Lr::Medium), (6, 6), Unsafe, -43.0, -43.0),
    tau("C5", St(Dpo, Lr::Medium), (5, 5), Safe, 16.0, 16.0),
    tau("C5", St(Dpo, Lr::Medium), (5, 5), Unsafe, -11.0, -11.0),
    tau("C5", St(Dpo, Lr::Medium), (6, 6), Safe, 38.0, 38.0),
    tau("C5", St(Dpo, Lr::Medium), (6, 6), Unsafe, -25.0, -25.0),
    tau("C6", St(Ssft, Lr::Medium), (4, 4), Safe, 1.6, 1.6),
    tau("C6", St(Ssft, Lr::Medium), (4, 4), Unsafe, -0.9, -0.9),
    tau("C6", St(Ssft, Lr::Medium), (5, 5), Safe, 2.5, 2.5),
    tau("C6", St(Ssft, Lr::Medium), (5, 5), Unsafe, -3.0, -3.0),
    tau("C6", St(Ssft, Lr::Medium), (6, 6), Safe, 1.9, 1.9),
    tau("C6", St(Ssft, Lr::Medium), (6, 6), Unsafe, -0.9, -0.9),
    tau("C7", St(Dpo, Lr::Small), (5, 5), Safe, 7.0, 7.0),
    tau("C7", St(Dpo, Lr::Small), (5, 5), Unsafe, -2.2, -2.2),
    tau("C7", St(Dpo, Lr::Small), (6, 6), Safe, 10.5, 10.5),
    tau("C7", St(Dpo, Lr::Small), (6, 6), Unsafe, -2.0, -2.0),
    tau("C8", St(Ssft, Lr::Small), (5, 5), Safe, 1.6, 1.6),
    tau("C8", St(Ssft, Lr::Small), (5, 5), Unsafe, -0.7, -0.7),
    tau("C8", St(Ssft, Lr::Small), (6, 6), Safe, 1.35, 1.35),
    tau("C8", St(Ssft, Lr::Small), (6, 6), Unsafe, -0.3, -0.3),
    tau("C10", Llama2Base, (1, 32), Safe, -0.8, -0.8),
    tau("C10", Llama2Base, (1, 32), Unsafe, -1.75, -1.5),
    tau("C10", Llama2Chat, (15, 25), Safe, 2.2, 2.2),
    tau("C10", Llama2Chat, (20, 20), Unsafe, -4.8, -4.8),
    tau("C10", Llama2Chat, (32, 32), Safe, 1.7, 1.7),
    tau("C10", Llama2Chat, (32, 32), Unsafe, -3.9, -3.9),
    tau("C11", Llama3Base, (1, 32), Safe, -1.0, -1.0),
    tau("C11", Llama3Base, (1, 32), Unsafe, -1.0, -1.0),
    tau("C11", Llama3Chat, (14, 30), Safe, 1.0, 1.4),
    tau("C11", Llama3Chat, (14, 30), Unsafe, -2.6, -2.2),
    tau("C11", Llama3Chat, (32, 32), Unsafe, -1.9, -1.9),
];

impl Model {
    /// The paper's model behind one of our model names: `it`, or `<method>-<medium|small>`
    /// (the paper's η_M = 1e-4 and η_S = 1e-5 runs); `None` for other names.
    pub fn from_name(name: &str) -> Option<Self> {
        if name == "it" {
            return Some(Model::It);
        }
        let (method, lr) = name.split_once('-')?;
        let method = Method::ALL.into_iter().find(|m| m.as_str() == method)?;
        let lr = match lr {
            "medium" => Lr::Medium,
            "small" => Lr::Small,
            _ => return None,
        };
        Some(Model::St(method, lr))
    }
}

/// The Fig. 3 readings for a model, layer (1-based) and group.
pub fn fig3_tau(
    model: Model,
    layer: u8,
    group: Group,
) -> impl Iterator<Item = &'static TauReference> {
    FIG3_TAU
        .iter()
        .filter(move |r| r.model == model && r.group == group && r.covers(layer))
}

/// A single reference number outside Fig. 3.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScalarReference {
    /// Claim id.
    pub claim: &'static str,
    /// Figure or section.
    pub figure: &'static str,
    /// What the number is.
    pub description: &'static str,
    /// The number.
    pub value: f64,
    /// Source tag (reference/paper_claims.md §0).
    pub source: &'static str,
}

/// C13: σ1²/Σσ² of the low-rank safety update, "up to about 62 %" (secondary summary S11;
/// which matrix it refers to is to be verified in the PDF). Compare with
/// [`super::spectra::Spectrum::top_energy_share`].
pub const C13_TOP_ENERGY_SHARE: ScalarReference = ScalarReference {
    claim: "C13",
    figure: "Figs. 4–5, Sec. 4.2",
    description: "energy share of the top singular value of the safety update (upper end)",
    value: 0.62,
    source: "S11",
};

/// A claim of Figs. 3–7 stated without a recoverable number: the expected direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    /// Claim id.
    pub id: &'static str,
    /// Figure or section.
    pub figure: &'static str,
    /// The expected outcome, in this module's terms.
    pub statement: &'static str,
}

/// The qualitative claims of Figs. 3–7 (reference/paper_claims.md §3).
pub const CLAIMS: &[Claim] = &[
    Claim {
        id: "C9",
        figure: "Fig. 3",
        statement: "τ separation grows with method strength (Unlearning ≥ DPO ≫ SSFT), with \
                    learning rate (η_M > η_S) and with depth; only layers 4–6 separate",
    },
    Claim {
        id: "C12",
        figure: "Fig. 4",
        statement: "most top left singular vectors of ΔW (first MLP layer) lie in the null \
                    space of W_IT: column-space null projection near 1, above the random control",
    },
    Claim {
        id: "C13",
        figure: "Figs. 4–5",
        statement: "ΔW is low-rank and minimal: small effective/stable rank, top energy share up \
                    to about 0.62",
    },
    Claim {
        id: "C14",
        figure: "Fig. 5",
        statement: "‖ΔW a‖/‖a‖ and the row-space projections are much larger for unsafe than \
                    for safe activations",
    },
    Claim {
        id: "C15",
        figure: "Sec. 4.2",
        statement: "W_IT + αΔW moves behaviour smoothly from IT (α = 0) to ST (α = 1); α > 1 \
                    makes SSFT safer with almost no loss on safe inputs",
    },
    Claim {
        id: "C16",
        figure: "Fig. 6",
        statement: "safety fine-tuning lowers the input-gradient norm on unsafe samples and \
                    raises it on safe ones",
    },
    Claim {
        id: "C17",
        figure: "Fig. 7",
        statement: "jailbreak and adversarial activations have τ closer to the safe cluster, \
                    more so for stronger attacks",
    },
    Claim {
        id: "C18",
        figure: "Sec. 5",
        statement: "ΔW acts much less on jailbreak inputs than on plain unsafe inputs (smaller \
                    ‖ΔW a‖/‖a‖)",
    },
];

/// The claim with id `id`, if it is one of [`CLAIMS`].
pub fn claim(id: &str) -> Option<&'static Claim> {
    CLAIMS.iter().find(|c| c.id == id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim_number(id: &str) -> Option<u32> {
        id.strip_prefix('C')?.parse().ok()
    }

    #[test]
    fn every_reference_cites_a_claim_between_c3_and_c18() {
        let ids = FIG3_TAU
            .iter()
            .map(|r| r.claim)
            .chain(CLAIMS.iter().map(|c| c.id))
            .chain([C13_TOP_ENERGY_SHARE.claim]);
        for id in ids {
            assert!(matches!(claim_number(id), Some(3..=18)), "{id}");
        }
        assert!(
            FIG3_TAU
                .iter()
                .all(|r| r.low <= r.high && r.layers.0 <= r.layers.1)
        );
    }

    /// After safety fine-tuning, layer 6 puts safe rows at τ > 0 and unsafe rows at τ < 0 for
    /// every synthetic ST model with a reading, and Unlearning η_M separates more than SSFT.
    #[test]
    fn fig3_readings_have_the_paper_signs() {
        let gap = |m| {
            let s = fig3_tau(m, 6, Safe).map(TauReference::value).sum::<f64>();
            let u = fig3_tau(m, 6, Unsafe).map(TauReference::value).sum::<f64>();
            assert!(s > 0.0 && u < 0.0, "{m:?}");
            s - u
        };
        assert!(gap(St(Unlearn, Lr::Medium)) > gap(St(Dpo, Lr::Medium)));
        assert!(gap(St(Dpo, Lr::Medium)) > gap(St(Ssft, Lr::Medium)));
        assert!(gap(St(Dpo, Lr::Medium)) > gap(St(Dpo, Lr::Small)));
        assert_eq!(fig3_tau(It, 2, Safe).count(), 1);
        assert_eq!(claim("C12").map(|c| c.figure), Some("Fig. 4"));
        assert_eq!(
            Model::from_name("dpo-small"),
            Some(Model::St(Method::Dpo, Lr::Small))
        );
        assert_eq!(Model::from_name("it"), Some(Model::It));
        assert_eq!(Model::from_name("dpo-tiny"), None);
    }
}
