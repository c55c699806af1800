//! The analyses behind [`super::analyse`]: the driver of every table, the shared selection
//! helpers, the Lipschitz tables and the Fig. 3 markdown; τ and the interpolation live in
//! [`super::tau`], the row space in [`super::row_space`].

use super::row_space::row_space;
use super::tau::{TauSets, interpolation_rows, tau_rows};
use super::*;

pub(super) fn tau_metric_name(m: TauMetric) -> &'static str {
    match m {
        TauMetric::L2 => "l2",
        TauMetric::Cosine => "cos",
    }
}

/// Whether `set` is one of the standard sets ([`STD_SETS`]).
pub(super) fn is_std_set(set: &str) -> bool {
    STD_SETS.iter().any(|s| s.as_str() == set)
}

/// Drop the rows of `test` that equal a reference row bit for bit (the same prompt drawn twice
/// by the grammar): rows are disjoint by index, but τ must not see a reference vector again.
pub(super) fn without_references(test: &Matrix, references: &[&Matrix]) -> Matrix {
    let key = |r: &[f64]| r.iter().map(|x| x.to_bits()).collect::<Vec<u64>>();
    let seen: HashSet<Vec<u64>> = references
        .iter()
        .flat_map(|m| m.row_iter().map(key))
        .collect();
    let kept: Vec<Vec<f64>> = test
        .row_iter()
        .filter(|r| !seen.contains(&key(r)))
        .map(<[f64]>::to_vec)
        .collect();
    Matrix::from_rows(&kept).unwrap_or_else(|_| Matrix::zeros(0, test.cols()))
}

/// The attacked inputs' activations of `model` at one (layer, hook, pool), grouped by budget and
/// outcome: `(adversarial@<factor>, attack_success | attack_failure, rows)`, budgets ascending.
pub(super) fn attacked_groups(
    adversarial: &[AdversarialActivation],
    model: &str,
    layer: u16,
    hook: Hook,
    pool: Pool,
) -> Vec<(String, &'static str, Vec<Vec<f64>>)> {
    let mut by_attack: BTreeMap<(u64, bool), Vec<Vec<f64>>> = BTreeMap::new();
    for a in adversarial.iter().filter(|a| {
        a.model == model
            && a.activation.layer == layer
            && a.activation.hook == hook
            && a.activation.pool == pool
    }) {
        by_attack
            .entry((a.factor.to_bits(), a.success))
            .or_default()
            .push(a.activation.values.iter().map(|&x| f64::from(x)).collect());
    }
    by_attack
        .into_iter()
        .map(|((bits, success), rows)| {
            let group = if success {
                "attack_success"
            } else {
                "attack_failure"
            };
            (format!("adversarial@{}", f64::from_bits(bits)), group, rows)
        })
        .collect()
}

/// The selection of one probe table slice.
pub(super) fn sel<'a>(
    sets: &'a [&'a str],
    group: Group,
    split: Split,
    layer: u16,
    hook: Hook,
    pool: Pool,
) -> Select<'a> {
    Select {
        sets,
        group,
        split,
        layer,
        hook,
        pool,
    }
}

/// Run every analysis.
pub fn analyse(inputs: &Inputs<'_>, cfg: &SpectraConfig) -> Result<Tables, SpectraError> {
    let spec = ctx(ControlSpec::new(cfg.seed, cfg.control_draws), || {
        "control".into()
    })?;
    let layers = inputs.it.len() as u16;
    let mut t = Tables::default();
    let tau_sets = TauSets {
        sets: inputs.sets,
        reference_sets: inputs.reference_sets,
    };
    let acts = |model: &str| {
        inputs.activations.get(model).ok_or_else(|| SpectraError {
            what: format!("activations of `{model}`"),
            message: "missing from the probe stage's output; run `make probe`".into(),
        })
    };
    t.tau
        .extend(tau_rows("it", acts("it")?, &[], 0..layers, tau_sets, cfg)?);
    for (model, weights) in inputs.variants {
        if weights.len() != inputs.it.len() {
            return Err(SpectraError {
                what: format!("weights of `{model}`"),
                message: format!("{} layers, the IT model {}", weights.len(), inputs.it.len()),
            });
        }
        let a = acts(model)?;
        t.tau.extend(tau_rows(
            model,
            a,
            inputs.adversarial,
            0..layers,
            tau_sets,
            cfg,
        )?);
        for (layer, (st, it)) in weights.iter().zip(inputs.it).enumerate() {
            let layer = layer as u16;
            for (matrix, w_st, w_it) in [
                ("c_fc", &st.c_fc, &it.c_fc),
                ("c_proj", &st.c_proj, &it.c_proj),
            ] {
                let what = || format!("ΔW of {model} layer {layer} {matrix}");
                let dw = ctx(spectra::delta_w(w_st, w_it), what)?;
                let sp = ctx(spectra::spectrum(&dw), what)?;
                for (i, (&sigma, &cum)) in sp
                    .singular_values
                    .iter()
                    .zip(&sp.cumulative_energy)
                    .enumerate()
                {
                    t.spectrum.push(SpectrumRow {
                        model: model.clone(),
                        layer,
                        matrix: matrix.into(),
                        index: i as u32,
                        sigma,
                        cumulative_energy: cum,
                    });
                }
                t.spectrum_summary.push(SpectrumSummary {
                    model: model.clone(),
                    layer,
                    matrix: matrix.into(),
                    frobenius_norm: sp.frobenius_norm,
                    top_energy_share: sp.top_energy_share,
                    effective_rank: sp.effective_rank,
                    stable_rank: sp.stable_rank,
                    numerical_rank: sp.numerical_rank as u32,
                });
                let opts = ColumnSpaceOptions {
                    matrix: ColumnSpaceMatrix::DeltaW,
                    ..Default::default()
                };
                let c = ctx(
                    alignment::column_space_control(w_st, w_it, &opts, spec),
                    what,
                )?;
                let al = &c.alignment;
                for (i, (&sigma, &v)) in al
                    .singular_values
                    .iter()
                    .zip(&al.null_projection)
                    .enumerate()
                {
                    t.column.push(ColumnRow {
                        model: model.clone(),
                        layer,
                        matrix: matrix.into(),
                        index: i as u32,
                        sigma,
                        null_projection: v,
                    });
                }
                t.column_summary.push(ColumnSummary {
                    model: model.clone(),
                    layer,
                    matrix: matrix.into(),
                    k: al.null_projection.len() as u32,
                    it_rank: al.it_rank as u32,
                    out_dim: al.out_dim as u32,
                    mean_null_projection: (&c.mean_null_projection).into(),
                });
            }
            row_space(&mut t, model, a, inputs, layer, st, it, cfg, &spec)?;
        }
    }
    lipschitz_tables(&mut t, inputs.lipschitz, cfg.lipschitz_bins)?;
    t.interpolation = interpolation_rows(inputs, layers, cfg)?;
    Ok(t)
}

fn lipschitz_tables(
    t: &mut Tables,
    rows: &[LipschitzRow],
    bins: usize,
) -> Result<(), SpectraError> {
    let mut groups: BTreeMap<(String, Group), Vec<f64>> = BTreeMap::new();
    for r in rows {
        groups
            .entry((r.model.clone(), r.group))
            .or_default()
            .push(r.grad_fro);
    }
    let what = || "Lipschitz histograms".to_owned();
    let values: Vec<&[f64]> = groups.values().map(Vec::as_slice).collect();
    if values.is_empty() {
        return Err(SpectraError {
            what: what(),
            message: "no Lipschitz rows; run `make probe`".into(),
        });
    }
    let h = ctx(lipschitz::shared_histograms(&values, bins), what)?;
    for (((model, group), v), counts) in groups.iter().zip(&h.counts) {
        for (b, &count) in counts.iter().enumerate() {
            t.lipschitz_hist.push(HistRow {
                model: model.clone(),
                group: group.as_str().into(),
                bin: b as u32,
                lo: h.edges[b],
                hi: h.edges[b + 1],
                count,
            });
        }
        let s = ctx(lipschitz::summarize(v), what)?;
        t.lipschitz_summary.push(LipschitzSummary {
            model: model.clone(),
            group: group.as_str().into(),
            n: s.n,
            mean: s.mean,
            median: s.median,
            q05: s.q05,
            q95: s.q95,
        });
    }
    Ok(())
}

/// Our τ at the last layer beside the paper's Fig. 3 reading at its last layer (6 of 6), as a
/// markdown table (the paper's models have 6 layers; the presets may have fewer, so the depth is
/// printed with each number).
pub fn fig3_markdown(tau: &[TauRow]) -> String {
    use crate::mechanism::reference::{self, Group as RefGroup, Model};
    let mut out = String::from(
        "| model | group | ours: τ_L2 (mean ± sd) | our layer | paper: τ_L2 at layer 6 of 6 |\n|---|---|---:|---:|---:|\n",
    );
    let last = tau.iter().map(|r| r.layer).max().unwrap_or(0);
    for r in tau
        .iter()
        .filter(|r| r.metric == "l2" && r.set == "std" && r.layer == last)
    {
        let group = if r.group == "safe" {
            RefGroup::Safe
        } else {
            RefGroup::Unsafe
        };
        let paper: Vec<String> = Model::from_name(&r.model)
            .into_iter()
            .flat_map(|m| reference::fig3_tau(m, 6, group))
            .map(|p| {
                if p.low == p.high {
                    format!("{:.1} ({})", p.low, p.claim)
                } else {
                    format!("{:.1} … {:.1} ({})", p.low, p.high, p.claim)
                }
            })
            .collect();
        let paper = if paper.is_empty() {
            "—".to_owned()
        } else {
            paper.join("; ")
        };
        out.push_str(&format!(
            "| {} | {} | {:.2} ± {:.2} | {} of {} | {paper} |\n",
            r.model,
            r.group,
            r.mean,
            r.sd,
            r.layer + 1,
            last + 1
        ));
    }
    out
}
