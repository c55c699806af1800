//! The sequence layout of one row, and the pre-training views of it (sample types, null
//! operators).
//!
//! Full coordinates (data_spec §4.1), for text length `L` and window `W`:
//!
//! | positions | content |
//! |---|---|
//! | 0 | `$` BOS |
//! | 1–4 | operators o1 o2 o3 o4 |
//! | 5 | `*` SOT |
//! | 6 … L+5 | operand text |
//! | L+6 | `>` EOT |
//! | L+7 … 2L+6 | B1 = o2∘o1(text) |
//! | 2L+7 | `*^` |
//! | 2L+8 … 3L+7 | B2 = o4∘o3∘o2∘o1(text) |
//! | 3L+8 | `*^` |
//! | 3L+9 … W−2 | `#` PAD |
//! | W−1 | `%` EOS |
//!
//! The model sees `x[..W-1]` and predicts `y[1..]` (model coordinates); that shift belongs to
//! training, not to the corpus.
//!
//! # Source
//! `make_data_pretrain.py` L188–219; `pretrain.py` L239–366 (sample types, `ex` tokens).

use serde::{Deserialize, Serialize};

use super::operators::Operators;
use super::vocab::{self, PAD, Token};

/// Number of operator slots per row (`--num_cap 4`; hard-wired in ssft.py).
pub const NUM_OPS: usize = 4;
/// Tokens of a row that are not text or output: BOS, 4 operators, SOT, EOT, 2 stops, EOS.
pub const NON_TEXT_TOKENS: usize = 10;

/// Index ranges of a row with text length `l` (full coordinates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spans {
    /// Text length L.
    pub text_len: usize,
}

impl Spans {
    /// Spans for text length `l`.
    pub fn new(text_len: usize) -> Self {
        Self { text_len }
    }
    /// Operator slots `1..5`.
    pub fn ops(&self) -> std::ops::Range<usize> {
        1..1 + NUM_OPS
    }
    /// Operand text `6..L+6`.
    pub fn text(&self) -> std::ops::Range<usize> {
        6..6 + self.text_len
    }
    /// The EOT slot `L+6`.
    pub fn eot(&self) -> usize {
        self.text_len + 6
    }
    /// Output block 1 letters `L+7..2L+7`.
    pub fn b1(&self) -> std::ops::Range<usize> {
        self.text_len + 7..2 * self.text_len + 7
    }
    /// Output block 2 letters `2L+8..3L+8`.
    pub fn b2(&self) -> std::ops::Range<usize> {
        2 * self.text_len + 8..3 * self.text_len + 8
    }
    /// Length of the non-pad content, `3L+10` (with EOS).
    pub fn content_len(&self) -> usize {
        3 * self.text_len + NON_TEXT_TOKENS
    }
}

/// The smallest window that holds a row of text length `l`.
pub fn min_window(text_len: usize) -> usize {
    Spans::new(text_len).content_len()
}

/// The two output blocks of operators `ops` applied left to right to `text`:
/// `B1 = o2(o1(text))`, `B2 = o4(o3(B1))` (data_spec §3.3).
pub fn outputs(
    maps: &Operators,
    ops: &[Token; NUM_OPS],
    text: &[Token],
) -> (Vec<Token>, Vec<Token>) {
    let mut b1 = text.to_vec();
    maps.apply(ops[0], &mut b1);
    maps.apply(ops[1], &mut b1);
    let mut b2 = b1.clone();
    maps.apply(ops[2], &mut b2);
    maps.apply(ops[3], &mut b2);
    (b1, b2)
}

/// A full row `x` of length `window` with the given output blocks (which need not be the true
/// outputs: refusal rows carry null or PAD blocks).
///
/// # Panics
/// If the window is too small for the text (configs are validated against this).
pub fn row(
    ops: &[Token; NUM_OPS],
    text: &[Token],
    b1: &[Token],
    b2: &[Token],
    window: usize,
) -> Vec<Token> {
    let s = Spans::new(text.len());
    assert!(
        window >= s.content_len(),
        "window {window} < {}",
        s.content_len()
    );
    let mut x = Vec::with_capacity(window);
    x.push(vocab::BOS);
    x.extend_from_slice(ops);
    x.push(vocab::SOT);
    x.extend_from_slice(text);
    x.push(vocab::EOT);
    x.extend_from_slice(b1);
    x.push(vocab::STOP);
    x.extend_from_slice(b2);
    x.push(vocab::STOP);
    x.resize(window - 1, PAD);
    x.push(vocab::EOS);
    x
}

/// The default target of a row: `x` with the operator slots and BOS hidden (`y[0..5] = PAD`).
pub fn target(x: &[Token]) -> Vec<Token> {
    let mut y = x.to_vec();
    y[..1 + NUM_OPS].fill(PAD);
    y
}

/// Pre-training sample types (data_spec §3.6, step 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleType {
    /// Pure language modelling of the text (operators and outputs hidden).
    Pcfg,
    /// Text and both output blocks.
    Full,
    /// Text and the first output block.
    Comp1,
    /// The second output block from the first (text hidden).
    Comp2,
}

impl SampleType {
    /// All types, in the official order (c = 1..4).
    pub const ALL: [SampleType; 4] = [
        SampleType::Pcfg,
        SampleType::Full,
        SampleType::Comp1,
        SampleType::Comp2,
    ];

    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            SampleType::Pcfg => "pcfg",
            SampleType::Full => "full",
            SampleType::Comp1 => "comp1",
            SampleType::Comp2 => "comp2",
        }
    }

    /// Mask `x` (input) and `y` (target, from [`target`]) of a row with text length `l` into
    /// this sample type, in full coordinates (`pretrain.py` L342–352).
    pub fn apply(self, x: &mut [Token], y: &mut [Token], text_len: usize) {
        let s = Spans::new(text_len);
        let b = s.eot() + 1;
        let e0 = s.b2().start;
        match self {
            SampleType::Pcfg => {
                x[s.ops()].fill(PAD);
                y[s.ops()].fill(PAD);
                x[b..].fill(PAD);
                y[b..].fill(PAD);
            }
            SampleType::Full => {}
            SampleType::Comp1 => {
                x[e0..].fill(PAD);
                y[e0..].fill(PAD);
            }
            SampleType::Comp2 => {
                x[s.text().start..b].fill(PAD);
                y[s.text().start..e0].fill(PAD);
            }
        }
    }
}

/// Inject a pre-training null operator (`ex1`/`ex2`) chosen by `u ~ U(0,1)`, rewriting the
/// blocks as in data_spec §3.6 step 4: an `ex` in the first pair nulls B1 and drops B2; one in
/// the second pair nulls B2. `u == 0.875` does nothing, as in the official comparisons.
pub fn inject_null_operator(x: &mut [Token], y: &mut [Token], text_len: usize, u: f64) {
    let s = Spans::new(text_len);
    let case = if u < 0.875 {
        (u / 0.125) as usize
    } else if u > 0.875 {
        7
    } else {
        return;
    };
    let op = if case % 2 == 0 {
        vocab::EX1
    } else {
        vocab::EX2
    };
    let fill = if case % 2 == 0 {
        vocab::LETTER0
    } else {
        vocab::LETTER0 + 1
    };
    let slot = 1 + case / 2;
    x[slot] = op;
    if slot <= 2 {
        x[s.b1()].fill(fill);
        y[s.b1()].fill(fill);
        x[s.b2()].fill(PAD);
        y[s.b2()].fill(PAD);
    } else {
        x[s.b2()].fill(fill);
        y[s.b2()].fill(fill);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grammar::operators::start_random;

    fn t(s: &str) -> Token {
        vocab::token(s).expect("token")
    }

    /// Reference: data_spec §4.1's worked example (PCFG1, L = 25, operators `( ) { !`).
    #[test]
    fn worked_example_positions() {
        let maps = Operators::new(start_random(1));
        let ops = [t("("), t(")"), t("{"), t("!")];
        let mut text = vec![t("2j")];
        text.resize(25, t("2a"));
        let (b1, b2) = outputs(&maps, &ops, &text);
        let x = row(&ops, &text, &b1, &b2, 160);
        assert_eq!(x.len(), 160);
        assert_eq!(x[6], t("2j"));
        assert_eq!(x[31], vocab::EOT);
        assert_eq!(x[32], t("2w"), "perm(0)[9] = 22 → 2w");
        assert_eq!(x[57], vocab::STOP);
        assert_eq!(x[83], vocab::STOP);
        assert!(x[84..159].iter().all(|&u| u == PAD));
        assert_eq!(x[159], vocab::EOS);
        let s = Spans::new(25);
        assert_eq!((s.b1(), s.b2()), (32..57, 58..83));
    }

    #[test]
    fn sample_types_supervise_the_documented_spans() {
        let maps = Operators::new(0);
        let ops = [t(")"), t("["), t("]"), t("{")];
        let text: Vec<Token> = (0..7).map(vocab::letter_token).collect();
        let (b1, b2) = outputs(&maps, &ops, &text);
        let x0 = row(&ops, &text, &b1, &b2, 40);
        let supervised = |st: SampleType| {
            let (mut x, mut y) = (x0.clone(), target(&x0));
            st.apply(&mut x, &mut y, 7);
            (
                x,
                y.iter()
                    .enumerate()
                    .filter(|(_, u)| **u != PAD)
                    .map(|(i, _)| i)
                    .collect::<Vec<_>>(),
            )
        };
        // pcfg: SOT, text, EOT.
        assert_eq!(supervised(SampleType::Pcfg).1, (5..=13).collect::<Vec<_>>());
        // full: everything but BOS, operators and padding.
        let full = supervised(SampleType::Full).1;
        assert_eq!(full.first(), Some(&5));
        assert_eq!(full.last(), Some(&39));
        // comp1: up to B1's stop.
        assert_eq!(
            supervised(SampleType::Comp1).1,
            (5..=21).collect::<Vec<_>>()
        );
        // comp2: SOT, B2, stop, EOS; B1 stays visible in x.
        let (x, sup) = supervised(SampleType::Comp2);
        assert_eq!(
            sup,
            [&[5][..], &(22..=29).collect::<Vec<_>>(), &[39]].concat()
        );
        assert_eq!(&x[14..21], &b1[..]);
        assert!(x[6..14].iter().all(|&u| u == PAD));
    }

    #[test]
    fn null_operators_rewrite_the_right_block() {
        let maps = Operators::new(0);
        let ops = [t(")"), t("["), t("]"), t("{")];
        let text: Vec<Token> = (0..5).map(vocab::letter_token).collect();
        let (b1, b2) = outputs(&maps, &ops, &text);
        let x0 = row(&ops, &text, &b1, &b2, 30);
        let s = Spans::new(5);
        for (u, slot, op, block_nulled, other_padded) in [
            (0.0, 1, vocab::EX1, s.b1(), true),
            (0.2, 1, vocab::EX2, s.b1(), true),
            (0.3, 2, vocab::EX1, s.b1(), true),
            (0.6, 3, vocab::EX1, s.b2(), false),
            (0.99, 4, vocab::EX2, s.b2(), false),
        ] {
            let (mut x, mut y) = (x0.clone(), target(&x0));
            inject_null_operator(&mut x, &mut y, 5, u);
            assert_eq!(x[slot], op, "u = {u}");
            let fill = if op == vocab::EX1 {
                vocab::LETTER0
            } else {
                vocab::LETTER0 + 1
            };
            assert!(x[block_nulled.clone()].iter().all(|&v| v == fill));
            assert!(y[block_nulled].iter().all(|&v| v == fill));
            if other_padded {
                assert!(y[s.b2()].iter().all(|&v| v == PAD));
            } else {
                assert_eq!(&y[s.b1()], &b1[..]);
            }
        }
        let (mut x, mut y) = (x0.clone(), target(&x0));
        inject_null_operator(&mut x, &mut y, 5, 0.875);
        assert_eq!(x, x0);
    }
}
