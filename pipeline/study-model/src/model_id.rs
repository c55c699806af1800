//! The name a loaded model goes by in every table (kept apart from the scoring code, so that
//! loading a model does not depend on it).

/// Which model the rows describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelId {
    /// `it` or the variant (`ssft-medium`, …).
    pub name: String,
    /// `it`, `ssft`, `dpo` or `unlearn`.
    pub method: String,
    /// The learning-rate label (`""` for the IT model).
    pub lr_label: String,
}
