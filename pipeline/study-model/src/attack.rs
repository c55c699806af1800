//! The adversarial soft-token attack (reference/analysis_spec.md §5): free embeddings are
//! optimised, by normalised-gradient steps under a per-vector budget, to make the model produce
//! the instruction-following (unsafe) first output instead of refusing.
//!
//! Two threat models ([`AttackMode`]):
//! - [`AttackMode::Intended`] (default, §5.3): a true per-vector L2 ball `‖δ_p‖ ≤ ε`, with
//!   ε = factor × the mean token-embedding norm of the row's prompt; `n` independent of the step
//!   count; each vector's gradient normalised on its own; targeted cross-entropy on the first
//!   output and its stop token.
//! - [`AttackMode::Literal`] (§5.2, for comparison): the official per-coordinate clamp
//!   `|δ_pd| ≤ ε` in place of the L2 projection, the soft-token count tied to the step count, and
//!   ε averaged over the whole padded row. (The official off-by-one normalisation and the
//!   fixed placeholder blocks inside the output are not reproduced.)
//!
//! Two placements ([`Placement`]), orthogonal to the threat model:
//! - [`Placement::Insert`] (default; the paper's attack, §5.2/§5.3): `n` soft tokens are
//!   *inserted* between the operand text and EOT, so EOT and the outputs move `n` positions
//!   right. [`attack`] always uses it.
//! - [`Placement::Perturb`] (not in the paper): an additive δ_p on *existing* prompt embeddings
//!   at the positions [`PerturbPositions`] names; the sequence length and every position stay
//!   as in the clean row, EOT and the outputs included. It exists because a model trained on
//!   fixed-length spans (the cpu preset) has never seen EOT or outputs at shifted positions: the
//!   insertion then measures position extrapolation rather than the safety mechanism (targeted
//!   loss 17–25 nats/token, 0% success in the cpu preset), whereas perturbing in place keeps the
//!   model on its training distribution and leaves the budget as the only knob. Budget,
//!   steps, initialisation, objective and success rule are the insertion's, per perturbed
//!   position.
//!
//! Success: the greedy continuation from the attacked input equals the first output and its
//! stop token exactly (analysis_spec §5.3, aligned), decided from one teacher-forced pass (the
//! two agree exactly for a causal model). Step size η = 2ε/T, init δ ~ N(0, 0.01²), seeded.
//!
//! Which iterate is reported ([`AttackIterate`]): the last step's δ (the official code's) or the
//! best of the T + 1 iterates (the initial δ and each step's; a success before a failure, then
//! the lowest targeted loss). With T steps of 2ε/T the path is twice the ball's radius, so the
//! last iterate can overshoot a success it passed through; the best iterate cannot lose one.

mod best;
mod input;
mod optimise;
mod threat;

#[cfg(test)]
mod fixtures;
#[cfg(test)]
mod tests;

pub use input::adversarial_input;
pub use threat::{AttackIterate, AttackMode, AttackSpec, PerturbPositions, Placement};

use candle_core::Result;
use study::grammar::vocab::Token;

use crate::gpt::Gpt;
use optimise::attack_group;

/// One attacked input: the unsafe instruction's full row with its instruction-following
/// outputs (`x_unsafe_target`), first output in the first pair (no `apply_second`).
#[derive(Debug, Clone)]
pub struct AttackRow<'a> {
    /// The full row (full coordinates).
    pub row: &'a [Token],
    /// Text length L.
    pub text_len: usize,
}

/// The outcome for one row.
#[derive(Debug, Clone)]
pub struct AttackOutcome {
    /// Greedy first output (and stop) equals the instruction-following one.
    pub success: bool,
    /// Targeted loss of the reported iterate (mean over the first output and its stop).
    pub final_loss: f64,
    /// The reported iterate: 0 is the initial δ, `k` the δ after step `k` (T under
    /// [`AttackIterate::Last`]).
    pub iterate: usize,
    /// Teacher-forced token accuracy on the first output and its stop, after the attack.
    pub token_acc: f64,
    /// Whether the first greedy output token is the refusal letter `2a`.
    pub null_first: bool,
    /// The budget ε.
    pub eps: f64,
    /// Largest L2 norm of the vectors of δ.
    pub delta_norm_max: f64,
    /// Mean L2 norm of the vectors of δ.
    pub delta_norm_mean: f64,
    /// δ, `n × d` row-major with `n` = [`Placement::delta_len`] (kept for the probe stage):
    /// the inserted soft tokens, or the perturbations of the perturbed positions in order.
    pub delta: Vec<f32>,
}

/// Attack every row with the paper's placement ([`Placement::Insert`]); rows may differ in L,
/// rows of equal L run as one batch.
pub fn attack(
    model: &Gpt,
    rows: &[AttackRow<'_>],
    spec: &AttackSpec,
) -> Result<Vec<AttackOutcome>> {
    attack_placed(model, rows, spec, Placement::Insert)
}

/// Attack every row with the given placement (rows of equal L run as one batch).
pub fn attack_placed(
    model: &Gpt,
    rows: &[AttackRow<'_>],
    spec: &AttackSpec,
    placement: Placement,
) -> Result<Vec<AttackOutcome>> {
    let mut out: Vec<Option<AttackOutcome>> = vec![None; rows.len()];
    let mut lens: Vec<usize> = rows.iter().map(|r| r.text_len).collect();
    lens.sort_unstable();
    lens.dedup();
    for l in lens {
        let idx: Vec<usize> = (0..rows.len()).filter(|&i| rows[i].text_len == l).collect();
        let group: Vec<&AttackRow<'_>> = idx.iter().map(|&i| &rows[i]).collect();
        for (k, o) in attack_group(model, &group, l, spec, placement)?
            .into_iter()
            .enumerate()
        {
            out[idx[k]] = Some(o);
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every row attacked"))
        .collect())
}
