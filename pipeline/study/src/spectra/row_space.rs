//! Row space (Fig. 5) per model and layer: how far the MLP inputs of safe, unsafe, jailbreak and
//! attacked rows project onto the top right-singular vectors of the update ΔW of `c_fc`, the
//! gain of ΔW on each group, and the refusal direction's alignment with ΔW — each against its
//! chance control.

use super::analyse::{attacked_groups, is_std_set, sel};
use super::*;

/// The row-space, gain and refusal-direction rows of one model at one layer.
#[allow(clippy::too_many_arguments)]
pub(super) fn row_space(
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
    for (set, group, rows) in attacked_groups(inputs.adversarial, model, layer, hook, pool) {
        groups.push((set, group, ctx(Matrix::from_rows(&rows), what)?));
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
