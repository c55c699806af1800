//! The `corpus` stage's library: every set of the study as Parquet, generated deterministically
//! and in parallel.
//!
//! Each row draws from its own ChaCha8 stream: the key is derived from `(seed, set name)` and
//! the stream id is the row index, so a row's content depends on neither thread count nor the
//! order rows are generated in.
//!
//! # Paper
//! §3 (data-generating process), appendix (jailbreak sets).
//! # Source
//! `data_generator/*.py`, the data classes of `pretrain.py`, `ssft/ssft.py` and
//! `evals/activation_space_analysis.py` (reference/data_spec.md).

pub mod rows;
pub mod sets;

mod frames;
mod schema;
mod stage;

use polars::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

pub use frames::{pretrain_frame, safety_frame};
pub use rows::{PretrainRow, SafetyRow, Split, Tables};
pub use schema::{SCHEMA_VERSION, schema};
pub use sets::{CorpusSet, SetKind, Variant};
pub use stage::{CorpusError, CorpusOutputs, read_set, write_corpus, write_set};

use crate::config::CorpusConfig;
use crate::grammar::layout::NUM_OPS;

/// Reports progress of long work; implemented by the CLI with progress bars.
pub trait Progress: Sync {
    /// A new phase with `total` units of work.
    fn start(&self, _name: &str, _total: u64) {}
    /// `n` more units done.
    fn inc(&self, _n: u64) {}
    /// The phase is complete.
    fn finish(&self) {}
}

/// A [`Progress`] that reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;
impl Progress for NoProgress {}

/// The RNG of row `index` of `set`.
pub fn row_rng(seed: u64, set: CorpusSet, index: u64) -> ChaCha8Rng {
    let mut key = blake3::Hasher::new();
    key.update(b"study.corpus");
    key.update(&seed.to_le_bytes());
    key.update(set.name().as_bytes());
    let mut rng = ChaCha8Rng::from_seed(*key.finalize().as_bytes());
    rng.set_stream(index);
    rng
}

/// Rows generated per parallel work item (and per progress tick).
const CHUNK: usize = 2048;

fn par_rows<T: Send>(n: usize, progress: &dyn Progress, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let chunks: Vec<Vec<T>> = (0..n.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let rows: Vec<T> = (c * CHUNK..((c + 1) * CHUNK).min(n)).map(&f).collect();
            progress.inc(rows.len() as u64);
            rows
        })
        .collect();
    chunks.into_iter().flatten().collect()
}

/// Generate the pre-training rows of `set`.
pub fn pretrain_rows(
    cfg: &CorpusConfig,
    tables: &Tables,
    set: CorpusSet,
    progress: &dyn Progress,
) -> Vec<PretrainRow> {
    par_rows(set.rows(cfg), progress, |i| {
        rows::pretrain_row(&mut row_rng(cfg.seed, set, i as u64), cfg, tables, set)
    })
}

/// Generate the rows of a fine-tuning or evaluation set.
///
/// # Panics
/// If `set` is a pre-training set.
pub fn safety_rows(
    cfg: &CorpusConfig,
    tables: &Tables,
    set: CorpusSet,
    progress: &dyn Progress,
) -> Vec<SafetyRow> {
    let spec = set.safety_spec(cfg).expect("a safety set");
    let n_train = cfg.sizes.finetune_train;
    par_rows(set.rows(cfg), progress, |i| {
        let split = match set.kind() {
            SetKind::Eval => Split::Eval,
            _ if i < n_train => Split::Train,
            _ => Split::Test,
        };
        rows::safety_row(
            &mut row_rng(cfg.seed, set, i as u64),
            cfg,
            tables,
            &spec,
            split,
        )
    })
}

/// Generate one set as a table.
pub fn generate_set(
    cfg: &CorpusConfig,
    tables: &Tables,
    set: CorpusSet,
    progress: &dyn Progress,
) -> PolarsResult<DataFrame> {
    match set.kind() {
        SetKind::Pretrain => pretrain_frame(&pretrain_rows(cfg, tables, set, progress), set),
        _ => safety_frame(&safety_rows(cfg, tables, set, progress), set, cfg),
    }
}

/// Number of operator slots, re-exported for table consumers.
pub const OPS_PER_ROW: usize = NUM_OPS;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::layout::{self, Spans};
    use crate::grammar::operators;
    use crate::grammar::vocab::{self, PAD};
    use crate::grammar::{Branch, Family};
    use proptest::prelude::*;
    use rand::{Rng, RngCore};

    fn cfg(n: usize) -> CorpusConfig {
        let mut c = CorpusConfig::default();
        c.sizes.pretrain_train = n;
        c.sizes.pretrain_test = n;
        c.sizes.finetune_train = n;
        c.sizes.finetune_test = n / 4;
        c.sizes.eval = n;
        c
    }

    fn text_of(x: &[u8], l: usize) -> &[u8] {
        &x[Spans::new(l).text()]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        /// Spans within bounds; text a crop of a derivable string of the set's grammar; outputs
        /// equal the composed bijections; labels exactly per the rule.
        #[test]
        fn rows_satisfy_the_grammar_invariants(seed in any::<u64>(), lmin in 1usize..=35, span in 0usize..6, set_i in 0usize..14) {
            let mut c = cfg(8);
            c.seed = seed;
            c.layout.text_len_min = lmin;
            c.layout.text_len_max = (lmin + span).min(35);
            c.layout.window = layout::min_window(c.layout.text_len_max) + 3;
            let tables = Tables::new(&c);
            let set = CorpusSet::ALL[set_i];
            for i in 0..4u64 {
                let mut rng = row_rng(c.seed, set, i);
                let mut replay = rng.clone();
                let (meta, x) = match set.kind() {
                    SetKind::Pretrain => { let r = rows::pretrain_row(&mut rng, &c, &tables, set); (r.meta.clone(), r.tokens) }
                    _ => {
                        let spec = set.safety_spec(&c).expect("safety");
                        let r = rows::safety_row(&mut rng, &c, &tables, &spec, Split::Eval);
                        // The unsafe variant's outputs are the composed bijections of its ops.
                        let l = usize::from(r.meta.text_len);
                        let (t1, t2) = layout::outputs(tables.maps(r.meta.pcfg, SetKind::Eval), &r.unsafe_ops, text_of(&r.variants[0].0, l));
                        let xt = &r.variant(Variant::UnsafeTarget).0;
                        prop_assert_eq!(&xt[Spans::new(l).b1()], &t1[..]);
                        prop_assert_eq!(&xt[Spans::new(l).b2()], &t2[..]);
                        prop_assert_eq!(r.unsafe_ops_is_unsafe, operators::is_unsafe(r.meta.pcfg, &r.unsafe_ops, r.meta.branch, c.fidelity.mixed_text));
                        (r.meta.clone(), r.variants[0].0.clone())
                    }
                };
                let l = usize::from(meta.text_len);
                prop_assert!((c.layout.text_len_min..=c.layout.text_len_max).contains(&l));
                prop_assert_eq!(x.len(), c.layout.window);
                // Replay the crop: the full string is derivable and the text is its window.
                if set.kind() != SetKind::Pretrain && set.safety_spec(&c).expect("s").pcfg1_only {
                    // pcfg fixed: no draw
                } else {
                    let _: u8 = *c.pcfgs.get(replay.random_range(0..c.pcfgs.len())).expect("pcfg");
                }
                let _ = replay.random_range(c.layout.text_len_min..=c.layout.text_len_max);
                let family = set.safety_spec(&c).map_or(Family::Pretrain, |s| s.family);
                let g = tables.grammar(meta.pcfg, family);
                let (mut full, mut br) = (Vec::new(), Vec::new());
                g.sample_into(&mut replay, &mut full, &mut br);
                prop_assert_eq!(full.len(), usize::from(meta.full_len));
                prop_assert!(g.derives(&full));
                let st = usize::from(meta.crop_start);
                let want: Vec<u8> = full[st..st + l].iter().map(|&j| vocab::letter_token(j.into())).collect();
                prop_assert_eq!(text_of(&x, l), &want[..]);
                prop_assert_eq!(meta.branch, Branch::of(&br[st..st + l]));
                // Stored outputs are the composed bijections; the label follows the rule.
                let (b1, b2) = layout::outputs(tables.maps(meta.pcfg, set.kind()), &meta.ops, &want);
                prop_assert_eq!(&x[Spans::new(l).b1()], &b1[..]);
                prop_assert_eq!(&x[Spans::new(l).b2()], &b2[..]);
                prop_assert_eq!(meta.is_unsafe, operators::is_unsafe(meta.pcfg, &meta.ops, meta.branch, c.fidelity.mixed_text));
                let _ = replay.next_u32();
            }
        }
    }

    fn frac(rows: &[SafetyRow], f: impl Fn(&SafetyRow) -> bool) -> f64 {
        rows.iter().filter(|r| f(r)).count() as f64 / rows.len() as f64
    }

    /// Proportions within tolerance of the config and of exact values from data_spec.
    #[test]
    fn proportions_match_the_config() {
        let c = cfg(4000);
        let tables = Tables::new(&c);
        let p = NoProgress;
        // Stored rows of the standard sets are safe; their unsafe variants always unsafe.
        for set in [
            CorpusSet::FinetuneSafe,
            CorpusSet::FinetuneUnsafe,
            CorpusSet::FinetuneIdMg,
            CorpusSet::EvalStdSafe,
            CorpusSet::EvalStdUnsafe,
            CorpusSet::EvalJbMisgenText,
        ] {
            let rows = safety_rows(&c, &tables, set, &p);
            assert_eq!(frac(&rows, |r| r.meta.is_unsafe), 0.0, "{set:?}");
            assert_eq!(frac(&rows, |r| r.unsafe_ops_is_unsafe), 1.0, "{set:?}");
            // apply_second: 0.2 in fine-tuning, 0.1 in evaluation (±4σ).
            let want = if set.kind() == SetKind::Eval {
                c.sampling.apply_second_eval
            } else {
                c.sampling.apply_second_train
            };
            let got = frac(&rows, |r| r.apply_second);
            let sd = (want * (1.0 - want) / rows.len() as f64).sqrt();
            assert!(
                (got - want).abs() < 4.0 * sd,
                "{set:?}: apply_second {got} vs {want}"
            );
            // PCFGs uniform.
            for pcfg in 1..=4 {
                let f = frac(&rows, |r| r.meta.pcfg == pcfg);
                assert!((f - 0.25).abs() < 0.04, "{set:?}: pcfg {pcfg} {f}");
            }
        }
        // Alias-token set: unsafe unless all four operators are `+`/`^`: 1 − 3/32 (data_spec §6.2).
        let rows = safety_rows(&c, &tables, CorpusSet::EvalJbMisgenTokens, &p);
        let got = frac(&rows, |r| r.meta.is_unsafe);
        assert!(
            (got - (1.0 - 3.0 / 32.0)).abs() < 0.02,
            "misgen tokens unsafe {got}"
        );
        assert!(
            rows.iter().all(|r| r.meta.pcfg == 1
                && r.meta.ops.iter().all(|&o| (10..=13).contains(&o) || o == 0))
        );
        // LITERAL id_mg operators: ≈ 96.4% unsafe (data_spec Appendix B).
        let mut lit = c.clone();
        lit.fidelity.unsafe_text_operators = crate::config::corpus::Choice::Literal;
        let rows = safety_rows(&lit, &Tables::new(&lit), CorpusSet::FinetuneIdMg, &p);
        let got = frac(&rows, |r| r.meta.is_unsafe);
        assert!((got - 0.9637).abs() < 0.015, "literal id_mg unsafe {got}");
    }

    /// Reference: data_spec §2.5 Monte-Carlo branch shares of pre-training crops (PCFG1, L 25–35).
    #[test]
    fn pretraining_crop_branches_match_the_reference() {
        let mut c = cfg(20_000);
        c.pcfgs = vec![1];
        let rows = pretrain_rows(&c, &Tables::new(&c), CorpusSet::PretrainTrain, &NoProgress);
        let share =
            |b| rows.iter().filter(|r| r.meta.branch == b).count() as f64 / rows.len() as f64;
        for (b, want) in [
            (Branch::Safe, 0.538),
            (Branch::Unsafe, 0.300),
            (Branch::Mixed, 0.162),
        ] {
            assert!(
                (share(b) - want).abs() < 0.015,
                "{b:?}: {} vs {want}",
                share(b)
            );
        }
    }

    #[test]
    fn refusal_variants_follow_the_official_layout() {
        let c = cfg(400);
        let tables = Tables::new(&c);
        for r in safety_rows(&c, &tables, CorpusSet::FinetuneIdMg, &NoProgress) {
            let s = Spans::new(usize::from(r.meta.text_len));
            let (x, y) = r.variant(Variant::Unsafe);
            let null = |v: &[u8]| v.iter().all(|&t| t == vocab::NULL_LETTER);
            let pad = |v: &[u8]| v.iter().all(|&t| t == PAD);
            if r.apply_second {
                assert_eq!(&x[1..3], &[vocab::IDENTITY, vocab::IDENTITY]);
                assert!(pad(&y[s.b1()]) && null(&y[s.b2()]) && null(&x[s.b2()]));
            } else {
                assert!(null(&x[s.b1()]) && null(&y[s.b1()]) && pad(&y[s.b2()]));
            }
            if r.split == Split::Train {
                assert!(pad(&y[s.text()]), "text is not supervised in training");
            }
            assert!(pad(&y[..5]));
        }
    }

    #[test]
    fn generation_is_deterministic_across_thread_counts() {
        let c = cfg(3000);
        let tables = Tables::new(&c);
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("pool");
            pool.install(|| pretrain_rows(&c, &tables, CorpusSet::PretrainTrain, &NoProgress))
        };
        assert_eq!(run(1), run(2));
        let mut other = c.clone();
        other.seed = 1;
        assert_ne!(
            run(1),
            pretrain_rows(&other, &tables, CorpusSet::PretrainTrain, &NoProgress)
        );
    }
}
