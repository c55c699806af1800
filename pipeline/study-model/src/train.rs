//! The one training loop of the study, shared by pre-training and the safety objectives: an
//! [`Objective`] supplies the loss of a batch; [`Hooks`] supply batches and observe each step
//! (logging, evaluation, checkpoints). Also the evaluation helpers (teacher-forced scores,
//! greedy decoding) every stage uses.

use std::time::Instant;

use candle_core::{D, Device, Result as CResult, Tensor};
use study::config::train::LrSchedule;
use study::grammar::vocab::{PAD, Token};
use study::training::{Example, Scores, greedy_decode, greedy_exact};

use crate::gpt::{Gpt, cross_entropy};
use crate::optim::{AdamW, clip_grad_norm, grad_norm};

/// Rows per forward pass when the training stages evaluate.
pub const EVAL_CHUNK: usize = 256;

/// Errors of a training run.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// A tensor operation failed.
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    /// The loss became NaN or infinite; the last checkpoint is kept as it was.
    #[error(
        "the loss became {loss} at step {step}; stopped without writing this step (each stage says how to recover)"
    )]
    NonFinite {
        /// 0-based step whose loss was not finite.
        step: usize,
        /// The loss value.
        loss: f64,
    },
    /// A hook (data, logging, checkpoint) failed.
    #[error(transparent)]
    Hook(Box<dyn std::error::Error + Send + Sync>),
}

/// A training objective: the scalar loss of a batch.
pub trait Objective {
    /// What one step consumes.
    type Batch;
    /// The differentiable loss of `batch` under `model`.
    fn loss(&self, model: &Gpt, batch: &Self::Batch) -> CResult<Tensor>;
}

/// Input and target ids of a batch of sequences, (B, T) u32.
#[derive(Debug, Clone)]
pub struct TokenBatch {
    /// Inputs.
    pub x: Tensor,
    /// Targets ([`PAD`] where nothing is scored).
    pub y: Tensor,
}

impl TokenBatch {
    /// Stack examples (all of one length) into a batch on `device`.
    pub fn new(examples: &[Example], device: &Device) -> CResult<Self> {
        let t = examples.first().map_or(0, |e| e.x.len());
        let flat = |f: fn(&Example) -> &Vec<u32>| -> Vec<u32> {
            examples.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        Ok(Self {
            x: Tensor::from_vec(flat(|e| &e.x), (examples.len(), t), device)?,
            y: Tensor::from_vec(flat(|e| &e.y), (examples.len(), t), device)?,
        })
    }
}

/// Next-token cross-entropy, the token mean over non-pad targets (pre-training; SSFT reuses it
/// on its own targets).
#[derive(Debug, Clone, Copy, Default)]
pub struct NextToken;

impl Objective for NextToken {
    type Batch = TokenBatch;
    fn loss(&self, model: &Gpt, batch: &TokenBatch) -> CResult<Tensor> {
        let logits = model.forward(&batch.x, None)?;
        Ok(cross_entropy(&logits, &batch.y, u32::from(PAD))?.0)
    }
}

/// What happened in one step.
#[derive(Debug, Clone, Copy)]
pub struct StepReport {
    /// Steps completed, including this one (1-based).
    pub step: usize,
    /// The batch loss before the update.
    pub loss: f64,
    /// The learning rate of this update.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time of the step (batch building excluded), seconds.
    pub seconds: f64,
}

/// The stage's side of the loop.
pub trait Hooks<B> {
    /// The batch of 0-based step `step`.
    fn batch(&mut self, step: usize) -> Result<B, TrainError>;
    /// Called after every update with the updated model and optimiser.
    fn after_step(
        &mut self,
        model: &Gpt,
        opt: &AdamW,
        report: &StepReport,
    ) -> Result<(), TrainError>;
}

/// Loop settings.
#[derive(Debug, Clone, Copy)]
pub struct LoopSpec {
    /// Learning rate per step.
    pub schedule: LrSchedule,
    /// Global gradient-norm clip (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// First 0-based step to run (0, or the step count of a resumed checkpoint).
    pub start: usize,
    /// Total steps.
    pub steps: usize,
}

/// Run steps `spec.start..spec.steps`: lr from the schedule, loss, backward, optional clip,
/// AdamW, then the hook. A non-finite loss stops before the update.
pub fn run<O: Objective, H: Hooks<O::Batch>>(
    model: &Gpt,
    opt: &mut AdamW,
    objective: &O,
    spec: LoopSpec,
    hooks: &mut H,
) -> Result<(), TrainError> {
    for step in spec.start..spec.steps {
        let batch = hooks.batch(step)?;
        let started = Instant::now();
        let lr = spec.schedule.at(step);
        let loss = objective.loss(model, &batch)?;
        let value = f64::from(loss.to_scalar::<f32>()?);
        if !value.is_finite() {
            return Err(TrainError::NonFinite { step, loss: value });
        }
        let mut grads = loss.backward()?;
        let norm = match spec.grad_clip {
            Some(c) => clip_grad_norm(&mut grads, model.params(), c)?,
            None => grad_norm(&grads, model.params())?,
        };
        opt.step(&grads, lr)?;
        let report = StepReport {
            step: step + 1,
            loss: value,
            lr,
            grad_norm: norm,
            seconds: started.elapsed().as_secs_f64(),
        };
        hooks.after_step(model, opt, &report)?;
    }
    Ok(())
}

/// Per-position argmax ids of `x` (rows of equal length), in chunks of `chunk` rows.
pub fn argmax_rows(model: &Gpt, x: &[Vec<u32>], chunk: usize) -> CResult<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(x.len());
    for part in x.chunks(chunk.max(1)) {
        let t = part[0].len();
        let flat: Vec<u32> = part.iter().flatten().copied().collect();
        let ids = Tensor::from_vec(flat, (part.len(), t), model.device())?;
        let pred = model.forward(&ids, None)?.argmax(D::Minus1)?;
        out.extend(pred.to_vec2::<u32>()?);
    }
    Ok(out)
}

/// Teacher-forced scores and the token-mean loss of `examples`, in chunks of `chunk` rows.
pub fn teacher_forced(model: &Gpt, examples: &[Example], chunk: usize) -> CResult<(Scores, f64)> {
    let mut scores = Scores::default();
    let (mut loss_sum, mut tokens) = (0.0, 0usize);
    for part in examples.chunks(chunk.max(1)) {
        let batch = TokenBatch::new(part, model.device())?;
        let logits = model.forward(&batch.x, None)?;
        let (loss, n) = cross_entropy(&logits, &batch.y, u32::from(PAD))?;
        loss_sum += f64::from(loss.to_scalar::<f32>()?) * n as f64;
        tokens += n;
        let pred = logits.argmax(D::Minus1)?.to_vec2::<u32>()?;
        for (ex, p) in part.iter().zip(&pred) {
            scores.add(ex, p);
        }
    }
    Ok((scores, loss_sum / tokens.max(1) as f64))
}

/// Greedy exact match of (S1, S2) for full rows `(row, text length)`, in chunks of `chunk`.
pub fn greedy(model: &Gpt, rows: &[(&[Token], usize)], chunk: usize) -> CResult<Vec<(bool, bool)>> {
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(chunk.max(1)) {
        out.extend(greedy_exact(part, |buf| {
            argmax_rows(model, buf, buf.len())
        })?);
    }
    Ok(out)
}

/// Greedy-decoded rows (full coordinates, see [`greedy_decode`]) for full rows
/// `(row, text length)`, in chunks of `chunk`.
pub fn greedy_rows(
    model: &Gpt,
    rows: &[(&[Token], usize)],
    chunk: usize,
) -> CResult<Vec<Vec<u32>>> {
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(chunk.max(1)) {
        out.extend(greedy_decode(part, |buf| {
            argmax_rows(model, buf, buf.len())
        })?);
    }
    Ok(out)
}
