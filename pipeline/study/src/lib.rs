//! `study`: the safety fine-tuning study (Jain et al., NeurIPS 2024, "What Makes and Breaks
//! Safety Fine-tuning? A Mechanistic Study") without candle.
//!
//! Configs, artifacts, the data-generating process, analysis tables and figures. Notebooks
//! depend on this crate only; it re-exports `polars` and `plotters` so their versions never
//! drift from the pipeline's.

pub mod analysis;
pub mod artifacts;
pub mod config;
pub mod corpus;
pub mod evaluation;
pub mod figures;
pub mod finetune;
pub mod grammar;
pub mod mechanism;
pub mod model_id;
mod names;
pub mod probe;
pub mod series;
pub mod spectra;
pub mod training;

pub use artifacts::{Catalog, Stage};
pub use plotters;
pub use polars;
