//! The resumable checkpoint: its train state ([`TrainState`]), writing it (atomically swapped in)
//! and resuming from it.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};
use study::artifacts::{
    self, METRICS_FILE, MODEL_CONFIG_FILE, MODEL_FILE, OPTIMIZER_FILE, TRAIN_STATE_FILE,
};
use study::training::{self, MetricRow};

use super::Pretrain;
use super::error::{PretrainError, Result, io};
use crate::gpt::{Gpt, GptConfig, Params};
use crate::optim::AdamW;

/// The resumable state next to a checkpoint's weights and moments.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TrainState {
    /// Steps completed.
    pub step: usize,
    /// Hash of the resolved config that produced it.
    pub config_hash: String,
    /// Code fingerprint that produced it.
    pub fingerprint: String,
}

type OptState = Option<(BTreeMap<String, Tensor>, u64)>;

pub(super) fn resume(
    dir: &Path,
    cfg: &GptConfig,
    stamp: &TrainState,
    device: &Device,
) -> Result<(Params, usize, Vec<MetricRow>, OptState)> {
    let corrupt = |what: &'static str| {
        let dir = dir.to_owned();
        move |e: Box<dyn std::error::Error + Send + Sync>| PretrainError::CorruptCheckpoint {
            what,
            dir,
            source: e,
        }
    };
    let text = std::fs::read_to_string(dir.join(TRAIN_STATE_FILE))
        .map_err(|_| PretrainError::NoCheckpoint(dir.join(TRAIN_STATE_FILE)))?;
    let state: TrainState =
        serde_json::from_str(&text).map_err(|e| corrupt(TRAIN_STATE_FILE)(e.into()))?;
    if state.config_hash != stamp.config_hash || state.fingerprint != stamp.fingerprint {
        return Err(PretrainError::StaleCheckpoint {
            dir: dir.to_owned(),
            found: state.config_hash,
            expected: stamp.config_hash.clone(),
        });
    }
    let saved: GptConfig = std::fs::read_to_string(dir.join(MODEL_CONFIG_FILE))
        .map_err(|e| corrupt(MODEL_CONFIG_FILE)(e.into()))
        .and_then(|t| serde_json::from_str(&t).map_err(|e| corrupt(MODEL_CONFIG_FILE)(e.into())))?;
    if saved != *cfg {
        return Err(PretrainError::CheckpointShape {
            dir: dir.to_owned(),
            found: Box::new(saved),
            expected: Box::new(*cfg),
        });
    }
    let params = Params::load(cfg, &dir.join(MODEL_FILE), device)
        .map_err(|e| corrupt("the weights")(e.into()))?;
    let moments = candle_core::safetensors::load(dir.join(OPTIMIZER_FILE), device)
        .map_err(|e| corrupt("the optimiser state")(e.into()))?
        .into_iter()
        .collect();
    let df = artifacts::read_parquet(
        &dir.join(METRICS_FILE),
        &training::metrics_schema("pretrain"),
    )?;
    let rows = training::metrics_rows(&df).map_err(|e| corrupt("the metrics")(e.into()))?;
    tracing::info!(step = state.step, "resuming from {}", dir.display());
    Ok((params, state.step, rows, Some((moments, state.step as u64))))
}

/// Write weights, config, optimiser moments, train state and metrics into `dir`.
pub(super) fn write_checkpoint(
    dir: &Path,
    model: &Gpt,
    opt: &AdamW,
    state: &TrainState,
    rows: &[MetricRow],
) -> Result<()> {
    model.params().save(&dir.join(MODEL_FILE))?;
    artifacts::write_json(model.config(), &dir.join(MODEL_CONFIG_FILE))?;
    opt.save(&dir.join(OPTIMIZER_FILE))?;
    let mut df = training::metrics_frame(rows).map_err(PretrainError::Metrics)?;
    artifacts::write_parquet(
        &mut df,
        &dir.join(METRICS_FILE),
        &training::metrics_schema("pretrain"),
        &[],
    )?;
    // train_state.json last: a checkpoint without it is not resumable, and is never half-read.
    artifacts::write_json(state, &dir.join(TRAIN_STATE_FILE))?;
    Ok(())
}

impl<P> Pretrain<'_, P> {
    /// Write the checkpoint into `<ckpt>.partial/`, then swap it in: a kill mid-write leaves the
    /// previous checkpoint intact.
    pub(super) fn checkpoint(&self, model: &Gpt, opt: &AdamW) -> Result<()> {
        let partial = self.ckpt_dir.with_extension("ckpt.partial");
        let old = self.ckpt_dir.with_extension("ckpt.old");
        for stale in [&partial, &old] {
            if stale.exists() {
                std::fs::remove_dir_all(stale).map_err(io("removing", stale))?;
            }
        }
        std::fs::create_dir_all(&partial).map_err(io("creating", &partial))?;
        write_checkpoint(&partial, model, opt, &self.state, &self.rows)?;
        // Swap: the previous checkpoint moves aside before the new one moves in, and `resume`
        // never reads `.partial` or `.old`.
        if self.ckpt_dir.exists() {
            std::fs::rename(&self.ckpt_dir, &old).map_err(io("moving aside", &self.ckpt_dir))?;
        }
        std::fs::rename(&partial, &self.ckpt_dir)
            .map_err(io("moving the checkpoint into", &self.ckpt_dir))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(io("removing", &old))?;
        }
        tracing::info!(
            step = self.state.step,
            "checkpoint written to {}",
            self.ckpt_dir.display()
        );
        Ok(())
    }
}
