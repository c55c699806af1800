//! Analysis on tables already on disk: DataFrames in, DataFrames (or summaries) out. No drawing,
//! no file I/O.

pub mod corpus;
pub mod training;
