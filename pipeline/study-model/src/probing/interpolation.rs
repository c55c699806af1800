//! The α-interpolation of the probe stage: behaviour and τ activations of `W_IT + α ΔW`.

use super::*;

/// The α-interpolation (analysis_spec §8): for every fine-tuned model and α, the behaviour of
/// `W_IT + α ΔW` on the std sets and its τ activations at the last layer.
pub(super) fn interpolation(
    models: &[(String, Gpt)],
    tables_by_set: &BTreeMap<String, PairTable>,
    cfg: &ProbeConfig,
) -> Result<(Vec<BehaviourRow>, Vec<ModelActivations>)> {
    let Some(((_, it), variants)) = models.split_first() else {
        return Ok((Vec::new(), Vec::new()));
    };
    let last = (it.config().n_layer - 1) as u16;
    let (mut behaviour, mut activations) = (Vec::new(), Vec::new());
    for (variant, st) in variants {
        let not_a_variant = |message: String| ProbeError::NotAVariant {
            name: variant.clone(),
            message,
        };
        let base = match variant.parse::<ModelId>().map_err(not_a_variant)? {
            ModelId::Variant(v) => v,
            _ => return Err(not_a_variant("not `<method>-<lr label>`".into())),
        };
        for &alpha in &cfg.interpolation.alphas {
            let params = crate::probe::interpolate(it.config(), it.params(), st.params(), alpha)
                .map_err(|source| ProbeError::Interpolate {
                    variant: variant.clone(),
                    source,
                })?;
            let gpt = Gpt::new(*it.config(), params)?;
            let id = ModelId::Interpolated {
                variant: base.clone(),
                alpha,
            };
            let name = id.to_string();
            let mut acts = ModelActivations {
                model: name,
                rows: Vec::new(),
            };
            for set in STD_SETS {
                let table = &tables_by_set[set.as_str()];
                let rows = cfg.interpolation.behaviour_rows;
                let subsets = set.has_unsafe_subsets();
                behaviour.extend(score_set(&gpt, &id, set, table, rows, true, subsets)?);
                for (key, mut vectors) in probe_set(&gpt, table, set.as_str(), cfg, &[TAU_DUMP])? {
                    vectors.retain(|a| a.layer == last);
                    acts.rows.push((key, vectors));
                }
            }
            activations.push(acts);
        }
        tracing::info!(model = %variant, "interpolated");
    }
    Ok((behaviour, activations))
}
