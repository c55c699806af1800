//! Plain plotting data shared by the stages' tables and the figures (no drawing here, so a
//! stage that builds a curve does not depend on the figure code).

/// One curve: a label and its (x, value) points in x order (training steps, attack budgets).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// Legend label, e.g. `test full em_s1`.
    pub label: String,
    /// Points.
    pub points: Vec<(f64, f64)>,
}
