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

mod analysis;
mod family;
mod level5;
mod symbols;

pub use family::Family;
pub use symbols::{Branch, Nt, Sym};

use rand::Rng;

use level5::set_level5;
use symbols::NUM_NT;

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
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

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
}
