//! The grammar families ([`Family`]): which productions replace the pre-training skeleton.

use serde::{Deserialize, Serialize};

use super::Branch;

/// A grammar family: which productions replace the pre-training skeleton (data_spec §2.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    /// The full pre-training grammar (no generator flag).
    Pretrain,
    /// Only the safe level-2 symbols (`--safe`).
    Safe,
    /// Only the unsafe level-2 symbols, binary level 4 (`--unsafe`).
    Unsafe,
    /// In-distribution unsafe text (`--unsafe_id_mg`).
    IdMg,
    /// Out-of-distribution unsafe text (`--unsafe_ood_mg`).
    OodMg,
    /// One safe- and one unsafe-named level-2 block per string (`--intermediate`).
    Intermediate,
}

impl Family {
    /// All families, in a fixed order.
    pub const ALL: [Family; 6] = [
        Family::Pretrain,
        Family::Safe,
        Family::Unsafe,
        Family::IdMg,
        Family::OodMg,
        Family::Intermediate,
    ];

    /// snake_case name, as stored in Parquet.
    pub fn as_str(self) -> &'static str {
        match self {
            Family::Pretrain => "pretrain",
            Family::Safe => "safe",
            Family::Unsafe => "unsafe",
            Family::IdMg => "id_mg",
            Family::OodMg => "ood_mg",
            Family::Intermediate => "intermediate",
        }
    }

    /// The branch every string of this family is dominated by; `None` for the pre-training
    /// family, whose crops can be of either branch or mixed.
    pub fn branch(self) -> Option<Branch> {
        match self {
            Family::Pretrain => None,
            Family::Safe => Some(Branch::Safe),
            Family::Unsafe | Family::IdMg | Family::OodMg => Some(Branch::Unsafe),
            Family::Intermediate => Some(Branch::Mixed),
        }
    }
}
