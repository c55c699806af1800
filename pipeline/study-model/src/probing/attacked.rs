//! The attacked inputs of `04_evaluate`, rebuilt from their stored soft tokens and probed.

use super::*;

/// What the soft-token probe reads from `04_evaluate`: the attack's config, its set's table, the
/// outcomes (`adversarial.parquet`) and the stored δ (`adversarial_embeddings.safetensors`).
pub struct Attacked {
    /// The evaluate stage's attack config.
    pub config: EvaluateConfig,
    /// The attack set's rows.
    pub table: PairTable,
    /// `adversarial.parquet`.
    pub outcomes_path: PathBuf,
    /// `adversarial_embeddings.safetensors`.
    pub embeddings_path: PathBuf,
}

/// The attacked inputs of `04_evaluate` rebuilt from their stored δ, with each attack's outcome.
pub(super) fn adversarial(
    attacked: &Attacked,
    models: &[(String, Gpt)],
    cfg: &ProbeConfig,
    device: &Device,
) -> Result<Vec<tables::AdversarialActivation>> {
    let attack = &attacked.config.attack;
    let table = &attacked.table;
    let by_id: HashMap<u32, usize> = table
        .sample_id
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let adv_path = &attacked.outcomes_path;
    let adv = artifacts::read_parquet(adv_path, &evaluation::adversarial_schema())?;
    let success: HashMap<_, _> = evaluation::attack_outcomes(&adv)
        .map_err(|e| ArtifactError::Schema {
            path: adv_path.clone(),
            message: e.to_string(),
            target: "evaluate".into(),
        })?
        .into_iter()
        .collect();
    let emb_path = &attacked.embeddings_path;
    let stored: HashMap<String, Tensor> = candle_core::safetensors::load(emb_path, device)?;
    let placement = Placement::from_config(attack);
    let mut out = Vec::new();
    for (name, gpt) in models {
        for &factor in &attack.budget_factors {
            let key = format!("{name}/{factor}");
            let get = |what: &str| {
                let k = format!("{key}/{what}");
                stored.get(&k).ok_or_else(|| ProbeError::MissingEmbedding {
                    path: emb_path.clone(),
                    key: k,
                })
            };
            let (delta, ids) = (
                get("delta")?.to_vec3::<f32>()?,
                get("sample_id")?.to_vec1::<u32>()?,
            );
            let spec = AttackSpec::from_config(attack, factor);
            let (mut inputs, mut eots, mut lens) = (Vec::new(), Vec::new(), Vec::new());
            for (d, id) in delta.iter().zip(&ids) {
                let i = *by_id.get(id).ok_or_else(|| ProbeError::UnknownSample {
                    id: *id,
                    set: attack.set.to_string(),
                })?;
                let l = usize::from(table.text_len[i]);
                let row = AttackRow {
                    row: table.row(Variant::UnsafeTarget, i).0,
                    text_len: l,
                };
                let flat: Vec<f32> = d.iter().flatten().copied().collect();
                inputs.push(adversarial_input(gpt, &row, &spec, placement, &flat)?);
                eots.push(placement.eot_position(&spec, l));
                lens.push(l);
            }
            let acts = probe::activations_of_embeddings(
                gpt,
                &inputs,
                &eots,
                &lens,
                &cfg.dumps,
                cfg.output_positions,
            )?;
            for (id, row_acts) in ids.iter().zip(acts) {
                let ok = *success
                    .get(&(name.clone(), factor.to_bits(), *id))
                    .ok_or_else(|| ProbeError::MissingOutcome {
                        path: adv_path.clone(),
                        model: name.clone(),
                        factor,
                        id: *id,
                    })?;
                out.extend(
                    row_acts
                        .into_iter()
                        .map(|activation| tables::AdversarialActivation {
                            model: name.clone(),
                            factor,
                            sample_id: *id,
                            success: ok,
                            activation,
                        }),
                );
            }
        }
    }
    Ok(out)
}
