//! The stages' code fingerprints, computed at build time by `code_tree.rs` over the
//! workspace's sources (`build.rs`): the one source of what each stage's code is.

include!(concat!(env!("OUT_DIR"), "/code_fingerprints.rs"));

/// The code fingerprint of `stage` (one of `code_tree::STAGES`).
pub fn fingerprint(stage: &str) -> &'static str {
    FINGERPRINTS
        .iter()
        .find(|(s, _)| *s == stage)
        .map(|(_, f)| *f)
        .unwrap_or_else(|| panic!("no code fingerprint for stage `{stage}`"))
}
