//! The grammars' symbols: nonterminals ([`Nt`]), right-hand-side symbols ([`Sym`]) and the
//! level-2 branch a letter descends from ([`Branch`]).

use serde::{Deserialize, Serialize};

/// A nonterminal. Names follow the official grammar dictionaries (`D10` is `10$`, `H10` is `10#`,
/// `A10` is `10*`, `F1` is `1f`, …).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Nt {
    V,
    U,
    T,
    S,
    R,
    Q,
    P,
    D10,
    H10,
    A10,
    R10,
    P10,
    D1010,
    H1010,
    A1010,
    O,
    N,
    M,
    W,
    X,
    L,
    K,
    J,
    F1,
    H1,
    G,
    H,
    I,
    E1,
    G1,
    I1,
}

pub(super) const NUM_NT: usize = Nt::I1 as usize + 1;

impl Nt {
    /// The name used in the official grammar dictionaries.
    pub fn name(self) -> &'static str {
        use Nt::*;
        match self {
            V => "v",
            U => "u",
            T => "t",
            S => "s",
            R => "r",
            Q => "q",
            P => "p",
            D10 => "10$",
            H10 => "10#",
            A10 => "10*",
            R10 => "r10",
            P10 => "p10",
            D1010 => "10$10",
            H1010 => "10#10",
            A1010 => "10*10",
            O => "o",
            N => "n",
            M => "m",
            W => "w",
            X => "x",
            L => "l",
            K => "k",
            J => "j",
            F1 => "1f",
            H1 => "1h",
            G => "g",
            H => "h",
            I => "i",
            E1 => "1e",
            G1 => "1g",
            I1 => "1i",
        }
    }

    /// For a level-2 symbol, which branch its subtree belongs to; `None` at other levels.
    pub fn branch(self) -> Option<Branch> {
        use Nt::*;
        match self {
            R | Q | P | R10 | P10 => Some(Branch::Safe),
            D10 | H10 | A10 | D1010 | H1010 | A1010 => Some(Branch::Unsafe),
            _ => None,
        }
    }
}

/// Which level-2 branch a piece of text descends from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Branch {
    /// Only from the safe-dominant symbols `r q p` (and `r10 p10`).
    Safe,
    /// Only from the unsafe-dominant symbols `10$ 10# 10*` (and their `…10` variants).
    Unsafe,
    /// From both.
    Mixed,
}

impl Branch {
    /// Lower-case name, as stored in Parquet.
    pub fn as_str(self) -> &'static str {
        match self {
            Branch::Safe => "safe",
            Branch::Unsafe => "unsafe",
            Branch::Mixed => "mixed",
        }
    }

    /// The branch of a text whose letters descend from `branches`.
    pub fn of(branches: &[Branch]) -> Branch {
        let safe = branches.contains(&Branch::Safe);
        let unsafe_ = branches.contains(&Branch::Unsafe);
        match (safe, unsafe_) {
            (true, false) => Branch::Safe,
            (false, true) => Branch::Unsafe,
            _ => Branch::Mixed,
        }
    }
}

/// A right-hand-side symbol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sym {
    /// A nonterminal.
    N(Nt),
    /// A letter index (0..30).
    T(u8),
}
