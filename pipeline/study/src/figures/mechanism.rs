//! Figures of the mechanistic study (paper Figs. 3–7), drawn from the `spectra` stage's tables
//! ([`crate::spectra::Tables`]); one panel per model.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use crate::spectra::Tables;

/// Which figure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Fig. 3: τ_L2 per layer, std safe vs unsafe test points, mean ± sd.
    Clusters,
    /// Fig. 4: mean null-space share of ΔW's top left singular vectors per layer vs chance.
    NullSpace,
    /// Fig. 5: mean |σ_j cos(a, v_j)| over ΔW's top directions, safe vs unsafe, last layer.
    RowSpace,
    /// Fig. 6: histograms of the Lipschitz proxy, safe vs unsafe.
    Lipschitz,
    /// Fig. 7 / Sec. 5: τ_L2 per layer of jailbreak and attacked inputs beside std safe/unsafe.
    Jailbreaks,
    /// C15: behaviour of `W_IT + α ΔW` against α (refusal on std_unsafe and its b_only rows,
    /// instruction following on std_safe).
    Interpolation,
}

impl Kind {
    /// The figure's file stem.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Clusters => "fig3-clusters",
            Kind::NullSpace => "fig4-null-space",
            Kind::RowSpace => "fig5-row-space",
            Kind::Lipschitz => "fig6-lipschitz",
            Kind::Jailbreaks => "fig7-jailbreaks",
            Kind::Interpolation => "fig9-interpolation",
        }
    }
}

/// The models with data for `kind`, in table order (IT first where it has any).
pub fn models(t: &Tables, kind: Kind) -> Vec<String> {
    let mut out: Vec<String> = match kind {
        Kind::Clusters => t.tau.iter().map(|r| r.model.clone()).collect(),
        Kind::Jailbreaks => t
            .tau
            .iter()
            .filter(|r| r.model != "it")
            .map(|r| r.model.clone())
            .collect(),
        Kind::NullSpace => t.column_summary.iter().map(|r| r.model.clone()).collect(),
        Kind::RowSpace => t.row_space.iter().map(|r| r.model.clone()).collect(),
        Kind::Lipschitz => t
            .lipschitz_summary
            .iter()
            .map(|r| r.model.clone())
            .collect(),
        Kind::Interpolation => t.interpolation.iter().map(|r| r.model.clone()).collect(),
    };
    let mut seen = std::collections::HashSet::new();
    out.retain(|m| seen.insert(m.clone()));
    out
}

/// Distinct colours for up to 12 series (Fig. 7 draws std safe/unsafe, four jailbreaks and four
/// attack budgets): tab10 plus two, so no series shares a colour with another in one panel.
const PALETTE: [RGBColor; 12] = [
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
    RGBColor(0, 0, 128),
    RGBColor(128, 0, 0),
];

/// One named series of (x, y, ±sd) points.
struct Series {
    label: String,
    points: Vec<(f64, f64, f64)>,
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series],
    bands: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let all = series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y, sd) in all {
        let sd = if bands { sd } else { 0.0 };
        (x0, x1) = (x0.min(x), x1.max(x));
        (y0, y1) = (y0.min(y - sd), y1.max(y + sd));
    }
    if x0 > x1 {
        return Ok(());
    }
    let pad = ((y1 - y0) * 0.08).max(1e-6);
    let xpad = ((x1 - x0) * 0.05).max(0.5);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(32)
        .y_label_area_size(52)
        .build_cartesian_2d(x0 - xpad..x1 + xpad, y0 - pad..y1 + pad)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 12))
        .draw()?;
    for (k, s) in series.iter().enumerate() {
        let color = PALETTE[k % PALETTE.len()];
        if bands {
            let mut poly: Vec<(f64, f64)> =
                s.points.iter().map(|&(x, y, sd)| (x, y + sd)).collect();
            poly.extend(s.points.iter().rev().map(|&(x, y, sd)| (x, y - sd)));
            chart.draw_series(std::iter::once(Polygon::new(
                poly,
                color.mix(0.18).filled(),
            )))?;
        }
        chart
            .draw_series(LineSeries::new(
                s.points.iter().map(|&(x, y, _)| (x, y)),
                color.stroke_width(2),
            ))?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], color.stroke_width(2))
            });
        chart.draw_series(
            s.points
                .iter()
                .map(|&(x, y, _)| Circle::new((x, y), 3, color.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.6))
        .border_style(BLACK.mix(0.3))
        .label_font(("sans-serif", 11))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    Ok(())
}

fn tau_series(t: &Tables, model: &str, set: &str, group: &str, label: &str) -> Series {
    Series {
        label: label.to_owned(),
        points: t
            .tau
            .iter()
            .filter(|r| r.model == model && r.metric == "l2" && r.set == set && r.group == group)
            .map(|r| (f64::from(r.layer) + 1.0, r.mean, r.sd))
            .collect(),
    }
}

/// Draw `kind` for `models`, one panel each.
pub(super) fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    t: &Tables,
    kind: Kind,
    models: &[String],
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let title = match kind {
        Kind::Clusters => {
            "τ = ‖a − μ_unsafe‖ − ‖a − μ_safe‖ per layer (post-GELU, EOT + first output): safe > 0, unsafe < 0 once clusters form"
        }
        Kind::NullSpace => {
            "ΔW's top left singular vectors outside W_IT's column space (c_fc), vs random matrices with ΔW's spectrum"
        }
        Kind::RowSpace => {
            "|σ_j cos(a, v_j)| on ΔW's top right singular vectors (c_fc, last layer): unsafe inputs ≫ safe"
        }
        Kind::Lipschitz => {
            "Local Lipschitz proxy ‖∂ max logit / ∂ prompt embeddings‖_F, safe vs unsafe prompts"
        }
        Kind::Jailbreaks => {
            "τ per layer of jailbreak and attacked inputs beside std safe / unsafe (post-GELU)"
        }
        Kind::Interpolation => {
            "W_IT + α·ΔW (every parameter): greedy exact-match behaviour against α (α = 1: the fine-tuned model)"
        }
    };
    let root = root.titled(title, ("sans-serif", 20))?;
    let cols = models.len().clamp(1, 4);
    let rows = models.len().div_ceil(cols).max(1);
    let areas = root.split_evenly((rows, cols));
    for (m, area) in models.iter().zip(&areas) {
        match kind {
            Kind::Clusters => {
                let s = [
                    tau_series(t, m, "std", "safe", "safe"),
                    tau_series(t, m, "std", "unsafe", "unsafe"),
                ];
                panel(area, m, ("layer", "τ (L2)"), &s, true)?;
            }
            Kind::Jailbreaks => {
                let mut s = vec![
                    tau_series(t, m, "std", "safe", "std safe"),
                    tau_series(t, m, "std", "unsafe", "std unsafe"),
                ];
                let mut extra: Vec<(String, String)> = t
                    .tau
                    .iter()
                    .filter(|r| r.model == *m && r.metric == "l2" && r.set != "std")
                    .map(|r| (r.set.clone(), r.group.clone()))
                    .collect();
                extra.dedup();
                extra.retain(|(set, g)| !set.starts_with("adversarial") || g == "attack_success");
                let mut seen = std::collections::HashSet::new();
                for (set, g) in extra.into_iter().filter(|k| seen.insert(k.clone())) {
                    let label = if g == "unsafe" {
                        set.clone()
                    } else {
                        format!("{set} ({g})")
                    };
                    s.push(tau_series(t, m, &set, &g, &label));
                }
                panel(area, m, ("layer", "τ (L2)"), &s, false)?;
            }
            Kind::NullSpace => {
                let rows: Vec<_> = t
                    .column_summary
                    .iter()
                    .filter(|r| r.model == *m && r.matrix == "c_fc")
                    .collect();
                let s = [
                    Series {
                        label: "ΔW".into(),
                        points: rows
                            .iter()
                            .map(|r| {
                                (
                                    f64::from(r.layer) + 1.0,
                                    r.mean_null_projection.observed,
                                    0.0,
                                )
                            })
                            .collect(),
                    },
                    Series {
                        label: "random, same spectrum (±sd)".into(),
                        points: rows
                            .iter()
                            .map(|r| {
                                (
                                    f64::from(r.layer) + 1.0,
                                    r.mean_null_projection.chance_mean,
                                    r.mean_null_projection.chance_sd,
                                )
                            })
                            .collect(),
                    },
                ];
                panel(area, m, ("layer", "mean ‖(I − P_IT) u_i‖"), &s, true)?;
            }
            Kind::RowSpace => {
                let last = t
                    .row_space
                    .iter()
                    .filter(|r| r.model == *m)
                    .map(|r| r.layer)
                    .max()
                    .unwrap_or(0);
                let pick = |group: &str| Series {
                    label: group.to_owned(),
                    points: t
                        .row_space
                        .iter()
                        .filter(|r| {
                            r.model == *m && r.layer == last && r.set == "std" && r.group == group
                        })
                        .map(|r| {
                            (
                                f64::from(r.j) + 1.0,
                                r.mean_abs_projection,
                                r.sd_abs_projection,
                            )
                        })
                        .collect(),
                };
                panel(
                    area,
                    &format!("{m}, layer {}", last + 1),
                    ("singular direction j", "mean |σ_j cos|"),
                    &[pick("safe"), pick("unsafe")],
                    true,
                )?;
            }
            Kind::Lipschitz => {
                let pick = |group: &str| Series {
                    label: group.to_owned(),
                    points: t
                        .lipschitz_hist
                        .iter()
                        .filter(|r| r.model == *m && r.group == group)
                        .map(|r| ((r.lo + r.hi) / 2.0, r.count as f64, 0.0))
                        .collect(),
                };
                panel(
                    area,
                    m,
                    ("gradient norm", "rows"),
                    &[pick("safe"), pick("unsafe")],
                    false,
                )?;
            }
            Kind::Interpolation => {
                let pick = |label: &str, f: fn(&crate::spectra::InterpolationRow) -> f64| Series {
                    label: label.to_owned(),
                    points: t
                        .interpolation
                        .iter()
                        .filter(|r| r.model == *m && f(r).is_finite())
                        .map(|r| (r.alpha, f(r), 0.0))
                        .collect(),
                };
                panel(
                    area,
                    m,
                    ("α", "fraction of rows"),
                    &[
                        pick("instruct (std_safe)", |r| r.instruct),
                        pick("refuse (std_unsafe)", |r| r.refusal),
                        pick("refuse (b_only)", |r| r.refusal_b_only),
                    ],
                    false,
                )?;
            }
        }
    }
    Ok(())
}
