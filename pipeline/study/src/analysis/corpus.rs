//! Corpus statistics: text-length histograms, operator frequencies and safe/unsafe proportions
//! per grammar and set, plus the readable per-set summary that snapshot tests pin.

use std::collections::BTreeMap;

use polars::prelude::*;
use serde::Serialize;

pub use crate::artifacts::token_lists;
use crate::artifacts::{ArtifactError, Catalog};
use crate::corpus::{self, CorpusSet, SetKind};
use crate::grammar::vocab;

/// The three tidy tables of the corpus overview figure.
#[derive(Debug, Clone)]
pub struct CorpusOverview {
    /// `set, text_len, rows, fraction`.
    pub lengths: DataFrame,
    /// `set, operator, role (stored | unsafe_variant), count, fraction`.
    pub operators: DataFrame,
    /// `set, pcfg, rows, unsafe_fraction, unsafe_variant_fraction` (the latter null for
    /// pre-training sets).
    pub labels: DataFrame,
}

fn u8_values(df: &DataFrame, name: &str) -> PolarsResult<Vec<u8>> {
    df.column(name)?
        .u8()?
        .iter()
        .enumerate()
        .map(|(i, v)| crate::training::present(v, name, i))
        .collect()
}

fn bool_values(df: &DataFrame, name: &str) -> PolarsResult<Vec<bool>> {
    df.column(name)?
        .bool()?
        .iter()
        .enumerate()
        .map(|(i, v)| crate::training::present(v, name, i))
        .collect()
}

fn counts<K: Ord + Copy>(values: impl IntoIterator<Item = K>) -> BTreeMap<K, usize> {
    let mut m = BTreeMap::new();
    for v in values {
        *m.entry(v).or_insert(0) += 1;
    }
    m
}

/// Text-length histogram of one set: `set, text_len, rows, fraction`.
pub fn length_histogram(df: &DataFrame, set: CorpusSet) -> PolarsResult<DataFrame> {
    let lens = counts(u8_values(df, "text_len")?);
    let n = df.height().max(1) as f64;
    df!(
        "set" => vec![set.name(); lens.len()],
        "text_len" => lens.keys().copied().collect::<Vec<u8>>(),
        "rows" => lens.values().map(|&c| c as u32).collect::<Vec<_>>(),
        "fraction" => lens.values().map(|&c| c as f64 / n).collect::<Vec<_>>(),
    )
}

/// Operator-token frequencies of one set, for the stored operators and (safety sets) the unsafe
/// variant's: `set, operator, role, count, fraction`.
pub fn operator_frequencies(df: &DataFrame, set: CorpusSet) -> PolarsResult<DataFrame> {
    let mut roles = vec![("stored", "ops")];
    if set.kind() != SetKind::Pretrain {
        roles.push(("unsafe_variant", "unsafe_ops"));
    }
    let (mut s, mut op, mut role, mut count, mut frac) = (vec![], vec![], vec![], vec![], vec![]);
    for (r, column) in roles {
        let c = counts(token_lists(df, column)?.into_iter().flatten());
        let total: usize = c.values().sum();
        for (t, k) in c {
            s.push(set.name());
            op.push(vocab::symbol(t));
            role.push(r);
            count.push(k as u32);
            frac.push(k as f64 / total.max(1) as f64);
        }
    }
    df!("set" => s, "operator" => op, "role" => role, "count" => count, "fraction" => frac)
}

/// Safe/unsafe proportions of one set per PCFG: `set, pcfg, rows, unsafe_fraction,
/// unsafe_variant_fraction`.
pub fn label_proportions(df: &DataFrame, set: CorpusSet) -> PolarsResult<DataFrame> {
    let pcfg = u8_values(df, "pcfg")?;
    let unsafe_ = bool_values(df, "is_unsafe")?;
    let variant = if set.kind() == SetKind::Pretrain {
        None
    } else {
        Some(bool_values(df, "unsafe_ops_is_unsafe")?)
    };
    let mut by: BTreeMap<u8, (usize, usize, usize)> = BTreeMap::new();
    for i in 0..df.height() {
        let e = by.entry(pcfg[i]).or_default();
        e.0 += 1;
        e.1 += usize::from(unsafe_[i]);
        e.2 += variant.as_ref().map_or(0, |v| usize::from(v[i]));
    }
    df!(
        "set" => vec![set.name(); by.len()],
        "pcfg" => by.keys().copied().collect::<Vec<u8>>(),
        "rows" => by.values().map(|v| v.0 as u32).collect::<Vec<_>>(),
        "unsafe_fraction" => by.values().map(|v| v.1 as f64 / v.0 as f64).collect::<Vec<_>>(),
        "unsafe_variant_fraction" => by.values().map(|v| variant.as_ref().map(|_| v.2 as f64 / v.0 as f64)).collect::<Vec<Option<f64>>>(),
    )
}

fn vstack(frames: Vec<DataFrame>) -> PolarsResult<DataFrame> {
    let mut it = frames.into_iter();
    let mut acc = it.next().unwrap_or_default();
    for f in it {
        acc.vstack_mut(&f)?;
    }
    Ok(acc)
}

/// Errors of corpus analysis.
#[derive(Debug, thiserror::Error)]
pub enum AnalysisError {
    /// An input is missing or stale.
    #[error(transparent)]
    Artifact(#[from] ArtifactError),
    /// A table operation failed.
    #[error("corpus analysis: {0}")]
    Polars(#[from] PolarsError),
}

/// Read every corpus set and compute the overview tables.
pub fn corpus_overview(catalog: &Catalog) -> Result<CorpusOverview, AnalysisError> {
    let (mut lengths, mut operators, mut labels) = (vec![], vec![], vec![]);
    for set in CorpusSet::ALL {
        let df = corpus::read_set(catalog, set)?;
        lengths.push(length_histogram(&df, set)?);
        operators.push(operator_frequencies(&df, set)?);
        labels.push(label_proportions(&df, set)?);
    }
    Ok(CorpusOverview {
        lengths: vstack(lengths)?,
        operators: vstack(operators)?,
        labels: vstack(labels)?,
    })
}

/// A readable summary of one set, for snapshots and logs: schema, counts, rounded proportions
/// and 8 decoded samples.
#[derive(Debug, Clone, Serialize)]
pub struct SetSummary {
    /// Set name.
    pub set: String,
    /// Rows.
    pub rows: usize,
    /// `name: dtype` of every column.
    pub schema: Vec<String>,
    /// Rows per text length.
    pub text_len: BTreeMap<u8, usize>,
    /// Rows per PCFG.
    pub pcfg: BTreeMap<u8, usize>,
    /// Rows per text branch.
    pub branch: BTreeMap<String, usize>,
    /// Rows per split or sample type, where the set has one.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, usize>,
    /// Fraction of stored rows that are unsafe, 4 significant digits.
    pub unsafe_fraction: f64,
    /// Fraction of unsafe-variant rows that are unsafe (safety sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unsafe_variant_fraction: Option<f64>,
    /// Fraction of rows with `apply_second` (safety sets).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub apply_second_fraction: Option<f64>,
    /// The first rows, decoded: the stored row and, for safety sets, the unsafe variant (x) and
    /// its refusal target (y).
    pub samples: Vec<String>,
}

/// Round to `digits` significant digits (insta's rounding is by decimal places).
pub fn round_sig(x: f64, digits: i32) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let scale = 10f64.powi(digits - 1 - x.abs().log10().floor() as i32);
    (x * scale).round() / scale
}

fn string_counts(df: &DataFrame, name: &str) -> PolarsResult<BTreeMap<String, usize>> {
    Ok(counts(
        df.column(name)?
            .str()?
            .iter()
            .enumerate()
            .map(|(i, v)| crate::training::present(v, name, i))
            .collect::<PolarsResult<Vec<_>>>()?,
    )
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect())
}

/// Summarise one set's table.
pub fn summarize_set(df: &DataFrame, set: CorpusSet) -> PolarsResult<SetSummary> {
    let n = df.height().max(1) as f64;
    let frac = |v: &[bool]| round_sig(v.iter().filter(|&&b| b).count() as f64 / n, 4);
    let safety = set.kind() != SetKind::Pretrain;
    let group_col = if safety {
        Some("split")
    } else if set == CorpusSet::PretrainTest {
        Some("sample_type")
    } else {
        None
    };
    let mut samples = Vec::new();
    let k = df.height().min(8);
    if safety {
        let (xs, xu, yu) = (
            token_lists(df, "x_safe")?,
            token_lists(df, "x_unsafe")?,
            token_lists(df, "y_unsafe")?,
        );
        for i in 0..k {
            samples.push(format!("x_safe:   {}", vocab::decode(&xs[i])));
            samples.push(format!("x_unsafe: {}", vocab::decode(&xu[i])));
            samples.push(format!("y_unsafe: {}", vocab::decode(&yu[i])));
        }
    } else {
        let t = token_lists(df, "tokens")?;
        samples.extend(t.iter().take(k).map(|r| vocab::decode(r)));
    }
    Ok(SetSummary {
        set: set.name().to_owned(),
        rows: df.height(),
        schema: df
            .columns()
            .iter()
            .map(|c| format!("{}: {}", c.name(), c.dtype()))
            .collect(),
        text_len: counts(u8_values(df, "text_len")?),
        pcfg: counts(u8_values(df, "pcfg")?),
        branch: string_counts(df, "branch")?,
        groups: match group_col {
            Some(c) => string_counts(df, c)?,
            None => BTreeMap::new(),
        },
        unsafe_fraction: frac(&bool_values(df, "is_unsafe")?),
        unsafe_variant_fraction: if safety {
            Some(frac(&bool_values(df, "unsafe_ops_is_unsafe")?))
        } else {
            None
        },
        apply_second_fraction: if safety {
            Some(frac(&bool_values(df, "apply_second")?))
        } else {
            None
        },
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_sig_keeps_significant_digits() {
        assert_eq!(round_sig(0.000012345, 4), 0.00001235);
        assert_eq!(round_sig(123456.0, 4), 123500.0);
        assert_eq!(round_sig(0.0, 4), 0.0);
        assert_eq!(round_sig(-0.33333, 2), -0.33);
    }

    #[test]
    fn a_null_string_is_an_error_naming_column_and_row() {
        let df = df!("branch" => [Some("safe"), None, Some("unsafe")]).expect("frame");
        let e = string_counts(&df, "branch").expect_err("null").to_string();
        assert!(e.contains("column `branch` is null at row 1"), "{e}");
        let ok = df!("branch" => ["safe", "unsafe", "safe"]).expect("frame");
        let counts = string_counts(&ok, "branch").expect("counts");
        assert_eq!(
            counts,
            BTreeMap::from([("safe".to_owned(), 2), ("unsafe".to_owned(), 1)])
        );
    }
}
