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

/// The sources that decide a trained model (this crate and the training-side modules of
/// `study`), compiled in: editing one changes this fingerprint and so re-runs training stages.
const SOURCES: [&str; 8] = [
    include_str!("gpt.rs"),
    include_str!("optim.rs"),
    include_str!("ops.rs"),
    include_str!("train.rs"),
    include_str!("../../study/src/training.rs"),
    include_str!("../../study/src/config/train.rs"),
    include_str!("../../study/src/config/pretrain.rs"),
    include_str!("../../study/src/grammar/layout.rs"),
];

/// The fingerprint of the training code ([`study::artifacts::source_fingerprint`]).
pub fn code_fingerprint() -> String {
    study::artifacts::source_fingerprint(&SOURCES)
}
