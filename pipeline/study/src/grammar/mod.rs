//! The data-generating process of the study: vocabulary, PCFGs, operators, sequence layout.
//!
//! Pure: no file I/O and no global RNG; every sampler takes an RNG from its caller.

pub mod layout;
pub mod operators;
pub mod pcfg;
pub mod vocab;

pub use layout::{SampleType, Spans};
pub use operators::{MixedText, OpClass, OpSets, OperatorOffsets, Operators};
pub use pcfg::{Branch, Family, Grammar};
pub use vocab::{Token, Vocab};
