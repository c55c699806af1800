//! The optimisation: normalised-gradient steps on δ, projected back into the budget after each,
//! for a group of rows of equal text length.

use candle_core::{D, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use study::grammar::layout::NUM_OPS;

use super::best::Best;
use super::input::{assemble, clean_parts};
use super::threat::budgets;
use super::{AttackIterate, AttackMode, AttackOutcome, AttackRow, AttackSpec, Placement};
use crate::gpt::Gpt;

/// Attack a group of rows of text length `l`, one batch.
pub(super) fn attack_group(
    model: &Gpt,
    rows: &[&AttackRow<'_>],
    l: usize,
    spec: &AttackSpec,
    placement: Placement,
) -> Result<Vec<AttackOutcome>> {
    let dev = model.device().clone();
    let d = model.config().n_embd;
    let n = placement.delta_len(spec, l);
    let inserted = placement.inserted(spec);
    let b = rows.len();
    let prompt_len = l + 2 + NUM_OPS; // BOS, 4 operators, SOT, L text tokens
    let t_total = prompt_len + inserted + 1 + l;
    if t_total > model.config().block_size {
        match placement {
            Placement::Insert => candle_core::bail!(
                "{n} soft tokens do not fit: a row with L = {l} then needs {t_total} positions, the model has {}; lower attack.n_soft",
                model.config().block_size
            ),
            Placement::Perturb(_) => candle_core::bail!(
                "a row with L = {l} needs {t_total} positions, the model has {}",
                model.config().block_size
            ),
        }
    }
    let eps = budgets(model, rows, spec, prompt_len)?;
    // Token ids: prompt, then EOT and the teacher-forced first output (targets: output + stop).
    let (prompt, rest, targets) = clean_parts(model, rows, l)?;
    // δ ~ N(0, 0.01²), seeded.
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed ^ (l as u64).wrapping_mul(0x9e37_79b9));
    let normal = Normal::new(0.0f32, 0.01).expect("valid");
    let init: Vec<f32> = (0..b * n * d).map(|_| normal.sample(&mut rng)).collect();
    let delta = Var::from_tensor(&Tensor::from_vec(init, (b, n, d), &dev)?)?;
    let eps_t = Tensor::from_vec(
        eps.iter().map(|&e| e as f32).collect::<Vec<_>>(),
        (b, 1, 1),
        &dev,
    )?;
    let eta = (eps_t.clone() * (2.0 / spec.steps.max(1) as f64))?;
    let loss_of = |delta: &Tensor| -> Result<(Tensor, Tensor)> {
        let x = assemble(&prompt, delta, &rest, placement, l)?;
        let logits = model.forward_embeds(&x, None)?;
        let out = logits.narrow(1, prompt_len + inserted, l + 1)?;
        let logp = candle_nn::ops::log_softmax(&out, D::Minus1)?;
        let nll = logp
            .gather(&targets.unsqueeze(2)?, 2)?
            .squeeze(2)?
            .neg()?
            .mean(1)?; // (B,) per-row mean: rows' gradients are independent
        Ok((nll, out))
    };
    let mut best = Best::new(b, targets.to_vec2::<u32>()?);
    for k in 0..spec.steps {
        let (nll, out) = loss_of(delta.as_tensor())?;
        if spec.iterate == AttackIterate::Best {
            best.read(k, &nll, &out, delta.as_tensor())?;
        }
        let grads = nll.sum_all()?.backward()?;
        let g = grads
            .get(delta.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient for the soft tokens".into()))?;
        let g_norm = (g.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-12)?;
        let step = g.broadcast_div(&g_norm)?.broadcast_mul(&eta)?;
        let moved = (delta.as_tensor() - step)?;
        let projected = match spec.mode {
            AttackMode::Intended => {
                let norm = (moved.sqr()?.sum_keepdim(D::Minus1)?.sqrt()? + 1e-12)?;
                let scale = eps_t.broadcast_div(&norm)?.minimum(1.0)?;
                moved.broadcast_mul(&scale)?
            }
            AttackMode::Literal => {
                let hi = eps_t.broadcast_as(moved.shape())?;
                moved.minimum(&hi)?.maximum(&hi.neg()?)?
            }
        };
        delta.set(&projected.detach())?;
    }
    // The last iterate is always read: under `Last` it is the only one; under `Best` it competes.
    let (nll, out) = loss_of(delta.as_tensor())?;
    best.read(spec.steps, &nll, &out, delta.as_tensor())?;
    // Success is greedy decoding from the attacked input (ending in EOT) reproducing the L
    // letters and the stop.
    // Greedy output equals the target exactly when, teacher-forced on the target, every
    // position's argmax is the target token (by induction over the prefix; the model is causal),
    // so the teacher-forced argmax above decides it, and its first token is the greedy first.
    Ok(best.outcomes(&eps, l))
}
