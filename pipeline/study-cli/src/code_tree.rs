//! Which source files decide a stage's outputs, and their fingerprint: the one definition behind
//! every stage's code fingerprint. `build.rs` runs it over the workspace's sources at compile
//! time ([`crate::code`] holds the result); nothing lists a stage's files by hand.
//!
//! A stage reaches, from the `study` binary's shared files (`main.rs`, `runtime.rs`, `driver/`)
//! and its own `stages/<stage>.rs`, every module a reached file names in code: `crate::m`,
//! `study::m` or `study_model::m` reaches the whole top-level module `m` (`m.rs`, `m/mod.rs` and
//! every file under `m/`). A library's `lib.rs` is reached with its crate, and with it the
//! modules it re-exports from (`pub use m::…`). Comments are skipped (they compile to nothing);
//! string literals are read as code, which can only over-include: a needless re-run, never a
//! stale artifact. `Cargo.lock` is part of every fingerprint (a dependency's numerics can change
//! the outputs).
//!
//! So editing, adding or removing a reached file changes the fingerprint, and a new module is
//! reached as soon as a reached file uses it. The granularity is the top-level module: keep
//! modules that only analyses or notebooks use (`mechanism`, `spectra`, `figures`, `analysis`)
//! out of the code the training stages name, or every edit to them re-runs training.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::Path;

/// The crates whose sources can decide outputs: (name in paths, folder under `pipeline/`).
pub const CRATES: [(&str, &str); 3] = [
    ("study", "study/src"),
    ("study_model", "study-model/src"),
    ("study_cli", "study-cli/src"),
];

/// The stages with a code fingerprint (each has `study-cli/src/stages/<stage>.rs`).
pub const STAGES: [&str; 6] = [
    "corpus", "pretrain", "finetune", "evaluate", "probe", "spectra",
];

/// Files of the `study` binary every stage runs through (relative to `pipeline/`).
const SHARED: [&str; 3] = [
    "study-cli/src/main.rs",
    "study-cli/src/runtime.rs",
    "study-cli/src/driver",
];

/// A source tree: every `.rs` file under the crates' folders by path relative to `pipeline/`
/// (`/`-separated) with its text, and `Cargo.lock`.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    files: BTreeMap<String, String>,
    lock: String,
}

impl Tree {
    /// Read the tree of the workspace whose `pipeline/` folder is `pipeline`.
    pub fn read(pipeline: &Path) -> io::Result<Self> {
        let mut files = BTreeMap::new();
        for (_, dir) in CRATES {
            collect(&pipeline.join(dir), dir, &mut files)?;
        }
        let lock_path = pipeline.join("../Cargo.lock");
        let lock = std::fs::read_to_string(&lock_path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", lock_path.display())))?;
        Ok(Self { files, lock })
    }

    /// The files `stage` reaches, sorted.
    pub fn reached(&self, stage: &str) -> Vec<&str> {
        let own = format!("study-cli/src/stages/{stage}.rs");
        let mut todo: Vec<&str> = self
            .files
            .keys()
            .map(String::as_str)
            .filter(|f| *f == own || SHARED.iter().any(|s| under(f, s)))
            .collect();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        while let Some(file) = todo.pop() {
            if !seen.insert(file) {
                continue;
            }
            let home = crate_of(file);
            let code = strip_comments(&self.files[file]);
            let mut names = references(&code, home);
            if file.ends_with("/lib.rs") {
                names.extend(reexports(&code).into_iter().map(|m| (home, m)));
            }
            for (krate, module) in names {
                if krate == "study_cli" && module == "stages" {
                    continue; // main.rs names every stage; each stage reaches only its own
                }
                let dir = CRATES
                    .iter()
                    .find(|(name, _)| *name == krate)
                    .map_or("", |(_, dir)| *dir);
                let file_path = format!("{dir}/{module}.rs");
                let folder = format!("{dir}/{module}");
                let lib = format!("{dir}/lib.rs");
                todo.extend(
                    self.files
                        .keys()
                        .map(String::as_str)
                        .filter(|f| *f == file_path || *f == lib || under(f, &folder)),
                );
            }
        }
        seen.into_iter().collect()
    }

    /// The fingerprint of `stage`'s code: blake3 over `Cargo.lock` and each reached file's path
    /// and text, first 16 hex digits.
    pub fn fingerprint(&self, stage: &str) -> String {
        let mut h = blake3::Hasher::new();
        h.update(b"Cargo.lock\0");
        h.update(self.lock.as_bytes());
        for f in self.reached(stage) {
            h.update(b"\0");
            h.update(f.as_bytes());
            h.update(b"\0");
            h.update(self.files[f].as_bytes());
        }
        h.finalize().to_hex()[..16].to_owned()
    }

    /// Add or replace a file (tests).
    #[cfg(test)]
    pub fn set(&mut self, path: &str, text: &str) {
        self.files.insert(path.to_owned(), text.to_owned());
    }
}

/// The crate (name in paths) of a file.
fn crate_of(file: &str) -> &'static str {
    CRATES
        .iter()
        .find(|(_, dir)| under(file, dir))
        .map_or("", |(name, _)| *name)
}

/// Whether `file` lies under the folder `dir`.
fn under(file: &str, dir: &str) -> bool {
    file == dir
        || file
            .strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
}

fn collect(dir: &Path, rel: &str, out: &mut BTreeMap<String, String>) -> io::Result<()> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let rel = format!("{rel}/{name}");
        if entry.file_type()?.is_dir() {
            collect(&entry.path(), &rel, out)?;
        } else if name.ends_with(".rs") {
            let path = entry.path();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
            out.insert(rel, text);
        }
    }
    Ok(())
}

/// The (crate, top-level module) pairs that `code` (comments stripped) names: `crate::m` (in
/// crate `home`), `study::m`, `study_model::m`; groups `study::{a::x, b}` name `a` and `b`.
fn references<'a>(code: &str, home: &'a str) -> Vec<(&'a str, String)> {
    let mut out = Vec::new();
    for (prefix, krate) in [
        ("crate::", home),
        ("study::", "study"),
        ("study_model::", "study_model"),
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$') {
                continue; // `$crate::`, `my_study::`: not ours
            }
            out.extend(modules_at(rest).into_iter().map(|m| (krate, m)));
        }
    }
    out
}

/// The modules of a crate root's `pub use m::…` lines.
fn reexports(code: &str) -> Vec<String> {
    code.lines()
        .filter_map(|l| l.trim_start().strip_prefix("pub use "))
        .flat_map(modules_at)
        .collect()
}

/// The module names at the start of a path tail: `m::…` gives `m`; `{a::x, b}` gives `a` and
/// `b`. Capitalised names are items (`study::Catalog`), reached through `lib.rs`.
fn modules_at(tail: &str) -> Vec<String> {
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let is_module = |m: &String| m.starts_with(|c: char| c.is_lowercase());
    match tail.strip_prefix('{') {
        Some(group) => group[..group.find('}').unwrap_or(group.len())]
            .split(',')
            .map(|p| ident(p.trim()))
            .filter(is_module)
            .collect(),
        None => Some(ident(tail)).filter(is_module).into_iter().collect(),
    }
}

/// `text` without its `//` and `/* */` comments; string and char literals are kept as they are.
fn strip_comments(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        match (c[i], c.get(i + 1).copied()) {
            ('/', Some('/')) => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            ('/', Some('*')) => {
                i += 2;
                while i < c.len() && !(c[i - 1] == '*' && c[i] == '/') {
                    i += 1;
                }
                i += 1;
            }
            ('"', _) => {
                let start = i;
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                i = (i + 1).min(c.len());
                out.extend(&c[start..i]);
            }
            // A char literal (`'"'`, `'\''`), not a lifetime (`'a`).
            ('\'', Some(next)) if next == '\\' || c.get(i + 2) == Some(&'\'') => {
                let end = (i + 2..c.len())
                    .find(|&j| c[j] == '\'' && c[j - 1] != '\\')
                    .unwrap_or(c.len() - 1);
                out.extend(&c[i..=end]);
                i = end + 1;
            }
            (ch, _) => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        Tree::read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("..")).expect("source tree")
    }

    #[test]
    fn references_read_code_not_comments() {
        let text = "use crate::gpt::Gpt;\nuse study::{config::X, corpus, Catalog};\n\
                    let t = study_model::train::run(); // see crate::attack\nfoo$crate::bar\n\
                    /// [`study::figures`]\n/* crate::probe */ let s = \"// crate::ops\";\n\
                    let q = '\"'; let r = crate::optim::x;\n";
        let mut r = references(&strip_comments(text), "study_model");
        r.sort_unstable();
        let r: Vec<(&str, &str)> = r.iter().map(|(k, m)| (*k, m.as_str())).collect();
        assert_eq!(
            r,
            [
                ("study", "config"),
                ("study", "corpus"),
                ("study_model", "gpt"),
                ("study_model", "ops"),
                ("study_model", "optim"),
                ("study_model", "train"),
            ]
        );
        assert_eq!(
            reexports("pub use artifacts::{Catalog, Stage};\npub use polars;\n"),
            ["artifacts", "polars"]
        );
    }

    /// The compiled-in fingerprints are this module's over the tree as it is now (the build
    /// script's wiring is right).
    #[test]
    fn compiled_fingerprints_are_the_trees() {
        let tree = tree();
        for stage in STAGES {
            assert_eq!(
                crate::code::fingerprint(stage),
                tree.fingerprint(stage),
                "{stage}"
            );
        }
    }

    /// Files the hand-kept lists missed are reached; modules a stage never runs are not; each
    /// stage reaches its own stage file only.
    #[test]
    fn stages_reach_what_they_run() {
        let tree = tree();
        let has = |s: &str, f: &str| tree.reached(s).contains(&f);
        for f in [
            "study/src/mechanism/reference.rs",
            "study/src/mechanism/interpolation.rs",
            "study/src/spectra/stage.rs",
            "study/src/config/spectra.rs",
        ] {
            assert!(has("spectra", f), "spectra misses {f}");
        }
        for f in [
            "study-model/src/gpt.rs",
            "study-model/src/ops.rs",
            "study-model/src/optim.rs",
            "study-model/src/pretrain.rs",
            "study/src/training.rs",
            "study/src/config/train.rs",
            "study/src/grammar/layout.rs",
            "study/src/grammar/vocab.rs",
            "study/src/artifacts.rs",
            "study-cli/src/driver/mod.rs",
            "study-cli/src/runtime.rs",
        ] {
            assert!(has("pretrain", f), "pretrain misses {f}");
        }
        for s in ["corpus", "pretrain", "finetune", "evaluate"] {
            for f in [
                "study/src/mechanism.rs",
                "study/src/spectra.rs",
                "study/src/figures.rs",
                "study/src/analysis.rs",
                "study-model/src/probing.rs",
            ] {
                assert!(!has(s, f), "{s} reaches {f}");
            }
        }
        for f in [
            "study-model/src/attack.rs",
            "study-model/src/finetune.rs",
            "study-model/src/behaviour.rs",
            "study/src/evaluation/scoring.rs",
        ] {
            assert!(!has("pretrain", f), "pretrain reaches {f}");
        }
        assert!(has("evaluate", "study-model/src/attack.rs"));
        assert!(has("finetune", "study-model/src/objectives.rs"));
        for s in STAGES {
            let own = format!("study-cli/src/stages/{s}.rs");
            let stage_files: Vec<&str> = tree
                .reached(s)
                .into_iter()
                .filter(|f| f.starts_with("study-cli/src/stages/"))
                .collect();
            assert_eq!(stage_files, [own.as_str()], "{s}");
        }
    }

    /// A new module (its file, and the use in a reached file) changes the fingerprint of every
    /// stage that reaches the user and of no other; a new file inside a reached module's folder
    /// changes it by itself.
    #[test]
    fn a_new_source_file_changes_the_fingerprint() {
        let tree = tree();
        let before: Vec<String> = STAGES.iter().map(|s| tree.fingerprint(s)).collect();

        let mut added = tree.clone();
        let gpt = &tree.files["study-model/src/gpt.rs"];
        added.set("study-model/src/gelu_dummy.rs", "pub fn gelu() {}\n");
        added.set(
            "study-model/src/gpt.rs",
            &format!("{gpt}\nfn _dummy() {{ crate::gelu_dummy::gelu() }}\n"),
        );
        for (s, b) in STAGES.iter().zip(&before) {
            let uses_gpt = tree.reached(s).contains(&"study-model/src/gpt.rs");
            assert_eq!(added.fingerprint(s) != *b, uses_gpt, "{s}");
            assert_eq!(
                added.reached(s).contains(&"study-model/src/gelu_dummy.rs"),
                uses_gpt,
                "{s}"
            );
        }

        let mut nested = tree.clone();
        nested.set("study/src/mechanism/dummy.rs", "pub fn f() {}\n");
        for (s, b) in STAGES.iter().zip(&before) {
            let uses_mechanism = tree.reached(s).contains(&"study/src/mechanism.rs");
            assert_eq!(nested.fingerprint(s) != *b, uses_mechanism, "{s}");
        }
        assert!(tree.reached("spectra").contains(&"study/src/mechanism.rs"));

        let mut lock = tree.clone();
        lock.lock.push('\n');
        for (s, b) in STAGES.iter().zip(&before) {
            assert_ne!(lock.fingerprint(s), *b, "{s}: Cargo.lock");
        }
    }
}
