//! The four probabilistic context-free grammars that generate operands, and their families.
//!
//! Every grammar is strictly layered: level 0 (`v`) → level 1 (`u t s`) → level 2 (the *safe*
//! symbols `r q p` and the *unsafe* symbols `10$ 10# 10*`) → level 3 → level 4 → level 5, whose
//! productions emit three letters each. The four PCFGs differ only at level 5; the *families*
//! (pre-training, safe, unsafe, id_mg, ood_mg, intermediate) differ only above it.
//!
//! # Paper
//! §3 and the appendix ("safe and unsafe dominant branches").
//! # Source
//! `data_generator/make_data_pretrain.py` and `make_data_safetyfinetune_pcfg{1..4}.py`;
//! `reference/data_spec.md` §2 (all productions are reproduced from its tables).

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use super::vocab::NUM_LETTERS;

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

const NUM_NT: usize = Nt::I1 as usize + 1;

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

/// A grammar family: which productions replace the pre-training skeleton (data_spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The full pre-training grammar (no generator flag).
    Pretrain,
    /// Only the safe level-2 symbols (`--safe`).
    Safe,
    /// Only the unsafe level-2 symbols, binary level 4 (`--unsafe`).
    Unsafe,
    /// In-distribution unsafe text (`--unsafe_id_mg`).
    IdMg,
    /// Out-of-distribution unsafe text (`--unsafe_ood_mg`).
    OodMg,
    /// One safe- and one unsafe-named level-2 block per string (`--intermediate`).
    Intermediate,
}

impl Family {
    /// All families, in a fixed order.
    pub const ALL: [Family; 6] = [
        Family::Pretrain,
        Family::Safe,
        Family::Unsafe,
        Family::IdMg,
        Family::OodMg,
        Family::Intermediate,
    ];

    /// snake_case name, as stored in Parquet.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Pretrain => "pretrain",
            Family::Safe => "safe",
            Family::Unsafe => "unsafe",
            Family::IdMg => "id_mg",
            Family::OodMg => "ood_mg",
            Family::Intermediate => "intermediate",
        }
    }

    /// The branch every string of this family is dominated by; `None` for the pre-training
    /// family, whose crops can be of either branch or mixed.
    pub fn branch(self) -> Option<Branch> {
        match self {
            Family::Pretrain => None,
            Family::Safe => Some(Branch::Safe),
            Family::Unsafe | Family::IdMg | Family::OodMg => Some(Branch::Unsafe),
            Family::Intermediate => Some(Branch::Mixed),
        }
    }
}

/// Level-5 productions of PCFG 1–4 (data_spec §2.3), as letter names, for `g h i 1e 1g 1i`.
const LEVEL5: [[[&str; 6]; 6]; 4] = [
    [
        ["2a", "2b", "2c", "2d", "2e", "2f"],
        ["2h", "2i", "2j", "2k", "2l", "2m"],
        ["2n", "2o", "2p", "2q", "2r", "2s"],
        ["2t", "2u", "2v", "2w", "2x", "2y"],
        ["2z", "3a", "3b", "3c", "3d", "3c"],
        ["3b", "3a", "2z", "2y", "2x", "2w"],
    ],
    [
        ["2v", "2u", "2t", "2s", "2r", "2q"],
        ["2p", "2o", "2n", "2m", "2l", "2k"],
        ["2j", "2i", "2h", "2g", "2f", "2e"],
        ["2d", "2c", "2b", "2a", "2c", "2e"],
        ["2g", "2i", "2k", "2m", "2o", "2q"],
        ["2s", "2u", "2w", "2y", "3a", "3c"],
    ],
    [
        ["3d", "3b", "2z", "2x", "2w", "2u"],
        ["2s", "2q", "2o", "2m", "2k", "2i"],
        ["2g", "2e", "2c", "2a", "2d", "2g"],
        ["2j", "2m", "2p", "2s", "2v", "2y"],
        ["3b", "3a", "2x", "2u", "2r", "2o"],
        ["2l", "2i", "2f", "2c", "2e", "2i"],
    ],
    [
        ["2m", "2q", "2u", "2y", "3c", "2z"],
        ["2v", "2r", "2n", "2j", "2f", "2b"],
        ["2f", "2k", "2p", "2u", "2z", "3c"],
        ["2x", "2s", "2n", "2i", "2d", "2g"],
        ["2m", "2s", "2y", "3c", "2w", "2q"],
        ["2k", "2e", "2c", "2h", "2o", "2v"],
    ],
];

/// Set the level-5 rules (the only place where the four PCFGs differ) to PCFG `pcfg`'s.
fn set_level5(rules: &mut [Vec<Vec<Sym>>], pcfg: u8) {
    use Nt::*;
    for (k, nt) in [G, H, I, E1, G1, I1].into_iter().enumerate() {
        let l = &LEVEL5[usize::from(pcfg - 1)][k];
        rules[nt as usize] = vec![
            l[..3].iter().map(|s| Sym::T(letter(s))).collect(),
            l[3..].iter().map(|s| Sym::T(letter(s))).collect(),
        ];
    }
}

/// Letter index of a letter name (`2a` → 0 … `2z` → 25, `3a` → 26 … `3d` → 29).
fn letter(name: &str) -> u8 {
    let b = name.as_bytes();
    let base = if b[0] == b'2' { 0 } else { 26 };
    base + (b[1] - b'a')
}

/// A grammar: for each nonterminal, its equiprobable productions (a repeated production counts
/// twice, as in the official weight vectors, which are all uniform).
#[derive(Debug, Clone)]
pub struct Grammar {
    rules: Vec<Vec<Vec<Sym>>>,
    /// The rules used below an unsafe-named level-2 symbol when
    /// [`Grammar::with_unsafe_branch_letters`] is set (the same as `rules` above level 5).
    unsafe_rules: Option<Vec<Vec<Vec<Sym>>>>,
    pcfg: u8,
    family: Family,
}

impl Grammar {
    /// The grammar of `family` for PCFG `pcfg` (1..=4).
    ///
    /// # Panics
    /// If `pcfg` is not in 1..=4 (configs are validated before this is reached).
    pub fn new(pcfg: u8, family: Family) -> Self {
        use Nt::*;
        assert!(
            (1..=4).contains(&pcfg),
            "PCFG {pcfg} does not exist (1..=4)"
        );
        let mut rules: Vec<Vec<Vec<Sym>>> = vec![Vec::new(); NUM_NT];
        let mut set = |nt: Nt, prods: &[&[Nt]]| {
            rules[nt as usize] = prods
                .iter()
                .map(|p| p.iter().map(|&n| Sym::N(n)).collect())
                .collect();
        };
        // Levels 0–4: the pre-training skeleton (data_spec §2.2).
        set(V, &[&[U, T], &[T, S]]);
        set(U, &[&[R, P], &[P, D10, Q], &[H10, R, Q]]);
        set(T, &[&[Q, P, R], &[A10, P, Q], &[D10, R]]);
        set(S, &[&[P, H10], &[R, D10, A10], &[D10, A10, H10]]);
        set(R, &[&[O, N, M], &[W, X, O]]);
        set(Q, &[&[W, O], &[M, O, X]]);
        set(P, &[&[M, N], &[O, O, W]]);
        set(D10, &[&[X, W, M], &[N, W, N]]);
        set(H10, &[&[N, X, X], &[N, N, X]]);
        set(A10, &[&[M, M, X], &[W, W, O]]);
        set(O, &[&[L, K, J], &[L, H1, J]]);
        set(N, &[&[K, H1, F1], &[K, L, J]]);
        set(M, &[&[L, K, F1], &[F1, H1, L]]);
        set(W, &[&[F1, H1, H1], &[L, F1, J]]);
        set(X, &[&[J, J, L], &[F1, L]]);
        let ternary_level4 = |set: &mut dyn FnMut(Nt, &[&[Nt]])| {
            set(L, &[&[I1, I, G], &[I, I1, G]]);
            set(K, &[&[E1, G, I], &[G1, G, H]]);
            set(J, &[&[I, E1, I1], &[G1, H, E1]]);
            set(F1, &[&[I1, H, G1], &[I1, E1, H]]);
            set(H1, &[&[H, I1, G1], &[G1, E1, H]]);
        };
        // The unsafe-branch families use binary level-4 rules: contiguous 2-symbol slices of the
        // pre-training productions (data_spec §2.4, D13).
        let binary_level4 = |set: &mut dyn FnMut(Nt, &[&[Nt]])| {
            set(L, &[&[I1, G], &[I, I1]]);
            set(K, &[&[E1, G], &[G, H]]);
            set(J, &[&[I, E1], &[G1, H]]);
            set(F1, &[&[I1, H], &[I1, E1]]);
            set(H1, &[&[H, I1], &[G1, E1]]);
        };
        match family {
            Family::Pretrain => ternary_level4(&mut set),
            Family::Safe => {
                ternary_level4(&mut set);
                set(V, &[&[U], &[T], &[T], &[S]]);
                set(U, &[&[R], &[P], &[R], &[Q]]);
                set(T, &[&[Q], &[P], &[R]]);
                set(S, &[&[P], &[R]]);
            }
            Family::Unsafe => {
                binary_level4(&mut set);
                set(V, &[&[U], &[S]]);
                set(U, &[&[H10]]);
                set(S, &[&[H10], &[D10, A10], &[D10, A10, H10]]);
            }
            Family::IdMg => {
                binary_level4(&mut set);
                set(V, &[&[U], &[S]]);
                set(U, &[&[H10]]);
                set(S, &[&[H10], &[D10], &[D10], &[H10], &[A10]]);
                set(D10, &[&[N, W, N]]);
                set(A10, &[&[M, M]]);
            }
            Family::OodMg => {
                binary_level4(&mut set);
                set(V, &[&[S]]);
                set(S, &[&[A10]]);
                set(A10, &[&[M, X], &[W, W, O]]);
                set(X, &[&[J, J, L]]);
            }
            Family::Intermediate => {
                ternary_level4(&mut set);
                set(V, &[&[U], &[T], &[T], &[S]]);
                set(U, &[&[P10, D10], &[H1010, R]]);
                set(T, &[&[A1010, P], &[D1010, R]]);
                set(S, &[&[P10, H10], &[R10, D10]]);
                set(R, &[&[O], &[W]]);
                set(R10, &[&[M], &[O]]);
                set(P, &[&[M], &[O]]);
                set(P10, &[&[N], &[W]]);
                set(D10, &[&[X], &[N]]);
                set(D1010, &[&[M], &[N]]);
                set(H10, &[&[N], &[N]]);
                set(H1010, &[&[X], &[X]]);
                set(A1010, &[&[X], &[O]]);
            }
        }
        set_level5(&mut rules, pcfg);
        Self {
            rules,
            unsafe_rules: None,
            pcfg,
            family,
        }
    }

    /// A **cpu-only option, not the paper's grammar**: below the unsafe-named level-2 symbols
    /// (`10$ 10# 10*` and the intermediate family's unsafe-named blocks) letters are emitted
    /// through PCFG `letters_of`'s level-5 productions instead of this PCFG's. Every production
    /// above level 5, every length and every branch label stay as they are; only *which*
    /// letter triples a branch emits changes, so a short span shows its branch in its
    /// letter statistics (as a few letters show which PCFG they come from).
    ///
    /// # Panics
    /// If `letters_of` is not in 1..=4 (configs are validated before this is reached).
    pub fn with_unsafe_branch_letters(mut self, letters_of: u8) -> Self {
        assert!(
            (1..=4).contains(&letters_of),
            "PCFG {letters_of} does not exist (1..=4)"
        );
        let mut unsafe_rules = self.rules.clone();
        set_level5(&mut unsafe_rules, letters_of);
        self.unsafe_rules = Some(unsafe_rules);
        self
    }

    /// The PCFG number (1..=4).
    pub fn pcfg(&self) -> u8 {
        self.pcfg
    }

    /// The family.
    pub fn family(&self) -> Family {
        self.family
    }

    /// The productions of `nt` (empty if it is unreachable in this family).
    pub fn productions(&self, nt: Nt) -> &[Vec<Sym>] {
        &self.rules[nt as usize]
    }

    /// Sample a full string from the start symbol `v`, appending its letter indices to
    /// `letters` and, for each letter, the branch of its level-2 ancestor to `branches`.
    ///
    /// One uniform draw per expanded nonterminal, children left to right (data_spec §2.1).
    pub fn sample_into<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        letters: &mut Vec<u8>,
        branches: &mut Vec<Branch>,
    ) {
        self.expand(Nt::V, Branch::Mixed, rng, letters, branches);
    }

    fn expand<R: Rng + ?Sized>(
        &self,
        nt: Nt,
        branch: Branch,
        rng: &mut R,
        letters: &mut Vec<u8>,
        branches: &mut Vec<Branch>,
    ) {
        let branch = nt.branch().unwrap_or(branch);
        let rules = match (&self.unsafe_rules, branch) {
            (Some(unsafe_rules), Branch::Unsafe) => unsafe_rules,
            _ => &self.rules,
        };
        let prods = &rules[nt as usize];
        let prod = &prods[rng.random_range(0..prods.len())];
        for &sym in prod {
            match sym {
                Sym::T(letter) => {
                    letters.push(letter);
                    branches.push(branch);
                }
                Sym::N(child) => self.expand(child, branch, rng, letters, branches),
            }
        }
    }

    /// Whether `letters` is derivable from `v` in this grammar: an independent recogniser
    /// (memoised span search), used by tests to check the sampler. It knows the paper's
    /// grammars only, not [`Grammar::with_unsafe_branch_letters`].
    pub fn derives(&self, letters: &[u8]) -> bool {
        let mut memo = BTreeMap::new();
        self.ends(Nt::V, 0, letters, &mut memo)
            .contains(&letters.len())
    }

    /// All end positions `e` such that `nt` derives `letters[start..e]`.
    fn ends(
        &self,
        nt: Nt,
        start: usize,
        letters: &[u8],
        memo: &mut BTreeMap<(Nt, usize), Vec<usize>>,
    ) -> Vec<usize> {
        if let Some(v) = memo.get(&(nt, start)) {
            return v.clone();
        }
        let mut out = Vec::new();
        for prod in &self.rules[nt as usize] {
            let mut frontier = vec![start];
            for &sym in prod {
                let mut next = Vec::new();
                for &pos in &frontier {
                    match sym {
                        Sym::T(l) => {
                            if letters.get(pos) == Some(&l) {
                                next.push(pos + 1);
                            }
                        }
                        Sym::N(child) => next.extend(self.ends(child, pos, letters, memo)),
                    }
                }
                next.sort_unstable();
                next.dedup();
                frontier = next;
            }
            out.extend(frontier);
        }
        out.sort_unstable();
        out.dedup();
        memo.insert((nt, start), out.clone());
        out
    }

    /// The exact distribution of full-string lengths (length → probability), by dynamic
    /// programming over the grammar. Used as a reference for data_spec §2.4's table.
    pub fn length_distribution(&self) -> BTreeMap<usize, f64> {
        fn dist(
            g: &Grammar,
            nt: Nt,
            memo: &mut Vec<Option<BTreeMap<usize, f64>>>,
        ) -> BTreeMap<usize, f64> {
            if let Some(d) = &memo[nt as usize] {
                return d.clone();
            }
            let prods = &g.rules[nt as usize];
            let w = 1.0 / prods.len() as f64;
            let mut out = BTreeMap::new();
            for prod in prods {
                let mut acc = BTreeMap::from([(0usize, 1.0f64)]);
                for &sym in prod {
                    let child = match sym {
                        Sym::T(_) => BTreeMap::from([(1usize, 1.0)]),
                        Sym::N(c) => dist(g, c, memo),
                    };
                    let mut next = BTreeMap::new();
                    for (&a, &pa) in &acc {
                        for (&b, &pb) in &child {
                            *next.entry(a + b).or_insert(0.0) += pa * pb;
                        }
                    }
                    acc = next;
                }
                for (len, p) in acc {
                    *out.entry(len).or_insert(0.0) += w * p;
                }
            }
            memo[nt as usize] = Some(out.clone());
            out
        }
        dist(self, Nt::V, &mut vec![None; NUM_NT])
    }

    /// The letters (indices) this grammar can emit.
    pub fn emitted_letters(&self) -> Vec<u8> {
        let mut seen = [false; NUM_LETTERS];
        for prods in self.rules.iter().chain(self.unsafe_rules.iter().flatten()) {
            for prod in prods {
                for &sym in prod {
                    if let Sym::T(l) = sym {
                        seen[usize::from(l)] = true;
                    }
                }
            }
        }
        (0..NUM_LETTERS as u8)
            .filter(|&l| seen[usize::from(l)])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn moments(d: &BTreeMap<usize, f64>) -> (usize, usize, f64, f64) {
        let mean: f64 = d.iter().map(|(&l, &p)| l as f64 * p).sum();
        let var: f64 = d.iter().map(|(&l, &p)| (l as f64 - mean).powi(2) * p).sum();
        let min = *d.keys().next().expect("non-empty");
        let max = *d.keys().last().expect("non-empty");
        (min, max, mean, var.sqrt())
    }

    /// Reference: data_spec §2.4's exact full-string length table.
    #[test]
    fn full_length_distributions_match_the_reference_table() {
        let table = [
            (Family::Pretrain, 261, 486, 391.125, 50.61, 26),
            (Family::Safe, 54, 81, 71.672, 11.78, 3),
            (Family::Unsafe, 42, 162, 76.250, 40.66, 11),
            (Family::IdMg, 36, 54, 49.050, 5.75, 4),
            (Family::OodMg, 36, 54, 45.000, 9.00, 2),
            (Family::Intermediate, 45, 54, 52.312, 3.51, 2),
        ];
        for pcfg in 1..=4 {
            for (family, min, max, mean, sd, support) in table {
                let d = Grammar::new(pcfg, family).length_distribution();
                let total: f64 = d.values().sum();
                assert!((total - 1.0).abs() < 1e-9, "{family:?} sums to {total}");
                let (lo, hi, m, s) = moments(&d);
                assert_eq!((lo, hi, d.len()), (min, max, support), "{family:?}");
                assert!((m - mean).abs() < 1e-3, "{family:?}: mean {m} vs {mean}");
                assert!((s - sd).abs() < 1e-2, "{family:?}: sd {s} vs {sd}");
            }
        }
    }

    #[test]
    fn samples_are_derivable_and_carry_their_branch() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for pcfg in 1..=4 {
            for family in Family::ALL {
                let g = Grammar::new(pcfg, family);
                for _ in 0..20 {
                    let (mut letters, mut branches) = (Vec::new(), Vec::new());
                    g.sample_into(&mut rng, &mut letters, &mut branches);
                    assert_eq!(letters.len(), branches.len());
                    assert!(g.derives(&letters), "{family:?} pcfg {pcfg}");
                    if let Some(b) = family.branch() {
                        assert_eq!(Branch::of(&branches), b, "{family:?}");
                    }
                }
                // A corrupted string is rejected.
                let (mut letters, mut branches) = (Vec::new(), Vec::new());
                g.sample_into(&mut rng, &mut letters, &mut branches);
                letters.pop();
                assert!(!g.derives(&letters));
            }
        }
    }

    #[test]
    fn unsafe_branch_letters_change_only_the_unsafe_branch() {
        // Same RNG stream, same derivation: safe-branch letters are unchanged, unsafe-branch
        // letters are PCFG 2's level-5 triples at the same places.
        for family in Family::ALL {
            let paper = Grammar::new(1, family);
            let visible = Grammar::new(1, family).with_unsafe_branch_letters(2);
            let other = Grammar::new(2, family);
            for seed in 0..20 {
                let draw = |g: &Grammar| {
                    let mut rng = ChaCha8Rng::seed_from_u64(seed);
                    let (mut l, mut b) = (Vec::new(), Vec::new());
                    g.sample_into(&mut rng, &mut l, &mut b);
                    (l, b)
                };
                let ((lp, bp), (lv, bv), (lo, _)) = (draw(&paper), draw(&visible), draw(&other));
                assert_eq!(bp, bv, "{family:?}: branch labels must not change");
                for i in 0..lp.len() {
                    let want = if bp[i] == Branch::Unsafe {
                        lo[i]
                    } else {
                        lp[i]
                    };
                    assert_eq!(lv[i], want, "{family:?} seed {seed} letter {i}");
                }
                if family == Family::Safe {
                    assert_eq!(lp, lv);
                }
                if matches!(family, Family::Unsafe | Family::IdMg | Family::OodMg) {
                    assert_eq!(lv, lo);
                }
            }
        }
    }

    #[test]
    fn never_emitted_letters_match_the_reference() {
        let never = |pcfg| {
            let g = Grammar::new(pcfg, Family::Pretrain);
            let e = g.emitted_letters();
            (0..30u8)
                .filter(|l| !e.contains(l))
                .map(|l| {
                    crate::grammar::vocab::symbol(crate::grammar::vocab::letter_token(l.into()))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(never(1), ["2g"]);
        assert_eq!(never(2), ["2x", "2z", "3b", "3d"]);
        assert_eq!(never(3), ["2b", "2h", "2n", "2t", "3c"]);
        assert_eq!(never(4), ["2a", "2l", "2t", "3a", "3b", "3d"]);
    }
}
