//! Computes every stage's code fingerprint from the workspace's sources (`src/code_tree.rs`)
//! into `$OUT_DIR/code_fingerprints.rs`, which `src/code.rs` includes.

#[path = "src/code_tree.rs"]
mod code_tree;

use std::fmt::Write as _;
use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let pipeline = manifest_dir.join("..");
    for (_, dir) in code_tree::CRATES {
        // A folder: cargo re-runs this script when a file under it changes or appears.
        println!("cargo::rerun-if-changed={}", pipeline.join(dir).display());
    }
    println!(
        "cargo::rerun-if-changed={}",
        pipeline.join("../Cargo.lock").display()
    );
    let tree = code_tree::Tree::read(&pipeline).expect("reading the workspace's sources");
    let mut out = String::from("/// (stage, code fingerprint), computed by `build.rs`.\n");
    let _ = writeln!(
        out,
        "pub const FINGERPRINTS: [(&str, &str); {}] = [",
        code_tree::STAGES.len()
    );
    for stage in code_tree::STAGES {
        let _ = writeln!(out, "    ({stage:?}, {:?}),", tree.fingerprint(stage));
    }
    out.push_str("];\n");
    let dest =
        PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("code_fingerprints.rs");
    std::fs::write(&dest, out).expect("writing the fingerprints");
}
