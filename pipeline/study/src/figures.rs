//! Figures: one function per figure, drawing on a given `DrawingArea`, wrapped in a [`Figure`]
//! that notebooks display inline (evcxr) and the pipeline saves as SVG and PNG.
//!
//! No statistics are computed here: every function takes tables from [`crate::analysis`].

use std::error::Error;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use polars::prelude::*;

use crate::analysis::corpus::CorpusOverview;
use crate::analysis::training::{Curve, TrainingCurves};
use crate::corpus::CorpusSet;
use crate::evaluation::Table1;
use crate::grammar::vocab;
use crate::spectra::Tables;

pub mod mechanism;

/// Errors of figure drawing and saving.
#[derive(Debug, thiserror::Error)]
pub enum FigureError {
    /// Drawing failed.
    #[error("drawing {figure}: {message}")]
    Draw {
        /// Figure name.
        figure: &'static str,
        /// Why.
        message: String,
    },
    /// An input table lacks a column or has the wrong type.
    #[error("figure {figure}: {source}")]
    Table {
        /// Figure name.
        figure: &'static str,
        /// Why.
        source: PolarsError,
    },
    /// Saving failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

type DrawResult = Result<(), Box<dyn Error>>;

/// A rendered figure: its name (file stem) and SVG text. Displays inline in evcxr notebooks.
#[derive(Debug, Clone)]
pub struct Figure {
    /// File stem, e.g. `corpus-overview`.
    pub name: &'static str,
    /// The SVG document.
    pub svg: String,
    size: (u32, u32),
    data: FigureData,
}

/// The tables a figure was drawn from (kept to re-render as PNG).
#[derive(Debug, Clone)]
enum FigureData {
    Corpus(CorpusOverview),
    Training(TrainingCurves),
    Table1(Table1),
    Mechanism(Box<Tables>, mechanism::Kind, Vec<String>),
}

impl Figure {
    /// evcxr's display hook: shows the SVG inline.
    pub fn evcxr_display(&self) {
        // evcxr reads rich output from stdout between these markers.
        #[allow(clippy::print_stdout)]
        {
            println!(
                "EVCXR_BEGIN_CONTENT image/svg+xml\n{}\nEVCXR_END_CONTENT",
                self.svg
            );
        }
    }

    /// Write `<dir>/<name>.svg` and `<dir>/<name>.png`; returns both paths.
    pub fn save(&self, dir: &Path) -> Result<(PathBuf, PathBuf), FigureError> {
        let write = |path: &Path| {
            let path = path.to_owned();
            move |source| FigureError::Write { path, source }
        };
        std::fs::create_dir_all(dir).map_err(write(dir))?;
        let svg = dir.join(format!("{}.svg", self.name));
        std::fs::write(&svg, &self.svg).map_err(write(&svg))?;
        let png = dir.join(format!("{}.png", self.name));
        {
            let root = BitMapBackend::new(&png, self.size).into_drawing_area();
            draw(&root, &self.data).map_err(|e| self.draw_error(e))?;
            root.present().map_err(|e| self.draw_error(Box::new(e)))?;
        }
        Ok((svg, png))
    }

    fn draw_error(&self, e: Box<dyn Error>) -> FigureError {
        FigureError::Draw {
            figure: self.name,
            message: e.to_string(),
        }
    }
}

/// Register the embedded DejaVu Sans font once (plotters' `ab_glyph` text backend has no system
/// fonts).
fn ensure_font() {
    static FONT: OnceLock<()> = OnceLock::new();
    FONT.get_or_init(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ] {
            // The font is compiled in and valid; a failure would only lose text, not data.
            if plotters::style::register_font("sans-serif", style, bytes).is_err() {
                tracing::warn!("could not register the embedded font");
            }
        }
    });
}

/// Draw a figure's data on any backend.
fn draw<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, data: &FigureData) -> DrawResult
where
    DB::ErrorType: 'static,
{
    match data {
        FigureData::Corpus(ov) => draw_corpus(root, ov),
        FigureData::Training(c) => draw_training(root, c),
        FigureData::Table1(t) => draw_table1(root, t),
        FigureData::Mechanism(t, kind, models) => mechanism::draw(root, t, *kind, models),
    }
}

fn render(name: &'static str, size: (u32, u32), data: FigureData) -> Result<Figure, FigureError> {
    ensure_font();
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        let err = |e: Box<dyn Error>| FigureError::Draw {
            figure: name,
            message: e.to_string(),
        };
        draw(&root, &data).map_err(err)?;
        root.present().map_err(|e| err(Box::new(e)))?;
    }
    Ok(Figure {
        name,
        svg,
        size,
        data,
    })
}

/// The corpus overview: text-length histograms per set, operator frequencies, and the
/// safe/unsafe proportions per set and PCFG → `corpus-overview.svg`.
pub fn corpus_overview(ov: &CorpusOverview) -> Result<Figure, FigureError> {
    // Fail early, with the figure's name, if a table is malformed.
    for (df, cols) in [
        (&ov.lengths, &["set", "text_len", "fraction"][..]),
        (&ov.operators, &["set", "operator", "role", "fraction"][..]),
        (
            &ov.labels,
            &["set", "pcfg", "unsafe_fraction", "unsafe_variant_fraction"][..],
        ),
    ] {
        for c in cols {
            df.column(c).map_err(|source| FigureError::Table {
                figure: "corpus-overview",
                source,
            })?;
        }
    }
    render(
        "corpus-overview",
        (1400, 1500),
        FigureData::Corpus(ov.clone()),
    )
}

fn draw_corpus<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, ov: &CorpusOverview) -> DrawResult
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

fn str_col<'a>(df: &'a DataFrame, name: &str) -> Result<Vec<&'a str>, PolarsError> {
    Ok(df
        .column(name)?
        .str()?
        .iter()
        .map(|v| v.unwrap_or(""))
        .collect())
}

fn f64_col(df: &DataFrame, name: &str) -> Result<Vec<Option<f64>>, PolarsError> {
    Ok(df
        .column(name)?
        .cast(&DataType::Float64)?
        .f64()?
        .iter()
        .collect())
}

fn set_color(i: usize) -> RGBColor {
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

/// Training curves of a training stage: loss (training, smoothed, and teacher-forced loss at
/// each evaluation), learning rate, teacher-forced exact match per split, sample type and output
/// segment, and greedy exact match of both outputs → `training.svg`.
pub fn training(curves: &TrainingCurves) -> Result<Figure, FigureError> {
    if curves.train_loss.points.is_empty() {
        return Err(FigureError::Draw {
            figure: "training",
            message: "the metrics hold no training loss (an empty or unfinished run?)".into(),
        });
    }
    render(
        "training",
        (1400, 1000),
        FigureData::Training(curves.clone()),
    )
}

fn draw_training<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &TrainingCurves,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        "Pre-training: loss, learning rate, accuracy",
        ("sans-serif", 28),
    )?;
    let panels = root.split_evenly((2, 2));
    let mut loss = vec![c.train_loss_smooth.clone()];
    loss.extend(c.eval_loss.iter().cloned());
    draw_curves(
        &panels[0],
        "Loss (token-mean cross-entropy)",
        "step",
        "loss",
        &loss,
        None,
    )?;
    draw_curves(
        &panels[1],
        "Learning rate",
        "step",
        "lr",
        std::slice::from_ref(&c.lr),
        None,
    )?;
    // Held-out rows only: the training-mix curves stay in metrics.parquet.
    let held_out = |cs: &[Curve]| -> Vec<Curve> {
        cs.iter()
            .filter(|c| c.label.starts_with("test "))
            .cloned()
            .collect()
    };
    draw_curves(
        &panels[2],
        "Held-out teacher-forced token accuracy (text, S1, S2)",
        "step",
        "token accuracy",
        &held_out(&c.token_accuracy),
        Some((0.0, 1.0)),
    )?;
    let mut em = held_out(&c.exact_match);
    em.extend(c.greedy.iter().cloned());
    draw_curves(
        &panels[3],
        "Exact match: teacher-forced per segment, greedy of both outputs",
        "step",
        "exact match",
        &em,
        Some((0.0, 1.0)),
    )?;
    Ok(())
}

fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    curves: &[Curve],
    y_range: Option<(f64, f64)>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (x_hi, y_lo, y_hi) = pts.fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), p| {
        (x.max(p.0), lo.min(p.1), hi.max(p.1))
    });
    let (y_lo, y_hi) = y_range.unwrap_or(if y_lo <= y_hi {
        let pad = ((y_hi - y_lo) * 0.05).max(1e-9);
        (y_lo - pad, y_hi + pad)
    } else {
        (0.0, 1.0)
    });
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| {
            if x_hi > 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .y_label_formatter(&|v| {
            if *v != 0.0 && v.abs() < 0.01 {
                format!("{v:.1e}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let color = set_color(i);
        chart
            .draw_series(LineSeries::new(c.points.clone(), color.stroke_width(2)))?
            .label(c.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}

/// Table 1: greedy instruction following, refusal and attack success per model and set, and the
/// soft-token attack's success vs its budget → `table1-behaviour.svg`.
pub fn table1(t: &Table1) -> Result<Figure, FigureError> {
    if t.models.is_empty() {
        return Err(FigureError::Draw {
            figure: "table1-behaviour",
            message: "the behaviour table is empty (run `make evaluate`)".into(),
        });
    }
    let h = 260 + 46 * t.models.len() as u32;
    render(
        "table1-behaviour",
        (1500, h + 520),
        FigureData::Table1(t.clone()),
    )
}

/// A figure of the mechanistic study (paper Figs. 3–7) from the `spectra` stage's tables →
/// `<kind name>.svg`; one panel per model that has data for it.
pub fn mechanism(t: &Tables, kind: mechanism::Kind) -> Result<Figure, FigureError> {
    let models = mechanism::models(t, kind);
    if models.is_empty() {
        return Err(FigureError::Draw {
            figure: kind.name(),
            message: "the spectra tables hold no model for this figure (run `make spectra`)".into(),
        });
    }
    let cols = models.len().clamp(1, 4) as u32;
    let rows = models.len().div_ceil(4).max(1) as u32;
    render(
        kind.name(),
        (420 * cols, 60 + 330 * rows),
        FigureData::Mechanism(Box::new(t.clone()), kind, models),
    )
}

/// White → blue for a fraction in [0, 1].
fn shade(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(255.0, 31.0), lerp(255.0, 119.0), lerp(255.0, 180.0))
}

fn draw_table1<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, t: &Table1) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        "Behaviour (greedy decoding): Table 1 and the soft-token attack",
        ("sans-serif", 28),
    )?;
    let (w, h) = root.dim_in_pixel();
    let table_h = 180 + 46 * t.models.len() as u32;
    let (top, bottom) = root.split_vertically(table_h.min(h));
    let label_w = 190i32;
    let col_w = ((w as i32 - label_w - 20) / t.columns.len().max(1) as i32).max(60);
    let row_h = 46i32;
    let header = 110i32;
    let text = |s: &str, size: u32| (s.to_owned(), ("sans-serif", size).into_font());
    for (j, c) in t.columns.iter().enumerate() {
        let x = label_w + j as i32 * col_w;
        let (set, metric) = c.split_once(' ').unwrap_or((c.as_str(), ""));
        for (k, line) in [set, metric].iter().enumerate() {
            let (s, f) = text(line, 16);
            top.draw(&Text::new(s, (x + 8, 20 + 24 * k as i32), f))?;
        }
    }
    for (i, (m, row)) in t.models.iter().zip(&t.values).enumerate() {
        let y = header + i as i32 * row_h;
        let (s, f) = text(m, 18);
        top.draw(&Text::new(s, (10, y + 14), f))?;
        for (j, v) in row.iter().enumerate() {
            let x = label_w + j as i32 * col_w;
            let fill = v.map_or(RGBColor(230, 230, 230), shade);
            top.draw(&Rectangle::new(
                [(x, y), (x + col_w - 4, y + row_h - 4)],
                fill.filled(),
            ))?;
            let label = v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.1}%", 100.0 * v));
            let color = if v.is_some_and(|v| v > 0.55) {
                WHITE
            } else {
                BLACK
            };
            let style = ("sans-serif", 18).into_font().color(&color);
            top.draw(&Text::new(label, (x + 10, y + 12), style))?;
        }
    }
    let note = "instruct: safe instruction → its outputs; refusal: unsafe instruction → null \
                output; attack_success: unsafe instruction → its instruction-following outputs";
    let (s, f) = text(note, 14);
    top.draw(&Text::new(
        s,
        (10, header + t.models.len() as i32 * row_h + 14),
        f,
    ))?;
    if t.attack.is_empty() {
        return Ok(());
    }
    draw_curves(
        &bottom,
        "Soft-token attack success vs budget (ε = factor × mean token-embedding norm)",
        "budget factor",
        "attack success",
        &t.attack,
        Some((0.0, 1.0)),
    )
}
