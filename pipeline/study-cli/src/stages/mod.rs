//! The stages of the `study` binary: each file is argument handling and one library call, run
//! through [`crate::driver`].

pub mod corpus;
pub mod evaluate;
pub mod finetune;
pub mod pretrain;
pub mod probe;
pub mod seeds;
pub mod spectra;
