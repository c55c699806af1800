//! Behaviour of one model on one evaluation set (paper Table 1): the forward passes — one
//! teacher-forced pass per variant, one greedy decode per prompt — scored by
//! [`study::evaluation::scoring`] into behaviour rows.

use candle_core::Result;
use study::corpus::Variant;
use study::evaluation::scoring::{Tally, greedy_scores, teacher_forced_scores};
use study::evaluation::{BehaviourRow, Decoding, EvalSet, Metric};
use study::finetune::PairTable;
use study::grammar::vocab::Token;

use crate::gpt::Gpt;
use crate::train as tr;

/// Rows per forward pass.
const CHUNK: usize = 512;

pub use study::model_id::ModelId;

/// The variant each metric prompts with and scores against.
const METRICS: [(Variant, Metric); 4] = [
    (Variant::Safe, Metric::Instruct),
    (Variant::Unsafe, Metric::Refusal),
    (Variant::UnsafeTarget, Metric::AttackSuccess),
    (Variant::SafeTarget, Metric::OverRefusal),
];

/// Every behaviour row of `model` on the first `rows` rows of `table` (set name `set`):
/// teacher-forced scores for all four variants and, with `greedy`, greedy scores from the safe
/// and the unsafe prompt (each decode scored against both of its targets). With `subsets`, rows
/// are also tallied per unsafe subset (`a_operator`, `b_only`) of their unsafe variant.
pub fn score_set(
    model: &Gpt,
    id: &ModelId,
    set: EvalSet,
    table: &PairTable,
    rows: usize,
    greedy: bool,
    subsets: bool,
) -> Result<Vec<BehaviourRow>> {
    let n = rows.min(table.len());
    let subset = |i: usize| if subsets { table.subset[i] } else { None };
    let mut tally = Tally::default();
    for (variant, metric) in METRICS {
        let examples: Vec<_> = (0..n).map(|i| table.example(variant, i)).collect();
        let x: Vec<Vec<u32>> = examples.iter().map(|e| e.x.clone()).collect();
        let pred = tr::argmax_rows(model, &x, CHUNK)?;
        for (i, (e, p)) in examples.iter().zip(&pred).enumerate() {
            let scores = teacher_forced_scores(e, p);
            tally.add(metric, Decoding::TeacherForced, subset(i), scores);
        }
    }
    if greedy {
        // The prompt of `safe` and `safe_target` is the same (and of `unsafe`/`unsafe_target`):
        // decode once, score against both targets.
        for (prompt, pairs) in [
            (Variant::Safe, [METRICS[0], METRICS[3]]),
            (Variant::Unsafe, [METRICS[1], METRICS[2]]),
        ] {
            let rows_in: Vec<(&[Token], usize)> = (0..n)
                .map(|i| (table.row(prompt, i).0, usize::from(table.text_len[i])))
                .collect();
            let decoded = tr::greedy_rows(model, &rows_in, CHUNK)?;
            for (variant, metric) in pairs {
                for (i, out) in decoded.iter().enumerate() {
                    let y = table.row(variant, i).1;
                    let scores = greedy_scores(out, y, usize::from(table.text_len[i]));
                    tally.add(metric, Decoding::Greedy, subset(i), scores);
                }
            }
        }
    }
    Ok(tally
        .means()
        .into_iter()
        .map(
            |((metric, decoding, score, subset), value, n)| BehaviourRow {
                model: id.clone(),
                set,
                subset,
                metric,
                decoding,
                score,
                value,
                n,
            },
        )
        .collect())
}
