//! What pre-training reads from the corpus: its config, its input records and its tables
//! ([`PretrainData`]).

use study::Catalog;
use study::artifacts::{FileRecord, Manifest, Stage};
use study::config::corpus::PretrainMixConfig;
use study::config::{CorpusConfig, PretrainConfig};
use study::corpus::CorpusSet;
use study::training::{self, TokenTable};

use super::error::{PretrainError, Result};
use crate::gpt::GptConfig;

/// The corpus config recorded in the corpus stage's manifest (its pre-training mix drives the
/// batches).
pub fn corpus_config(catalog: &Catalog) -> Result<CorpusConfig> {
    let path = catalog.manifest(Stage::Corpus);
    let manifest = Manifest::read(&path, "corpus")?;
    serde_yaml::from_value(manifest.config).map_err(|e| PretrainError::CorpusManifest(path, e))
}

/// The corpus files pre-training reads (besides the vocabulary), as input records.
pub fn input_records(catalog: &Catalog) -> Result<Vec<FileRecord>> {
    [
        CorpusSet::PretrainTrain,
        CorpusSet::PretrainTest,
        CorpusSet::EvalStdSafe,
    ]
    .into_iter()
    .map(|set| Ok(catalog.input_record(set.name(), &catalog.corpus_set(set), "corpus")?))
    .collect()
}

/// What pre-training reads from the corpus.
pub struct PretrainData {
    /// The curriculum of sample types.
    pub mix: PretrainMixConfig,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// The training pool.
    pub pool: TokenTable,
    /// Held-out pre-training rows.
    pub test: TokenTable,
    /// std_safe instructions (the accuracy bar).
    pub std_safe: TokenTable,
}

impl PretrainData {
    /// Read the tables (only when the stage runs).
    pub fn read(catalog: &Catalog, mix: PretrainMixConfig, vocab_size: usize) -> Result<Self> {
        let pool = training::read_tokens(catalog, CorpusSet::PretrainTrain, "tokens", None)?;
        let test = training::read_tokens(catalog, CorpusSet::PretrainTest, "tokens", None)?;
        let std_safe = training::read_tokens(catalog, CorpusSet::EvalStdSafe, "x_safe", None)?;
        if pool.is_empty() || test.is_empty() || std_safe.is_empty() {
            return Err(PretrainError::EmptyCorpus);
        }
        Ok(Self {
            mix,
            vocab_size,
            pool,
            test,
            std_safe,
        })
    }

    /// The model shape `cfg` asks for on this corpus.
    pub fn model_config(&self, cfg: &PretrainConfig) -> GptConfig {
        GptConfig {
            n_layer: cfg.model.n_layer,
            n_head: cfg.model.n_head,
            n_embd: cfg.model.n_embd,
            block_size: self.pool.window - 1,
            vocab_size: self.vocab_size,
            mlp_ratio: cfg.model.mlp_ratio,
            gelu: cfg.model.gelu,
        }
    }
}
