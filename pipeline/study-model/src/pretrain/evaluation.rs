//! The periodic evaluation (teacher-forced scores and greedy exact match, the accuracy bar) and
//! the stage's final [`Summary`].

use std::time::Instant;

use serde::{Deserialize, Serialize};
use study::grammar::SampleType;
use study::grammar::vocab::Token;
use study::training::{self, MetricRow, TokenTable};

use super::Pretrain;
use super::error::{PretrainError, Result};
use crate::gpt::Gpt;
use crate::train as tr;

/// The stage's final summary (`summary.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    /// Steps trained.
    pub steps: usize,
    /// Greedy exact match of both outputs on held-out std_safe instructions.
    pub std_safe_greedy_em_both: f64,
    /// Greedy exact match of both outputs on held-out pre-training rows (`full` type).
    pub test_greedy_em_both: f64,
    /// The config's bar.
    pub min_exact_match: f64,
    /// Whether the bar holds (fine-tuning refuses a model that fails it).
    pub meets_bar: bool,
    /// Final held-out loss.
    pub test_loss: f64,
    /// Mean training throughput, tokens per second.
    pub tokens_per_s: f64,
}

impl<'a, P> Pretrain<'a, P> {
    pub(super) fn evaluate(&mut self, model: &Gpt, step: usize) -> Result<()> {
        let e = &self.cfg.eval;
        let started = Instant::now();
        // Teacher-forced: held-out rows (their own sample types) and a fresh draw of the
        // training mix at this step.
        let test = self.data.test.examples(0..e.rows.min(self.data.test.len()));
        let train = training::pretrain_batch(
            &self.data.pool,
            &self.data.mix,
            self.cfg.seed ^ 0x5eed_e7a1,
            step.min(self.cfg.steps - 1),
            self.cfg.steps,
            e.rows,
        );
        let mut test_loss = 0.0;
        for (split, examples) in [("test", &test), ("train", &train)] {
            let (scores, loss) = tr::teacher_forced(model, examples, tr::EVAL_CHUNK)?;
            if split == "test" {
                test_loss = loss;
            }
            self.rows.push(MetricRow::new(
                step,
                split,
                "all",
                "eval_loss",
                loss,
                examples.len(),
            ));
            for (ty, w, acc, em, n) in scores.rows() {
                for (metric, value) in [("acc", acc), ("em", em)] {
                    let name = format!("{metric}_{}", w.as_str());
                    self.rows
                        .push(MetricRow::new(step, split, ty.as_str(), &name, value, n));
                }
            }
        }
        // Greedy: held-out full rows, and std_safe instructions (the accuracy bar).
        let row = |t: &'a TokenTable, i: usize| -> (&'a [Token], usize) {
            (t.row(i), usize::from(t.text_len[i]))
        };
        let full: Vec<(&[Token], usize)> = (0..self.data.test.len())
            .filter(|&i| self.data.test.sample_type[i] == SampleType::Full)
            .take(e.greedy_rows)
            .map(|i| row(&self.data.test, i))
            .collect();
        let safe: Vec<(&[Token], usize)> = (0..self.data.std_safe.len().min(e.greedy_rows))
            .map(|i| row(&self.data.std_safe, i))
            .collect();
        let mut both = [0.0; 2];
        for (k, (split, rows)) in [("test", &full), ("std_safe", &safe)]
            .into_iter()
            .enumerate()
        {
            let res = tr::greedy(model, rows, tr::EVAL_CHUNK)?;
            let n = res.len().max(1) as f64;
            let s1 = res.iter().filter(|r| r.0).count() as f64 / n;
            let s2 = res.iter().filter(|r| r.1).count() as f64 / n;
            let b = res.iter().filter(|r| r.0 && r.1).count() as f64 / n;
            both[k] = b;
            for (m, v) in [
                ("greedy_em_s1", s1),
                ("greedy_em_s2", s2),
                ("greedy_em_both", b),
            ] {
                self.rows
                    .push(MetricRow::new(step, split, "full", m, v, res.len()));
            }
        }
        self.last_eval = Some((step, both[1], both[0], test_loss));
        tracing::info!(
            step,
            test_loss = format!("{test_loss:.4}"),
            greedy_std_safe = format!("{:.3}", both[1]),
            greedy_test = format!("{:.3}", both[0]),
            seconds = format!("{:.1}", started.elapsed().as_secs_f64()),
            "evaluation"
        );
        Ok(())
    }

    /// The summary of the evaluation at the last step (the loop evaluates there; a run resumed
    /// from a checkpoint of the last step has none).
    pub(super) fn summary(&self) -> Result<Summary> {
        let Some((_, safe, test, loss)) = self.last_eval.filter(|e| e.0 == self.cfg.steps) else {
            return Err(PretrainError::NoFinalEvaluation(self.ckpt_dir.clone()));
        };
        Ok(Summary {
            steps: self.cfg.steps,
            std_safe_greedy_em_both: safe,
            test_greedy_em_both: test,
            min_exact_match: self.cfg.eval.min_exact_match,
            meets_bar: safe >= self.cfg.eval.min_exact_match,
            test_loss: loss,
            tokens_per_s: self.train_tokens as f64 / self.train_seconds.max(1e-9),
        })
    }
}
