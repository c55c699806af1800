//! Token tables read from the corpus Parquet, pre-training examples and seeded curriculum
//! batches.

use crate::artifacts::{ArtifactError, Catalog};
use crate::config::corpus::PretrainMixConfig;
use crate::corpus::{CorpusSet, read_set};
use crate::grammar::layout::{self, SampleType};
use crate::grammar::vocab::Token;
use polars::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

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
    // Only the held-out pre-training set records how each row was drawn (its schema requires the
    // column); every other set's rows are full sequences.
    let types: Vec<SampleType> = if set == CorpusSet::PretrainTest {
        df.column("sample_type")
            .and_then(|c| c.str().cloned())
            .map_err(|e| err(e.to_string()))?
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let s = s.ok_or_else(|| err(format!("column `sample_type` is null at row {i}")))?;
                SampleType::ALL
                    .into_iter()
                    .find(|t| t.as_str() == s)
                    .ok_or_else(|| {
                        err(format!(
                            "column `sample_type` row {i}: unknown sample type `{s}`"
                        ))
                    })
            })
            .collect::<Result<_, _>>()?
    } else {
        vec![SampleType::Full; lens.len()]
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
