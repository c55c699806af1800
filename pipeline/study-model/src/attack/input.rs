//! The attacked input: the clean row's embeddings cut around δ and reassembled with it, inserted
//! or added in place.

use candle_core::{Result, Tensor};
use study::grammar::layout::NUM_OPS;
use study::grammar::vocab::{EOT, STOP};

#[cfg(doc)]
use super::AttackOutcome;
use super::{AttackRow, AttackSpec, Placement};
use crate::gpt::Gpt;

/// The input embeddings (1, T, d) the attack feeds the model for `row` and a δ of
/// [`AttackOutcome::delta`]'s layout: `[prompt, δ, EOT, first output]` when inserting,
/// `[prompt + δ at the perturbed positions, EOT, first output]` when perturbing (then T and
/// every position equal the clean row's `2L + 7`). Positions are added inside the model
/// ([`Gpt::forward_embeds`]); forward this to read the attacked activations (§5.4).
pub fn adversarial_input(
    model: &Gpt,
    row: &AttackRow<'_>,
    spec: &AttackSpec,
    placement: Placement,
    delta: &[f32],
) -> Result<Tensor> {
    let l = row.text_len;
    let n = placement.delta_len(spec, l);
    let d = model.config().n_embd;
    if delta.len() != n * d {
        candle_core::bail!(
            "δ has {} values, this placement needs {n} × {d} for L = {l}",
            delta.len()
        );
    }
    let (prompt, rest, _) = clean_parts(model, &[row], l)?;
    let delta = Tensor::from_vec(delta.to_vec(), (1, n, d), model.device())?;
    assemble(&prompt, &delta, &rest, placement, l)
}

/// Clean embeddings of the prompt (B, L+6, d) and of EOT plus the teacher-forced first output
/// (B, L+1, d), and the targets (B, L+1): the first output and its stop.
pub(super) fn clean_parts(
    model: &Gpt,
    rows: &[&AttackRow<'_>],
    l: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let dev = model.device();
    let b = rows.len();
    let prompt_len = l + 2 + NUM_OPS; // BOS, 4 operators, SOT, L text tokens
    let mut prompt_ids = Vec::with_capacity(b * prompt_len);
    let mut rest_ids = Vec::with_capacity(b * (l + 1));
    let mut targets = Vec::with_capacity(b * (l + 1));
    for r in rows {
        let row: Vec<u32> = r.row.iter().map(|&t| u32::from(t)).collect();
        prompt_ids.extend_from_slice(&row[..prompt_len]);
        rest_ids.push(u32::from(EOT));
        rest_ids.extend_from_slice(&row[prompt_len + 1..prompt_len + 1 + l]);
        targets.extend_from_slice(&row[prompt_len + 1..prompt_len + 2 + l]);
    }
    debug_assert!(
        targets
            .iter()
            .skip(l)
            .step_by(l + 1)
            .all(|&t| t == u32::from(STOP))
    );
    let prompt = model
        .embed(&Tensor::from_vec(prompt_ids, (b, prompt_len), dev)?)?
        .detach();
    let rest = model
        .embed(&Tensor::from_vec(rest_ids, (b, l + 1), dev)?)?
        .detach();
    let targets = Tensor::from_vec(targets, (b, l + 1), dev)?;
    Ok((prompt, rest, targets))
}

/// The attacked input from the clean parts and δ (B, n, d).
pub(super) fn assemble(
    prompt: &Tensor,
    delta: &Tensor,
    rest: &Tensor,
    placement: Placement,
    l: usize,
) -> Result<Tensor> {
    match placement {
        Placement::Insert => Tensor::cat(&[prompt, delta, rest], 1),
        Placement::Perturb(p) => {
            let r = p.range(l);
            let prompt_len = prompt.dim(1)?;
            let mut parts = Vec::with_capacity(4);
            if r.start > 0 {
                parts.push(prompt.narrow(1, 0, r.start)?);
            }
            parts.push(prompt.narrow(1, r.start, r.len())?.add(delta)?);
            if r.end < prompt_len {
                parts.push(prompt.narrow(1, r.end, prompt_len - r.end)?);
            }
            parts.push(rest.clone());
            Tensor::cat(&parts, 1)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::attack::fixtures::*;
    use crate::attack::{AttackIterate, AttackMode, attack, attack_placed};
    use study::grammar::vocab::Token;

    /// [`attack`] is the insertion, and its attacked input is `[prompt, δ, EOT, output]`.
    #[test]
    fn insertion_is_the_default_and_its_input_is_prompt_delta_eot() {
        let m = model();
        let rows: Vec<Vec<Token>> = vec![row(4, 1), row(5, 2)];
        let ar = attack_rows(&rows);
        let spec = AttackSpec {
            n_soft: 3,
            steps: 5,
            factor: 1.0,
            mode: AttackMode::Intended,
            seed: 3,
            iterate: AttackIterate::Last,
        };
        let a = attack(&m, &ar, &spec).unwrap();
        let b = attack_placed(&m, &ar, &spec, Placement::Insert).unwrap();
        for (r, (a, b)) in ar.iter().zip(a.iter().zip(&b)) {
            assert_eq!(bits(&a.delta), bits(&b.delta));
            assert_eq!(a.final_loss.to_bits(), b.final_loss.to_bits());
            let l = r.text_len;
            let x = adversarial_input(&m, r, &spec, Placement::Insert, &a.delta).unwrap();
            assert_eq!(x.dims(), &[1, 2 * l + 10, 16]);
            let xv: Vec<Vec<f32>> = x.squeeze(0).unwrap().to_vec2().unwrap();
            let clean = clean_embeddings(&m, r);
            for p in 0..l + 6 {
                assert_eq!(bits(&xv[p]), bits(&clean[p]));
            }
            for (k, v) in a.delta.chunks(16).enumerate() {
                assert_eq!(bits(&xv[l + 6 + k]), bits(v));
            }
            for p in l + 6..2 * l + 7 {
                assert_eq!(bits(&xv[p + 3]), bits(&clean[p]), "shifted by n = 3");
            }
            let eot = Placement::Insert.eot_position(&spec, l);
            assert_eq!(eot, l + 9);
            let (loss, _, _) = readout(&m, r, &x, eot);
            assert!((loss - a.final_loss).abs() <= 1e-4 * (1.0 + loss.abs()));
        }
    }
}
