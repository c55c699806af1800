//! Exact properties of a [`Grammar`], independent of its sampler: a recogniser
//! ([`Grammar::derives`]), the exact length distribution and the letters it can emit.

use std::collections::BTreeMap;

use super::symbols::NUM_NT;
use super::{Grammar, Nt, Sym};
use crate::grammar::vocab::NUM_LETTERS;

impl Grammar {
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
    use crate::grammar::Family;

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
