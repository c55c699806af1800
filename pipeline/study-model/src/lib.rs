//! `study-model`: the candle half of the study — devices today; the model, the training loop,
//! the three safety objectives and the probes as their stages land.
//!
//! Kept apart from `study` so that notebooks never compile candle.

pub mod device;
