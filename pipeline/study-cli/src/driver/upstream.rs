//! Checks and loads of upstream artifacts shared by the stages (the IT model, the vocabulary,
//! the fine-tuned variants and their lineage).

use std::path::Path;

use anyhow::{Context, Result};
use study::Catalog;
use study::artifacts::{FileRecord, MODEL_CONFIG_FILE, MODEL_FILE, Manifest, SUMMARY_FILE, Stage};
use study::config::evaluate::EvalSet;
use study::config::finetune::{Method, VariantName};
use study::corpus::CorpusSet;
use study::grammar::vocab::Vocab;
use study::model_id::ModelId;
use study_model::gpt::{Gpt, GptConfig, Params};

/// The config recorded in `stage`'s manifest (made by `make <stage>`).
pub fn upstream_config<C: serde::de::DeserializeOwned>(
    catalog: &Catalog,
    stage: Stage,
) -> Result<C> {
    let path = catalog.manifest(stage);
    let manifest = Manifest::read(&path, stage.name())?;
    serde_yaml::from_value(manifest.config).with_context(|| {
        format!(
            "{}: its `config` is not a {} config; run `make {}` again",
            path.display(),
            stage.name(),
            stage.name()
        )
    })
}

/// The IT model's shape, from `02_pretrain/config.json`.
pub fn it_config(catalog: &Catalog) -> Result<GptConfig> {
    let path = catalog.stage_file(Stage::Pretrain, MODEL_CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}; run `make pretrain`", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is corrupt; run `make pretrain`", path.display()))
}

/// Load the model in `dir` (written by `make <target>`), which must have the IT model's shape.
pub fn load_model(
    dir: &Path,
    it: &GptConfig,
    target: &str,
    device: &candle_core::Device,
) -> Result<Gpt> {
    let cfg_path = dir.join(MODEL_CONFIG_FILE);
    let cfg: GptConfig = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}; run `make {target}`", cfg_path.display()))?,
    )
    .with_context(|| format!("{} is corrupt; run `make {target}`", cfg_path.display()))?;
    if cfg != *it {
        anyhow::bail!(
            "{} has shape {cfg:?}, the IT model {it:?}; run `make {target}` again",
            cfg_path.display()
        );
    }
    let params = Params::load(&cfg, &dir.join(MODEL_FILE), device)
        .with_context(|| format!("loading {}; run `make {target}`", dir.display()))?;
    Ok(Gpt::new(cfg, params)?)
}

/// The IT model (`it`) and each fine-tuned variant's model, each checked against the IT model's
/// shape `it`.
pub fn load_models(
    catalog: &Catalog,
    variants: &[String],
    it: &GptConfig,
    device: &candle_core::Device,
) -> Result<Vec<(ModelId, Gpt)>> {
    let it_dir = catalog.stage_dir(Stage::Pretrain);
    let mut models = vec![(ModelId::It, load_model(&it_dir, it, "pretrain", device)?)];
    for v in variants {
        let id: ModelId = v.parse().map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            matches!(id, ModelId::Variant(_)),
            "`{v}` is not <method>-<lr label>"
        );
        let dir = catalog.variant_dir(Stage::Finetune, v);
        models.push((id, load_model(&dir, it, "finetune", device)?));
    }
    Ok(models)
}

/// Each variant's weights and config as input records, after checking that it was fine-tuned
/// from the IT model there now (`it_records`).
pub fn variant_inputs(
    catalog: &Catalog,
    variants: &[String],
    it_records: &[FileRecord],
) -> Result<Vec<FileRecord>> {
    let mut records = Vec::new();
    for v in variants {
        check_variant_lineage(catalog, v, it_records)?;
        let dir = catalog.variant_dir(Stage::Finetune, v);
        for (what, file) in [("model", MODEL_FILE), ("config", MODEL_CONFIG_FILE)] {
            let target = format!("finetune VARIANTS={v}");
            records.push(catalog.input_record(&format!("{v}_{what}"), &dir.join(file), &target)?);
        }
    }
    Ok(records)
}

/// The paper's six fine-tuned models.
pub const DEFAULT_VARIANTS: &str =
    "ssft-medium,ssft-small,dpo-medium,dpo-small,unlearn-medium,unlearn-small";

/// The input-record name of the IT model's weights in every manifest that reads them (spectra
/// spells it `it_{what}` with `what = "model"`); the lineage check looks it up by this name.
pub const IT_MODEL_INPUT: &str = "it_model";

/// Check that fine-tuned `variant` was made from the IT model that is there now — the `it_model`
/// hash its manifest recorded against the one in `inputs` (this stage's input records) — so that
/// variants of an older IT model (pre-training ran again since) are never evaluated or analysed
/// beside the new one.
pub fn check_variant_lineage(
    catalog: &Catalog,
    variant: &str,
    inputs: &[FileRecord],
) -> Result<()> {
    let path = catalog.variant_manifest(Stage::Finetune, variant);
    let m = Manifest::read(&path, "finetune").with_context(|| {
        format!(
            "variant `{variant}` is not fine-tuned; run `make finetune` (or `make finetune \
             VARIANTS={variant}`)"
        )
    })?;
    let hash = |records: &[FileRecord]| {
        records
            .iter()
            .find(|r| r.name == IT_MODEL_INPUT)
            .map(|r| r.hash.clone())
    };
    match (hash(&m.inputs), hash(inputs)) {
        (Some(had), Some(now)) if had == now => Ok(()),
        (Some(_), Some(_)) => anyhow::bail!(
            "variant `{variant}` was fine-tuned from another IT model than the one in {} \
             (pre-training ran again since); run `make finetune VARIANTS={variant}` again",
            catalog.stage_dir(Stage::Pretrain).display()
        ),
        _ => anyhow::bail!(
            "{} does not record the IT model it was fine-tuned from; run `make finetune \
             VARIANTS={variant}` again",
            path.display()
        ),
    }
}

/// The names of a `--variants` list (empty entries dropped), each checked to be a variant name
/// `<method>-<lr label>` — a name, not a path: `../02_pretrain` would resolve to another stage's
/// folder and be read as a fine-tuned model.
pub fn variant_names(raw: &[String]) -> Result<Vec<String>> {
    let methods = Method::ALL.map(Method::as_str);
    raw.iter()
        .filter(|v| !v.is_empty())
        .map(|v| {
            let ok = v.parse::<VariantName>().is_ok_and(|name| {
                name.lr_label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            });
            anyhow::ensure!(
                ok,
                "`{v}` is not a variant name `<method>-<lr label>` (methods: {}; e.g. ssft-medium): \
                 --variants takes names, not paths",
                methods.join(", ")
            );
            Ok(v.clone())
        })
        .collect()
}

/// The corpus set of an evaluation set's short name (`std_safe` → `eval_std_safe`).
pub fn eval_set(name: &str) -> Result<CorpusSet> {
    let set: EvalSet = name.parse().map_err(anyhow::Error::msg)?;
    Ok(CorpusSet::eval(set))
}

/// The IT model's files and what they say.
pub struct ItModel {
    /// Its shape.
    pub cfg: GptConfig,
    /// Input records (weights, config, summary).
    pub records: Vec<FileRecord>,
    /// Whether it met its accuracy bar.
    pub meets_bar: bool,
    /// The bar's value on std_safe.
    pub std_safe_em: f64,
}

/// Check the IT model exists and agrees with the corpus vocabulary and window.
pub fn check_it_model(catalog: &Catalog, vocab_len: usize, window: usize) -> Result<ItModel> {
    let manifest = catalog.manifest(Stage::Pretrain);
    Manifest::read(&manifest, "pretrain")?;
    let model_path = catalog.stage_file(Stage::Pretrain, MODEL_FILE);
    let cfg_path = catalog.stage_file(Stage::Pretrain, MODEL_CONFIG_FILE);
    let summary_path = catalog.stage_file(Stage::Pretrain, SUMMARY_FILE);
    let mut records = Vec::new();
    for (name, path) in [
        (IT_MODEL_INPUT, &model_path),
        ("it_config", &cfg_path),
        ("it_summary", &summary_path),
    ] {
        records.push(catalog.input_record(name, path, "pretrain")?);
    }
    let cfg: GptConfig = serde_json::from_str(
        &std::fs::read_to_string(&cfg_path)
            .with_context(|| format!("reading {}", cfg_path.display()))?,
    )
    .with_context(|| {
        format!(
            "{} is not a model config; run `make pretrain`",
            cfg_path.display()
        )
    })?;
    if cfg.vocab_size != vocab_len {
        anyhow::bail!(
            "the IT model {} has a vocabulary of {} tokens, the corpus {}; they come from different corpora: run `make pretrain` again",
            cfg_path.display(),
            cfg.vocab_size,
            vocab_len
        );
    }
    if cfg.block_size != window - 1 {
        anyhow::bail!(
            "the IT model {} reads {} tokens, the corpus rows need {}; run `make pretrain` again",
            cfg_path.display(),
            cfg.block_size,
            window - 1
        );
    }
    let summary: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&summary_path)
            .with_context(|| format!("reading {}", summary_path.display()))?,
    )
    .with_context(|| format!("{} is corrupt; run `make pretrain`", summary_path.display()))?;
    let field = |name: &str| {
        summary.get(name).with_context(|| {
            format!(
                "{} has no `{name}`; run `make pretrain` again",
                summary_path.display()
            )
        })
    };
    let meets_bar = field("meets_bar")?
        .as_bool()
        .with_context(|| format!("{}: `meets_bar` is not a boolean", summary_path.display()))?;
    let std_safe_em = field("std_safe_greedy_em_both")?
        .as_f64()
        .with_context(|| {
            format!(
                "{}: `std_safe_greedy_em_both` is not a number",
                summary_path.display()
            )
        })?;
    Ok(ItModel {
        cfg,
        records,
        meets_bar,
        std_safe_em,
    })
}

/// The corpus vocabulary's size and its input record.
pub fn check_vocab(catalog: &Catalog) -> Result<(usize, FileRecord)> {
    let path = catalog.vocab();
    let record = catalog.input_record("vocab", &path, "corpus")?;
    let vocab: Vocab = serde_json::from_str(&std::fs::read_to_string(&path)?)
        .with_context(|| format!("{} is not a vocabulary; run `make corpus`", path.display()))?;
    if vocab != Vocab::study() {
        anyhow::bail!(
            "the vocabulary {} differs from this code's; run `make corpus` again",
            path.display()
        );
    }
    Ok((vocab.len(), record))
}

#[cfg(test)]
mod tests {
    use super::variant_names;

    #[test]
    fn variant_names_are_names_not_paths() {
        let names =
            |v: &[&str]| variant_names(&v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>());
        assert_eq!(
            names(&["ssft-medium", "", "dpo-very_small", "unlearn-x-2"]).expect("names"),
            ["ssft-medium", "dpo-very_small", "unlearn-x-2"]
        );
        for bad in [
            "../02_pretrain",
            "ssft-../x",
            "sft-medium",
            "ssft-",
            "ssft",
            "dpo-medium/",
        ] {
            let err = names(&[bad]).expect_err(bad).to_string();
            assert!(
                err.contains(bad) && err.contains("not paths"),
                "{bad}: {err}"
            );
        }
    }
}
