//! What training sees of the corpus, without candle: token tables read from the corpus Parquet,
//! pre-training examples (sample types and null operators applied, shifted into model
//! coordinates), seeded batch sampling with the curriculum, and the scoring windows of the
//! official metrics (reference/training_spec.md §2.2, §3.3, §3.5).
//!
//! Coordinates: a row has `W` tokens (full coordinates). The model reads `x = row[..W−1]` and
//! predicts `y = target[1..]`, so prediction `t` scores full position `t + 1`.

mod decoding;
mod metrics;
mod tokens;

pub use decoding::*;
pub use metrics::*;
pub use tokens::*;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::corpus::PretrainMixConfig;
    use crate::grammar::layout::{self, SampleType, Spans};
    use crate::grammar::vocab::{EOT, LETTER0, PAD, STOP, Token};
    use polars::prelude::Column;

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
