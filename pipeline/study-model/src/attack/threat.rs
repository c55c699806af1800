//! The threat model and the budget: [`AttackMode`], [`AttackIterate`], where δ goes
//! ([`Placement`], [`PerturbPositions`]), the settings ([`AttackSpec`]) and each row's ε.

use std::ops::Range;

use candle_core::{D, Result, Tensor};
use study::config::evaluate::{AttackConfig, PerturbPositionsConfig};
use study::grammar::layout::Spans;

#[cfg(doc)]
use super::AttackOutcome;
use super::AttackRow;
use crate::gpt::Gpt;

/// Which threat model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttackMode {
    /// Per-token L2 ball, separate soft-token and step counts (default).
    Intended,
    /// The official code's behaviour: per-coordinate clamp, soft tokens = steps.
    Literal,
}

/// Which of the optimisation's iterates each row reports; orthogonal to the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttackIterate {
    /// δ after the last step (the official code).
    #[default]
    Last,
    /// The best of the T + 1 iterates: successful before failed, then lowest targeted loss
    /// (ties: the earliest).
    Best,
}

/// Where the attack's free vectors go; orthogonal to [`AttackMode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Placement {
    /// The paper's attack: [`AttackSpec::soft_tokens`] soft tokens inserted between the text
    /// and EOT (EOT and the outputs shift right by that many positions).
    #[default]
    Insert,
    /// Additive perturbations of the existing prompt embeddings at the given positions; no
    /// token is added and no position moves. [`AttackSpec::n_soft`] is not used.
    Perturb(PerturbPositions),
}

/// Which existing prompt positions [`Placement::Perturb`] perturbs (full coordinates of
/// study::grammar::layout: BOS 0, operators 1–4, SOT 5, text 6…L+5; EOT L+6 and the outputs
/// are never perturbed). Each set is one contiguous range, see [`PerturbPositions::range`].
///
/// The default, [`PerturbPositions::Prefix`], perturbs the instruction side of the prompt
/// (BOS, the four operator slots, SOT) and leaves the operand text alone. The target is the
/// operators' bijection *of that text*, so the text's embeddings stay exactly the clean ones:
/// the attack cannot win by rewriting the operand or its branch, only by moving how the
/// instruction is represented, which is where an inserted soft token acts too (it sits in the
/// prompt, outside the operand). It also gives every row the same six vectors whatever L, like
/// the insertion's fixed `n`, so per-row δ stack into one `(rows, 6, d)` tensor. Six vectors of
/// norm ≤ ε each is more room than the paper's two inserted ones: compare budgets within a
/// placement, not across placements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PerturbPositions {
    /// BOS, the four operator slots and SOT: positions `0..6` (default).
    #[default]
    Prefix,
    /// The four operator slots only: positions `1..5`.
    Operators,
    /// The whole prompt, text included: positions `0..L+6` (`L + 6` vectors, so rows of
    /// different L get δ of different lengths).
    AllPrompt,
}

impl PerturbPositions {
    /// The perturbed positions of a row with text length `text_len` (full coordinates).
    pub fn range(self, text_len: usize) -> Range<usize> {
        let s = Spans::new(text_len);
        match self {
            PerturbPositions::Prefix => 0..s.text().start,
            PerturbPositions::Operators => s.ops(),
            PerturbPositions::AllPrompt => 0..s.text().end,
        }
    }
}

/// Attack settings.
#[derive(Debug, Clone, Copy)]
pub struct AttackSpec {
    /// Soft tokens (Intended; Literal uses `steps`).
    pub n_soft: usize,
    /// Optimisation steps T.
    pub steps: usize,
    /// Budget as a multiple of the mean token-embedding norm.
    pub factor: f64,
    /// Threat model.
    pub mode: AttackMode,
    /// Seed of δ's initialisation.
    pub seed: u64,
    /// Which iterate is reported.
    pub iterate: AttackIterate,
}

impl AttackSpec {
    /// The spec of evaluate.yaml's `attack` at budget `factor`.
    pub fn from_config(a: &AttackConfig, factor: f64) -> Self {
        Self {
            n_soft: a.n_soft,
            steps: a.steps,
            factor,
            mode: match a.mode {
                study::config::evaluate::AttackModeConfig::Intended => AttackMode::Intended,
                study::config::evaluate::AttackModeConfig::Literal => AttackMode::Literal,
            },
            seed: a.seed,
            iterate: match a.iterate {
                study::config::evaluate::AttackIterateConfig::Last => AttackIterate::Last,
                study::config::evaluate::AttackIterateConfig::Best => AttackIterate::Best,
            },
        }
    }

    /// The number of soft tokens inserted under [`Placement::Insert`].
    pub fn soft_tokens(&self) -> usize {
        match self.mode {
            AttackMode::Intended => self.n_soft,
            AttackMode::Literal => self.steps,
        }
    }
}

impl Placement {
    /// The number of vectors in δ (rows of [`AttackOutcome::delta`]) for a row with text length
    /// `text_len`: the soft tokens inserted, or the positions perturbed.
    pub fn delta_len(self, spec: &AttackSpec, text_len: usize) -> usize {
        match self {
            Placement::Insert => spec.soft_tokens(),
            Placement::Perturb(p) => p.range(text_len).len(),
        }
    }

    /// Positions added to the sequence (the soft tokens inserted; 0 when perturbing).
    pub fn inserted(self, spec: &AttackSpec) -> usize {
        match self {
            Placement::Insert => spec.soft_tokens(),
            Placement::Perturb(_) => 0,
        }
    }

    /// The placement an evaluate config's `attack` section asks for.
    pub fn from_config(a: &AttackConfig) -> Self {
        match a.perturbed() {
            None => Placement::Insert,
            Some(PerturbPositionsConfig::Prefix) => Placement::Perturb(PerturbPositions::Prefix),
            Some(PerturbPositionsConfig::Operators) => {
                Placement::Perturb(PerturbPositions::Operators)
            }
            Some(PerturbPositionsConfig::AllPrompt) => {
                Placement::Perturb(PerturbPositions::AllPrompt)
            }
        }
    }

    /// The position of EOT in the attacked input (it predicts the first output letter):
    /// `L + 6 + n` when inserting, `L + 6` (as in the clean row) when perturbing.
    pub fn eot_position(self, spec: &AttackSpec, text_len: usize) -> usize {
        Spans::new(text_len).eot() + self.inserted(spec)
    }
}

/// The budget ε of each row: `spec.factor` × the mean token-embedding norm of the row's prompt
/// (Intended) or of its whole padded row (Literal).
pub(super) fn budgets(
    model: &Gpt,
    rows: &[&AttackRow<'_>],
    spec: &AttackSpec,
    prompt_len: usize,
) -> Result<Vec<f64>> {
    let mut eps = Vec::with_capacity(rows.len());
    for r in rows {
        let row: Vec<u32> = r.row.iter().map(|&t| u32::from(t)).collect();
        let norms = match spec.mode {
            // The non-pad prompt tokens.
            AttackMode::Intended => embedding_norms(model, &row[..prompt_len])?,
            // The whole padded input row, as the official `get_norm`.
            AttackMode::Literal => embedding_norms(model, &row[..row.len() - 1])?,
        };
        eps.push(spec.factor * norms.iter().sum::<f64>() / norms.len() as f64);
    }
    Ok(eps)
}

/// Token embedding norms of `ids` under the model.
fn embedding_norms(model: &Gpt, ids: &[u32]) -> Result<Vec<f64>> {
    let dev = model.device();
    let e = model.embed(&Tensor::from_vec(ids.to_vec(), (1, ids.len()), dev)?)?;
    Ok(e.sqr()?
        .sum(D::Minus1)?
        .sqrt()?
        .flatten_all()?
        .to_vec1::<f32>()?
        .into_iter()
        .map(f64::from)
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn perturbed_positions_are_the_documented_ranges() {
        assert_eq!(Placement::default(), Placement::Insert);
        assert_eq!(PerturbPositions::default(), PerturbPositions::Prefix);
        assert_eq!(PerturbPositions::Prefix.range(5), 0..6);
        assert_eq!(PerturbPositions::Operators.range(5), 1..5);
        assert_eq!(PerturbPositions::AllPrompt.range(5), 0..11);
        let spec = AttackSpec {
            n_soft: 2,
            steps: 10,
            factor: 1.0,
            mode: AttackMode::Intended,
            seed: 0,
            iterate: AttackIterate::Last,
        };
        let literal = AttackSpec {
            mode: AttackMode::Literal,
            ..spec
        };
        let p = Placement::Perturb(PerturbPositions::Prefix);
        assert_eq!((p.delta_len(&spec, 5), p.delta_len(&literal, 9)), (6, 6));
        assert_eq!(p.eot_position(&literal, 5), 11);
        let all = Placement::Perturb(PerturbPositions::AllPrompt);
        assert_eq!(all.delta_len(&spec, 9), 15);
        assert_eq!(Placement::Insert.delta_len(&spec, 5), 2);
        assert_eq!(Placement::Insert.delta_len(&literal, 5), 10);
        assert_eq!(Placement::Insert.eot_position(&spec, 5), 13);
    }

    #[test]
    fn placement_follows_the_evaluate_config() {
        use study::config::{EvaluateConfig, from_yaml};
        let base = "rows: 8\nattack:\n  set: std_unsafe\n  rows: 4\n  n_soft: 2\n  steps: 10\n  budget_factors: [1.0]\n  default_factor: 1.0\n  mode: intended\n";
        for (extra, want) in [
            ("", Placement::Insert),
            ("  placement: insert\n", Placement::Insert),
            (
                "  placement: perturb\n",
                Placement::Perturb(PerturbPositions::Prefix),
            ),
            (
                "  placement: perturb\n  perturb_positions: operators\n",
                Placement::Perturb(PerturbPositions::Operators),
            ),
            (
                "  placement: perturb\n  perturb_positions: all_prompt\n",
                Placement::Perturb(PerturbPositions::AllPrompt),
            ),
        ] {
            let c: EvaluateConfig = from_yaml(
                &format!("{base}{extra}"),
                std::path::Path::new("e.yaml"),
                &[],
            )
            .unwrap();
            assert_eq!(Placement::from_config(&c.attack), want, "{extra}");
        }
    }
}
