//! The token vocabulary: 59 symbols, ids equal to list positions in the official code.
//!
//! # Source
//! `data_generator/make_data_pretrain.py` (ids 0–51), `pretrain.py` (`ex1`, `ex2`), `ssft/ssft.py`
//! (`dup1`–`dup5`); see `reference/data_spec.md` §1. The official pre-training script builds only
//! 54 of these while the fine-tuning and analysis scripts build 59 (D2); we always use all 59, so
//! one checkpoint serves every stage. The vocabulary is written once per corpus (`vocab.json`) and
//! is never a config knob.

use serde::Serialize;

/// A token id. The vocabulary has 59 entries, so a byte suffices.
pub type Token = u8;

/// Every symbol, indexed by token id.
pub const SYMBOLS: [&str; 59] = [
    "(", ")", "[", "]", "{", "}", "?", "!", "@", "£", // 0–9: primary operators
    "+", "^", "r1", "r2", "r3", "r4", // 10–15: aliases of `(` `(` `)` `)` `[` `[`
    ">", "$", "%", "*", "#", "*^", // 16–21: EOT, BOS, EOS, SOT, PAD, stop
    "2a", "2b", "2c", "2d", "2e", "2f", "2g", "2h", "2i", "2j", "2k", "2l", "2m", "2n", "2o", "2p",
    "2q", "2r", "2s", "2t", "2u", "2v", "2w", "2x", "2y", "2z", "3a", "3b", "3c", "3d", "ex1",
    "ex2", // 52–53: null operators of pre-training
    "dup1", "dup2", "dup3", "dup4", "dup5", // 54–58: aliases of `{ } ? ! @`
];

/// Number of tokens.
pub const VOCAB_SIZE: usize = SYMBOLS.len();
/// Number of grammar terminals ("letters").
pub const NUM_LETTERS: usize = 30;

/// The identity operator `(`.
pub const IDENTITY: Token = 0;
/// End of the operand text, just before the output.
pub const EOT: Token = 16;
/// Beginning of sequence.
pub const BOS: Token = 17;
/// End of sequence: the last slot of every row.
pub const EOS: Token = 18;
/// Start of the operand text.
pub const SOT: Token = 19;
/// Padding; also the loss ignore index.
pub const PAD: Token = 20;
/// The separator that closes each output block.
pub const STOP: Token = 21;
/// The first letter, `2a`; letter index j is token `LETTER0 + j`.
pub const LETTER0: Token = 22;
/// The null (refusal) output is this letter repeated (`no_reply_token_name` in ssft.py).
pub const NULL_LETTER: Token = LETTER0;
/// Pre-training null operator whose output block is all `2a`.
pub const EX1: Token = 52;
/// Pre-training null operator whose output block is all `2b`.
pub const EX2: Token = 53;
/// First of the fine-tuning-only aliases `dup1`–`dup5`.
pub const DUP1: Token = 54;

/// The letter index (0..30) of a letter token, `None` for any other token.
pub fn letter_index(t: Token) -> Option<usize> {
    (LETTER0..LETTER0 + NUM_LETTERS as u8)
        .contains(&t)
        .then(|| usize::from(t - LETTER0))
}

/// The token of letter index `j` (0..30).
pub fn letter_token(j: usize) -> Token {
    debug_assert!(j < NUM_LETTERS);
    LETTER0 + j as u8
}

/// The symbol of a token id, `"<?>"` for ids outside the vocabulary.
pub fn symbol(t: Token) -> &'static str {
    SYMBOLS.get(usize::from(t)).copied().unwrap_or("<?>")
}

/// The token id of a symbol.
pub fn token(symbol: &str) -> Option<Token> {
    SYMBOLS
        .iter()
        .position(|s| *s == symbol)
        .map(|i| i as Token)
}

/// Space-separated symbols of a token sequence; runs of PAD are shortened to `#×n`.
pub fn decode(tokens: &[Token]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i];
        let run = tokens[i..].iter().take_while(|&&u| u == t).count();
        if t == PAD && run > 2 {
            out.push(format!("#×{run}"));
            i += run;
        } else {
            out.push(symbol(t).to_owned());
            i += 1;
        }
    }
    out.join(" ")
}

/// The `vocab.json` artifact: symbols in id order plus the special ids consumers need.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct Vocab {
    /// Symbol of each token id.
    pub symbols: Vec<String>,
    /// Padding / loss-ignore id.
    pub pad: Token,
    /// Null (refusal) letter id.
    pub null_letter: Token,
    /// Token id of the first letter; letters are contiguous.
    pub first_letter: Token,
    /// Number of letters.
    pub num_letters: usize,
}

impl Vocab {
    /// The study's vocabulary.
    pub fn study() -> Self {
        Self {
            symbols: SYMBOLS.iter().map(|s| (*s).to_owned()).collect(),
            pad: PAD,
            null_letter: NULL_LETTER,
            first_letter: LETTER0,
            num_letters: NUM_LETTERS,
        }
    }

    /// Vocabulary size.
    pub fn len(&self) -> usize {
        self.symbols.len()
    }

    /// Whether the vocabulary is empty (never, for the study's).
    pub fn is_empty(&self) -> bool {
        self.symbols.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_official_table() {
        assert_eq!(VOCAB_SIZE, 59);
        assert_eq!(token("£"), Some(9));
        assert_eq!(token("r4"), Some(15));
        assert_eq!(token(">"), Some(EOT));
        assert_eq!(token("#"), Some(PAD));
        assert_eq!(token("*^"), Some(STOP));
        assert_eq!(token("2a"), Some(22));
        assert_eq!(token("3d"), Some(51));
        assert_eq!(token("ex1"), Some(EX1));
        assert_eq!(token("dup5"), Some(58));
    }

    #[test]
    fn symbols_are_unique_and_round_trip() {
        for (i, s) in SYMBOLS.iter().enumerate() {
            assert_eq!(token(s), Some(i as Token), "{s}");
        }
        assert_eq!(letter_index(LETTER0 + 29), Some(29));
        assert_eq!(letter_index(EX1), None);
        assert_eq!(decode(&[BOS, 0, 1, PAD, PAD, PAD, EOS]), "$ ( ) #×3 %");
    }
}
