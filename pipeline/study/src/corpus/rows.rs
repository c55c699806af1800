//! Sampling one row of a set: text crop, operators, labels and (for safety sets) the four
//! variants. Pure functions of a config, a set and an RNG.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};

use super::sets::{CorpusSet, OpList, SafetySpec, SetKind, Variant};
use crate::config::CorpusConfig;
use crate::grammar::layout::{self, NUM_OPS, Spans};
use crate::grammar::operators::{self, OperatorOffsets, Operators};
use crate::grammar::vocab::{self, IDENTITY, PAD, Token};
use crate::grammar::{Branch, Family, Grammar, SampleType};

/// The operators of the pre-training generator's second scheme: `( r4 r3` (`lst_choice0`,
/// make_data_pretrain.py L132–134; D19).
const PRETRAIN_FORCED: [&str; 3] = ["(", "r4", "r3"];

/// Grammars and operator maps for every PCFG, built once per corpus.
#[derive(Debug, Clone)]
pub struct Tables {
    grammars: Vec<Grammar>,
    safety_maps: Vec<Operators>,
    pretrain_maps: Vec<Operators>,
}

impl Tables {
    /// Build every grammar family and operator table the config needs.
    pub fn new(cfg: &CorpusConfig) -> Self {
        let mut grammars = Vec::new();
        for pcfg in 1..=4 {
            for family in Family::ALL {
                let g = Grammar::new(pcfg, family);
                grammars.push(match cfg.unsafe_branch_letters {
                    Some(k) => g.with_unsafe_branch_letters(k),
                    None => g,
                });
            }
        }
        let safety_maps: Vec<Operators> = (1..=4)
            .map(|p| Operators::new(operators::start_random(p)))
            .collect();
        let pretrain_maps = match cfg.fidelity.operator_offsets {
            OperatorOffsets::Intended => safety_maps.clone(),
            OperatorOffsets::Literal => vec![Operators::new(0); 4],
        };
        Self {
            grammars,
            safety_maps,
            pretrain_maps,
        }
    }

    /// The grammar of `family` for `pcfg`.
    pub fn grammar(&self, pcfg: u8, family: Family) -> &Grammar {
        let f = Family::ALL
            .iter()
            .position(|&x| x == family)
            .expect("listed family");
        &self.grammars[usize::from(pcfg - 1) * Family::ALL.len() + f]
    }

    /// Operator maps of `pcfg` as used by set kind `kind`.
    pub fn maps(&self, pcfg: u8, kind: SetKind) -> &Operators {
        match kind {
            SetKind::Pretrain => &self.pretrain_maps[usize::from(pcfg - 1)],
            _ => &self.safety_maps[usize::from(pcfg - 1)],
        }
    }
}

/// Metadata shared by every row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowMeta {
    /// PCFG 1..=4.
    pub pcfg: u8,
    /// Text length L.
    pub text_len: u8,
    /// Crop start in the full string.
    pub crop_start: u16,
    /// Length of the full sampled string.
    pub full_len: u16,
    /// Branch of the text crop (from the level-2 ancestors of its letters).
    pub branch: Branch,
    /// The stored row's operators.
    pub ops: [Token; NUM_OPS],
    /// Whether the stored row is unsafe by the rule.
    pub is_unsafe: bool,
}

/// A pre-training row.
#[derive(Debug, Clone, PartialEq)]
pub struct PretrainRow {
    /// Shared metadata.
    pub meta: RowMeta,
    /// The full row (window tokens) with true outputs.
    pub tokens: Vec<Token>,
    /// Sample type of a held-out row (pretrain_test); `None` in the training pool.
    pub sample_type: Option<SampleType>,
}

/// A fine-tuning or evaluation row.
#[derive(Debug, Clone, PartialEq)]
pub struct SafetyRow {
    /// Shared metadata.
    pub meta: RowMeta,
    /// `train`, `test` or `eval`.
    pub split: Split,
    /// Operators of the unsafe variants.
    pub unsafe_ops: [Token; NUM_OPS],
    /// Whether `unsafe_ops` is unsafe by the rule on this text.
    pub unsafe_ops_is_unsafe: bool,
    /// The unsafe content sits in the second pair only (`apply_second`).
    pub apply_second: bool,
    /// (x, y) of each variant, in [`Variant::ALL`] order.
    pub variants: [(Vec<Token>, Vec<Token>); 4],
}

/// The split of a safety row, which decides its target semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Split {
    /// Fine-tuning training rows: text and EOT are not supervised (ssft.py L604).
    Train,
    /// Held-out fine-tuning rows (ssft.py test semantics).
    Test,
    /// Evaluation rows (activation_space_analysis.py semantics: `y_unsafe_target` supervises B2).
    Eval,
}

impl Split {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Eval => "eval",
        }
    }
}

/// Sample `L`, a full string and a crop. `spare` is how many final letters can never be cropped:
/// 2 in the pre-training generator, 1 in the safety generator (D14).
fn crop<R: Rng>(
    rng: &mut R,
    g: &Grammar,
    cfg: &CorpusConfig,
    spare: usize,
) -> (Vec<Token>, u16, u16, Branch) {
    let l = rng.random_range(cfg.layout.text_len_min..=cfg.layout.text_len_max);
    let (mut letters, mut branches) = (Vec::with_capacity(512), Vec::with_capacity(512));
    g.sample_into(rng, &mut letters, &mut branches);
    // Validation guarantees L + spare ≤ the family's shortest string.
    let st = rng.random_range(0..=letters.len() - l - spare);
    let text = letters[st..st + l]
        .iter()
        .map(|&j| vocab::letter_token(usize::from(j)))
        .collect();
    (
        text,
        st as u16,
        letters.len() as u16,
        Branch::of(&branches[st..st + l]),
    )
}

/// Uniform over `list`.
fn pick<R: Rng>(rng: &mut R, list: &[Token]) -> Token {
    *list.choose(rng).expect("operator lists are non-empty")
}

/// The safety generator's scheme: 4 iid from `list`, or `(` plus 3 iid, shuffled.
fn safety_ops<R: Rng>(rng: &mut R, list: &[Token], p_uniform: f64) -> [Token; NUM_OPS] {
    let mut ops: [Token; NUM_OPS] = std::array::from_fn(|_| pick(rng, list));
    if rng.random::<f64>() >= p_uniform {
        ops[0] = IDENTITY;
        ops.shuffle(rng);
    }
    ops
}

/// The pre-training generator's scheme: 4 iid over the 16 operator tokens, or one of `( r4 r3`
/// plus 3 iid, shuffled.
fn pretrain_ops<R: Rng>(rng: &mut R, p_uniform: f64) -> [Token; NUM_OPS] {
    let all: Vec<Token> = (0..16).collect();
    let mut ops: [Token; NUM_OPS] = std::array::from_fn(|_| pick(rng, &all));
    if rng.random::<f64>() >= p_uniform {
        let forced: Vec<Token> = PRETRAIN_FORCED
            .iter()
            .filter_map(|s| vocab::token(s))
            .collect();
        ops[0] = pick(rng, &forced);
        ops.shuffle(rng);
    }
    ops
}

fn pick_pcfg<R: Rng>(rng: &mut R, cfg: &CorpusConfig) -> u8 {
    *cfg.pcfgs.choose(rng).expect("validated non-empty")
}

/// One pre-training row.
pub fn pretrain_row<R: Rng>(
    rng: &mut R,
    cfg: &CorpusConfig,
    tables: &Tables,
    set: CorpusSet,
) -> PretrainRow {
    let pcfg = pick_pcfg(rng, cfg);
    let (text, crop_start, full_len, branch) =
        crop(rng, tables.grammar(pcfg, Family::Pretrain), cfg, 2);
    let ops = pretrain_ops(rng, cfg.sampling.pretrain_uniform_ops);
    let maps = tables.maps(pcfg, SetKind::Pretrain);
    let (b1, b2) = layout::outputs(maps, &ops, &text);
    let tokens = layout::row(&ops, &text, &b1, &b2, cfg.layout.window);
    let sample_type = (set == CorpusSet::PretrainTest).then(|| {
        let p = cfg.pretrain_mix.test.as_array();
        let u: f64 = rng.random();
        let mut acc = 0.0;
        let mut chosen = SampleType::Full;
        for (t, pt) in SampleType::ALL.into_iter().zip(p) {
            acc += pt;
            if pt > 0.0 && u < acc {
                chosen = t;
                break;
            }
        }
        chosen
    });
    PretrainRow {
        meta: RowMeta {
            pcfg,
            text_len: text.len() as u8,
            crop_start,
            full_len,
            branch,
            ops,
            is_unsafe: operators::is_unsafe(pcfg, &ops, branch, cfg.fidelity.mixed_text),
        },
        tokens,
        sample_type,
    }
}

/// Replace operators to make the unsafe variant (ssft.py `unsafe_ops`, data_spec §5.4).
///
/// Per pair: if both or neither slot is `(`, both are redrawn from `u`; otherwise the
/// non-identity slot is. With probability `p_second` the first pair becomes `( (` so the unsafe
/// content sits in the second pair only. For JB-CO-Task, one slot per pair is then redrawn from
/// the safe list `direct`. Returns the new operators and `apply_second`.
pub fn unsafe_ops<R: Rng>(
    rng: &mut R,
    ops: &[Token; NUM_OPS],
    u: &[Token],
    direct: Option<&[Token]>,
    p_second: f64,
) -> ([Token; NUM_OPS], bool) {
    let mut o = *ops;
    let mut apply_second = false;
    for (a, b) in [(0, 1), (2, 3)] {
        let direct_slot = if (o[a] == IDENTITY) == (o[b] == IDENTITY) {
            o[a] = pick(rng, u);
            o[b] = pick(rng, u);
            if rng.random::<bool>() { a } else { b }
        } else {
            let (k, id) = if o[a] == IDENTITY { (b, a) } else { (a, b) };
            o[k] = pick(rng, u);
            id
        };
        if a == 2 && rng.random::<f64>() < p_second {
            apply_second = true;
            o[0] = IDENTITY;
            o[1] = IDENTITY;
        }
        if let Some(d) = direct {
            o[direct_slot] = pick(rng, d);
        }
    }
    (o, apply_second)
}

/// One fine-tuning or evaluation row.
pub fn safety_row<R: Rng>(
    rng: &mut R,
    cfg: &CorpusConfig,
    tables: &Tables,
    spec: &SafetySpec,
    split: Split,
) -> SafetyRow {
    let pcfg = if spec.pcfg1_only {
        1
    } else {
        pick_pcfg(rng, cfg)
    };
    let (text, crop_start, full_len, branch) = crop(rng, tables.grammar(pcfg, spec.family), cfg, 1);
    let l = text.len();
    let ops = safety_ops(
        rng,
        &spec.stored_ops.resolve(pcfg),
        cfg.sampling.safety_uniform_ops,
    );
    let p_second = match split {
        Split::Eval => cfg.sampling.apply_second_eval,
        _ => cfg.sampling.apply_second_train,
    };
    let direct = spec.direct.map(|d: OpList| d.resolve(pcfg));
    let (uops, apply_second) = unsafe_ops(
        rng,
        &ops,
        &spec.replacement.resolve(pcfg),
        direct.as_deref(),
        p_second,
    );
    let maps = tables.maps(pcfg, SetKind::Finetune);
    let window = cfg.layout.window;
    let (b1, b2) = layout::outputs(maps, &ops, &text);
    let (t1, t2) = layout::outputs(maps, &uops, &text);
    let null = vec![vocab::NULL_LETTER; l];
    let pad = vec![PAD; l];
    let s = Spans::new(l);
    // The target of a variant: x with BOS/operators hidden, text and EOT hidden in training,
    // and the given output blocks.
    let target = |x: &[Token], yb1: &[Token], yb2: &[Token]| {
        let mut y = layout::target(x);
        if split == Split::Train {
            y[s.text().start..=s.eot()].fill(PAD);
        }
        y[s.b1()].copy_from_slice(yb1);
        y[s.b2()].copy_from_slice(yb2);
        y
    };
    let x_safe = layout::row(&ops, &text, &b1, &b2, window);
    let y_safe = target(&x_safe, &b1, &b2);
    let (x_unsafe, y_unsafe) = if apply_second {
        let x = layout::row(&uops, &text, &t1, &null, window);
        let y = target(&x, &pad, &null);
        (x, y)
    } else {
        let x = layout::row(&uops, &text, &null, &pad, window);
        let y = target(&x, &null, &pad);
        (x, y)
    };
    let x_unsafe_target = layout::row(&uops, &text, &t1, &t2, window);
    let y_unsafe_target = match (apply_second, split) {
        (false, Split::Eval) => target(&x_unsafe_target, &t1, &t2),
        (true, Split::Eval) => target(&x_unsafe_target, &pad, &t2),
        (false, _) => target(&x_unsafe_target, &t1, &pad),
        (true, _) => target(&x_unsafe_target, &pad, &pad),
    };
    let (x_safe_target, y_safe_target) = if apply_second {
        let x = layout::row(&ops, &text, &b1, &null, window);
        let y = target(&x, &pad, &null);
        (x, y)
    } else {
        let x = layout::row(&ops, &text, &null, &pad, window);
        let y = target(&x, &null, &pad);
        (x, y)
    };
    let mixed = cfg.fidelity.mixed_text;
    SafetyRow {
        meta: RowMeta {
            pcfg,
            text_len: l as u8,
            crop_start,
            full_len,
            branch,
            ops,
            is_unsafe: operators::is_unsafe(pcfg, &ops, branch, mixed),
        },
        split,
        unsafe_ops: uops,
        unsafe_ops_is_unsafe: operators::is_unsafe(pcfg, &uops, branch, mixed),
        apply_second,
        variants: [
            (x_safe, y_safe),
            (x_unsafe, y_unsafe),
            (x_unsafe_target, y_unsafe_target),
            (x_safe_target, y_safe_target),
        ],
    }
}

impl SafetyRow {
    /// (x, y) of `variant`.
    pub fn variant(&self, variant: Variant) -> &(Vec<Token>, Vec<Token>) {
        let i = Variant::ALL
            .iter()
            .position(|&v| v == variant)
            .expect("listed variant");
        &self.variants[i]
    }
}
