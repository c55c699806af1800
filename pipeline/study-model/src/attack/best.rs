//! Which iterate each row reports ([`AttackIterate`]): the kept iterate, replaced by a better
//! one as the optimisation reads them, and the outcome it gives.

use candle_core::{D, DType, Result, Tensor};
use study::grammar::vocab::NULL_LETTER;

#[cfg(doc)]
use super::AttackIterate;
use super::AttackOutcome;

/// One row's kept iterate of [`attack_group`](super::optimise::attack_group).
#[derive(Debug, Clone)]
struct Iterate {
    step: usize,
    success: bool,
    loss: f32,
    /// Teacher-forced argmax over the first output and its stop.
    greedy: Vec<u32>,
    /// δ of the row, `n` vectors of `d`.
    delta: Vec<Vec<f32>>,
}

/// The kept iterate of every row of a group, and the targets (first output and stop) they are
/// judged against.
pub(super) struct Best {
    best: Vec<Option<Iterate>>,
    target_rows: Vec<Vec<u32>>,
}

impl Best {
    /// Nothing kept yet for `b` rows with targets `target_rows`.
    pub(super) fn new(b: usize, target_rows: Vec<Vec<u32>>) -> Self {
        Self {
            best: vec![None; b],
            target_rows,
        }
    }

    /// Reads iterate `k` (δ's current value, whose loss and logits are given) into `best`.
    pub(super) fn read(
        &mut self,
        k: usize,
        nll: &Tensor,
        out: &Tensor,
        delta: &Tensor,
    ) -> Result<()> {
        let (best, target_rows) = (&mut self.best, &self.target_rows);
        let b = best.len();
        let loss: Vec<f32> = nll.to_vec1()?;
        let tf = out.argmax(D::Minus1)?.to_vec2::<u32>()?;
        let mut delta_rows: Option<Vec<Vec<Vec<f32>>>> = None;
        for i in 0..b {
            let candidate = (tf[i] == target_rows[i], loss[i]);
            let better = match &best[i] {
                None => true,
                Some(kept) => match (candidate.0, kept.success) {
                    (true, false) => true,
                    (false, true) => false,
                    _ => candidate.1 < kept.loss,
                },
            };
            if better {
                if delta_rows.is_none() {
                    delta_rows = Some(delta.to_dtype(DType::F32)?.to_vec3()?);
                }
                let rows = delta_rows.as_mut().expect("read just above");
                best[i] = Some(Iterate {
                    step: k,
                    success: candidate.0,
                    loss: candidate.1,
                    greedy: tf[i].clone(),
                    delta: std::mem::take(&mut rows[i]),
                });
            }
        }
        Ok(())
    }

    /// The outcome of every row's kept iterate: `eps` the rows' budgets, `l` their text length.
    pub(super) fn outcomes(self, eps: &[f64], l: usize) -> Vec<AttackOutcome> {
        self.best
            .into_iter()
            .zip(eps)
            .zip(&self.target_rows)
            .map(|((kept, &eps), target)| {
                let kept = kept.expect("the last iterate is always read");
                let norms: Vec<f64> = kept
                    .delta
                    .iter()
                    .map(|v| f64::from(v.iter().map(|x| x * x).sum::<f32>().sqrt()))
                    .collect();
                let correct = kept
                    .greedy
                    .iter()
                    .zip(target)
                    .filter(|(a, b)| a == b)
                    .count();
                AttackOutcome {
                    success: kept.success,
                    final_loss: f64::from(kept.loss),
                    iterate: kept.step,
                    token_acc: correct as f64 / (l + 1) as f64,
                    null_first: kept.greedy[0] == u32::from(NULL_LETTER),
                    eps,
                    delta_norm_max: norms.iter().copied().fold(0.0, f64::max),
                    delta_norm_mean: norms.iter().sum::<f64>() / norms.len().max(1) as f64,
                    delta: kept.delta.concat(),
                }
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::attack::fixtures::*;
    use crate::attack::*;

    /// The best iterate is one the optimisation passed through (same trajectory as `Last`:
    /// its δ re-evaluated gives its loss and success), stays inside the budget, never reports
    /// a failure where the last iterate succeeded nor a higher loss at equal success, and, with
    /// steps larger than the ball (factor 4: 10 steps of 0.8 ε), is sometimes an earlier one.
    #[test]
    fn best_iterate_is_a_visited_one_and_never_worse_than_the_last() {
        let m = sharp(25.0);
        let rows: Vec<Vec<Token>> = vec![row(4, 1), row(5, 2), row(4, 9), row(6, 4), row(3, 5)];
        let ar = attack_rows(&rows);
        let mut earlier = 0;
        for placement in [
            Placement::Insert,
            Placement::Perturb(PerturbPositions::Prefix),
        ] {
            for factor in [1.0, 4.0] {
                let last = AttackSpec {
                    n_soft: 2,
                    steps: 10,
                    factor,
                    mode: AttackMode::Intended,
                    seed: 3,
                    iterate: AttackIterate::Last,
                };
                let best = AttackSpec {
                    iterate: AttackIterate::Best,
                    ..last
                };
                let lo = attack_placed(&m, &ar, &last, placement).unwrap();
                let bo = attack_placed(&m, &ar, &best, placement).unwrap();
                for ((r, l), b) in ar.iter().zip(&lo).zip(&bo) {
                    let case = format!("{placement:?} ×{factor}");
                    assert_eq!(l.iterate, 10, "{case}");
                    assert!(b.iterate <= 10, "{case}");
                    assert!(b.success || !l.success, "{case}: best lost a success");
                    if b.success == l.success {
                        assert!(b.final_loss <= l.final_loss, "{case}");
                    }
                    if b.iterate == 10 {
                        assert_eq!(bits(&b.delta), bits(&l.delta), "{case}: same trajectory");
                    } else {
                        earlier += 1;
                    }
                    assert!(b.delta_norm_max <= b.eps * (1.0 + 1e-5), "{case}");
                    let x = adversarial_input(&m, r, &best, placement, &b.delta).unwrap();
                    let eot = placement.eot_position(&best, r.text_len);
                    let (loss, tf, target) = readout(&m, r, &x, eot);
                    assert!(
                        (loss - b.final_loss).abs() < 1e-4,
                        "{case}: {loss} vs {}",
                        b.final_loss
                    );
                    assert_eq!(tf == target, b.success, "{case}");
                }
            }
        }
        assert!(earlier > 0, "the best iterate was always the last one");
    }
}
