//! Config of the `finetune` stage (`pipeline/configs/<preset>/finetune.yaml`): the three safety
//! fine-tuning methods at two learning rates (reference/training_spec.md §4–6).
//!
//! A *variant* is `<method>-<lr label>` (`ssft-medium`, `dpo-small`, …): the method picks the
//! objective and its data mix, the label picks a learning rate from `lrs` (paper: medium η_M =
//! 1e-4, small η_S = 1e-5) and, for DPO and unlearning, the rejected-term weight.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::train::AdamWConfig;
use super::{FieldError, StageConfig};

/// A safety fine-tuning method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// Supervised safety fine-tuning: cross-entropy toward the preferred output.
    Ssft,
    /// Direct preference optimisation against the frozen IT model.
    Dpo,
    /// Unlearning: descent on the preferred, ascent on the dispreferred output.
    Unlearn,
}

impl Method {
    /// All methods.
    pub const ALL: [Method; 3] = [Method::Ssft, Method::Dpo, Method::Unlearn];

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Ssft => "ssft",
            Method::Dpo => "dpo",
            Method::Unlearn => "unlearn",
        }
    }
}

/// A parsed variant name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VariantName {
    /// The method.
    pub method: Method,
    /// The learning-rate label (a key of `lrs`).
    pub lr_label: String,
}

impl VariantName {
    /// Parse `<method>-<lr label>`, checking the label against `cfg.lrs`.
    pub fn parse(name: &str, cfg: &FinetuneConfig) -> Result<Self, String> {
        let labels = cfg.lrs.keys().cloned().collect::<Vec<_>>().join(", ");
        let v: VariantName = name
            .parse()
            .map_err(|e| format!("{e} (finetune.yaml `lrs` has: {labels})"))?;
        if !cfg.lrs.contains_key(&v.lr_label) {
            return Err(format!(
                "unknown learning-rate label `{}` in variant `{name}`; finetune.yaml `lrs` has: {labels}",
                v.lr_label
            ));
        }
        Ok(v)
    }

    /// `<method>-<lr label>`.
    pub fn name(&self) -> String {
        format!("{}-{}", self.method.as_str(), self.lr_label)
    }
}

impl std::str::FromStr for VariantName {
    type Err = String;

    /// `<method>-<lr label>` with any non-empty label (tables name the labels a config had;
    /// [`VariantName::parse`] also checks it against a config).
    fn from_str(name: &str) -> Result<Self, String> {
        let methods = Method::ALL.map(Method::as_str).join(", ");
        let (m, label) = name.split_once('-').ok_or_else(|| {
            format!("variant `{name}` is not `<method>-<lr label>` (methods: {methods})")
        })?;
        let method = Method::ALL
            .into_iter()
            .find(|x| x.as_str() == m)
            .ok_or_else(|| {
                format!("unknown method `{m}` in variant `{name}`; methods: {methods}")
            })?;
        if label.is_empty() {
            return Err(format!("variant `{name}` has an empty learning-rate label"));
        }
        Ok(Self {
            method,
            lr_label: label.to_owned(),
        })
    }
}

/// Per-method settings: the batch mix and the loss weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MethodConfig {
    /// Probability that a batch is a refusal (unsafe) batch; one coin per step, as the official
    /// trainers toss it (SSFT 0.2, DPO and unlearning 0.5). One number for every learning rate,
    /// or a map naming each lr label (`{medium: 0.7, small: 0.5}`; README pilots 30–33).
    pub prob_unsafe: PerRate,
    /// Weight of the chosen term (DPO w_s = 0.1; unlearning 1.0; unused by SSFT).
    #[serde(default = "one")]
    pub w_chosen: f64,
    /// Weight of the rejected term per learning-rate label (DPO w_u: 0.01 at η_M, 0.002 at η_S;
    /// unlearning: 0.1 / 0.05). Unused by SSFT.
    #[serde(default)]
    pub w_rejected: BTreeMap<String, f64>,
    /// Weight of a supervised anchor added to DPO's or unlearning's loss: the token-mean
    /// cross-entropy of the chosen (correct) answers of *safe* batches, SSFT's loss on the rows
    /// the method should leave alone. One number for every learning rate, or a map naming each
    /// lr label (`{medium: 0.03, small: 0.05}`). Absent or 0: the official loss. Unused by SSFT,
    /// whose loss is that term already. (A departure from the official trainers for the `cpu`
    /// preset — README pilots 25–29.)
    #[serde(default, skip_serializing_if = "PerRate::is_zero")]
    pub w_anchor: PerRate,
    /// This method's own length and schedule shape; absent: the shared `steps`, `warmup` and
    /// `decay_end`. (The methods need different lengths: on the 4-layer cpu model DPO loses its
    /// safe answers in long runs that SSFT needs to learn the branch rule — README pilot 14.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

/// A fine-tuning run's length and learning-rate schedule shape (peak and floor come from `lrs`
/// and `lr_min_ratio`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    /// Optimiser steps.
    pub steps: usize,
    /// Warm-up steps.
    pub warmup: usize,
    /// Step at which the cosine reaches the floor.
    pub decay_end: usize,
}

impl Schedule {
    fn validate(&self, prefix: &str) -> Result<(), FieldError> {
        if self.steps == 0 {
            return Err(FieldError::new(format!("{prefix}steps"), "must be ≥ 1"));
        }
        if self.warmup > self.decay_end {
            return Err(FieldError::new(
                format!("{prefix}warmup"),
                format!("{} must be ≤ decay_end ({})", self.warmup, self.decay_end),
            ));
        }
        Ok(())
    }
}

fn one() -> f64 {
    1.0
}

/// A per-method number that may differ by learning rate (`prob_unsafe`, `w_anchor`): one value
/// for every lr label, or a map naming each label. Written as a number or a map in YAML.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum PerRate {
    /// One value for every learning-rate label.
    Every(f64),
    /// A value per learning-rate label; must name every label of `lrs` and no other.
    PerLabel(BTreeMap<String, f64>),
}

impl Default for PerRate {
    fn default() -> Self {
        Self::Every(0.0)
    }
}

impl PerRate {
    /// The value a run at learning-rate label `label` uses (0 where a map lacks the label, which
    /// validation rules out).
    pub fn at(&self, label: &str) -> f64 {
        match self {
            Self::Every(w) => *w,
            Self::PerLabel(map) => map.get(label).copied().unwrap_or(0.0),
        }
    }

    /// A default-valued optional field (no anchor), left out when serialized so that configs
    /// without it keep their hashes.
    fn is_zero(&self) -> bool {
        *self == Self::Every(0.0)
    }

    /// Check every value with `ok` and, for a map, that it names exactly `labels`; errors name
    /// `field` (and the label).
    fn validate(
        &self,
        field: &str,
        labels: &BTreeMap<String, f64>,
        ok: impl Fn(f64) -> Result<(), String>,
    ) -> Result<(), FieldError> {
        match self {
            Self::Every(v) => ok(*v).map_err(|m| FieldError::new(field, m)),
            Self::PerLabel(map) => {
                for (label, v) in map {
                    let at = format!("{field}.{label}");
                    if !labels.contains_key(label) {
                        let known: Vec<&str> = labels.keys().map(String::as_str).collect();
                        return Err(FieldError::new(
                            at,
                            format!("`{label}` is not an lr label (lrs: {})", known.join(", ")),
                        ));
                    }
                    ok(*v).map_err(|m| FieldError::new(at, m))?;
                }
                match labels.keys().find(|l| !map.contains_key(*l)) {
                    Some(missing) => Err(FieldError::new(
                        field,
                        format!("has no value for lr label `{missing}` (a map names every label)"),
                    )),
                    None => Ok(()),
                }
            }
        }
    }
}

impl<'de> Deserialize<'de> for PerRate {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = PerRate;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a number, or a map from learning-rate label to number")
            }
            fn visit_f64<E: serde::de::Error>(self, w: f64) -> Result<PerRate, E> {
                Ok(PerRate::Every(w))
            }
            // Integers are numbers too (`w_anchor: 1`); the cast is exact for any sane value.
            #[allow(clippy::cast_precision_loss)]
            fn visit_i64<E: serde::de::Error>(self, w: i64) -> Result<PerRate, E> {
                Ok(PerRate::Every(w as f64))
            }
            #[allow(clippy::cast_precision_loss)]
            fn visit_u64<E: serde::de::Error>(self, w: u64) -> Result<PerRate, E> {
                Ok(PerRate::Every(w as f64))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<PerRate, A::Error> {
                let m = BTreeMap::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PerRate::PerLabel(m))
            }
        }
        d.deserialize_any(Visit)
    }
}

/// The three methods' settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Methods {
    /// SSFT.
    pub ssft: MethodConfig,
    /// DPO.
    pub dpo: MethodConfig,
    /// Unlearning.
    pub unlearn: MethodConfig,
}

impl Methods {
    /// The settings of `m`.
    pub fn get(&self, m: Method) -> &MethodConfig {
        match m {
            Method::Ssft => &self.ssft,
            Method::Dpo => &self.dpo,
            Method::Unlearn => &self.unlearn,
        }
    }
}

/// Safety fine-tuning of the IT model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinetuneConfig {
    /// Seed of batch sampling (batch k draws from its own stream keyed by (seed, variant, k)).
    #[serde(default)]
    pub seed: u64,
    /// Optimiser steps per variant (paper: 10,000).
    pub steps: usize,
    /// Sequences per step (paper: 512).
    pub batch_size: usize,
    /// Peak learning rate per label (paper: medium 1e-4, small 1e-5).
    pub lrs: BTreeMap<String, f64>,
    /// Floor of the cosine decay as a fraction of the peak (paper: 1e-6 / 1e-4 = 0.01).
    pub lr_min_ratio: f64,
    /// Warm-up steps (paper: 2,000).
    pub warmup: usize,
    /// Step at which the cosine reaches the floor (paper: 8,000).
    pub decay_end: usize,
    /// AdamW (paper: β = (0.9, 0.95), weight decay 1e-4); a fresh optimiser, as officially.
    #[serde(default)]
    pub adamw: AdamWConfig,
    /// Global gradient-norm clip (paper README: 1.0; the analysed SSFT runs used 0.5).
    pub grad_clip: Option<f64>,
    /// Probability that a row's text comes from the unsafe-dominant branch (`finetune_id_mg`)
    /// rather than the safe branch (`finetune_safe`); per row (official 0.5).
    pub unsafe_branch_prob: f64,
    /// The methods' mixes and weights (official defaults in the paper preset).
    pub methods: Methods,
    /// `null` keeps each method's official mix; a probability gives every method that same
    /// refusal-batch probability, so the three see matched data.
    #[serde(default)]
    pub data_matched: Option<f64>,
    /// Which positions DPO's and unlearning's sequence scores count (absent: `official`).
    #[serde(default)]
    pub score_masks: ScoreMasks,
    /// Refuse to fine-tune an IT model below its accuracy bar (`02_pretrain/summary.json`):
    /// refusal means nothing when the task was never learned. Only the tiny preset turns it off.
    #[serde(default = "yes")]
    pub require_bar: bool,
    /// Held-out rows (fine-tuning test split) scored at the end of training.
    pub eval_rows: usize,
}

/// The score masks of DPO's and unlearning's sequence scores (reference/training_spec.md §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScoreMasks {
    /// The official trainers': the *unsafe* pair's non-pad target positions in both batch
    /// kinds, so a safe batch scores the segment the refusal occupies and never its own second
    /// output (80 % of rows; training_spec §5 table).
    #[default]
    Official,
    /// Each pair's own non-pad target positions: a safe batch scores both of its outputs.
    OwnPair,
}

fn yes() -> bool {
    true
}

impl FinetuneConfig {
    /// The refusal-batch probability of `m` at learning-rate label `label` (the data-matched
    /// value when set).
    pub fn prob_unsafe(&self, m: Method, label: &str) -> f64 {
        self.data_matched
            .unwrap_or(self.methods.get(m).prob_unsafe.at(label))
    }

    /// The length and schedule shape of `m`'s runs: its own `schedule` when set, else the shared
    /// one.
    pub fn schedule(&self, m: Method) -> Schedule {
        self.methods
            .get(m)
            .schedule
            .unwrap_or(self.shared_schedule())
    }

    fn shared_schedule(&self) -> Schedule {
        Schedule {
            steps: self.steps,
            warmup: self.warmup,
            decay_end: self.decay_end,
        }
    }

    /// The config hash of what `variant` reads: every shared field, its own method's settings
    /// and its own learning rate and rejected-term weight. A change to another method or label
    /// (say DPO's weights) leaves this variant's manifest up to date.
    pub fn variant_hash(&self, variant: &VariantName) -> String {
        let mut view = serde_json::to_value(self).expect("configs serialize to JSON");
        let label = &variant.lr_label;
        if let Some(lrs) = view.get_mut("lrs").and_then(|v| v.as_object_mut()) {
            lrs.retain(|k, _| k == label);
        }
        if let Some(methods) = view.get_mut("methods").and_then(|v| v.as_object_mut()) {
            methods.retain(|k, _| k == variant.method.as_str());
            if let Some(m) = methods
                .get_mut(variant.method.as_str())
                .and_then(|m| m.as_object_mut())
            {
                if let Some(w) = m.get_mut("w_rejected").and_then(|w| w.as_object_mut()) {
                    w.retain(|k, _| k == label);
                }
                // Per-rate values as the variant reads them, its own label's (the anchor left
                // out at 0): `0.03` and `{medium: 0.03, small: 0.1}` give dpo-medium one hash.
                let own = self.methods.get(variant.method);
                m.insert("prob_unsafe".into(), own.prob_unsafe.at(label).into());
                let anchor = own.w_anchor.at(label);
                if anchor == 0.0 {
                    m.remove("w_anchor");
                } else {
                    m.insert("w_anchor".into(), anchor.into());
                }
            }
        }
        super::config_hash(&view)
    }
}

fn probability(p: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(format!("{p} is not a probability"))
    }
}

impl StageConfig for FinetuneConfig {
    fn validate(&self) -> Result<(), FieldError> {
        self.shared_schedule().validate("")?;
        if self.batch_size == 0 {
            return Err(FieldError::new("batch_size", "must be ≥ 1"));
        }
        if self.lrs.is_empty() {
            return Err(FieldError::new("lrs", "needs at least one `label: lr`"));
        }
        for (label, lr) in &self.lrs {
            if !(lr.is_finite() && *lr > 0.0) {
                return Err(FieldError::new(format!("lrs.{label}"), "must be > 0"));
            }
            if label.is_empty() || label.contains(['-', '/', ' ']) {
                return Err(FieldError::new(
                    format!("lrs.{label}"),
                    "labels name folders: no `-`, `/` or spaces",
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.lr_min_ratio) {
            return Err(FieldError::new("lr_min_ratio", "must be in [0, 1]"));
        }
        self.adamw.validate("adamw")?;
        if let Some(c) = self.grad_clip
            && !(c > 0.0 && c.is_finite())
        {
            return Err(FieldError::new("grad_clip", "must be > 0, or null"));
        }
        let prob = |field: &str, p: f64| probability(p).map_err(|m| FieldError::new(field, m));
        prob("unsafe_branch_prob", self.unsafe_branch_prob)?;
        if let Some(p) = self.data_matched {
            prob("data_matched", p)?;
        }
        for m in Method::ALL {
            let c = self.methods.get(m);
            let field = |name: &str| format!("methods.{}.{name}", m.as_str());
            c.prob_unsafe
                .validate(&field("prob_unsafe"), &self.lrs, probability)?;
            if let Some(s) = &c.schedule {
                s.validate(&format!("methods.{}.schedule.", m.as_str()))?;
            }
            c.w_anchor.validate(&field("w_anchor"), &self.lrs, |w| {
                if !(w.is_finite() && w >= 0.0) {
                    Err(format!("{w} must be ≥ 0 (0: the official loss)"))
                } else if m == Method::Ssft && w != 0.0 {
                    Err("SSFT's loss is the supervised term already; remove the field".into())
                } else {
                    Ok(())
                }
            })?;
            if m != Method::Ssft {
                for label in self.lrs.keys() {
                    if !c.w_rejected.contains_key(label) {
                        return Err(FieldError::new(
                            format!("methods.{}.w_rejected", m.as_str()),
                            format!("has no weight for lr label `{label}`"),
                        ));
                    }
                }
            }
        }
        if self.eval_rows == 0 {
            return Err(FieldError::new("eval_rows", "must be ≥ 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_yaml;
    use std::path::Path;

    #[test]
    fn a_variant_hash_covers_its_own_settings_only() {
        let p = Path::new("finetune.yaml");
        let cfg = |over: &[&str]| -> FinetuneConfig {
            from_yaml(
                YAML,
                p,
                &over.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
            .expect("valid")
        };
        let base = cfg(&[]);
        let v = |name: &str| VariantName::parse(name, &base).expect("variant");
        let (ssft_m, dpo_m, dpo_s) = (v("ssft-medium"), v("dpo-medium"), v("dpo-small"));
        let dpo_change = cfg(&["methods.dpo.w_chosen=0.2"]);
        assert_eq!(base.variant_hash(&ssft_m), dpo_change.variant_hash(&ssft_m));
        assert_ne!(base.variant_hash(&dpo_m), dpo_change.variant_hash(&dpo_m));
        let small_weight = cfg(&["methods.dpo.w_rejected.small=0.005"]);
        assert_eq!(base.variant_hash(&dpo_m), small_weight.variant_hash(&dpo_m));
        assert_ne!(base.variant_hash(&dpo_s), small_weight.variant_hash(&dpo_s));
        let small_lr = cfg(&["lrs.small=2.0e-5"]);
        assert_eq!(base.variant_hash(&dpo_m), small_lr.variant_hash(&dpo_m));
        assert_ne!(base.variant_hash(&dpo_s), small_lr.variant_hash(&dpo_s));
        // A method's own schedule reaches that method's variants only, and leaves the hashes of
        // configs without one as they were (manifests written before the field stay valid).
        let dpo_schedule = cfg(&["methods.dpo.schedule={steps: 6, warmup: 1, decay_end: 5}"]);
        assert_eq!(
            base.variant_hash(&ssft_m),
            dpo_schedule.variant_hash(&ssft_m)
        );
        assert_ne!(base.variant_hash(&dpo_m), dpo_schedule.variant_hash(&dpo_m));
        assert!(
            !serde_json::to_string(&base)
                .expect("json")
                .contains("schedule")
        );
        // Likewise the anchor: absent (0, the official loss) it is not serialized.
        let anchor = cfg(&["methods.dpo.w_anchor=0.1"]);
        assert_eq!(base.variant_hash(&ssft_m), anchor.variant_hash(&ssft_m));
        assert_ne!(base.variant_hash(&dpo_m), anchor.variant_hash(&dpo_m));
        assert!(
            !serde_json::to_string(&base)
                .expect("json")
                .contains("w_anchor")
        );
        // Shared fields reach every variant.
        let steps = cfg(&["steps=11"]);
        for x in [&ssft_m, &dpo_m, &dpo_s] {
            assert_ne!(base.variant_hash(x), steps.variant_hash(x));
        }
    }

    const YAML: &str = "
steps: 10
batch_size: 8
lrs: {medium: 1.0e-4, small: 1.0e-5}
lr_min_ratio: 0.01
warmup: 2
decay_end: 8
grad_clip: 1.0
unsafe_branch_prob: 0.5
methods:
  ssft: {prob_unsafe: 0.2}
  dpo: {prob_unsafe: 0.5, w_chosen: 0.1, w_rejected: {medium: 0.01, small: 0.002}}
  unlearn: {prob_unsafe: 0.5, w_chosen: 1.0, w_rejected: {medium: 0.1, small: 0.05}}
eval_rows: 16
";

    #[test]
    fn variants_parse_and_name_what_is_wrong() {
        let cfg: FinetuneConfig = from_yaml(YAML, Path::new("finetune.yaml"), &[]).expect("ok");
        let v = VariantName::parse("dpo-small", &cfg).expect("valid");
        assert_eq!((v.method, v.lr_label.as_str()), (Method::Dpo, "small"));
        assert_eq!(v.name(), "dpo-small");
        let e = VariantName::parse("rlhf-small", &cfg).expect_err("unknown method");
        assert!(
            e.contains("unknown method `rlhf`") && e.contains("ssft, dpo, unlearn"),
            "{e}"
        );
        let e = VariantName::parse("ssft-huge", &cfg).expect_err("unknown label");
        assert!(e.contains("`huge`") && e.contains("medium"), "{e}");
        assert!(VariantName::parse("ssft", &cfg).is_err());
        assert_eq!(cfg.prob_unsafe(Method::Ssft, "small"), 0.2);
        let m: FinetuneConfig =
            from_yaml(YAML, Path::new("f.yaml"), &["data_matched=0.5".into()]).expect("ok");
        assert_eq!(m.prob_unsafe(Method::Ssft, "medium"), 0.5);
        let e = from_yaml::<FinetuneConfig>(
            YAML,
            Path::new("f.yaml"),
            &["lrs={medium: 1.0e-4, tiny: 1.0e-6}".into()],
        )
        .expect_err("no weight for tiny");
        assert!(e.to_string().contains("methods.dpo.w_rejected"), "{e}");
    }

    #[test]
    fn a_method_schedule_replaces_the_shared_one_for_that_method_only() {
        let over = |o: &str| from_yaml::<FinetuneConfig>(YAML, Path::new("f.yaml"), &[o.into()]);
        let cfg = over("methods.dpo.schedule={steps: 6, warmup: 1, decay_end: 5}").expect("ok");
        let own = Schedule {
            steps: 6,
            warmup: 1,
            decay_end: 5,
        };
        let shared = Schedule {
            steps: 10,
            warmup: 2,
            decay_end: 8,
        };
        assert_eq!(cfg.schedule(Method::Dpo), own);
        assert_eq!(cfg.schedule(Method::Ssft), shared);
        assert_eq!(cfg.schedule(Method::Unlearn), shared);
        let e = over("methods.unlearn.schedule={steps: 6, warmup: 5, decay_end: 4}")
            .expect_err("warm-up past the decay");
        assert!(
            e.to_string().contains("methods.unlearn.schedule.warmup"),
            "{e}"
        );
        let e = over("methods.dpo.schedule={steps: 0, warmup: 0, decay_end: 0}").expect_err("0");
        assert!(e.to_string().contains("methods.dpo.schedule.steps"), "{e}");
        let e = over("methods.dpo.schedule={steps: 6}").expect_err("partial");
        assert!(e.to_string().contains("warmup"), "{e}");
    }

    #[test]
    fn the_anchor_is_for_dpo_and_unlearning_and_never_negative() {
        let over = |o: &str| from_yaml::<FinetuneConfig>(YAML, Path::new("f.yaml"), &[o.into()]);
        let cfg = over("methods.unlearn.w_anchor=0.5").expect("ok");
        assert_eq!(cfg.methods.unlearn.w_anchor, PerRate::Every(0.5));
        assert_eq!(
            (
                cfg.methods.unlearn.w_anchor.at("small"),
                cfg.methods.dpo.w_anchor.at("medium")
            ),
            (0.5, 0.0)
        );
        assert_eq!(
            over("methods.unlearn.w_anchor=2")
                .expect("int")
                .methods
                .unlearn
                .w_anchor
                .at("medium"),
            2.0
        );
        let e = over("methods.ssft.w_anchor=0.5").expect_err("ssft");
        assert!(e.to_string().contains("methods.ssft.w_anchor"), "{e}");
        let e = over("methods.dpo.w_anchor=-1.0").expect_err("negative");
        assert!(e.to_string().contains("methods.dpo.w_anchor"), "{e}");
        let e = over("methods.dpo.w_anchor=heavy").expect_err("a string");
        assert!(e.to_string().contains("a number, or a map"), "{e}");
    }

    #[test]
    fn a_per_label_anchor_names_every_label_and_reaches_its_own_variant_only() {
        let over = |o: &[&str]| {
            from_yaml::<FinetuneConfig>(
                YAML,
                Path::new("f.yaml"),
                &o.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>(),
            )
        };
        let cfg = over(&["methods.dpo.w_anchor={medium: 0.03, small: 0.1}"]).expect("ok");
        assert_eq!(
            (
                cfg.methods.dpo.w_anchor.at("medium"),
                cfg.methods.dpo.w_anchor.at("small")
            ),
            (0.03, 0.1)
        );
        let e = over(&["methods.dpo.w_anchor={medium: 0.03}"]).expect_err("small missing");
        assert!(
            e.to_string().contains("methods.dpo.w_anchor") && e.to_string().contains("`small`"),
            "{e}"
        );
        let e = over(&["methods.dpo.w_anchor={medium: 0.03, small: 0.1, tiny: 0.2}"])
            .expect_err("unknown label");
        assert!(e.to_string().contains("methods.dpo.w_anchor.tiny"), "{e}");
        let e = over(&["methods.unlearn.w_anchor={medium: 1.0, small: -3.0}"]).expect_err("<0");
        assert!(
            e.to_string().contains("methods.unlearn.w_anchor.small"),
            "{e}"
        );
        let e = over(&["methods.ssft.w_anchor={medium: 0.0, small: 0.5}"]).expect_err("ssft");
        assert!(e.to_string().contains("methods.ssft.w_anchor.small"), "{e}");
        // The hash follows the weight the variant trains with, however it is written.
        let base = over(&[]).expect("ok");
        let v = |name: &str| VariantName::parse(name, &base).expect("variant");
        let (dpo_m, dpo_s) = (v("dpo-medium"), v("dpo-small"));
        let one = over(&["methods.dpo.w_anchor=0.03"]).expect("ok");
        let zero_small = over(&["methods.dpo.w_anchor={medium: 0.03, small: 0.0}"]).expect("ok");
        assert_eq!(one.variant_hash(&dpo_m), cfg.variant_hash(&dpo_m));
        assert_eq!(one.variant_hash(&dpo_m), zero_small.variant_hash(&dpo_m));
        assert_ne!(one.variant_hash(&dpo_s), cfg.variant_hash(&dpo_s));
        assert_eq!(base.variant_hash(&dpo_s), zero_small.variant_hash(&dpo_s));
        assert_ne!(base.variant_hash(&dpo_m), one.variant_hash(&dpo_m));
    }

    #[test]
    fn a_per_rate_mix_reaches_its_own_rate_only() {
        let over = |o: &str| from_yaml::<FinetuneConfig>(YAML, Path::new("f.yaml"), &[o.into()]);
        let base = over("seed=0").expect("ok");
        let cfg = over("methods.dpo.prob_unsafe={medium: 0.7, small: 0.5}").expect("ok");
        assert_eq!(
            (
                cfg.prob_unsafe(Method::Dpo, "medium"),
                cfg.prob_unsafe(Method::Dpo, "small")
            ),
            (0.7, 0.5)
        );
        let matched = over("data_matched=0.3").expect("ok");
        assert_eq!(matched.prob_unsafe(Method::Dpo, "small"), 0.3);
        let v = |name: &str| VariantName::parse(name, &base).expect("variant");
        // `small` keeps the file's 0.5: its hash (and manifest) is unchanged; `medium`'s moves.
        assert_eq!(
            base.variant_hash(&v("dpo-small")),
            cfg.variant_hash(&v("dpo-small"))
        );
        assert_ne!(
            base.variant_hash(&v("dpo-medium")),
            cfg.variant_hash(&v("dpo-medium"))
        );
        let e = over("methods.dpo.prob_unsafe={medium: 0.7}").expect_err("small missing");
        assert!(
            e.to_string().contains("methods.dpo.prob_unsafe") && e.to_string().contains("`small`"),
            "{e}"
        );
        let e = over("methods.ssft.prob_unsafe={medium: 0.2, small: 1.5}").expect_err("> 1");
        assert!(
            e.to_string().contains("methods.ssft.prob_unsafe.small"),
            "{e}"
        );
        let e = over("methods.unlearn.prob_unsafe=-0.1").expect_err("< 0");
        assert!(e.to_string().contains("methods.unlearn.prob_unsafe"), "{e}");
    }
}
