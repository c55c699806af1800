//! The trainable parameters ([`Params`]) by official name: the seeded official initialisation,
//! and reading and writing safetensors checkpoints.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use super::GptConfig;

/// Standard deviation of the official initialisation of every Linear weight and `wte`.
pub const INIT_STD: f64 = 0.02;

/// The trainable parameters, by official name.
#[derive(Debug, Clone)]
pub struct Params {
    vars: BTreeMap<String, Var>,
}

impl Params {
    /// The official initialisation (training_spec §1.5), seeded: every Linear weight and `wte`
    /// ~ N(0, 0.02²), biases 0, LayerNorm weight 1 / bias 0, then every `*c_proj.weight`
    /// (attention output and MLP down-projection) ~ N(0, (0.02/√(2·n_layer))²). Values are drawn
    /// on the CPU from one ChaCha8 stream in parameter order, so they do not depend on the device.
    pub fn init(cfg: &GptConfig, seed: u64, device: &Device) -> Result<Self> {
        if let Err(e) = cfg.check() {
            candle_core::bail!("invalid model shape: {e}");
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let proj_std = INIT_STD / ((2 * cfg.n_layer) as f64).sqrt();
        let mut vars = BTreeMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let n: usize = shape.iter().product();
            let values: Vec<f32> = if name.ends_with("c_proj.weight") {
                normal(&mut rng, n, proj_std)
            } else if name.contains(".ln_") || name.contains("ln_f") {
                let one = if name.ends_with(".weight") { 1.0 } else { 0.0 };
                vec![one; n]
            } else if name.ends_with(".bias") {
                vec![0.0; n]
            } else {
                normal(&mut rng, n, INIT_STD)
            };
            let t = Tensor::from_vec(values, shape, device)?;
            vars.insert(name, Var::from_tensor(&t)?);
        }
        Ok(Self { vars })
    }

    /// Parameters from tensors by name (a loaded checkpoint), checked against `cfg`: every name
    /// present with its shape, nothing else but the two official buffers (ignored).
    pub fn from_tensors(cfg: &GptConfig, mut tensors: BTreeMap<String, Tensor>) -> Result<Self> {
        let mut vars = BTreeMap::new();
        for (name, shape) in cfg.parameter_shapes() {
            let t = tensors.remove(&name).ok_or_else(|| {
                candle_core::Error::Msg(format!("checkpoint has no tensor `{name}`"))
            })?;
            if t.dims() != shape.as_slice() {
                candle_core::bail!(
                    "checkpoint tensor `{name}` has shape {:?}, the model config needs {shape:?}",
                    t.dims()
                );
            }
            let t = t.to_dtype(DType::F32)?;
            let bad = t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .filter(|v| !v.is_finite())
                .count();
            if bad > 0 {
                candle_core::bail!(
                    "checkpoint tensor `{name}` has {bad} non-finite value(s) (NaN or ±inf): \
                     training diverged or the file was edited; re-run the stage that wrote it \
                     with --force"
                );
            }
            vars.insert(name, Var::from_tensor(&t)?);
        }
        tensors.retain(|k, _| !(k == "transformer.wpe.pe" || k.ends_with(".attn.bias")));
        if let Some(extra) = tensors.keys().next() {
            candle_core::bail!(
                "checkpoint has a tensor `{extra}` the model does not (n_layer too small?)"
            );
        }
        Ok(Self { vars })
    }

    /// Read a safetensors checkpoint (an optional DataParallel `module.` prefix is stripped).
    pub fn load(cfg: &GptConfig, path: &Path, device: &Device) -> Result<Self> {
        let tensors = candle_core::safetensors::load(path, device)?
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("module.").map(str::to_owned).unwrap_or(k), v))
            .collect();
        Self::from_tensors(cfg, tensors)
    }

    /// Write all parameters as safetensors, official names.
    pub fn save(&self, path: &Path) -> Result<()> {
        let tensors: std::collections::HashMap<&str, Tensor> = self
            .vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, path)
    }

    /// The parameter `name`.
    pub fn get(&self, name: &str) -> Result<&Var> {
        self.vars
            .get(name)
            .ok_or_else(|| candle_core::Error::Msg(format!("no parameter `{name}`")))
    }

    /// All parameters, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Var)> {
        self.vars.iter().map(|(k, v)| (k.as_str(), v))
    }
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    let dist = Normal::new(0.0f64, std).expect("a positive standard deviation");
    (0..n).map(|_| dist.sample(rng) as f32).collect()
}
