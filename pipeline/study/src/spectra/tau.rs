//! τ (Fig. 3: cluster separation of safe and unsafe activations) per model and layer, and the
//! α-interpolation's τ and behaviour (claim C15).

use super::analyse::{attacked_groups, is_std_set, sel, tau_metric_name, without_references};
use super::*;

/// The probed sets of one τ analysis: all of them, and those with reference rows.
#[derive(Clone, Copy)]
pub(super) struct TauSets<'a> {
    pub(super) sets: &'a [String],
    pub(super) reference_sets: &'a [String],
}

/// τ rows of one model.
pub(super) fn tau_rows(
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
        for (set, group, rows) in attacked_groups(adversarial, model, layer, hook, pool) {
            groups.push((set, group.into(), ctx(Matrix::from_rows(&rows), what)?));
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

/// τ and behaviour of every interpolated model `W_IT + α·ΔW` (claim C15).
pub(super) fn interpolation_rows(
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
        let id: ModelId = ctx(name.parse::<ModelId>(), what)?;
        let ModelId::Interpolated { variant, alpha } = &id else {
            return Err(SpectraError {
                what: what(),
                message: "not `<variant>@<α>`".into(),
            });
        };
        let (variant, alpha) = (variant.name(), *alpha);
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
            model: variant,
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
