//! The three safety fine-tuning objectives (reference/training_spec.md §4–6), each an
//! [`Objective`] of the shared loop over a [`PairBatch`]:
//!
//! - [`Ssft`]: token-mean cross-entropy toward the chosen (preferred) completion;
//! - [`Dpo`]: DPO against the frozen IT model with asymmetric temperatures — the official
//!   sequence score is the masked NLL divided by the fixed context length T (B10), so
//!   β_chosen = w_chosen / T and β_rejected = w_rejected / T;
//! - [`Unlearn`]: descent on the chosen, weighted ascent on the rejected completion (same score).
//!
//! The scalar pieces ([`sequence_nll`], [`dpo_loss`], [`unlearn_loss`]) take tensors, so tests
//! pin them against hand-computed values without a model.

use candle_core::{D, DType, Device, Result, Tensor};
use study::finetune::PairExamples;
use study::grammar::vocab::PAD;

use crate::gpt::{Gpt, cross_entropy};
use crate::train::{Objective, TokenBatch};

/// A fine-tuning batch: the chosen and rejected sequences and the official score masks
/// (1 where a position counts, (B, T) f32).
#[derive(Debug, Clone)]
pub struct PairBatch {
    /// Preferred completions (SSFT trains on these alone).
    pub chosen: TokenBatch,
    /// Dispreferred completions.
    pub rejected: TokenBatch,
    /// Score mask of the chosen sequences.
    pub mask_chosen: Tensor,
    /// Score mask of the rejected sequences.
    pub mask_rejected: Tensor,
}

impl PairBatch {
    /// The tensors of `pairs` on `device`.
    pub fn new(pairs: &PairExamples, device: &Device) -> Result<Self> {
        let mask = |m: &[Vec<f32>]| -> Result<Tensor> {
            let t = m.first().map_or(0, Vec::len);
            Tensor::from_vec(m.concat(), (m.len(), t), device)
        };
        Ok(Self {
            chosen: TokenBatch::new(&pairs.chosen, device)?,
            rejected: TokenBatch::new(&pairs.rejected, device)?,
            mask_chosen: mask(&pairs.mask_chosen)?,
            mask_rejected: mask(&pairs.mask_rejected)?,
        })
    }
}

/// Per-sequence score of the official DPO/unlearning trainers: `Σ_t m_t · CE_t / T` for logits
/// (B, T, V), targets (B, T) and mask (B, T); positions whose target is pad never count (the
/// official `ignore_index`). Returns (B,): the sequence's negative log-likelihood over its
/// counted positions, divided by the fixed length T (not by the number counted).
pub fn sequence_nll(logits: &Tensor, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let (b, t, _) = logits.dims3()?;
    let keep = targets.ne(u32::from(PAD))?.to_dtype(DType::F32)?;
    let weight = (mask * keep)?;
    let safe = targets
        .ne(u32::from(PAD))?
        .where_cond(targets, &targets.zeros_like()?)?;
    let logp = candle_nn::ops::log_softmax(logits, D::Minus1)?;
    let picked = logp
        .gather(&safe.unsqueeze(2)?, 2)?
        .squeeze(2)?
        .reshape((b, t))?;
    (picked * weight)?.sum(1)?.neg()? / t as f64
}

/// `log σ(z)`, stable for any z: `−softplus(−z) = min(z, 0) − log(1 + e^{−|z|})`.
pub fn log_sigmoid(z: &Tensor) -> Result<Tensor> {
    let neg_part = z.minimum(0f32)?;
    let tail = (z.abs()?.neg()?.exp()? + 1.0)?.log()?;
    neg_part - tail
}

/// The official DPO loss from per-sequence scores (each (B,), scores are NLLs as returned by
/// [`sequence_nll`]; the reference's are constants):
/// `z = w_c·(ℓ_ref(c) − ℓ_θ(c)) − w_r·(ℓ_ref(r) − ℓ_θ(r))`, `L = −mean log σ(z)`.
pub fn dpo_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    ref_chosen: &Tensor,
    ref_rejected: &Tensor,
    w_chosen: f64,
    w_rejected: f64,
) -> Result<Tensor> {
    let gain_c = (ref_chosen - policy_chosen)?;
    let gain_r = (ref_rejected - policy_rejected)?;
    let z = ((gain_c * w_chosen)? - (gain_r * w_rejected)?)?;
    log_sigmoid(&z)?.mean_all()?.neg()
}

/// The official unlearning loss: `mean_i [w_c·ℓ_θ(c_i) − w_r·ℓ_θ(r_i)]` (no bound on the
/// ascent term; the only brake is the gradient clip).
pub fn unlearn_loss(
    policy_chosen: &Tensor,
    policy_rejected: &Tensor,
    w_chosen: f64,
    w_rejected: f64,
) -> Result<Tensor> {
    ((policy_chosen * w_chosen)? - (policy_rejected * w_rejected)?)?.mean_all()
}

/// Supervised safety fine-tuning: token-mean cross-entropy of the chosen pair.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ssft;

impl Objective for Ssft {
    type Batch = PairBatch;
    fn loss(&self, model: &Gpt, batch: &PairBatch) -> Result<Tensor> {
        let logits = model.forward(&batch.chosen.x, None)?;
        Ok(cross_entropy(&logits, &batch.chosen.y, u32::from(PAD))?.0)
    }
}

/// Per-sequence scores of chosen and rejected under `model`, in one forward pass over both
/// (batch 2B: fewer, larger matmuls).
fn pair_scores(model: &Gpt, batch: &PairBatch) -> Result<(Tensor, Tensor)> {
    let b = batch.chosen.x.dim(0)?;
    let x = Tensor::cat(&[&batch.chosen.x, &batch.rejected.x], 0)?;
    let y = Tensor::cat(&[&batch.chosen.y, &batch.rejected.y], 0)?;
    let m = Tensor::cat(&[&batch.mask_chosen, &batch.mask_rejected], 0)?;
    let s = sequence_nll(&model.forward(&x, None)?, &y, &m)?;
    Ok((s.narrow(0, 0, b)?, s.narrow(0, b, b)?))
}

/// DPO against a frozen reference model (the IT model; its scores carry no gradient).
pub struct Dpo {
    /// The frozen reference.
    pub reference: Gpt,
    /// Weight of the chosen log-ratio (official w_s = 0.1).
    pub w_chosen: f64,
    /// Weight of the rejected log-ratio (official w_u = 0.01 at η_M, 0.002 at η_S).
    pub w_rejected: f64,
}

impl Objective for Dpo {
    type Batch = PairBatch;
    fn loss(&self, model: &Gpt, batch: &PairBatch) -> Result<Tensor> {
        let (ref_c, ref_r) = pair_scores(&self.reference, batch)?;
        let (c, r) = pair_scores(model, batch)?;
        dpo_loss(
            &c,
            &r,
            &ref_c.detach(),
            &ref_r.detach(),
            self.w_chosen,
            self.w_rejected,
        )
    }
}

/// Unlearning: descent on the chosen, ascent on the rejected completion.
#[derive(Debug, Clone, Copy)]
pub struct Unlearn {
    /// Weight of the descent term (official 1.0).
    pub w_chosen: f64,
    /// Weight of the ascent term (official 0.1 at η_M, 0.05 at η_S).
    pub w_rejected: f64,
}

impl Objective for Unlearn {
    type Batch = PairBatch;
    fn loss(&self, model: &Gpt, batch: &PairBatch) -> Result<Tensor> {
        let (c, r) = pair_scores(model, batch)?;
        unlearn_loss(&c, &r, self.w_chosen, self.w_rejected)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn t1(v: &[f32]) -> Tensor {
        Tensor::new(v, &Device::Cpu).expect("tensor")
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-5, "{a} vs {b}");
    }

    #[test]
    fn sequence_nll_divides_masked_nll_by_the_length_and_skips_pad() {
        // One sequence, T = 3, V = 2. Logits [0, ln 3] give p(1) = 3/4; [0, 0] give 1/2.
        let l3 = 3f32.ln();
        let logits = Tensor::new(&[[[0f32, l3], [0.0, 0.0], [0.0, l3]]], &Device::Cpu).unwrap();
        let targets = Tensor::new(&[[1u32, 0, u32::from(PAD)]], &Device::Cpu).unwrap();
        // Position 2 is masked in but its target is pad: it must not count.
        let mask = Tensor::new(&[[1f32, 1.0, 1.0]], &Device::Cpu).unwrap();
        let s = sequence_nll(&logits, &targets, &mask).unwrap();
        let want = (-(0.75f64.ln()) - 0.5f64.ln()) / 3.0;
        close(f64::from(s.to_vec1::<f32>().unwrap()[0]), want);
        // Masking position 1 out leaves only the first term.
        let mask = Tensor::new(&[[1f32, 0.0, 0.0]], &Device::Cpu).unwrap();
        let s = sequence_nll(&logits, &targets, &mask).unwrap();
        close(
            f64::from(s.to_vec1::<f32>().unwrap()[0]),
            -(0.75f64.ln()) / 3.0,
        );
    }

    #[test]
    fn log_sigmoid_is_stable_and_exact() {
        let z = t1(&[-100.0, -1.0, 0.0, 2.0, 100.0]);
        let got = log_sigmoid(&z).unwrap().to_vec1::<f32>().unwrap();
        let want = [
            -100.0,
            -(1.0 + 1f64.exp()).ln(),
            -(2f64.ln()),
            -(1.0 + (-2f64).exp()).ln(),
            0.0,
        ];
        for (g, w) in got.iter().zip(want) {
            close(f64::from(*g), w);
        }
    }

    #[test]
    fn dpo_loss_by_hand_signs_and_betas() {
        // At the reference the loss is ln 2 whatever the weights.
        let s = t1(&[1.0, 2.0]);
        let l = dpo_loss(&s, &s, &s, &s, 0.1, 0.01).unwrap();
        close(f64::from(l.to_scalar::<f32>().unwrap()), 2f64.ln());
        // Policy NLL of chosen falls by 2 and of rejected rises by 3 (both desired):
        // z = 0.1·2 − 0.01·(−3) = 0.23, loss = softplus(−0.23).
        let (pc, pr, rc, rr) = (t1(&[3.0]), t1(&[8.0]), t1(&[5.0]), t1(&[5.0]));
        let l = dpo_loss(&pc, &pr, &rc, &rr, 0.1, 0.01).unwrap();
        close(
            f64::from(l.to_scalar::<f32>().unwrap()),
            (1.0 + (-0.23f64).exp()).ln(),
        );
        // The wrong direction (chosen less likely) raises the loss above ln 2.
        let l = dpo_loss(&t1(&[7.0]), &rr, &rc, &rr, 0.1, 0.01).unwrap();
        assert!(f64::from(l.to_scalar::<f32>().unwrap()) > 2f64.ln());
        // The gradient w.r.t. the policy's chosen NLL is +w_c·σ(−z)/B (descent lowers NLL),
        // w.r.t. the rejected NLL −w_r·σ(−z)/B.
        let pc = candle_core::Var::new(&[3f32], &Device::Cpu).unwrap();
        let pr = candle_core::Var::new(&[8f32], &Device::Cpu).unwrap();
        let l = dpo_loss(pc.as_tensor(), pr.as_tensor(), &rc, &rr, 0.1, 0.01).unwrap();
        let g = l.backward().unwrap();
        let sig = 1.0 / (1.0 + 0.23f64.exp());
        let gc = g.get(pc.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        let gr = g.get(pr.as_tensor()).unwrap().to_vec1::<f32>().unwrap()[0];
        close(f64::from(gc), 0.1 * sig);
        close(f64::from(gr), -0.01 * sig);
    }

    #[test]
    fn unlearn_loss_by_hand() {
        let l = unlearn_loss(&t1(&[1.0, 3.0]), &t1(&[2.0, 4.0]), 1.0, 0.1).unwrap();
        // mean(1 − 0.2, 3 − 0.4) = 1.7
        close(f64::from(l.to_scalar::<f32>().unwrap()), 1.7);
    }
}
