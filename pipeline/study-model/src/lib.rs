//! `study-model`: the candle half of the study: devices, the model, the optimiser and the shared
//! training loop; the three safety objectives and the probes as their stages land.
//!
//! Kept apart from `study` so that notebooks never compile candle.

pub mod attack;
pub mod behaviour;
pub mod device;
pub mod evaluate;
pub mod finetune;
pub mod gpt;
pub mod objectives;
pub mod ops;
pub mod optim;
pub mod pretrain;
pub mod probe;
pub mod probing;
pub mod process_env;
pub mod train;
