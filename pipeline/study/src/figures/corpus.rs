//! The corpus overview: text lengths, operators and safe/unsafe labels per set.

use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;

use super::DrawResult;
use crate::analysis::corpus::CorpusOverview;
use crate::corpus::CorpusSet;
use crate::grammar::vocab;

pub(super) fn draw_corpus<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    ov: &CorpusOverview,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        "Corpus overview: lengths, operators, safe/unsafe labels",
        ("sans-serif", 28),
    )?;
    let (top, rest) = root.split_vertically(420);
    let (middle, bottom) = rest.split_vertically(480);
    draw_lengths(&top, &ov.lengths)?;
    draw_operators(&middle, &ov.operators)?;
    draw_labels(&bottom, &ov.labels)?;
    Ok(())
}

/// A string column; a null is an error naming the column and row.
fn str_col<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<&'a str>, PolarsError> {
    df.column(name)?
        .str()?
        .iter()
        .enumerate()
        .map(|(i, v)| crate::training::present(v, name, i))
        .collect()
}

fn f64_col(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, PolarsError> {
    Ok(df
        .column(name)?
        .cast(&DataType::Float64)?
        .f64()?
        .iter()
        .collect())
}

pub(super) fn set_color(i: usize) -> RGBColor {
    const P: [RGBColor; 7] = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
    ];
    P[i % P.len()]
}

fn draw_lengths<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, df: &DataFrame) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let sets = str_col(df, "set")?;
    let lens = f64_col(df, "text_len")?;
    let frac = f64_col(df, "fraction")?;
    let (lo, hi) = lens
        .iter()
        .flatten()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    let ymax = frac.iter().flatten().fold(0.0f64, |a, &v| a.max(v)) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Text length per set (fraction of rows)", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((lo - 0.5)..(hi + 0.5), 0.0..ymax.max(0.01))?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels((hi - lo) as usize + 3)
        .x_label_formatter(&|v| {
            if (v - v.round()).abs() < 1e-6 {
                format!("{v:.0}")
            } else {
                String::new()
            }
        })
        .x_desc("text length L (tokens)")
        .y_desc("fraction")
        .draw()?;
    // Group the sets by kind so the legend stays short: one line per family of sets.
    let groups: [(&str, &[CorpusSet]); 3] = [
        (
            "pre-training",
            &[CorpusSet::PretrainTrain, CorpusSet::PretrainTest],
        ),
        (
            "fine-tuning",
            &[
                CorpusSet::FinetuneSafe,
                CorpusSet::FinetuneUnsafe,
                CorpusSet::FinetuneIdMg,
                CorpusSet::FinetuneOodMg,
                CorpusSet::FinetuneIntermediate,
                CorpusSet::FinetuneDuplicates,
            ],
        ),
        (
            "evaluation",
            &[
                CorpusSet::EvalStdSafe,
                CorpusSet::EvalStdUnsafe,
                CorpusSet::EvalJbCoTask,
                CorpusSet::EvalJbCoText,
                CorpusSet::EvalJbMisgenTokens,
                CorpusSet::EvalJbMisgenText,
            ],
        ),
    ];
    for (g, (label, members)) in groups.iter().enumerate() {
        let color = set_color(g);
        for (k, set) in members.iter().enumerate() {
            let pts: Vec<(f64, f64)> = (0..df.height())
                .filter(|&i| sets[i] == set.name())
                .filter_map(|i| Some((lens[i]?, frac[i]?)))
                .collect();
            let s = chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)).point_size(3))?;
            if k == 0 {
                s.label(*label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            }
        }
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

fn draw_operators<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, df: &DataFrame) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let sets = str_col(df, "set")?;
    let ops = str_col(df, "operator")?;
    let roles = str_col(df, "role")?;
    let frac = f64_col(df, "fraction")?;
    // Operator tokens in vocabulary order: the 16 operators and the 5 `dup` aliases.
    let axis: Vec<&str> = (0u8..16)
        .chain(vocab::DUP1..vocab::DUP1 + 5)
        .map(vocab::symbol)
        .collect();
    let series: [(CorpusSet, &str, &str); 5] = [
        (CorpusSet::PretrainTrain, "stored", "pretrain_train"),
        (CorpusSet::FinetuneSafe, "stored", "finetune_safe"),
        (CorpusSet::FinetuneIdMg, "stored", "finetune_id_mg"),
        (
            CorpusSet::FinetuneIdMg,
            "unsafe_variant",
            "finetune_id_mg (unsafe variant)",
        ),
        (
            CorpusSet::EvalJbMisgenTokens,
            "stored",
            "eval_jb_misgen_tokens",
        ),
    ];
    let ymax = frac.iter().flatten().fold(0.0f64, |a, &v| a.max(v)) * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("Operator-token frequency per slot", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(-0.5..(axis.len() as f64 - 0.5), 0.0..ymax.max(0.01))?;
    let labels = axis.clone();
    chart
        .configure_mesh()
        .x_labels(axis.len())
        .x_label_formatter(&|v| {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                labels
                    .get(i as usize)
                    .map_or(String::new(), |s| (*s).to_owned())
            } else {
                String::new()
            }
        })
        .x_desc("operator token")
        .y_desc("fraction of operator slots")
        .draw()?;
    let width = 0.8 / series.len() as f64;
    for (k, (set, role, label)) in series.iter().enumerate() {
        let color = set_color(k);
        let bars: Vec<(f64, f64)> = (0..df.height())
            .filter(|&i| sets[i] == set.name() && roles[i] == *role)
            .filter_map(|i| Some((axis.iter().position(|a| *a == ops[i])? as f64, frac[i]?)))
            .collect();
        chart
            .draw_series(bars.into_iter().map(|(x, y)| {
                let x0 = x - 0.4 + k as f64 * width;
                Rectangle::new([(x0, 0.0), (x0 + width, y)], color.filled())
            }))?
            .label(*label)
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()?;
    Ok(())
}

fn draw_labels<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, df: &DataFrame) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let sets = str_col(df, "set")?;
    let pcfg = f64_col(df, "pcfg")?;
    let stored = f64_col(df, "unsafe_fraction")?;
    let variant = f64_col(df, "unsafe_variant_fraction")?;
    let names: Vec<&str> = CorpusSet::ALL.iter().map(|s| s.name()).collect();
    let (left, right) = area.split_horizontally(area.dim_in_pixel().0 / 2);
    for (panel, values, title) in [
        (&left, &stored, "Unsafe fraction of stored rows"),
        (&right, &variant, "Unsafe fraction of unsafe variants"),
    ] {
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(190)
            .build_cartesian_2d(0.5..4.5, -0.5..(names.len() as f64 - 0.5))?;
        let n = names.clone();
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(4)
            .x_label_formatter(&|v| format!("PCFG {v:.0}"))
            .y_labels(names.len())
            .y_label_formatter(&|v| {
                let i = v.round();
                if (v - i).abs() < 1e-6 && i >= 0.0 {
                    n.get(n.len() - 1 - i as usize)
                        .map_or(String::new(), |s| (*s).to_owned())
                } else {
                    String::new()
                }
            })
            .draw()?;
        for i in 0..df.height() {
            let (Some(p), Some(v)) = (pcfg[i], values[i]) else {
                continue;
            };
            let Some(row) = names.iter().position(|s| *s == sets[i]) else {
                continue;
            };
            let y = (names.len() - 1 - row) as f64;
            let color = RGBColor(
                (60.0 + 190.0 * v) as u8,
                (170.0 - 120.0 * v) as u8,
                (80.0 - 40.0 * v) as u8,
            );
            chart.draw_series(std::iter::once(Rectangle::new(
                [(p - 0.48, y - 0.45), (p + 0.48, y + 0.45)],
                color.filled(),
            )))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("{v:.2}"),
                (p - 0.15, y + 0.2),
                ("sans-serif", 14).into_font().color(&WHITE),
            )))?;
        }
    }
    Ok(())
}
