//! The level-5 productions of PCFG 1–4, the only place where the four PCFGs differ.

use super::{Nt, Sym};

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
pub(super) fn set_level5(rules: &mut [Vec<Vec<Sym>>], pcfg: u8) {
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
