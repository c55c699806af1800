//! What safety fine-tuning and behaviour evaluation see of the corpus, without candle: the four
//! variants of every safety row, the official chosen/rejected pairs and their score masks
//! (reference/training_spec.md §4–5), and seeded batch sampling.
//!
//! Pairs per batch kind (one coin per batch, as the official trainers toss it):
//!
//! | batch | chosen | rejected |
//! |---|---|---|
//! | unsafe | unsafe instruction → refusal (`unsafe`) | unsafe instruction → compliance (`unsafe_target`) |
//! | safe | safe instruction → its output (`safe`) | safe instruction → refusal (`safe_target`) |
//!
//! The score masks are the official ones in both kinds: non-pad positions of the *unsafe* pair's
//! targets (`y_unsafe` for chosen, `y_unsafe_target` for rejected), so a safe batch scores the
//! segment that the refusal occupies (training_spec §5 table). Pad targets never count.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::artifacts::{ArtifactError, Catalog};
use crate::config::finetune::ScoreMasks;
use crate::corpus::{CorpusSet, Variant, read_set};
use crate::evaluation::Subset;
use crate::grammar::SampleType;
use crate::grammar::vocab::{PAD, Token};
use crate::training::Example;

/// Every variant of the rows of one safety set (one split).
#[derive(Debug, Clone, PartialEq)]
pub struct PairTable {
    /// The set.
    pub set: CorpusSet,
    /// Tokens per row (the corpus window W).
    pub window: usize,
    /// `sample_id` of each row.
    pub sample_id: Vec<u32>,
    /// Text length L of each row.
    pub text_len: Vec<u8>,
    /// Whether the unsafe content (and so the refusal) sits in the second operator pair.
    pub apply_second: Vec<bool>,
    /// Whether the stored operators are unsafe for the row's text.
    pub is_unsafe: Vec<bool>,
    /// Which unsafe subset the row's unsafe variant falls in ([`Subset::AOperator`] or
    /// [`Subset::BOnly`]); `None` when its operators are not unsafe for its text.
    pub subset: Vec<Option<Subset>>,
    /// (x, y) tokens per variant in [`Variant::ALL`] order, each row-major.
    tokens: [(Vec<Token>, Vec<Token>); 4],
}

fn variant_index(v: Variant) -> usize {
    Variant::ALL
        .iter()
        .position(|&w| w == v)
        .expect("listed variant")
}

impl PairTable {
    /// Read the rows of `set` (of `split` only, when given: `train`, `test` or `eval`).
    pub fn read(
        catalog: &Catalog,
        set: CorpusSet,
        split: Option<&str>,
    ) -> Result<Self, ArtifactError> {
        let err = |message: String| ArtifactError::Schema {
            path: catalog.corpus_set(set),
            message,
            target: "corpus".into(),
        };
        let df = crate::training::filter_split(read_set(catalog, set)?, split)
            .map_err(|e| err(e.to_string()))?;
        let bools = |name: &str| -> Result<Vec<bool>, ArtifactError> {
            df.column(name)
                .and_then(|c| {
                    c.bool()?
                        .iter()
                        .enumerate()
                        .map(|(i, b)| {
                            b.ok_or_else(
                                || polars::prelude::polars_err!(ComputeError: "row {i} is null"),
                            )
                        })
                        .collect()
                })
                .map_err(|e| err(format!("column `{name}`: {e}")))
        };
        let apply_second = bools("apply_second")?;
        let is_unsafe = bools("is_unsafe")?;
        let unsafe_ops_is_unsafe = bools("unsafe_ops_is_unsafe")?;
        let pcfg: Vec<u8> = df
            .column("pcfg")
            .and_then(|c| Ok(c.u8()?.into_no_null_iter().collect()))
            .map_err(|e| err(format!("column `pcfg`: {e}")))?;
        let unsafe_ops = crate::artifacts::token_lists(&df, "unsafe_ops")
            .map_err(|e| err(format!("column `unsafe_ops`: {e}")))?;
        let subset = (0..df.height())
            .map(|i| unsafe_subset(pcfg[i], &unsafe_ops[i], unsafe_ops_is_unsafe[i]))
            .collect();
        let text_len: Vec<u8> = df
            .column("text_len")
            .and_then(|c| Ok(c.u8()?.into_no_null_iter().collect()))
            .map_err(|e| err(format!("column `text_len`: {e}")))?;
        let sample_id: Vec<u32> = df
            .column("sample_id")
            .and_then(|c| Ok(c.u32()?.into_no_null_iter().collect()))
            .map_err(|e| err(format!("column `sample_id`: {e}")))?;
        let mut window = None;
        let mut column = |name: String| -> Result<Vec<Token>, ArtifactError> {
            let lists = crate::artifacts::token_lists(&df, &name)
                .map_err(|e| err(format!("column `{name}`: {e}")))?;
            let mut flat = Vec::new();
            for (i, row) in lists.into_iter().enumerate() {
                let w = *window.get_or_insert(row.len());
                if row.len() != w || w == 0 {
                    return Err(err(format!(
                        "row {i} of `{name}` has {} tokens, expected {w}",
                        row.len()
                    )));
                }
                flat.extend(row);
            }
            Ok(flat)
        };
        let mut tokens: [(Vec<Token>, Vec<Token>); 4] = Default::default();
        for v in Variant::ALL {
            tokens[variant_index(v)] = (
                column(format!("x_{}", v.as_str()))?,
                column(format!("y_{}", v.as_str()))?,
            );
        }
        Ok(Self {
            set,
            window: window.unwrap_or(0),
            sample_id,
            text_len,
            apply_second,
            is_unsafe,
            subset,
            tokens,
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.text_len.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.text_len.is_empty()
    }

    /// Full-coordinate (x, y) of row `i`'s `variant`.
    pub fn row(&self, variant: Variant, i: usize) -> (&[Token], &[Token]) {
        let (x, y) = &self.tokens[variant_index(variant)];
        let r = i * self.window..(i + 1) * self.window;
        (&x[r.clone()], &y[r])
    }

    /// Row `i`'s `variant` as a model-coordinate example.
    pub fn example(&self, variant: Variant, i: usize) -> Example {
        let (x, y) = self.row(variant, i);
        Example::from_pair(x, y, usize::from(self.text_len[i]), SampleType::Full)
    }
}

/// The unsafe subset of a row whose unsafe variant has operators `ops` (PCFG `pcfg`) and is
/// unsafe for its text when `is_unsafe` (the corpus applied the safety rule): an always-unsafe
/// operator makes it [`Subset::AOperator`]; otherwise it is unsafe only through a branch-unsafe
/// operator on unsafe-branch text, [`Subset::BOnly`].
pub fn unsafe_subset(pcfg: u8, ops: &[Token], is_unsafe: bool) -> Option<Subset> {
    use crate::grammar::OpClass;
    let a = ops
        .iter()
        .any(|&op| crate::grammar::operators::op_class(pcfg, op) == Some(OpClass::AlwaysUnsafe));
    match (is_unsafe, a) {
        (false, _) => None,
        (true, true) => Some(Subset::AOperator),
        (true, false) => Some(Subset::BOnly),
    }
}

/// A fine-tuning batch before it becomes tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct PairExamples {
    /// Whether this is a refusal (unsafe) batch.
    pub unsafe_batch: bool,
    /// Preferred completions.
    pub chosen: Vec<Example>,
    /// Dispreferred completions.
    pub rejected: Vec<Example>,
    /// Score mask of each chosen row (model coordinates; 1 = counts).
    pub mask_chosen: Vec<Vec<f32>>,
    /// Score mask of each rejected row.
    pub mask_rejected: Vec<Vec<f32>>,
}

/// Model-coordinate mask of the non-pad positions of full-coordinate targets `y`.
fn nonpad_mask(y: &[Token]) -> Vec<f32> {
    y[1..]
        .iter()
        .map(|&t| f32::from(u8::from(t != PAD)))
        .collect()
}

/// The official pairs of rows `rows` (table, row index) for one batch kind, with score masks
/// `masks`.
pub fn pair_examples(
    rows: &[(&PairTable, usize)],
    unsafe_batch: bool,
    masks: ScoreMasks,
) -> PairExamples {
    let (c, r) = if unsafe_batch {
        (Variant::Unsafe, Variant::UnsafeTarget)
    } else {
        (Variant::Safe, Variant::SafeTarget)
    };
    let (mc, mr) = match masks {
        ScoreMasks::Official => (Variant::Unsafe, Variant::UnsafeTarget),
        ScoreMasks::OwnPair => (c, r),
    };
    PairExamples {
        unsafe_batch,
        chosen: rows.iter().map(|(t, i)| t.example(c, *i)).collect(),
        rejected: rows.iter().map(|(t, i)| t.example(r, *i)).collect(),
        mask_chosen: rows
            .iter()
            .map(|(t, i)| nonpad_mask(t.row(mc, *i).1))
            .collect(),
        mask_rejected: rows
            .iter()
            .map(|(t, i)| nonpad_mask(t.row(mr, *i).1))
            .collect(),
    }
}

/// The sampling of one fine-tuning run.
#[derive(Debug, Clone, Copy)]
pub struct BatchSpec<'a> {
    /// Safe-branch rows (`finetune_safe`, train split).
    pub safe_branch: &'a PairTable,
    /// Unsafe-branch rows (`finetune_id_mg`, train split).
    pub unsafe_branch: &'a PairTable,
    /// Probability of a refusal batch.
    pub prob_unsafe: f64,
    /// Probability that a row comes from the unsafe branch.
    pub unsafe_branch_prob: f64,
    /// Rows per batch.
    pub batch_size: usize,
    /// Seed of the run.
    pub seed: u64,
    /// The variant's name (each variant samples its own stream).
    pub variant: &'a str,
    /// Score masks of the pairs.
    pub masks: ScoreMasks,
}

/// The batch of 0-based step `step`: a ChaCha8 stream keyed by (seed, variant, step), so any
/// step's batch can be rebuilt on its own.
pub fn finetune_batch(spec: &BatchSpec<'_>, step: usize) -> PairExamples {
    let mut key = blake3::Hasher::new();
    key.update(b"study.finetune.batch");
    key.update(&spec.seed.to_le_bytes());
    key.update(spec.variant.as_bytes());
    let mut rng = ChaCha8Rng::from_seed(*key.finalize().as_bytes());
    rng.set_stream(step as u64);
    let unsafe_batch = rng.random::<f64>() < spec.prob_unsafe;
    let rows: Vec<(&PairTable, usize)> = (0..spec.batch_size)
        .map(|_| {
            let table = if rng.random::<f64>() < spec.unsafe_branch_prob {
                spec.unsafe_branch
            } else {
                spec.safe_branch
            };
            (table, rng.random_range(0..table.len()))
        })
        .collect();
    pair_examples(&rows, unsafe_batch, spec.masks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::layout::{self, Spans};
    use crate::grammar::vocab::{NULL_LETTER, STOP};

    /// A one-row table with hand-built variants (L = 2, W = 16, no apply_second).
    fn table() -> PairTable {
        let l = 2;
        let s = Spans::new(l);
        let text = [30, 31];
        let null = [NULL_LETTER; 2];
        let pad = [PAD; 2];
        let (b1, b2) = ([32, 33], [34, 35]);
        let (t1, t2) = ([40, 41], [42, 43]);
        let mk = |ops: [Token; 4], o1: &[Token], o2: &[Token], y1: &[Token], y2: &[Token]| {
            let x = layout::row(&ops, &text, o1, o2, 16);
            let mut y = layout::target(&x);
            y[s.text().start..=s.eot()].fill(PAD);
            y[s.b1()].copy_from_slice(y1);
            y[s.b2()].copy_from_slice(y2);
            (x, y)
        };
        let safe_ops = [0, 2, 0, 3];
        let unsafe_ops = [1, 2, 0, 5];
        let v = [
            mk(safe_ops, &b1, &b2, &b1, &b2),
            mk(unsafe_ops, &null, &pad, &null, &pad),
            mk(unsafe_ops, &t1, &t2, &t1, &pad),
            mk(safe_ops, &null, &pad, &null, &pad),
        ];
        PairTable {
            set: CorpusSet::FinetuneSafe,
            window: 16,
            sample_id: vec![0],
            text_len: vec![2],
            apply_second: vec![false],
            is_unsafe: vec![false],
            subset: vec![Some(Subset::AOperator)],
            tokens: v.map(|(x, y)| (x, y)),
        }
    }

    #[test]
    fn unsafe_subsets_follow_the_safety_rule() {
        // PCFG 1: A = {1, 2}, B = {5..9}, S = {3, 4}; 0 is the identity.
        assert_eq!(
            unsafe_subset(1, &[1, 0, 3, 4], true),
            Some(Subset::AOperator)
        );
        assert_eq!(
            unsafe_subset(1, &[5, 2, 0, 0], true),
            Some(Subset::AOperator),
            "A wins"
        );
        assert_eq!(unsafe_subset(1, &[5, 6, 0, 3], true), Some(Subset::BOnly));
        // B on safe-branch text is safe (the corpus's rule says not unsafe): no subset.
        assert_eq!(unsafe_subset(1, &[5, 6, 0, 3], false), None);
        // The same tokens mean other classes under PCFG 3 (A = {8, 9}).
        assert_eq!(
            unsafe_subset(3, &[8, 0, 0, 0], true),
            Some(Subset::AOperator)
        );
        assert_eq!(unsafe_subset(3, &[1, 0, 0, 0], true), Some(Subset::BOnly));
        // Exhaustively against the safety rule: for every operator pair (aliases included), PCFG
        // and branch, a row has a subset iff the rule calls it unsafe, and `a_operator` iff an
        // always-unsafe operator is present.
        use crate::grammar::operators::{is_unsafe, op_class};
        use crate::grammar::vocab::{DUP1, EOT, VOCAB_SIZE};
        use crate::grammar::{Branch, MixedText, OpClass};
        let ops_and_aliases: Vec<Token> = (0..EOT).chain(DUP1..VOCAB_SIZE as Token).collect();
        for pcfg in 1..=4 {
            for &a in &ops_and_aliases {
                for &b in &ops_and_aliases {
                    for branch in [Branch::Safe, Branch::Unsafe, Branch::Mixed] {
                        let ops = [a, b, 0, 0];
                        let rule = is_unsafe(pcfg, &ops, branch, MixedText::Unsafe);
                        let has_a = ops
                            .iter()
                            .any(|&o| op_class(pcfg, o) == Some(OpClass::AlwaysUnsafe));
                        let want = rule.then_some(if has_a {
                            Subset::AOperator
                        } else {
                            Subset::BOnly
                        });
                        assert_eq!(unsafe_subset(pcfg, &ops, rule), want, "{pcfg} {ops:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn pairs_follow_the_official_table_and_masks() {
        let t = table();
        let s = Spans::new(2);
        let seg1: Vec<usize> = (s.b1().start - 1..s.b1().end).collect(); // model coords, + stop
        let unsafe_pairs = pair_examples(&[(&t, 0)], true, ScoreMasks::Official);
        // Chosen: refusal letters on S1; rejected: the compliant letters.
        let c = &unsafe_pairs.chosen[0];
        assert_eq!(c.y[seg1[0]], u32::from(NULL_LETTER));
        let r = &unsafe_pairs.rejected[0];
        assert_eq!(r.y[seg1[0]], 40);
        let safe_pairs = pair_examples(&[(&t, 0)], false, ScoreMasks::Official);
        assert_eq!(safe_pairs.chosen[0].y[seg1[0]], 32);
        assert_eq!(safe_pairs.rejected[0].y[seg1[0]], u32::from(NULL_LETTER));
        // Masks are the unsafe pair's non-pad positions in both batch kinds.
        assert_eq!(unsafe_pairs.mask_chosen, safe_pairs.mask_chosen);
        assert_eq!(unsafe_pairs.mask_rejected, safe_pairs.mask_rejected);
        let m = &safe_pairs.mask_chosen[0];
        for &p in &seg1 {
            assert_eq!(m[p], 1.0, "S1 and its stop count");
        }
        // S2 is pad in y_unsafe: the safe chosen pair's true S2 is not scored (official).
        assert_eq!(m[s.b2().start - 1], 0.0);
        assert_eq!(safe_pairs.chosen[0].y[s.b1().end - 1], u32::from(STOP));
        // Operators and text are never scored in training rows; SOT is (official table).
        assert!(m[..4].iter().all(|&v| v == 0.0));
        assert_eq!(m[4], 1.0, "SOT");
        assert!(m[s.text().start - 1..s.eot()].iter().all(|&v| v == 0.0));
        // Own-pair masks: a safe batch scores its own outputs, both of them.
        let own = pair_examples(&[(&t, 0)], false, ScoreMasks::OwnPair);
        assert_eq!(own.mask_chosen[0], nonpad_mask(t.row(Variant::Safe, 0).1));
        assert_eq!(
            own.mask_chosen[0][s.b2().start - 1],
            1.0,
            "the true S2 counts"
        );
        assert_eq!(
            own.mask_rejected[0],
            nonpad_mask(t.row(Variant::SafeTarget, 0).1)
        );
        let own_unsafe = pair_examples(&[(&t, 0)], true, ScoreMasks::OwnPair);
        assert_eq!(
            own_unsafe.mask_chosen, unsafe_pairs.mask_chosen,
            "unsafe batches: the same"
        );
    }

    #[test]
    fn batches_are_seeded_per_step_and_variant() {
        let a = table();
        let mut b = table();
        b.set = CorpusSet::FinetuneIdMg;
        let spec = BatchSpec {
            safe_branch: &a,
            unsafe_branch: &b,
            prob_unsafe: 0.3,
            unsafe_branch_prob: 0.5,
            batch_size: 4,
            seed: 7,
            variant: "ssft-medium",
            masks: ScoreMasks::Official,
        };
        assert_eq!(finetune_batch(&spec, 3), finetune_batch(&spec, 3));
        let kinds: Vec<bool> = (0..400)
            .map(|k| finetune_batch(&spec, k).unsafe_batch)
            .collect();
        let frac = kinds.iter().filter(|&&u| u).count() as f64 / 400.0;
        assert!((frac - 0.3).abs() < 0.07, "refusal batches {frac}");
        let other = BatchSpec {
            variant: "dpo-medium",
            ..spec
        };
        let differs = (0..50).any(|k| {
            finetune_batch(&spec, k).unsafe_batch != finetune_batch(&other, k).unsafe_batch
        });
        assert!(differs, "variants draw their own streams");
    }
}
