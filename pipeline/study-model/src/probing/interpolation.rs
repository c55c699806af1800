//! The α-interpolation of the probe stage: behaviour and τ activations of `W_IT + α ΔW`.

use rayon::prelude::*;

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
    let mut jobs = Vec::new();
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
            jobs.push((variant, st, base.clone(), alpha));
        }
    }
    // Every (variant, α) is independent: run them side by side (the models are too small for
    // one to keep both cores busy), collected in the sequential order, so the tables do not
    // depend on the thread count.
    let done: Vec<(Vec<BehaviourRow>, ModelActivations)> = jobs
        .into_par_iter()
        .map(|(variant, st, base, alpha)| {
            let params = crate::probe::interpolate(it.config(), it.params(), st.params(), alpha)
                .map_err(|source| ProbeError::Interpolate {
                    variant: variant.clone(),
                    source,
                })?;
            let gpt = Gpt::new(*it.config(), params)?;
            let id = ModelId::Interpolated {
                variant: base,
                alpha,
            };
            let mut acts = ModelActivations {
                model: id.to_string(),
                rows: Vec::new(),
            };
            let mut behaviour = Vec::new();
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
            tracing::info!(model = %id, "interpolated");
            Ok((behaviour, acts))
        })
        .collect::<Result<_>>()?;
    Ok(done.into_iter().fold(
        (Vec::new(), Vec::new()),
        |(mut behaviour, mut activations), (b, a)| {
            behaviour.extend(b);
            activations.push(a);
            (behaviour, activations)
        },
    ))
}
