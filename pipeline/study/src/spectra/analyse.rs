//! The analyses behind [`super::analyse`]: τ, row space, interpolation and Lipschitz tables from
//! the probe's tables and the models' weights.

use super::*;

fn tau_metric_name(m: TauMetric) -> &'static str {
    match m {
        TauMetric::L2 => "l2",
        TauMetric::Cosine => "cos",
    }
}

/// Drop the rows of `test` that equal a reference row bit for bit (the same prompt drawn twice
/// by the grammar): rows are disjoint by index, but τ must not see a reference vector again.
/// Whether `set` is one of the standard sets ([`STD_SETS`]).
fn is_std_set(set: &str) -> bool {
    STD_SETS.iter().any(|s| s.as_str() == set)
}

fn without_references(test: &Matrix, references: &[&Matrix]) -> Matrix {
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

fn sel<'a>(
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

/// τ rows of one model.
/// The probed sets of one τ analysis: all of them, and those with reference rows.
#[derive(Clone, Copy)]
struct TauSets<'a> {
    sets: &'a [String],
    reference_sets: &'a [String],
}

fn tau_rows(
    model: &str,
    acts: &ActivationTable,
    adversarial: &[AdversarialActivation],
    layers: std::ops::Range<u16>,
    inputs: TauSets<'_>,
    cfg: &SpectraConfig,
) -> Result<Vec<TauRow>, SpectraError> {
    let refs: Vec<&str> = match cfg.tau.references {
        TauReferences::Pooled => inputs.reference_sets.iter().map(String::as_str).collect(),
        TauReferences::Literal => vec![EvalSet::StdSafe.as_str()],
    };
    let std: Vec<&str> = STD_SETS
        .iter()
        .map(|s| s.as_str())
        .filter(|s| inputs.sets.iter().any(|x| x == s))
        .collect();
    let units = cfg
        .tau
        .first_units
        .map_or(HiddenUnits::All, HiddenUnits::First);
    let (hook, pool) = (TAU_DUMP.hook, TAU_DUMP.pool);
    let mut out = Vec::new();
    for layer in layers {
        let what = || format!("τ of {model} at layer {layer}");
        let m = |sets: &[&str], g, s| {
            ctx(
                acts.matrix(&sel(sets, g, s, layer, hook, pool))
                    .map(|x| x.0),
                what,
            )
        };
        let ref_safe = m(&refs, Group::Safe, Split::Reference)?;
        let ref_unsafe = m(&refs, Group::Unsafe, Split::Reference)?;
        let clean = |t: Matrix| without_references(&t, &[&ref_safe, &ref_unsafe]);
        let test_safe = clean(m(&std, Group::Safe, Split::Test)?);
        let mut groups: Vec<(String, String, Matrix)> = vec![(
            "std".into(),
            "unsafe".into(),
            clean(m(&std, Group::Unsafe, Split::Test)?),
        )];
        for set in inputs.sets.iter().filter(|s| !is_std_set(s)) {
            groups.push((
                set.clone(),
                "unsafe".into(),
                clean(m(&[set.as_str()], Group::Unsafe, Split::Test)?),
            ));
        }
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
        for ((bits, success), rows) in by_attack {
            let g = if success {
                "attack_success"
            } else {
                "attack_failure"
            };
            groups.push((
                format!("adversarial@{}", f64::from_bits(bits)),
                g.into(),
                ctx(Matrix::from_rows(&rows), what)?,
            ));
        }
        for metric in [TauMetric::L2, TauMetric::Cosine] {
            let opts = TauOptions {
                units,
                overlap: ReferenceOverlap::Reject,
                metric,
            };
            for (k, (set, group, test)) in groups.iter().enumerate() {
                if test.rows() == 0 {
                    continue;
                }
                let t = ctx(
                    clusters::tau_analysis(&ref_safe, &ref_unsafe, &test_safe, test, &opts),
                    what,
                )?;
                if k == 0 {
                    out.push(TauRow {
                        model: model.into(),
                        layer,
                        metric: tau_metric_name(metric).into(),
                        set: "std".into(),
                        group: "safe".into(),
                        n: t.safe.n,
                        mean: t.safe.mean,
                        sd: t.safe.sd,
                        assignment_accuracy: t.safe.assignment_accuracy,
                        separation: 0.0,
                    });
                }
                let u = t.unsafe_group;
                out.push(TauRow {
                    model: model.into(),
                    layer,
                    metric: tau_metric_name(metric).into(),
                    set: set.clone(),
                    group: group.clone(),
                    n: u.n,
                    mean: u.mean,
                    sd: u.sd,
                    assignment_accuracy: u.assignment_accuracy,
                    separation: t.separation,
                });
            }
        }
    }
    Ok(out)
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

#[allow(clippy::too_many_arguments)]
fn row_space(
    t: &mut Tables,
    model: &str,
    acts: &ActivationTable,
    inputs: &Inputs<'_>,
    layer: u16,
    st: &MlpWeights,
    it: &MlpWeights,
    cfg: &SpectraConfig,
    spec: &ControlSpec,
) -> Result<(), SpectraError> {
    let what = || format!("row space of {model} at layer {layer}");
    let (hook, pool) = (Hook::MlpIn, Pool::Eot);
    let m = |sets: &[&str], g, s| {
        ctx(
            acts.matrix(&sel(sets, g, s, layer, hook, pool))
                .map(|x| x.0),
            what,
        )
    };
    let std: Vec<&str> = STD_SETS.map(EvalSet::as_str).to_vec();
    let safe = m(&std, Group::Safe, Split::Test)?;
    let mut groups: Vec<(String, &'static str, Matrix)> =
        vec![("std".into(), "unsafe", m(&std, Group::Unsafe, Split::Test)?)];
    for set in inputs.sets.iter().filter(|s| !is_std_set(s)) {
        groups.push((
            set.clone(),
            "unsafe",
            m(&[set.as_str()], Group::Unsafe, Split::Test)?,
        ));
    }
    let mut by_attack: BTreeMap<(u64, bool), Vec<Vec<f64>>> = BTreeMap::new();
    for a in inputs.adversarial.iter().filter(|a| {
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
    for ((bits, success), rows) in by_attack {
        let g = if success {
            "attack_success"
        } else {
            "attack_failure"
        };
        groups.push((
            format!("adversarial@{}", f64::from_bits(bits)),
            g,
            ctx(Matrix::from_rows(&rows), what)?,
        ));
    }
    let opts = RowSpaceOptions {
        top_k: cfg.row_space_top_k,
        ..Default::default()
    };
    for (k, (set, group, acts_g)) in groups.iter().enumerate() {
        let a = ctx(
            alignment::row_space_analysis(&st.c_fc, &it.c_fc, &safe, acts_g, &opts),
            what,
        )?;
        let c = ctx(
            alignment::row_space_control(&st.c_fc, &it.c_fc, &safe, acts_g, &opts, *spec),
            what,
        )?;
        let mut push = |set: &str, group: &str, s: &alignment::RowSpaceSummary, ch: &Chance| {
            for (j, (&mu, &sd)) in s
                .mean_abs_projection
                .iter()
                .zip(&s.sd_abs_projection)
                .enumerate()
            {
                t.row_space.push(RowSpaceRow {
                    model: model.into(),
                    layer,
                    set: set.into(),
                    group: group.into(),
                    j: j as u32,
                    sigma: a.safe.singular_values[j],
                    mean_abs_projection: mu,
                    sd_abs_projection: sd,
                });
            }
            t.gain.push(GainRow {
                model: model.into(),
                layer,
                set: set.into(),
                group: group.into(),
                n: s.n,
                sd: s.sd_gain,
                mean_gain: ch.into(),
            });
        };
        if k == 0 {
            push("std", "safe", &a.safe_summary, &c.safe_gain);
        }
        push(set, group, &a.unsafe_summary, &c.unsafe_gain);
    }
    // The refusal direction from the model's own reference rows.
    let refs: Vec<&str> = inputs.reference_sets.iter().map(String::as_str).collect();
    let rs = m(&refs, Group::Safe, Split::Reference)?;
    let ru = m(&refs, Group::Unsafe, Split::Reference)?;
    let d = ctx(direction::refusal_direction(&rs, &ru), what)?;
    let dopts = DirectionOptions {
        side: Side::Input,
        top_k: cfg.direction_top_k,
    };
    let dc = ctx(
        direction::direction_control(&d.direction, &st.c_fc, &it.c_fc, &dopts, *spec),
        what,
    )?;
    t.direction.push(DirectionRow {
        model: model.into(),
        layer,
        mean_difference_norm: d.mean_difference_norm,
        best: dc.alignment.best as u32,
        max_abs_cosine: (&dc.max_abs_cosine).into(),
    });
    Ok(())
}

fn interpolation_rows(
    inputs: &Inputs<'_>,
    layers: u16,
    cfg: &SpectraConfig,
) -> Result<Vec<InterpolationRow>, SpectraError> {
    let std: Vec<String> = STD_SETS.iter().map(ToString::to_string).collect();
    let sets = TauSets {
        sets: &std,
        reference_sets: &std,
    };
    let last = layers.saturating_sub(1);
    let mut out = Vec::new();
    for (name, acts) in inputs.interpolation {
        let what = || format!("interpolated model `{name}`");
        let (variant, alpha) = ctx(crate::probe::parse_interpolated(name), what)?;
        let id: ModelId = ctx(name.parse::<ModelId>(), what)?;
        let tau = tau_rows(name, acts, &[], last..last + 1, sets, cfg)?;
        let tau_of = |group: &str| {
            tau.iter()
                .find(|r| r.metric == "l2" && r.set == "std" && r.group == group)
                .ok_or_else(|| SpectraError {
                    what: what(),
                    message: format!("no τ of the {group} std test points"),
                })
        };
        let (safe, unsafe_) = (tau_of("safe")?, tau_of("unsafe")?);
        let cell = |set: EvalSet, metric: Metric, subset: Subset| {
            inputs.interpolation_behaviour.iter().find(|r| {
                r.model == id
                    && r.set == set
                    && crate::evaluation::is_greedy_exact(r, metric, subset)
            })
        };
        let missing = |cell: &str| SpectraError {
            what: what(),
            message: format!(
                "no greedy exact-match {cell} in the behaviour table; run `make probe`"
            ),
        };
        let refusal = cell(EvalSet::StdUnsafe, Metric::Refusal, Subset::All)
            .ok_or_else(|| missing("refusal on std_unsafe"))?;
        let instruct = cell(EvalSet::StdSafe, Metric::Instruct, Subset::All)
            .ok_or_else(|| missing("instruction following on std_safe"))?;
        out.push(InterpolationRow {
            model: variant.to_owned(),
            alpha,
            refusal: refusal.value,
            refusal_b_only: cell(EvalSet::StdUnsafe, Metric::Refusal, Subset::BOnly)
                .map_or(f64::NAN, |r| r.value),
            instruct: instruct.value,
            n: refusal.n as usize,
            layer: last,
            tau_safe: safe.mean,
            tau_unsafe: unsafe_.mean,
            tau_separation: unsafe_.separation,
        });
    }
    out.sort_by(|a, b| a.model.cmp(&b.model).then(a.alpha.total_cmp(&b.alpha)));
    Ok(out)
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
