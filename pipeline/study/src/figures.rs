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
use crate::analysis::training::TrainingCurves;
use crate::evaluation::Table1;
use crate::spectra::Tables;

mod corpus;
pub mod mechanism;
mod table1;
mod training;

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
        FigureData::Corpus(ov) => corpus::draw_corpus(root, ov),
        FigureData::Training(c) => training::draw_training(root, c),
        FigureData::Table1(t) => table1::draw_table1(root, t),
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
