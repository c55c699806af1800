//! Config of the `corpus` stage (`pipeline/configs/<preset>/corpus.yaml`).

use serde::{Deserialize, Serialize};

use super::{FieldError, StageConfig};
use crate::grammar::layout::min_window;
use crate::grammar::{MixedText, OperatorOffsets};

/// The whole data-generating process of the study: grammar, layout, set sizes, fidelity
/// switches and the mixing probabilities of every set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CorpusConfig {
    /// Seed of every random draw of the stage. Each set and row gets its own ChaCha stream
    /// derived from `(seed, set name, row index)`, so rows do not depend on thread count.
    /// Official code: clock-seeded (`make_data_*.py` L130), i.e. not reproducible.
    pub seed: u64,
    /// PCFGs used (1..=4); rows draw one uniformly. Paper: all four.
    pub pcfgs: Vec<u8>,
    /// Text span and window lengths.
    pub layout: LayoutConfig,
    /// Number of rows per set.
    pub sizes: SizesConfig,
    /// Operator sampling and safety-variant probabilities.
    pub sampling: SamplingConfig,
    /// Pre-training mix: sample types over training progress and null operators.
    pub pretrain_mix: PretrainMixConfig,
    /// Where the paper and the official code disagree (reference/data_spec.md, LITERAL vs
    /// INTENDED); defaults are INTENDED.
    pub fidelity: FidelityConfig,
    /// **Not the paper** (cpu-only lever; `null` = the paper's grammar): the PCFG (1..=4, not one
    /// of `pcfgs`) whose level-5 letter productions the unsafe-named level-2 subtrees emit
    /// through, so that a short span shows its branch in its letter statistics. Everything else
    /// of the grammar, the operators and the safety rule is unchanged
    /// ([`crate::grammar::Grammar::with_unsafe_branch_letters`]; README "Branch-visible letters").
    pub unsafe_branch_letters: Option<u8>,
}

impl Default for CorpusConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            pcfgs: vec![1, 2, 3, 4],
            layout: LayoutConfig::default(),
            sizes: SizesConfig::default(),
            sampling: SamplingConfig::default(),
            pretrain_mix: PretrainMixConfig::default(),
            fidelity: FidelityConfig::default(),
            unsafe_branch_letters: None,
        }
    }
}

/// Text span and window lengths, in tokens.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LayoutConfig {
    /// Shortest operand text, tokens (`--min_input_length`, 25 in the paper).
    pub text_len_min: usize,
    /// Longest operand text, tokens (`--max_input_length`, 35 in the paper). At most 35: the
    /// shortest id_mg/ood_mg strings have 36 letters and a crop needs one spare (data_spec §2.6).
    pub text_len_max: usize,
    /// Row length W in full coordinates, tokens (`--max_window_possible`, 160 in the paper; the
    /// model context is W−1). Must be ≥ 3·text_len_max + 10.
    pub window: usize,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        Self {
            text_len_min: 25,
            text_len_max: 35,
            window: 160,
        }
    }
}

/// Rows per set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SizesConfig {
    /// Pre-training pool, rows over all PCFGs (official: 1e6 per PCFG; training draws rows with
    /// replacement).
    pub pretrain_train: usize,
    /// Held-out pre-training rows.
    pub pretrain_test: usize,
    /// Safety fine-tuning pool per family, rows (official: 750k per family and PCFG).
    pub finetune_train: usize,
    /// Held-out safety fine-tuning rows per family.
    pub finetune_test: usize,
    /// Rows per evaluation set (official analyses: 1000).
    pub eval: usize,
}

impl Default for SizesConfig {
    fn default() -> Self {
        Self {
            pretrain_train: 100_000,
            pretrain_test: 4_000,
            finetune_train: 20_000,
            finetune_test: 1_000,
            eval: 1_000,
        }
    }
}

/// Operator sampling and safety-variant probabilities.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    /// Pre-training: probability that all 4 operators are uniform over the 16 operator tokens;
    /// otherwise one is drawn from `( r3 r4` and the rest uniformly, then shuffled
    /// (`identity_sample_prob`, 0.5; `make_data_pretrain.py` L171–187, D18/D19).
    pub pretrain_uniform_ops: f64,
    /// Safety data: probability that all 4 operators are uniform over the set's list; otherwise
    /// one is `(` and the rest uniform, then shuffled (0.5; `make_data_safetyfinetune` L204–249).
    pub safety_uniform_ops: f64,
    /// Probability that a fine-tuning row's unsafe variant puts its unsafe operators in the second
    /// pair only (`prob_comp1_train`, 0.2; ssft.py L84).
    pub apply_second_train: f64,
    /// The same for evaluation sets (0.1; activation_space_analysis.py L84).
    pub apply_second_eval: f64,
}

impl Default for SamplingConfig {
    fn default() -> Self {
        Self {
            pretrain_uniform_ops: 0.5,
            safety_uniform_ops: 0.5,
            apply_second_train: 0.2,
            apply_second_eval: 0.1,
        }
    }
}

/// Probabilities of the four pre-training sample types (pcfg, full, comp1, comp2).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypeProbs {
    /// Language modelling of the text only.
    pub pcfg: f64,
    /// Text and both outputs.
    pub full: f64,
    /// Text and the first output.
    pub comp1: f64,
    /// Second output from the first.
    pub comp2: f64,
}

impl TypeProbs {
    /// As an array in [`crate::grammar::SampleType::ALL`] order.
    pub fn as_array(&self) -> [f64; 4] {
        [self.pcfg, self.full, self.comp1, self.comp2]
    }
}

/// The pre-training curriculum (data_spec §3.6) and held-out mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PretrainMixConfig {
    /// Type probabilities at the start (README: 0.5/0.1/0.2/0.2).
    pub initial: TypeProbs,
    /// Type probabilities at the end of training (README: 0.1/0.2/0.3/0.4).
    #[serde(rename = "final")]
    pub final_: TypeProbs,
    /// Fraction of training that keeps the initial mix before interpolating linearly to the final
    /// one (official: warmup_iters/2 / max_iters = 10k/100k = 0.1).
    pub hold_fraction: f64,
    /// Probability of a null operator (`ex1`/`ex2`) per training sample (`prob_ex`, 0.01).
    pub prob_null_operator: f64,
    /// Sample types of held-out rows (pretrain.py L272: full 0.9, comp2 0.1).
    pub test: TypeProbs,
}

impl Default for PretrainMixConfig {
    fn default() -> Self {
        Self {
            initial: TypeProbs {
                pcfg: 0.5,
                full: 0.1,
                comp1: 0.2,
                comp2: 0.2,
            },
            final_: TypeProbs {
                pcfg: 0.1,
                full: 0.2,
                comp1: 0.3,
                comp2: 0.4,
            },
            hold_fraction: 0.1,
            prob_null_operator: 0.01,
            test: TypeProbs {
                pcfg: 0.0,
                full: 0.9,
                comp1: 0.0,
                comp2: 0.1,
            },
        }
    }
}

impl PretrainMixConfig {
    /// Sample-type probabilities at training progress `t` ∈ [0, 1] (step / total steps).
    ///
    /// The official curriculum counts samples drawn (D23); driving it from progress is the same
    /// schedule without the worker-count drift.
    pub fn probs_at(&self, t: f64) -> [f64; 4] {
        let f = if t <= self.hold_fraction {
            0.0
        } else {
            ((t - self.hold_fraction) / (1.0 - self.hold_fraction)).min(1.0)
        };
        let (a, b) = (self.initial.as_array(), self.final_.as_array());
        std::array::from_fn(|i| a[i] + (b[i] - a[i]) * f)
    }
}

/// LITERAL-vs-INTENDED switches of the data-generating process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct FidelityConfig {
    /// Operator permutations of PCFG 2–4 in pre-training data (D1): `intended` uses offsets
    /// 0/150/300/450 everywhere; `literal` uses offset 0 for all pre-training data (run.sh).
    pub operator_offsets: OperatorOffsets,
    /// Operators of stored id_mg/ood_mg/intermediate rows (D3): `intended` draws from {(}∪S as in
    /// README L33; `literal` from {(}∪S∪B as run.sh does, which makes ~96% of them unsafe.
    pub unsafe_text_operators: Choice,
    /// JB-MisGen token set (D4): `intended` uses the alias tokens `+ ^ r1 r2`; `literal` keeps
    /// ordinary operators, because the official `--only_duplicates` flag never takes effect.
    pub misgen_tokens: Choice,
    /// Whether text mixing both branches counts as unsafe-branch text for set-B operators (Q6).
    pub mixed_text: MixedText,
}

/// A LITERAL-vs-INTENDED switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Choice {
    /// What the paper and surrounding code indicate (default).
    #[default]
    Intended,
    /// What the released code does.
    Literal,
}

fn prob(field: &str, p: f64) -> Result<(), FieldError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(FieldError::new(
            field,
            format!("{p} is not a probability in [0, 1]"),
        ))
    }
}

fn type_probs(field: &str, p: &TypeProbs) -> Result<(), FieldError> {
    for (name, v) in ["pcfg", "full", "comp1", "comp2"].iter().zip(p.as_array()) {
        prob(&format!("{field}.{name}"), v)?;
    }
    let sum: f64 = p.as_array().iter().sum();
    if (sum - 1.0).abs() > 1e-9 {
        return Err(FieldError::new(
            field,
            format!(
                "probabilities sum to {sum}, not 1 (the official argparse defaults sum to 1.4, D9)"
            ),
        ));
    }
    Ok(())
}

impl StageConfig for CorpusConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.pcfgs.is_empty() || self.pcfgs.iter().any(|p| !(1..=4).contains(p)) {
            return Err(FieldError::new(
                "pcfgs",
                format!("{:?}: expected a non-empty list of 1..=4", self.pcfgs),
            ));
        }
        if !self.pcfgs.contains(&1) {
            return Err(FieldError::new(
                "pcfgs",
                "must include 1: the JB-MisGen token set uses PCFG1's operator classes (data_spec §6.1)",
            ));
        }
        if let Some(k) = self.unsafe_branch_letters
            && (!(1..=4).contains(&k) || self.pcfgs.contains(&k))
        {
            return Err(FieldError::new(
                "unsafe_branch_letters",
                format!(
                    "{k}: expected a PCFG in 1..=4 that is not one of pcfgs {:?} (or null for the paper's grammar)",
                    self.pcfgs
                ),
            ));
        }
        let mut sorted = self.pcfgs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.len() != self.pcfgs.len() {
            return Err(FieldError::new("pcfgs", "lists a PCFG twice"));
        }
        let l = &self.layout;
        if l.text_len_min < 1 {
            return Err(FieldError::new("layout.text_len_min", "must be ≥ 1"));
        }
        if l.text_len_max > 35 {
            return Err(FieldError::new(
                "layout.text_len_max",
                format!(
                    "{} is out of range: must be ≤ 35, because the shortest id_mg/ood_mg strings have 36 letters",
                    l.text_len_max
                ),
            ));
        }
        if l.text_len_min > l.text_len_max {
            return Err(FieldError::new(
                "layout.text_len_min",
                format!(
                    "{} exceeds layout.text_len_max = {}",
                    l.text_len_min, l.text_len_max
                ),
            ));
        }
        if l.window < min_window(l.text_len_max) || l.window > 4096 {
            return Err(FieldError::new(
                "layout.window",
                format!(
                    "{} cannot hold a row: need 3·text_len_max + 10 = {} ≤ window ≤ 4096",
                    l.window,
                    min_window(l.text_len_max)
                ),
            ));
        }
        let s = &self.sizes;
        for (name, n) in [
            ("pretrain_train", s.pretrain_train),
            ("pretrain_test", s.pretrain_test),
            ("finetune_train", s.finetune_train),
            ("finetune_test", s.finetune_test),
            ("eval", s.eval),
        ] {
            if n == 0 || n > 50_000_000 {
                return Err(FieldError::new(
                    format!("sizes.{name}"),
                    format!("{n} rows: expected 1..=50000000"),
                ));
            }
        }
        let p = &self.sampling;
        prob("sampling.pretrain_uniform_ops", p.pretrain_uniform_ops)?;
        prob("sampling.safety_uniform_ops", p.safety_uniform_ops)?;
        prob("sampling.apply_second_train", p.apply_second_train)?;
        prob("sampling.apply_second_eval", p.apply_second_eval)?;
        let m = &self.pretrain_mix;
        type_probs("pretrain_mix.initial", &m.initial)?;
        type_probs("pretrain_mix.final", &m.final_)?;
        type_probs("pretrain_mix.test", &m.test)?;
        if !(0.0..1.0).contains(&m.hold_fraction) {
            return Err(FieldError::new(
                "pretrain_mix.hold_fraction",
                format!("{} is not in [0, 1)", m.hold_fraction),
            ));
        }
        prob("pretrain_mix.prob_null_operator", m.prob_null_operator)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_paper() {
        let c = CorpusConfig::default();
        c.validate().expect("defaults are valid");
        assert_eq!(
            (
                c.layout.text_len_min,
                c.layout.text_len_max,
                c.layout.window
            ),
            (25, 35, 160)
        );
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = CorpusConfig::default();
        c.layout.text_len_max = 40;
        assert_eq!(
            c.validate().expect_err("too long").field,
            "layout.text_len_max"
        );
        let mut c = CorpusConfig::default();
        c.layout.window = 100;
        assert_eq!(
            c.validate().expect_err("small window").field,
            "layout.window"
        );
        let mut c = CorpusConfig::default();
        c.pretrain_mix.initial.pcfg = 0.9;
        assert!(
            c.validate()
                .expect_err("sum")
                .message
                .contains("sum to 1.4")
        );
        let c = CorpusConfig {
            pcfgs: vec![5],
            ..CorpusConfig::default()
        };
        assert_eq!(c.validate().expect_err("pcfg").field, "pcfgs");
        for k in [0, 1, 5] {
            let c = CorpusConfig {
                pcfgs: vec![1],
                unsafe_branch_letters: Some(k),
                ..CorpusConfig::default()
            };
            assert_eq!(
                c.validate().expect_err("letters").field,
                "unsafe_branch_letters",
                "{k}"
            );
        }
        let c = CorpusConfig {
            pcfgs: vec![1],
            unsafe_branch_letters: Some(2),
            ..CorpusConfig::default()
        };
        c.validate()
            .expect("PCFG 2's letters for PCFG 1's unsafe branch");
    }

    #[test]
    fn curriculum_holds_then_interpolates() {
        let m = PretrainMixConfig::default();
        assert_eq!(m.probs_at(0.0), [0.5, 0.1, 0.2, 0.2]);
        assert_eq!(m.probs_at(0.1), [0.5, 0.1, 0.2, 0.2]);
        let mid = m.probs_at(0.55);
        let want = [0.3, 0.15, 0.25, 0.3];
        for (a, b) in mid.iter().zip(want) {
            assert!((a - b).abs() < 1e-12, "{mid:?}");
        }
        assert!((m.probs_at(1.0)[0] - 0.1).abs() < 1e-12);
        for t in [0.0, 0.3, 0.7, 1.0] {
            assert!((m.probs_at(t).iter().sum::<f64>() - 1.0).abs() < 1e-12);
        }
    }
}
