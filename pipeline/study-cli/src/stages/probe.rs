//! `study probe`: activations of the IT and fine-tuned models at the hooks the mechanistic
//! analyses read, the Lipschitz proxy, and the attacked inputs' activations → `05_probe/`
//! (tables in [`study::probe`], passes in [`study_model::probe`]).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;
use study::Stage;
use study::artifacts::{self, MODEL_CONFIG_FILE, MODEL_FILE};
use study::config::ProbeConfig;
use study::config::probe::{Dump, TAU_DUMP};
use study::corpus::Variant;
use study::evaluation::{self, ADVERSARIAL_EMBEDDINGS_FILE, ADVERSARIAL_FILE, BehaviourRow};
use study::finetune::PairTable;
use study::probe::{self as tables, ActivationKey, Group, ModelActivations, Split};
use study::spectra::STD_SETS;
use study_model::attack::{AttackRow, AttackSpec, Placement, adversarial_input};
use study_model::behaviour::{ModelId, score_set};
use study_model::gpt::{Gpt, Params};
use study_model::probe::{self, ProbeRow};

use super::StageArgs;
use super::driver::{
    DEFAULT_VARIANTS, StageRun, check_it_model, check_vocab, eval_set, load_models, write_table,
};
use crate::runtime::Runtime;

/// Bump when the stage's outputs change for the same config and code.
pub const STAGE_VERSION: u32 = 1;

/// Arguments of `study probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Fine-tuned variants to probe besides the IT model (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = DEFAULT_VARIANTS)]
    pub variants: Vec<String>,
}

/// The code that decides the stage's outputs.
pub fn code_fingerprint() -> String {
    artifacts::source_fingerprint(&[
        &study_model::code_fingerprint(),
        include_str!("probe.rs"),
        include_str!("../../../study-model/src/probe.rs"),
        include_str!("../../../study-model/src/attack.rs"),
        include_str!("../../../study-model/src/behaviour.rs"),
        include_str!("../../../study/src/evaluation/scoring.rs"),
        include_str!("../../../study/src/probe.rs"),
        include_str!("../../../study/src/config/probe.rs"),
    ])
}

/// The prompts of one set that are probed: (key, variant, row index).
fn plan(table: &PairTable, set: &str, cfg: &ProbeConfig) -> Vec<(ActivationKey, Variant, usize)> {
    let reference = cfg.reference_sets.iter().any(|s| s == set);
    let splits = [
        (
            Split::Reference,
            0..if reference { cfg.reference_rows } else { 0 },
        ),
        (
            Split::Test,
            cfg.reference_rows..cfg.reference_rows + cfg.test_rows,
        ),
    ];
    let mut out = Vec::new();
    for (split, rows) in splits {
        for i in rows.filter(|&i| i < table.len()) {
            for (group, variant) in [
                (Group::Safe, Variant::Safe),
                (Group::Unsafe, Variant::UnsafeTarget),
            ] {
                let key = ActivationKey {
                    set: set.to_owned(),
                    group,
                    split,
                    row: i as u32,
                    sample_id: table.sample_id[i],
                };
                out.push((key, variant, i));
            }
        }
    }
    out
}

/// Every planned prompt of `set` with its pooled activations (all layers) at `dumps`.
fn probe_set(
    gpt: &Gpt,
    table: &PairTable,
    set: &str,
    cfg: &ProbeConfig,
    dumps: &[Dump],
) -> Result<Vec<(ActivationKey, Vec<tables::Activation>)>> {
    let planned = plan(table, set, cfg);
    let examples: Vec<_> = planned
        .iter()
        .map(|(_, v, i)| table.example(*v, *i))
        .collect();
    let rows: Vec<ProbeRow<'_>> = examples
        .iter()
        .map(|e| ProbeRow {
            x: &e.x,
            text_len: e.text_len,
        })
        .collect();
    let pooled = probe::activations(gpt, &rows, dumps, cfg.output_positions)?;
    Ok(planned.into_iter().map(|(k, _, _)| k).zip(pooled).collect())
}

/// The α-interpolation (analysis_spec §8): for every fine-tuned model and α, the behaviour of
/// `W_IT + α ΔW` on the std sets and its τ activations at the last layer.
fn interpolation(
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
        let (method, lr_label) = variant.split_once('-').unwrap_or((variant.as_str(), ""));
        for &alpha in &cfg.interpolation.alphas {
            let name = tables::interpolated_model(variant, alpha);
            let params = Params::interpolate(it.params(), st.params(), alpha)
                .with_context(|| format!("interpolating the IT model and `{variant}`"))?;
            let gpt = Gpt::new(*it.config(), params)?;
            let id = ModelId {
                name: name.clone(),
                method: method.to_owned(),
                lr_label: lr_label.to_owned(),
            };
            let mut acts = ModelActivations {
                model: name,
                rows: Vec::new(),
            };
            for set in STD_SETS {
                let table = &tables_by_set[set];
                let rows = cfg.interpolation.behaviour_rows;
                behaviour.extend(score_set(
                    &gpt,
                    &id,
                    set,
                    table,
                    rows,
                    true,
                    set != "std_safe",
                )?);
                for (key, mut vectors) in probe_set(&gpt, table, set, cfg, &[TAU_DUMP])? {
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

/// Run the stage.
pub fn run(args: &ProbeArgs, rt: &Runtime) -> Result<()> {
    let mut run = StageRun::<ProbeConfig>::open(
        &args.stage,
        rt,
        Stage::Probe,
        STAGE_VERSION,
        code_fingerprint(),
        |c| c.seed,
    )?;
    let cfg = run.cfg().clone();
    let catalog = run.catalog.clone();
    artifacts::Manifest::read(&catalog.manifest(Stage::Corpus), "corpus")?;
    let (vocab_len, vocab) = check_vocab(&catalog)?;
    run.inputs.push(vocab);
    let mut tables_by_set = BTreeMap::new();
    for name in cfg.sets.iter().chain([&cfg.lipschitz.set]) {
        let set = eval_set(name).context("probe.yaml")?;
        run.input(set.name(), &catalog.corpus_set(set), "corpus")?;
        tables_by_set.insert(name.clone(), PairTable::read(&catalog, set, None)?);
    }
    let window = tables_by_set.values().next().map_or(0, |t| t.window);
    let it = check_it_model(&catalog, vocab_len, window)?;
    run.inputs.extend(it.records.iter().cloned());
    let variants = super::driver::variant_names(&args.variants)?;
    for v in &variants {
        super::driver::check_variant_lineage(&catalog, v, &it.records)?;
        let dir = catalog.variant_dir(Stage::Finetune, v);
        for (what, file) in [("model", MODEL_FILE), ("config", MODEL_CONFIG_FILE)] {
            run.input(
                &format!("{v}_{what}"),
                &dir.join(file),
                &format!("finetune VARIANTS={v}"),
            )?;
        }
    }
    if cfg.adversarial {
        for file in [ADVERSARIAL_FILE, ADVERSARIAL_EMBEDDINGS_FILE] {
            run.input(file, &catalog.stage_file(Stage::Evaluate, file), "evaluate")?;
        }
    }
    if run.up_to_date()? {
        return Ok(());
    }
    let device = rt.open_device()?;
    let models: Vec<(String, Gpt)> = load_models(&catalog, &variants, &it.cfg, &device)?
        .into_iter()
        .map(|(id, gpt)| (id.name, gpt))
        .collect();
    let _span = tracing::info_span!("probe", preset = %args.stage.preset).entered();
    let out = run.begin()?;
    std::fs::create_dir_all(out.path().join(tables::ACTIVATIONS_DIR))?;
    let mut files = Vec::new();
    let (t0, mut lip_rows) = (Instant::now(), Vec::new());
    let lip_table = &tables_by_set[&cfg.lipschitz.set];
    for (name, gpt) in &models {
        let mut acts = ModelActivations {
            model: name.clone(),
            rows: Vec::new(),
        };
        for set in &cfg.sets {
            acts.rows
                .extend(probe_set(gpt, &tables_by_set[set], set, &cfg, &cfg.dumps)?);
        }
        let file = format!("{}/{name}.parquet", tables::ACTIVATIONS_DIR);
        let (mut df, schema) = (acts.frame()?, tables::activations_schema());
        files.push(write_table(
            &out,
            &format!("activations_{name}"),
            &file,
            &mut df,
            &schema,
        )?);
        for (group, variant) in [
            (Group::Safe, Variant::Safe),
            (Group::Unsafe, Variant::UnsafeTarget),
        ] {
            let n = cfg.lipschitz.rows.min(lip_table.len());
            let examples: Vec<_> = (0..n).map(|i| lip_table.example(variant, i)).collect();
            let rows: Vec<ProbeRow<'_>> = examples
                .iter()
                .map(|e| ProbeRow {
                    x: &e.x,
                    text_len: e.text_len,
                })
                .collect();
            for (i, g) in probe::lipschitz(gpt, &rows)?.into_iter().enumerate() {
                lip_rows.push(tables::LipschitzRow {
                    model: name.clone(),
                    set: cfg.lipschitz.set.clone(),
                    group,
                    row: i as u32,
                    sample_id: lip_table.sample_id[i],
                    prefix_len: study::grammar::layout::Spans::new(examples[i].text_len).eot()
                        as u32,
                    grad_fro: g,
                });
            }
        }
        tracing::info!(model = %name, "probed");
    }
    let (mut df, schema) = (
        tables::lipschitz_frame(&lip_rows)?,
        tables::lipschitz_schema(),
    );
    files.push(write_table(
        &out,
        "lipschitz",
        tables::LIPSCHITZ_FILE,
        &mut df,
        &schema,
    )?);
    let probe_seconds = t0.elapsed().as_secs_f64();
    let t2 = Instant::now();
    if !cfg.interpolation.alphas.is_empty() {
        let (behaviour, acts) = interpolation(&models, &tables_by_set, &cfg)?;
        let (mut df, schema) = (
            evaluation::behaviour_frame(&behaviour)?,
            evaluation::behaviour_schema(),
        );
        files.push(write_table(
            &out,
            "interpolation_behaviour",
            tables::INTERPOLATION_BEHAVIOUR_FILE,
            &mut df,
            &schema,
        )?);
        let mut frames = acts.iter().map(ModelActivations::frame);
        let mut df = frames.next().context("no interpolated model")??;
        for f in frames {
            df.vstack_mut(&f?)?;
        }
        let schema = tables::activations_schema();
        files.push(write_table(
            &out,
            "interpolation_activations",
            tables::INTERPOLATION_ACTIVATIONS_FILE,
            &mut df,
            &schema,
        )?);
    }
    let interpolation_seconds = t2.elapsed().as_secs_f64();
    let t1 = Instant::now();
    if cfg.adversarial {
        let adv = adversarial(&catalog, &models[1..], &cfg, &device)?;
        let (mut df, schema) = (
            tables::adversarial_activations_frame(&adv)?,
            tables::adversarial_activations_schema(),
        );
        files.push(write_table(
            &out,
            "adversarial_activations",
            tables::ADVERSARIAL_ACTIVATIONS_FILE,
            &mut df,
            &schema,
        )?);
    }
    let timings = BTreeMap::from([
        ("probe_seconds".to_owned(), probe_seconds),
        ("interpolation_seconds".to_owned(), interpolation_seconds),
        ("adversarial_seconds".to_owned(), t1.elapsed().as_secs_f64()),
    ]);
    let dir = run.finish(out, files, timings)?;
    tracing::info!("probed {} models into {}", models.len(), dir.display());
    Ok(())
}

/// The attacked inputs of `04_evaluate` rebuilt from their stored δ, with each attack's outcome.
fn adversarial(
    catalog: &study::Catalog,
    models: &[(String, Gpt)],
    cfg: &ProbeConfig,
    device: &candle_core::Device,
) -> Result<Vec<tables::AdversarialActivation>> {
    let evaluated = evaluation::read_evaluation(catalog)?;
    let attack = &evaluated.config.attack;
    let table = PairTable::read(catalog, eval_set(&attack.set)?, None)?;
    let by_id: HashMap<u32, usize> = table
        .sample_id
        .iter()
        .enumerate()
        .map(|(i, &s)| (s, i))
        .collect();
    let adv_path = catalog.stage_file(Stage::Evaluate, ADVERSARIAL_FILE);
    let success: HashMap<_, _> = evaluation::attack_outcomes(&artifacts::read_parquet(
        &adv_path,
        &evaluation::adversarial_schema(),
    )?)
    .with_context(|| format!("reading {}; run `make evaluate`", adv_path.display()))?
    .into_iter()
    .collect();
    let emb_path = catalog.stage_file(Stage::Evaluate, ADVERSARIAL_EMBEDDINGS_FILE);
    let stored = candle_core::safetensors::load(&emb_path, device)
        .with_context(|| format!("reading {}; run `make evaluate`", emb_path.display()))?;
    let placement = Placement::from_config(attack);
    let mut out = Vec::new();
    for (name, gpt) in models {
        for &factor in &attack.budget_factors {
            let key = format!("{name}/{factor}");
            let get = |what: &str| {
                stored.get(&format!("{key}/{what}")).with_context(|| {
                    format!(
                        "{} has no `{key}/{what}`; run `make evaluate` again",
                        emb_path.display()
                    )
                })
            };
            let (delta, ids) = (
                get("delta")?.to_vec3::<f32>()?,
                get("sample_id")?.to_vec1::<u32>()?,
            );
            let spec = AttackSpec::from_config(attack, factor);
            let (mut inputs, mut eots, mut lens) = (Vec::new(), Vec::new(), Vec::new());
            for (d, id) in delta.iter().zip(&ids) {
                let i = *by_id
                    .get(id)
                    .with_context(|| format!("attacked sample {id} is not in {}", attack.set))?;
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
                let ok = *success.get(&(name.clone(), factor.to_bits(), *id)).with_context(|| {
                    format!("{} has no outcome for {name} at budget {factor}, sample {id}; run `make evaluate` again", adv_path.display())
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
