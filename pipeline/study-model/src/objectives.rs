//! The three safety fine-tuning objectives (reference/training_spec.md §4–6), each an
//! [`Objective`] of the shared loop over a [`PairBatch`]:
//!
//! - [`Ssft`]: token-mean cross-entropy toward the chosen (preferred) completion;
//! - [`Dpo`]: DPO against the frozen IT model with asymmetric temperatures — the official
//!   sequence score is the masked NLL divided by the fixed context length T (B10), so
//!   β_chosen = w_chosen / T and β_rejected = w_rejected / T;
//! - [`Unlearn`]: descent on the chosen, weighted ascent on the rejected completion (same score).
//!
//! DPO and unlearning may add a supervised anchor on safe batches (`w_anchor`, 0 = the official
//! loss): `w_anchor ·` SSFT's token-mean cross-entropy of the chosen answers, computed from the
//! same forward pass as the method's scores.
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
    /// Whether this is a refusal (unsafe) batch; the anchor skips those.
    pub unsafe_batch: bool,
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
            unsafe_batch: pairs.unsafe_batch,
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

/// A pair batch's scores under one model.
struct PairScores {
    /// Per-sequence score of each chosen row, (B,).
    chosen: Tensor,
    /// Per-sequence score of each rejected row, (B,).
    rejected: Tensor,
    /// The supervised anchor's cross-entropy of the chosen rows (scalar), when asked for.
    anchor: Option<Tensor>,
}

/// Per-sequence scores of chosen and rejected under `model`, in one forward pass over both
/// (batch 2B: fewer, larger matmuls); with `anchor`, also SSFT's token-mean cross-entropy of the
/// chosen rows from the same logits.
fn pair_scores(model: &Gpt, batch: &PairBatch, anchor: bool) -> Result<PairScores> {
    let b = batch.chosen.x.dim(0)?;
    let x = Tensor::cat(&[&batch.chosen.x, &batch.rejected.x], 0)?;
    let y = Tensor::cat(&[&batch.chosen.y, &batch.rejected.y], 0)?;
    let m = Tensor::cat(&[&batch.mask_chosen, &batch.mask_rejected], 0)?;
    let logits = model.forward(&x, None)?;
    let s = sequence_nll(&logits, &y, &m)?;
    let anchor = if anchor {
        let chosen = logits.narrow(0, 0, b)?;
        Some(cross_entropy(&chosen, &batch.chosen.y, u32::from(PAD))?.0)
    } else {
        None
    };
    Ok(PairScores {
        chosen: s.narrow(0, 0, b)?,
        rejected: s.narrow(0, b, b)?,
        anchor,
    })
}

/// `loss + w_anchor · anchor` when the batch is safe and the weight is set; else `loss`.
fn with_anchor(loss: Tensor, anchor: Option<Tensor>, w_anchor: f64) -> Result<Tensor> {
    match anchor {
        Some(ce) => loss + (ce * w_anchor)?,
        None => Ok(loss),
    }
}

/// Whether `batch` carries the anchor term: a safe batch under a positive weight.
fn anchored(batch: &PairBatch, w_anchor: f64) -> bool {
    w_anchor > 0.0 && !batch.unsafe_batch
}

/// DPO against a frozen reference model (the IT model; its scores carry no gradient).
pub struct Dpo {
    /// The frozen reference.
    pub reference: Gpt,
    /// Weight of the chosen log-ratio (official w_s = 0.1).
    pub w_chosen: f64,
    /// Weight of the rejected log-ratio (official w_u = 0.01 at η_M, 0.002 at η_S).
    pub w_rejected: f64,
    /// Weight of the supervised anchor on safe batches (0: the official loss).
    pub w_anchor: f64,
}

impl Objective for Dpo {
    type Batch = PairBatch;
    fn loss(&self, model: &Gpt, batch: &PairBatch) -> Result<Tensor> {
        let reference = pair_scores(&self.reference, batch, false)?;
        let policy = pair_scores(model, batch, anchored(batch, self.w_anchor))?;
        let loss = dpo_loss(
            &policy.chosen,
            &policy.rejected,
            &reference.chosen.detach(),
            &reference.rejected.detach(),
            self.w_chosen,
            self.w_rejected,
        )?;
        with_anchor(loss, policy.anchor, self.w_anchor)
    }
}

/// Unlearning: descent on the chosen, ascent on the rejected completion.
#[derive(Debug, Clone, Copy)]
pub struct Unlearn {
    /// Weight of the descent term (official 1.0).
    pub w_chosen: f64,
    /// Weight of the ascent term (official 0.1 at η_M, 0.05 at η_S).
    pub w_rejected: f64,
    /// Weight of the supervised anchor on safe batches (0: the official loss).
    pub w_anchor: f64,
}

impl Objective for Unlearn {
    type Batch = PairBatch;
    fn loss(&self, model: &Gpt, batch: &PairBatch) -> Result<Tensor> {
        let s = pair_scores(model, batch, anchored(batch, self.w_anchor))?;
        let loss = unlearn_loss(&s.chosen, &s.rejected, self.w_chosen, self.w_rejected)?;
        with_anchor(loss, s.anchor, self.w_anchor)
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

    /// A tiny model and a pair batch of two rows (T = 6), chosen targets on the last three
    /// positions, rejected targets differing from them.
    fn model_and_batch(unsafe_batch: bool) -> (Gpt, PairBatch) {
        use crate::gpt::{Gelu, GptConfig, Params};
        let cfg = GptConfig {
            n_layer: 1,
            n_head: 2,
            n_embd: 8,
            block_size: 6,
            vocab_size: 12,
            mlp_ratio: 4,
            gelu: Gelu::Exact,
        };
        let model = Gpt::new(cfg, Params::init(&cfg, 5, &Device::Cpu).unwrap()).unwrap();
        let p = u32::from(PAD);
        let ids = |v: [[u32; 6]; 2]| Tensor::new(&v, &Device::Cpu).unwrap();
        let x = ids([[1, 2, 3, 4, 5, 6], [1, 3, 2, 4, 6, 5]]);
        let chosen = TokenBatch {
            x: x.clone(),
            y: ids([[p, p, p, 7, 8, 9], [p, p, p, 9, 7, 8]]),
        };
        let rejected = TokenBatch {
            x,
            y: ids([[p, p, p, 10, 10, 11], [p, p, p, 11, 10, 10]]),
        };
        let mask = Tensor::new(&[[0f32, 0.0, 0.0, 1.0, 1.0, 1.0]; 2], &Device::Cpu).unwrap();
        let batch = PairBatch {
            chosen,
            rejected,
            mask_chosen: mask.clone(),
            mask_rejected: mask,
            unsafe_batch,
        };
        (model, batch)
    }

    fn scalar(t: &Tensor) -> f64 {
        f64::from(t.to_scalar::<f32>().unwrap())
    }

    #[test]
    fn the_anchor_adds_ssft_loss_on_safe_batches_only() {
        for unsafe_batch in [false, true] {
            let (model, batch) = model_and_batch(unsafe_batch);
            let ssft = scalar(&Ssft.loss(&model, &batch).unwrap());
            let plain = Unlearn {
                w_chosen: 1.0,
                w_rejected: 0.1,
                w_anchor: 0.0,
            };
            let anchored = Unlearn {
                w_anchor: 0.5,
                ..plain
            };
            let (l0, l1) = (
                scalar(&plain.loss(&model, &batch).unwrap()),
                scalar(&anchored.loss(&model, &batch).unwrap()),
            );
            let dpo = |w_anchor| Dpo {
                reference: model_and_batch(unsafe_batch).0,
                w_chosen: 0.1,
                w_rejected: 0.002,
                w_anchor,
            };
            let (d0, d1) = (
                scalar(&dpo(0.0).loss(&model, &batch).unwrap()),
                scalar(&dpo(2.0).loss(&model, &batch).unwrap()),
            );
            // At the reference DPO's loss is ln 2; the anchor adds its share on safe rows.
            close(d0, 2f64.ln());
            if unsafe_batch {
                close(l1, l0);
                close(d1, d0);
            } else {
                assert!(ssft > 1.0, "an untrained model's cross-entropy: {ssft}");
                close(l1, l0 + 0.5 * ssft);
                close(d1, d0 + 2.0 * ssft);
            }
        }
    }
}
