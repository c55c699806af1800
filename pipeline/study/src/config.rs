//! Typed, validated stage configs: YAML files with `deny_unknown_fields`, dotted `--set`
//! overrides re-validated through the same types, and a stable content hash.
//!
//! Things that change numbers live here and are hashed; runtime knobs (threads, device, log
//! level) are CLI flags and never enter a config.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

pub mod corpus;
pub mod evaluate;
pub mod finetune;
pub mod pretrain;
pub mod probe;
pub mod spectra;
pub mod train;

pub use corpus::CorpusConfig;
pub use evaluate::EvaluateConfig;
pub use finetune::FinetuneConfig;
pub use pretrain::PretrainConfig;
pub use probe::ProbeConfig;
pub use spectra::SpectraConfig;

/// Errors from reading, overriding or validating a config.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error(
        "cannot read config {path}: {source}; presets live in pipeline/configs/{{tiny,cpu,paper}}/"
    )]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not match the config type (unknown key, wrong type, …).
    #[error("invalid config {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// serde's message names the field and line.
        source: serde_yaml::Error,
    },
    /// An override is malformed or names a key that does not exist.
    #[error("bad override `{raw}`: {reason}")]
    Override {
        /// The override as given.
        raw: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A field value is out of range or inconsistent with another field.
    #[error("invalid config {path}: field `{field}`: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Dotted field path.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// A field-level validation failure, before the file path is attached.
#[derive(Debug, Clone, PartialEq)]
pub struct FieldError {
    /// Dotted field path.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl FieldError {
    /// A failure of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A stage config: serde types with defaults, plus range and cross-field validation.
pub trait StageConfig: Serialize + DeserializeOwned {
    /// Check ranges and cross-field rules.
    fn validate(&self) -> Result<(), FieldError>;
}

/// Read `path`, apply `overrides` (`key.sub=value`, YAML scalars), and validate.
///
/// Overrides are merged into the fully resolved config (file values over code defaults), so a
/// key must exist in the config type; the result is deserialized again, so types and unknown
/// keys are checked exactly as for the file.
pub fn load<C: StageConfig>(path: &Path, overrides: &[String]) -> Result<C, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    from_yaml(&text, path, overrides)
}

/// Like [`load`] for YAML text; `path` is only used in messages.
pub fn from_yaml<C: StageConfig>(
    text: &str,
    path: &Path,
    overrides: &[String],
) -> Result<C, ConfigError> {
    let parse = |source| ConfigError::Parse {
        path: path.to_owned(),
        source,
    };
    let mut cfg: C = serde_yaml::from_str(text).map_err(parse)?;
    if !overrides.is_empty() {
        let mut value = serde_yaml::to_value(&cfg).map_err(parse)?;
        for raw in overrides {
            apply_override(&mut value, raw)?;
            tracing::info!(override = %raw, "config override");
        }
        cfg = serde_yaml::from_value(value).map_err(|e| ConfigError::Override {
            raw: overrides.join(" "),
            reason: e.to_string(),
        })?;
        // An added key that the type has no field for must not vanish silently (not every config
        // struct denies unknown fields): each override must be in the resolved config.
        let resolved = serde_yaml::to_value(&cfg).map_err(parse)?;
        for raw in overrides {
            check_override_kept(&resolved, raw)?;
        }
    }
    let invalid = |e: FieldError| ConfigError::Invalid {
        path: path.to_owned(),
        field: e.field,
        message: e.message,
    };
    let resolved = serde_yaml::to_value(&cfg).map_err(parse)?;
    reject_non_finite(&resolved, "").map_err(invalid)?;
    cfg.validate().map_err(invalid)?;
    Ok(cfg)
}

/// Every number in a config must be finite: `.inf` or `.nan` would train without learning or
/// attack without a budget rather than fail, so they are refused at load, for every field.
fn reject_non_finite(value: &Value, field: &str) -> Result<(), FieldError> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(x) if !x.is_finite() => Err(FieldError::new(
                field,
                format!("must be a finite number, got {x}"),
            )),
            _ => Ok(()),
        },
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .try_for_each(|(i, v)| reject_non_finite(v, &format!("{field}[{i}]"))),
        Value::Mapping(map) => map.iter().try_for_each(|(k, v)| {
            let key = k.as_str().map_or_else(|| format!("{k:?}"), str::to_owned);
            let path = if field.is_empty() {
                key
            } else {
                format!("{field}.{key}")
            };
            reject_non_finite(v, &path)
        }),
        Value::Tagged(t) => reject_non_finite(&t.value, field),
        Value::Null | Value::Bool(_) | Value::String(_) => Ok(()),
    }
}

fn apply_override(value: &mut Value, raw: &str) -> Result<(), ConfigError> {
    let err = |reason: String| ConfigError::Override {
        raw: raw.to_owned(),
        reason,
    };
    let (key, val) = raw
        .split_once('=')
        .ok_or_else(|| err("expected `key.sub=value`".into()))?;
    let new: Value =
        serde_yaml::from_str(val).map_err(|e| err(format!("value is not YAML: {e}")))?;
    let parts: Vec<&str> = key.split('.').collect();
    let (last, path) = parts.split_last().expect("split yields one part at least");
    let mut node = value;
    for part in path {
        let map = node
            .as_mapping_mut()
            .ok_or_else(|| err(format!("`{part}` is not inside a mapping")))?;
        let known: Vec<String> = map
            .keys()
            .filter_map(|k| k.as_str().map(str::to_owned))
            .collect();
        node = map.get_mut(*part).ok_or_else(|| {
            err(format!(
                "unknown key `{part}`; expected one of: {}",
                known.join(", ")
            ))
        })?;
    }
    // The last key may be absent: an optional field left out of the file (say a method's own
    // `schedule`). Whether the type has it is decided when the result is deserialized, with the
    // same unknown-field check as for the file.
    let map = node
        .as_mapping_mut()
        .ok_or_else(|| err(format!("`{last}` is not inside a mapping")))?;
    map.insert(Value::String((*last).to_owned()), new);
    Ok(())
}

/// `raw`'s key is in `resolved` (a `null` value may drop an optional field).
fn check_override_kept(resolved: &Value, raw: &str) -> Result<(), ConfigError> {
    let Some((key, val)) = raw.split_once('=') else {
        return Ok(());
    };
    if matches!(serde_yaml::from_str::<Value>(val), Ok(Value::Null)) {
        return Ok(());
    }
    let mut node = resolved;
    for part in key.split('.') {
        match node.as_mapping().and_then(|m| m.get(part)) {
            Some(next) => node = next,
            None => {
                return Err(ConfigError::Override {
                    raw: raw.to_owned(),
                    reason: format!("unknown key `{part}`: the config has no such field"),
                });
            }
        }
    }
    Ok(())
}

/// A stable hash of a resolved config: blake3 of its canonical JSON, first 16 hex digits.
pub fn config_hash<C: Serialize>(cfg: &C) -> String {
    let json = serde_json::to_string(cfg).expect("configs serialize to JSON");
    blake3::hash(json.as_bytes()).to_hex()[..16].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_are_typed_and_checked() {
        let p = Path::new("corpus.yaml");
        let cfg: CorpusConfig =
            from_yaml("seed: 3\n", p, &["layout.text_len_max=30".into()]).expect("valid");
        assert_eq!(cfg.seed, 3);
        assert_eq!(cfg.layout.text_len_max, 30);
        let unknown =
            from_yaml::<CorpusConfig>("{}", p, &["layout.nope=1".into()]).expect_err("unknown");
        let msg = unknown.to_string();
        assert!(
            msg.contains("layout.nope=1") && msg.contains("unknown field `nope`"),
            "{msg}"
        );
        let inner =
            from_yaml::<CorpusConfig>("{}", p, &["lay.window=1".into()]).expect_err("unknown");
        assert!(
            inner
                .to_string()
                .contains("unknown key `lay`; expected one of"),
            "{inner}"
        );
        let wrong =
            from_yaml::<CorpusConfig>("{}", p, &["layout.window=lots".into()]).expect_err("type");
        assert!(wrong.to_string().contains("layout.window=lots"), "{wrong}");
        let malformed = from_yaml::<CorpusConfig>("{}", p, &["seed".into()]).expect_err("no =");
        assert!(malformed.to_string().contains("key.sub=value"));
    }

    #[test]
    fn an_override_the_resolved_config_lost_is_an_error() {
        let resolved: Value = serde_yaml::from_str("a: {b: 1}\nc: null").expect("yaml");
        assert!(check_override_kept(&resolved, "a.b=2").is_ok());
        assert!(check_override_kept(&resolved, "c=3").is_ok());
        // Dropped by a type that ignores unknown fields: named, not silently lost.
        let e = check_override_kept(&resolved, "a.typo=2").expect_err("lost");
        assert!(e.to_string().contains("unknown key `typo`"), "{e}");
        // `null` may remove an optional field (which then does not serialize).
        assert!(check_override_kept(&resolved, "a.gone=null").is_ok());
    }

    #[test]
    fn non_finite_numbers_are_refused_naming_the_field() {
        let tiny = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/tiny");
        for (over, field) in [
            ("lr.lr_max=.inf", "lr.lr_max"),
            ("lr.lr_min=.nan", "lr.lr_min"),
            ("adamw.eps=-.inf", "adamw.eps"),
        ] {
            let err = load::<PretrainConfig>(&tiny.join("pretrain.yaml"), &[over.into()])
                .expect_err(over);
            let msg = err.to_string();
            assert!(
                msg.contains(&format!("field `{field}`")) && msg.contains("finite"),
                "{over}: {msg}"
            );
        }
        let in_list = load::<EvaluateConfig>(
            &tiny.join("evaluate.yaml"),
            &["attack.budget_factors=[0.5, .inf]".into()],
        )
        .expect_err("inf budget");
        assert!(
            in_list.to_string().contains("attack.budget_factors[1]"),
            "{in_list}"
        );
    }

    #[test]
    fn hash_changes_with_content_only() {
        let p = Path::new("c.yaml");
        let a: CorpusConfig = from_yaml("seed: 1\n", p, &[]).expect("valid");
        let b: CorpusConfig = from_yaml("# comment\nseed: 1\n", p, &[]).expect("valid");
        let c: CorpusConfig = from_yaml("seed: 2\n", p, &[]).expect("valid");
        assert_eq!(config_hash(&a), config_hash(&b));
        assert_ne!(config_hash(&a), config_hash(&c));
    }
}
