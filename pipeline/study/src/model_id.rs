//! Which model a table row describes — the IT model, a fine-tuned variant, or a variant's
//! α-interpolation — typed, with the names the tables and the CLI use (`it`, `ssft-medium`,
//! `ssft-medium@1.25`).
//!
//! Tables keep the name and, beside it, the method and learning-rate label as their own columns;
//! [`ModelId::check_columns`] is how a reader proves the three agree.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::config::finetune::{Method, VariantName};

/// Which model the rows describe.
#[derive(Debug, Clone)]
pub enum ModelId {
    /// The instruction-tuned model: `it`.
    It,
    /// A safety fine-tuned variant: `<method>-<lr label>`.
    Variant(VariantName),
    /// `W_IT + α·ΔW` of a variant (the probe stage's interpolation, claim C15): `<variant>@<α>`.
    Interpolated {
        /// The variant whose ΔW is scaled.
        variant: VariantName,
        /// The scale α (0 = the IT model, 1 = the variant).
        alpha: f64,
    },
}

impl ModelId {
    /// A variant's id.
    pub fn variant(method: Method, lr_label: &str) -> Self {
        ModelId::Variant(VariantName {
            method,
            lr_label: lr_label.to_owned(),
        })
    }

    /// The fine-tuning method (`None` for the IT model).
    pub fn method(&self) -> Option<Method> {
        self.variant_name().map(|v| v.method)
    }

    /// The variant this model is or is interpolated from (`None` for the IT model).
    pub fn variant_name(&self) -> Option<&VariantName> {
        match self {
            ModelId::It => None,
            ModelId::Variant(v) | ModelId::Interpolated { variant: v, .. } => Some(v),
        }
    }

    /// The tables' `method` column: `it`, `ssft`, `dpo` or `unlearn`.
    pub fn method_name(&self) -> &'static str {
        self.method().map_or("it", Method::as_str)
    }

    /// The tables' `lr_label` column (`""` for the IT model).
    pub fn lr_label(&self) -> &str {
        self.variant_name().map_or("", |v| v.lr_label.as_str())
    }

    /// Whether this is the IT model.
    pub fn is_it(&self) -> bool {
        matches!(self, ModelId::It)
    }

    /// Check a table's `method` and `lr_label` columns against this id (read from its `model`
    /// column); the error says which disagrees.
    pub fn check_columns(&self, method: &str, lr_label: &str) -> Result<(), String> {
        if method != self.method_name() {
            return Err(format!(
                "method `{method}` does not match model `{self}` (expected `{}`)",
                self.method_name()
            ));
        }
        if lr_label != self.lr_label() {
            return Err(format!(
                "lr_label `{lr_label}` does not match model `{self}` (expected `{}`)",
                self.lr_label()
            ));
        }
        Ok(())
    }

    /// The key equality and order use: kind, variant, then α by its total order.
    fn key(&self) -> (u8, Option<&VariantName>, u64) {
        match self {
            ModelId::It => (0, None, 0),
            ModelId::Variant(v) => (1, Some(v), 0),
            ModelId::Interpolated { variant, alpha } => (2, Some(variant), alpha.to_bits()),
        }
    }
}

impl PartialEq for ModelId {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for ModelId {}

impl std::hash::Hash for ModelId {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl PartialOrd for ModelId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for ModelId {
    fn cmp(&self, other: &Self) -> Ordering {
        let (a, b) = (self.key(), other.key());
        (a.0, a.1)
            .cmp(&(b.0, b.1))
            .then_with(|| match (self, other) {
                (
                    ModelId::Interpolated { alpha: x, .. },
                    ModelId::Interpolated { alpha: y, .. },
                ) => x.total_cmp(y),
                _ => Ordering::Equal,
            })
    }
}

impl fmt::Display for ModelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelId::It => f.write_str("it"),
            ModelId::Variant(v) => f.write_str(&v.name()),
            ModelId::Interpolated { variant, alpha } => write!(f, "{}@{alpha}", variant.name()),
        }
    }
}

impl FromStr for ModelId {
    type Err = String;

    /// `it`, `<method>-<lr label>` (any non-empty label: the labels are the config's) or
    /// `<method>-<lr label>@<α>`.
    fn from_str(s: &str) -> Result<Self, String> {
        if s == "it" {
            return Ok(ModelId::It);
        }
        let variant = |v: &str| -> Result<VariantName, String> {
            v.parse()
                .map_err(|e| format!("model `{s}` is not `it`, a variant or `<variant>@<α>`: {e}"))
        };
        match s.rsplit_once('@') {
            None => variant(s).map(ModelId::Variant),
            Some((v, a)) => {
                let alpha: f64 = a
                    .parse()
                    .map_err(|_| format!("model `{s}`: α `{a}` is not a number"))?;
                Ok(ModelId::Interpolated {
                    variant: variant(v)?,
                    alpha,
                })
            }
        }
    }
}

impl Serialize for ModelId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ModelId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_columns_agree() {
        for name in [
            "it",
            "ssft-medium",
            "dpo-small",
            "unlearn-x-1",
            "ssft-medium@1.25",
            "dpo-small@0",
        ] {
            let id: ModelId = name.parse().expect(name);
            assert_eq!(id.to_string(), name);
            id.check_columns(id.method_name(), id.lr_label())
                .expect("own columns");
        }
        let id: ModelId = "dpo-small@0.5".parse().expect("interpolated");
        assert_eq!(id.method(), Some(Method::Dpo));
        assert_eq!((id.method_name(), id.lr_label()), ("dpo", "small"));
        assert_eq!(ModelId::It.method_name(), "it");
        assert!(ModelId::It.is_it() && !id.is_it());
    }

    #[test]
    fn bad_names_and_disagreeing_columns_are_errors() {
        for bad in ["", "rlhf-small", "ssft", "ssft-", "ssft-medium@x", "@1"] {
            assert!(bad.parse::<ModelId>().is_err(), "{bad}");
        }
        let id = ModelId::variant(Method::Ssft, "medium");
        assert!(
            id.check_columns("dpo", "medium")
                .expect_err("disagrees")
                .contains("method `dpo`")
        );
        assert!(
            id.check_columns("ssft", "small")
                .expect_err("disagrees")
                .contains("lr_label `small`")
        );
    }

    #[test]
    fn order_and_equality_follow_kind_variant_alpha() {
        let ids: Vec<ModelId> = [
            "ssft-medium@2",
            "it",
            "dpo-small",
            "ssft-medium@0.5",
            "ssft-medium",
        ]
        .iter()
        .map(|s| s.parse().expect("id"))
        .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        let names: Vec<String> = sorted.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            [
                "it",
                "ssft-medium",
                "dpo-small",
                "ssft-medium@0.5",
                "ssft-medium@2"
            ]
        );
        assert_ne!(ids[0], ids[3]);
        assert_eq!(ids[4], ModelId::variant(Method::Ssft, "medium"));
    }
}
