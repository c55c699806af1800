//! What training sees of the corpus, without candle: token tables read from the corpus Parquet,
//! pre-training examples (sample types and null operators applied, shifted into model
//! coordinates), seeded batch sampling with the curriculum, and the scoring windows of the
//! official metrics (reference/training_spec.md §2.2, §3.3, §3.5).
//!
//! Coordinates: a row has `W` tokens (full coordinates). The model reads `x = row[..W−1]` and
//! predicts `y = target[1..]`, so prediction `t` scores full position `t + 1`.

use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::artifacts::{ArtifactError, Catalog};
use crate::config::corpus::PretrainMixConfig;
use crate::corpus::{CorpusSet, read_set};
use crate::grammar::layout::{self, SampleType, Spans};
use crate::grammar::vocab::{PAD, Token};

/// Rows of one token column of a corpus set, flattened: row `i` is
/// `tokens[i·window .. (i+1)·window]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenTable {
    /// Tokens per row (the corpus window W).
    pub window: usize,
    /// Row-major tokens.
    pub tokens: Vec<Token>,
    /// Text length L of each row.
    pub text_len: Vec<u8>,
    /// Sample type of each row (held-out pre-training rows; `full` elsewhere).
    pub sample_type: Vec<SampleType>,
}

impl TokenTable {
    /// Number of rows.
    pub fn len(&self) -> usize {
        self.text_len.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.text_len.is_empty()
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[Token] {
        &self.tokens[i * self.window..(i + 1) * self.window]
    }

    /// The examples of rows `range`, each with its own sample type and no null operator.
    pub fn examples(&self, range: std::ops::Range<usize>) -> Vec<Example> {
        range
            .map(|i| {
                Example::new(
                    self.row(i),
                    usize::from(self.text_len[i]),
                    self.sample_type[i],
                    None,
                )
            })
            .collect()
    }
}

fn table_error(catalog: &Catalog, set: CorpusSet, message: String) -> ArtifactError {
    ArtifactError::Schema {
        path: catalog.corpus_set(set),
        message,
        target: "corpus".into(),
    }
}

/// The rows of `df` whose `split` column equals `split` (all rows when `None`).
pub fn filter_split(df: DataFrame, split: Option<&str>) -> PolarsResult<DataFrame> {
    match split {
        Some(split) => {
            let mask = df.column("split")?.str()?.equal(split);
            df.filter(&mask)
        }
        None => Ok(df),
    }
}

/// Read token column `column` of `set` (rows of `split` only, for sets with a split column),
/// checking that every row has the same window.
pub fn read_tokens(
    catalog: &Catalog,
    set: CorpusSet,
    column: &str,
    split: Option<&str>,
) -> Result<TokenTable, ArtifactError> {
    let err = |m: String| table_error(catalog, set, m);
    let df = filter_split(read_set(catalog, set)?, split).map_err(|e| err(e.to_string()))?;
    let lens: Vec<u8> = df
        .column("text_len")
        .and_then(|c| c.u8().map(|ca| ca.into_no_null_iter().collect()))
        .map_err(|e| err(e.to_string()))?;
    let types: Vec<SampleType> = match df.column("sample_type") {
        Ok(c) => c
            .str()
            .map_err(|e| err(e.to_string()))?
            .iter()
            .map(|s| {
                let s = s.unwrap_or("");
                SampleType::ALL
                    .into_iter()
                    .find(|t| t.as_str() == s)
                    .ok_or_else(|| err(format!("unknown sample type `{s}`")))
            })
            .collect::<Result<_, _>>()?,
        Err(_) => vec![SampleType::Full; lens.len()],
    };
    let lists = crate::artifacts::token_lists(&df, column)
        .map_err(|e| err(format!("column `{column}`: {e}")))?;
    let window = lists.first().map_or(0, Vec::len);
    let mut tokens = Vec::with_capacity(lists.len() * window);
    for (i, row) in lists.into_iter().enumerate() {
        if row.is_empty() {
            return Err(err(format!("row {i} of `{column}` is null or empty")));
        }
        if row.len() != window {
            return Err(err(format!(
                "row {i} of `{column}` has {} tokens, earlier rows {window}",
                row.len()
            )));
        }
        tokens.extend(row);
    }
    Ok(TokenTable {
        window,
        tokens,
        text_len: lens,
        sample_type: types,
    })
}

/// One training or evaluation sequence in model coordinates.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Input ids, `W − 1` of them.
    pub x: Vec<u32>,
    /// Target ids, `W − 1`; [`PAD`] where nothing is scored.
    pub y: Vec<u32>,
    /// Text length L.
    pub text_len: usize,
    /// Sample type.
    pub sample_type: SampleType,
}

impl Example {
    /// The example of a full row: the null operator first (when `null_u` is given, the uniform
    /// draw that picks its slot), then the sample type's masking (`pretrain.py` order), then the
    /// shift.
    pub fn new(
        row: &[Token],
        text_len: usize,
        sample_type: SampleType,
        null_u: Option<f64>,
    ) -> Self {
        let mut x = row.to_vec();
        let mut y = layout::target(&x);
        if let Some(u) = null_u {
            layout::inject_null_operator(&mut x, &mut y, text_len, u);
        }
        sample_type.apply(&mut x, &mut y, text_len);
        Self::from_pair(&x, &y, text_len, sample_type)
    }

    /// The example of a stored (x, y) pair in full coordinates (safety rows carry their own
    /// targets), shifted into model coordinates.
    pub fn from_pair(x: &[Token], y: &[Token], text_len: usize, sample_type: SampleType) -> Self {
        let w = x.len();
        Self {
            x: x[..w - 1].iter().map(|&t| u32::from(t)).collect(),
            y: y[1..].iter().map(|&t| u32::from(t)).collect(),
            text_len,
            sample_type,
        }
    }
}

/// The pre-training batch of step `step` (0-based) of a run of `steps` steps: rows uniform with
/// replacement from `pool`, sample types from the curriculum at progress `step / steps`, and a
/// null operator with probability `mix.prob_null_operator`. Drawn from a ChaCha8 stream keyed by
/// `(seed, step)`, so any step's batch can be rebuilt without replaying earlier ones (resume).
pub fn pretrain_batch(
    pool: &TokenTable,
    mix: &PretrainMixConfig,
    seed: u64,
    step: usize,
    steps: usize,
    batch_size: usize,
) -> Vec<Example> {
    let mut key = blake3::Hasher::new();
    key.update(b"study.pretrain.batch");
    key.update(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(*key.finalize().as_bytes());
    rng.set_stream(step as u64);
    let probs = mix.probs_at(step as f64 / steps as f64);
    (0..batch_size)
        .map(|_| {
            let i = rng.random_range(0..pool.len());
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut ty = SampleType::ALL[3];
            for (t, p) in SampleType::ALL.iter().zip(probs) {
                acc += p;
                if u < acc {
                    ty = *t;
                    break;
                }
            }
            let null = (rng.random::<f64>() < mix.prob_null_operator).then(|| rng.random::<f64>());
            Example::new(pool.row(i), usize::from(pool.text_len[i]), ty, null)
        })
        .collect()
}

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

/// One row of a training run's metrics table (tidy: one metric per row).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// Steps completed when measured.
    pub step: u32,
    /// `train` (the training loss and, at evaluations, a fresh draw from the training mix),
    /// `test` (held-out pre-training rows) or an evaluation set (`std_safe`, …).
    pub split: String,
    /// A sample type, or `all`.
    pub sample_type: String,
    /// `loss`, `lr`, `grad_norm`, `tokens_per_s`, `acc_<window>` (teacher-forced token
    /// accuracy), `em_<window>` (teacher-forced exact match), `greedy_em_s1`, `greedy_em_s2`,
    /// `greedy_em_both`.
    pub metric: String,
    /// The value.
    pub value: f64,
    /// Rows (or tokens, for `loss`) it averages over; 1 for scalars.
    pub n: u32,
}

impl MetricRow {
    /// A row of `metric` at `step`.
    pub fn new(step: usize, split: &str, ty: &str, metric: &str, value: f64, n: usize) -> Self {
        Self {
            step: step as u32,
            split: split.to_owned(),
            sample_type: ty.to_owned(),
            metric: metric.to_owned(),
            value,
            n: n as u32,
        }
    }
}

/// Version of the metrics table's schema.
pub const METRICS_SCHEMA_VERSION: u32 = 1;

/// The schema of `metrics.parquet`; `target` is the make target that writes it.
pub fn metrics_schema(target: &'static str) -> crate::artifacts::TableSchema {
    crate::artifacts::TableSchema {
        table: "training_metrics",
        version: METRICS_SCHEMA_VERSION,
        columns: vec![
            ("step", DataType::UInt32),
            ("split", DataType::String),
            ("sample_type", DataType::String),
            ("metric", DataType::String),
            ("value", DataType::Float64),
            ("n", DataType::UInt32),
        ],
        target,
    }
}

/// Metric rows as a table.
pub fn metrics_frame(rows: &[MetricRow]) -> PolarsResult<DataFrame> {
    df!(
        "step" => rows.iter().map(|r| r.step).collect::<Vec<_>>(),
        "split" => rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(),
        "sample_type" => rows.iter().map(|r| r.sample_type.as_str()).collect::<Vec<_>>(),
        "metric" => rows.iter().map(|r| r.metric.as_str()).collect::<Vec<_>>(),
        "value" => rows.iter().map(|r| r.value).collect::<Vec<_>>(),
        "n" => rows.iter().map(|r| r.n).collect::<Vec<_>>(),
    )
}

/// Metric rows back from a table written by [`metrics_frame`].
pub fn metrics_rows(df: &DataFrame) -> PolarsResult<Vec<MetricRow>> {
    let step = df.column("step")?.u32()?.clone();
    let split = df.column("split")?.str()?.clone();
    let ty = df.column("sample_type")?.str()?.clone();
    let metric = df.column("metric")?.str()?.clone();
    let value = df.column("value")?.f64()?.clone();
    let n = df.column("n")?.u32()?.clone();
    (0..df.height())
        .map(|i| {
            Ok(MetricRow {
                step: present(step.get(i), "step", i)?,
                split: present(split.get(i), "split", i)?.to_owned(),
                sample_type: present(ty.get(i), "sample_type", i)?.to_owned(),
                metric: present(metric.get(i), "metric", i)?.to_owned(),
                value: present(value.get(i), "value", i)?,
                n: present(n.get(i), "n", i)?,
            })
        })
        .collect()
}

/// A value of a column that must have no nulls: a null is an error naming the column and row
/// (the callers add the file).
pub fn present<T>(v: Option<T>, column: &str, row: usize) -> PolarsResult<T> {
    v.ok_or_else(|| {
        polars::prelude::polars_err!(ComputeError: "column `{column}` is null at row {row}; the table was not written by this pipeline or is damaged: rerun the stage that writes it")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::vocab::{EOT, LETTER0, STOP};

    #[test]
    fn metric_rows_round_trip_and_a_null_is_an_error_naming_its_column() {
        let rows = vec![MetricRow {
            step: 3,
            split: "test".into(),
            sample_type: "full".into(),
            metric: "loss".into(),
            value: 0.5,
            n: 7,
        }];
        let df = metrics_frame(&rows).expect("frame");
        assert_eq!(metrics_rows(&df).expect("rows"), rows);
        let mut damaged = df.clone();
        damaged
            .with_column(Column::new("value".into(), [None::<f64>]))
            .expect("replace");
        let e = metrics_rows(&damaged).expect_err("null value");
        assert!(
            e.to_string().contains("column `value` is null at row 0"),
            "{e}"
        );
    }

    fn table(rows: usize, l: usize, window: usize) -> TokenTable {
        let mut tokens = Vec::new();
        for r in 0..rows {
            let text: Vec<Token> = (0..l).map(|i| LETTER0 + ((r + i) % 30) as u8).collect();
            let b1: Vec<Token> = text
                .iter()
                .map(|&t| LETTER0 + (t - LETTER0 + 1) % 30)
                .collect();
            let b2: Vec<Token> = b1
                .iter()
                .map(|&t| LETTER0 + (t - LETTER0 + 2) % 30)
                .collect();
            tokens.extend(layout::row(&[0, 1, 2, 3], &text, &b1, &b2, window));
        }
        TokenTable {
            window,
            tokens,
            text_len: vec![l as u8; rows],
            sample_type: vec![SampleType::Full; rows],
        }
    }

    #[test]
    fn windows_cover_the_official_spans() {
        let l = 6;
        // model coordinates: text+EOT at 5..L+6, S1+stop at L+6..2L+7, S2 at 2L+7..3L+7
        assert_eq!(Window::Text.model_range(l), 5..12);
        assert_eq!(Window::S1.model_range(l), 12..19);
        assert_eq!(Window::S2.model_range(l), 19..25);
        let t = table(1, l, 28);
        let ex = &t.examples(0..1)[0];
        assert_eq!(ex.y[Window::Text.model_range(l).end - 1], u32::from(EOT));
        assert_eq!(ex.y[Window::S1.model_range(l).end - 1], u32::from(STOP));
        // a perfect predictor scores 1 everywhere; one wrong S2 letter breaks only S2's exact match
        let mut s = Scores::default();
        s.add(ex, &ex.y);
        let mut wrong = ex.y.clone();
        wrong[Window::S2.model_range(l).start] = 0;
        s.add(ex, &wrong);
        for (_, w, acc, em, n) in s.rows() {
            assert_eq!(n, 2);
            if w == Window::S2 {
                assert!((acc - (1.0 - 0.5 / 6.0)).abs() < 1e-12 && em == 0.5);
            } else {
                assert!(acc == 1.0 && em == 1.0);
            }
        }
    }

    #[test]
    fn sample_types_decide_which_windows_qualify() {
        let t = table(1, 5, 25);
        let row = t.row(0);
        let qualifies = |ty| {
            let ex = Example::new(row, 5, ty, None);
            Window::ALL.map(|w| window_score(&ex, &ex.y, w).is_some())
        };
        assert_eq!(qualifies(SampleType::Pcfg), [true, false, false]);
        assert_eq!(qualifies(SampleType::Full), [true, true, true]);
        assert_eq!(qualifies(SampleType::Comp1), [true, true, false]);
        assert_eq!(qualifies(SampleType::Comp2), [false, false, true]);
    }

    #[test]
    fn batches_are_seeded_per_step_and_follow_the_curriculum() {
        let pool = table(50, 6, 28);
        let mix = PretrainMixConfig::default();
        let a = pretrain_batch(&pool, &mix, 1, 7, 100, 16);
        assert_eq!(a, pretrain_batch(&pool, &mix, 1, 7, 100, 16));
        assert_ne!(a, pretrain_batch(&pool, &mix, 1, 8, 100, 16));
        assert_ne!(a, pretrain_batch(&pool, &mix, 2, 7, 100, 16));
        // type shares at the start and the end of training, over many draws
        let share = |step: usize| {
            let mut counts = [0usize; 4];
            for seed in 0..50 {
                for ex in pretrain_batch(&pool, &mix, seed, step, 100, 400) {
                    let i = SampleType::ALL.iter().position(|t| *t == ex.sample_type);
                    counts[i.expect("a known type")] += 1;
                }
            }
            counts.map(|c| c as f64 / 20_000.0)
        };
        let start = share(0);
        let end = share(99);
        let (p0, p1) = (mix.probs_at(0.0), mix.probs_at(0.99));
        for i in 0..4 {
            assert!(
                (start[i] - p0[i]).abs() < 0.03,
                "start {i}: {start:?} vs {p0:?}"
            );
            assert!((end[i] - p1[i]).abs() < 0.03, "end {i}: {end:?} vs {p1:?}");
        }
    }

    /// Sequential greedy decoding, one position per model call: the reference for
    /// [`greedy_decode`].
    fn sequential(rows: &[(&[Token], usize)], model: impl Fn(&[u32]) -> u32) -> Vec<Vec<u32>> {
        rows.iter()
            .map(|(row, l)| {
                let start = Spans::new(*l).b1().start;
                let mut out: Vec<u32> = vec![u32::from(PAD); row.len() - 1];
                for p in 0..start {
                    out[p] = u32::from(row[p]);
                }
                for p in start..start + 2 * l + 2 {
                    out[p] = model(&out[..p]);
                }
                out
            })
            .collect()
    }

    #[test]
    fn greedy_decoding_is_exact_for_causal_models() {
        let t = table(3, 6, 28);
        let rows: Vec<(&[Token], usize)> = (0..3).map(|i| (t.row(i), 6)).collect();
        // Causal toy models: the prediction for the next position from the prefix `..=p`.
        let t = &t;
        let oracle = |r: usize| move |prefix: &[u32]| u32::from(t.row(r)[prefix.len()]);
        let prefix_sum = |prefix: &[u32]| {
            u32::from(LETTER0) + prefix.iter().map(|&v| v * 7 + 3).sum::<u32>() % 30
        };
        let constant = |_: &[u32]| u32::from(LETTER0);
        let run = |f: &dyn Fn(usize, &[u32]) -> u32| {
            let mut calls = 0;
            let out = greedy_decode::<()>(&rows, |buf| {
                calls += 1;
                // Which row a buffer is, by its prompt (the texts differ).
                let start = Spans::new(6).b1().start;
                let row_of = |b: &[u32]| {
                    (0..rows.len())
                        .find(|&r| {
                            b[..start]
                                .iter()
                                .zip(rows[r].0)
                                .all(|(&x, &y)| x == u32::from(y))
                        })
                        .expect("a known row")
                };
                Ok(buf
                    .iter()
                    .map(|b| (1..=b.len()).map(|p| f(row_of(b), &b[..p])).collect())
                    .collect())
            })
            .expect("decode");
            (out, calls)
        };
        // A perfect model agrees with the rows' own outputs: one pass.
        let (out, calls) = run(&|r, p| oracle(r)(p));
        assert_eq!(calls, 1);
        for (r, o) in out.iter().enumerate() {
            assert_eq!(*o, sequential(&rows[r..=r], oracle(r))[0]);
        }
        // A model that depends on everything before it: same as sequential, within 2L + 3.
        let (out, calls) = run(&|_, p| prefix_sum(p));
        assert_eq!(out, sequential(&rows, prefix_sum));
        assert!((2..=15).contains(&calls), "{calls} passes");
        // A model that always says letter 0 decodes to letters 0 and gets nothing right.
        let (out, _) = run(&|_, p| constant(p));
        assert_eq!(out, sequential(&rows, constant));
        let scored = greedy_exact::<()>(&rows, |buf| {
            Ok(vec![vec![u32::from(LETTER0); buf[0].len()]; buf.len()])
        })
        .expect("decode");
        assert!(scored.iter().all(|&(a, b)| !a && !b));
    }

    #[test]
    fn outputs_match_scores_only_non_pad_output_targets() {
        let l = 4;
        let s = Spans::new(l);
        let x: Vec<Token> = (0..28).map(|i| LETTER0 + (i % 30) as Token).collect();
        let out: Vec<u32> = x[..27].iter().map(|&t| u32::from(t)).collect();
        // A refusal-style target: S1 given, S2 pad.
        let mut y = vec![PAD; 28];
        let s1 = s.b1().start..s.b1().end + 1;
        y[s1.clone()].copy_from_slice(&x[s1]);
        assert_eq!(outputs_match(&out, &y, l), Some(true));
        // S2 is pad in the target: whatever was decoded there does not count.
        let mut wrong_s2 = out.clone();
        wrong_s2[s.b2().start] = u32::from(EOT);
        assert_eq!(outputs_match(&wrong_s2, &y, l), Some(true));
        // One wrong S1 letter fails it; a target without outputs is not scored.
        let mut wrong_s1 = out.clone();
        wrong_s1[s.b1().start + 1] = u32::from(EOT);
        assert_eq!(outputs_match(&wrong_s1, &y, l), Some(false));
        assert_eq!(outputs_match(&out, &[PAD; 28], l), None);
        // Teacher-forced: the same rule in model coordinates.
        let ex = Example::from_pair(&x, &y, l, SampleType::Full);
        let pred: Vec<u32> =
            ex.y.iter()
                .map(|&t| if t == u32::from(PAD) { 0 } else { t })
                .collect();
        assert_eq!(outputs_match_teacher_forced(&ex, &pred), Some(true));
        let mut bad = pred.clone();
        bad[s.b1().end - 1] = 0; // the stop after S1
        assert_eq!(outputs_match_teacher_forced(&ex, &bad), Some(false));
    }
}
