//! Config of the `probe` stage (`pipeline/configs/<preset>/probe.yaml`): which activations of
//! which rows are stored for the mechanistic analyses, and the Lipschitz proxy's rows
//! (reference/analysis_spec.md §1–§5).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::evaluate::EvalSet;
use super::spectra::STD_SETS;
use super::{FieldError, StageConfig};
use crate::names::named_enum;

named_enum!(
    /// A tensor of each block (analysis_spec §0; `u = ln_1(x)`, `a = u + attn(u)`).
    Hook {
        /// `a`, the MLP's input.
        MlpIn => "mlp_in",
        /// `c_fc(a)`, before GELU.
        MlpPre => "mlp_pre",
        /// `gelu(c_fc(a))`, the input of `c_proj` (Fig. 3 reads it).
        MlpPost => "mlp_post",
        /// `c_proj(gelu(c_fc(a)))`.
        MlpOut => "mlp_out",
        /// The block's output `a + mlp_out`.
        BlockOut => "block_out",
    }
);

named_enum!(
    /// Which positions of a row a stored vector summarises.
    Pool {
        /// The EOT position s (it predicts the first output token; Fig. 5, §3.2).
        Eot => "eot",
        /// The mean over s, s+1, …: EOT and the first teacher-forced letters of the first
        /// output, at most `output_positions` and never past the first output (Fig. 3 uses 10
        /// positions, §1.2, where spans are ≥ 25 long).
        Output => "output",
    }
);

/// The dump Fig. 3's τ reads (analysis_spec §1.2): the post-GELU activation over EOT and the
/// first output letters.
pub const TAU_DUMP: Dump = Dump {
    hook: Hook::MlpPost,
    pool: Pool::Output,
};

/// One stored tensor: a hook at a pooling of positions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dump {
    /// The tensor.
    pub hook: Hook,
    /// The positions.
    pub pool: Pool,
}

/// The Lipschitz proxy (§4): rows of one set, both prompts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LipschitzConfig {
    /// Evaluation set (official: std_unsafe).
    pub set: String,
    /// Rows (the first of the set; official 1000).
    pub rows: usize,
}

/// Linear interpolation between the IT and each fine-tuned model (reference/analysis_spec.md §8,
/// claim C15): `W(α) = W_IT + α (W_ST − W_IT)` for every parameter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterpolationConfig {
    /// The α grid (empty: no interpolation); α > 1 extrapolates past the fine-tuned model.
    pub alphas: Vec<f64>,
    /// Rows of std_safe and std_unsafe whose behaviour (greedy and teacher-forced) is scored per α.
    pub behaviour_rows: usize,
}

/// The probe stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeConfig {
    /// Seed (names the run folder; the stage draws nothing).
    #[serde(default)]
    pub seed: u64,
    /// Evaluation sets whose rows are probed (names without `eval_`).
    pub sets: Vec<String>,
    /// Sets that also give reference rows (cluster means, refusal direction): rows
    /// `0 .. reference_rows`; the others give test rows only.
    pub reference_sets: Vec<String>,
    /// Reference rows per reference set and prompt.
    pub reference_rows: usize,
    /// Test rows per set and prompt: rows `reference_rows .. reference_rows + test_rows` of
    /// every set (disjoint from the references by construction).
    pub test_rows: usize,
    /// Positions averaged by `pool: output` (official 10, §1.2; capped at EOT plus the first
    /// output's letters).
    pub output_positions: usize,
    /// The stored tensors.
    pub dumps: Vec<Dump>,
    /// The Lipschitz proxy.
    pub lipschitz: LipschitzConfig,
    /// Also store the activations of `04_evaluate`'s attacked inputs.
    pub adversarial: bool,
    /// The α-interpolation: behaviour and the τ activations (`mlp_post@output`, last layer, the
    /// std sets' reference and test rows) of every interpolated model.
    pub interpolation: InterpolationConfig,
}

fn known_set(field: &str, s: &str) -> Result<(), FieldError> {
    s.parse::<EvalSet>()
        .map(|_| ())
        .map_err(|e| FieldError::new(field, e))
}

impl StageConfig for ProbeConfig {
    fn validate(&self) -> Result<(), FieldError> {
        if self.sets.is_empty() {
            return Err(FieldError::new("sets", "name at least one evaluation set"));
        }
        for s in &self.sets {
            known_set("sets", s)?;
        }
        for s in &self.reference_sets {
            known_set("reference_sets", s)?;
            if !self.sets.contains(s) {
                return Err(FieldError::new(
                    "reference_sets",
                    format!("`{s}` is not in `sets`"),
                ));
            }
        }
        if self.reference_sets.is_empty() || self.reference_rows == 0 {
            return Err(FieldError::new(
                "reference_rows",
                "τ and the refusal direction need ≥ 1 reference row of ≥ 1 reference set",
            ));
        }
        if self.test_rows == 0 {
            return Err(FieldError::new("test_rows", "must be ≥ 1"));
        }
        if self.output_positions == 0 {
            return Err(FieldError::new("output_positions", "must be ≥ 1"));
        }
        if self.dumps.is_empty() {
            return Err(FieldError::new("dumps", "store at least one hook"));
        }
        known_set("lipschitz.set", &self.lipschitz.set)?;
        if self.lipschitz.rows == 0 {
            return Err(FieldError::new("lipschitz.rows", "must be ≥ 1"));
        }
        let alphas = &self.interpolation.alphas;
        if let Some(a) = alphas
            .iter()
            .find(|a| !a.is_finite() || !(-4.0..=4.0).contains(*a))
        {
            return Err(FieldError::new(
                "interpolation.alphas",
                format!("{a} is not a finite α in [-4, 4]"),
            ));
        }
        if alphas.windows(2).any(|w| w[0] >= w[1]) {
            return Err(FieldError::new(
                "interpolation.alphas",
                "list the α grid in increasing order, each once",
            ));
        }
        if !alphas.is_empty() {
            if self.interpolation.behaviour_rows == 0 {
                return Err(FieldError::new(
                    "interpolation.behaviour_rows",
                    "must be ≥ 1 (or leave `alphas` empty)",
                ));
            }
            if !self.dumps.contains(&TAU_DUMP) {
                return Err(FieldError::new(
                    "dumps",
                    "the interpolation's τ reads `{hook: mlp_post, pool: output}`; add it to `dumps`",
                ));
            }
            for s in STD_SETS {
                if !self.reference_sets.iter().any(|r| r == s.as_str()) {
                    return Err(FieldError::new(
                        "reference_sets",
                        format!("the interpolation's τ needs `{s}` among the reference sets"),
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::from_yaml;

    fn preset(name: &str) -> String {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../configs")
            .join(name)
            .join("probe.yaml");
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[test]
    fn presets_parse_and_bad_interpolation_grids_name_their_field() {
        let p = Path::new("probe.yaml");
        for name in ["tiny", "cpu", "paper"] {
            let cfg: ProbeConfig = from_yaml(&preset(name), p, &[]).expect(name);
            assert!(
                cfg.interpolation.alphas.contains(&1.0),
                "{name}: α = 1 is the ST model"
            );
        }
        let yaml = preset("tiny");
        for (set, field) in [
            ("interpolation.alphas=[1.0, 0.5]", "interpolation.alphas"),
            ("interpolation.alphas=[0.0, .nan]", "interpolation.alphas"),
            (
                "interpolation.behaviour_rows=0",
                "interpolation.behaviour_rows",
            ),
            ("reference_sets=[std_safe]", "reference_sets"),
        ] {
            let e = from_yaml::<ProbeConfig>(&yaml, p, &[set.into()]).expect_err(set);
            assert!(e.to_string().contains(field), "{set}: {e}");
        }
        let off: ProbeConfig = from_yaml(
            &yaml,
            p,
            &[
                "interpolation.alphas=[]".into(),
                "interpolation.behaviour_rows=0".into(),
            ],
        )
        .expect("an empty grid turns the interpolation off");
        assert!(off.interpolation.alphas.is_empty());
    }
}
