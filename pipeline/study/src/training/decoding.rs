//! Scoring windows of the official metrics, greedy decoding and exact-match checks.

use crate::grammar::layout::{SampleType, Spans};
use crate::grammar::vocab::{PAD, Token};

use super::*;

/// A scoring window of the official metrics (training_spec §3.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Window {
    /// Text and EOT (L+1 predictions): language modelling of the PCFG.
    Text,
    /// First output letters and its stop token (L+1).
    S1,
    /// Second output letters (L).
    S2,
}

impl Window {
    /// All windows.
    pub const ALL: [Window; 3] = [Window::Text, Window::S1, Window::S2];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Window::Text => "text",
            Window::S1 => "s1",
            Window::S2 => "s2",
        }
    }

    /// Full-coordinate positions of the window for text length `l`.
    pub fn full_range(self, l: usize) -> std::ops::Range<usize> {
        let s = Spans::new(l);
        match self {
            Window::Text => s.text().start..s.eot() + 1,
            Window::S1 => s.b1().start..s.b1().end + 1,
            Window::S2 => s.b2(),
        }
    }

    /// Model-coordinate prediction indices of the window.
    pub fn model_range(self, l: usize) -> std::ops::Range<usize> {
        let r = self.full_range(l);
        r.start - 1..r.end - 1
    }
}

/// Teacher-forced score of one window of one example: `None` when the window carries no target
/// (the official qualification rule: the window's first target is not pad), else
/// (correct positions, positions).
pub fn window_score(ex: &Example, pred: &[u32], w: Window) -> Option<(usize, usize)> {
    let r = w.model_range(ex.text_len);
    if ex.y[r.start] == u32::from(PAD) {
        return None;
    }
    let correct = r.clone().filter(|&t| pred[t] == ex.y[t]).count();
    Some((correct, r.len()))
}

/// Accumulated accuracies: for each (sample type, window), token accuracy and exact match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Scores {
    /// (sample type, window) → (correct tokens, tokens, exact rows, rows).
    pub cells: std::collections::BTreeMap<(SampleType, Window), [usize; 4]>,
}

impl Scores {
    /// Add one example's teacher-forced predictions (`pred`: argmax per model position).
    pub fn add(&mut self, ex: &Example, pred: &[u32]) {
        for w in Window::ALL {
            if let Some((c, n)) = window_score(ex, pred, w) {
                let cell = self.cells.entry((ex.sample_type, w)).or_default();
                cell[0] += c;
                cell[1] += n;
                cell[2] += usize::from(c == n);
                cell[3] += 1;
            }
        }
    }

    /// Rows `(sample type, window, token accuracy, exact match, rows)`.
    pub fn rows(&self) -> Vec<(SampleType, Window, f64, f64, usize)> {
        self.cells
            .iter()
            .map(|(&(t, w), c)| {
                (
                    t,
                    w,
                    c[0] as f64 / c[1].max(1) as f64,
                    c[2] as f64 / c[3].max(1) as f64,
                    c[3],
                )
            })
            .collect()
    }
}

/// Greedy decoding of both outputs from the prompt: the prompt of each row (everything through
/// EOT), then `2L + 2` tokens (S1 letters, stop, S2 letters, stop), each the argmax given the
/// tokens before it. The model is a closure from a batch of rows (ids, all of one length) to
/// per-position argmax ids; it must be causal (position `p`'s prediction may depend only on
/// positions `..=p`), as a GPT is.
///
/// This is exact greedy decoding, computed by Jacobi fixed-point iteration rather than one
/// forward pass per token: every row starts from a guess (its own tokens), each pass replaces
/// the guess from the first position where the model disagrees onwards by the model's
/// predictions, and a row is done when a pass agrees with it everywhere, which is the definition
/// of the greedy output. After `k` passes the first `k` decoded positions are final, so no row
/// needs more than `2L + 3` passes; a model that outputs what the row holds needs one. Rows are
/// passed trimmed to the positions decoding reads.
///
/// Returns the decoded rows (full coordinates `0..W−1`; PAD after the decoded span).
pub fn greedy_decode<E>(
    rows: &[(&[Token], usize)],
    mut argmax: impl FnMut(&[Vec<u32>]) -> Result<Vec<Vec<u32>>, E>,
) -> Result<Vec<Vec<u32>>, E> {
    let decoded = |l: usize| {
        let start = Spans::new(l).b1().start;
        start..start + 2 * l + 2
    };
    let mut buf: Vec<Vec<u32>> = rows
        .iter()
        .map(|(row, l)| {
            let end = decoded(*l).end;
            row[..row.len() - 1]
                .iter()
                .enumerate()
                .map(|(i, &t)| u32::from(if i < end { t } else { PAD }))
                .collect()
        })
        .collect();
    let mut active: Vec<usize> = (0..rows.len()).collect();
    while !active.is_empty() {
        // Position `p` is predicted at `p − 1`, so the last decoded position needs ids `..end − 1`.
        let len = active
            .iter()
            .map(|&r| decoded(rows[r].1).end - 1)
            .max()
            .unwrap_or(0);
        let batch: Vec<Vec<u32>> = active.iter().map(|&r| buf[r][..len].to_vec()).collect();
        let pred = argmax(&batch)?;
        let mut next = Vec::with_capacity(active.len());
        for (&r, p) in active.iter().zip(&pred) {
            let range = decoded(rows[r].1);
            if let Some(first) = range.clone().find(|&q| buf[r][q] != p[q - 1]) {
                buf[r][first..range.end].copy_from_slice(&p[first - 1..range.end - 1]);
                next.push(r);
            }
        }
        active = next;
    }
    Ok(buf)
}

/// [`greedy_decode`], then per row whether S1 (with its stop) and S2 equal the row's true
/// outputs.
pub fn greedy_exact<E>(
    rows: &[(&[Token], usize)],
    argmax: impl FnMut(&[Vec<u32>]) -> Result<Vec<Vec<u32>>, E>,
) -> Result<Vec<(bool, bool)>, E> {
    let buf = greedy_decode(rows, argmax)?;
    Ok(rows
        .iter()
        .zip(&buf)
        .map(|((row, l), out)| {
            let same = |w: Window| w.full_range(*l).all(|p| out[p] == u32::from(row[p]));
            (same(Window::S1), same(Window::S2))
        })
        .collect())
}

/// Whether decoded row `out` (full coordinates) equals target `y` (full coordinates) at every
/// output position (S1 with its stop, S2) where `y` is not pad; `None` when `y` targets no
/// output position.
pub fn outputs_match(out: &[u32], y: &[Token], text_len: usize) -> Option<bool> {
    let mut any = false;
    for w in [Window::S1, Window::S2] {
        for p in w.full_range(text_len) {
            if y[p] != PAD {
                any = true;
                if out[p] != u32::from(y[p]) {
                    return Some(false);
                }
            }
        }
    }
    any.then_some(true)
}

/// Teacher-forced counterpart of [`outputs_match`] for a model-coordinate example and its
/// per-position argmax `pred`.
pub fn outputs_match_teacher_forced(ex: &Example, pred: &[u32]) -> Option<bool> {
    let mut any = false;
    for w in [Window::S1, Window::S2] {
        for t in w.model_range(ex.text_len) {
            if ex.y[t] != u32::from(PAD) {
                any = true;
                if pred[t] != ex.y[t] {
                    return Some(false);
                }
            }
        }
    }
    any.then_some(true)
}
