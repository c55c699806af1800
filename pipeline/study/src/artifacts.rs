//! Artifacts: the catalog of paths, stage manifests, atomic stage folders, and Parquet with
//! checked schemas.
//!
//! Layout: `<data root>/<preset>/seed-<k>/<NN>_<stage>/…`, each stage folder holding its outputs
//! and a `manifest.yaml` written last. A stage writes into `<NN>_<stage>.tmp/` and renames it into
//! place only when complete, so a crash leaves nothing that looks finished.

use std::path::PathBuf;

use polars::prelude::*;

/// Version of the manifest format.
pub const MANIFEST_SCHEMA: u32 = 1;

/// Errors reading or writing artifacts. Messages name the file and the make target that
/// produces it.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// An input artifact is missing.
    #[error("no {what} at {path}; run `make {target}`")]
    Missing {
        /// What was expected.
        what: String,
        /// Where.
        path: PathBuf,
        /// The make target that produces it.
        target: String,
    },
    /// A file exists but cannot be read as what it should be.
    #[error(
        "cannot read {path}: {message}; it may be truncated or from another version: delete it and run `make {target}`"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The reader's message.
        message: String,
        /// The make target that produces it.
        target: String,
    },
    /// A table's schema or schema version is not what this code expects.
    #[error("{path} has an unexpected schema: {message}; it is stale: run `make {target}` again")]
    Schema {
        /// The file.
        path: PathBuf,
        /// What differs.
        message: String,
        /// The make target that produces it.
        target: String,
    },
    /// Filesystem error while writing.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Another process is writing the same stage folder.
    #[error(
        "{path} is being written by another process (it holds {lock}); wait for it to finish \
         (the lock is released when that process exits, however it exits)"
    )]
    Locked {
        /// The stage folder.
        path: PathBuf,
        /// The lock file.
        lock: PathBuf,
    },
    /// Parquet writer error.
    #[error("cannot write {path}: {source}")]
    Polars {
        /// The path.
        path: PathBuf,
        /// Why.
        source: PolarsError,
    },
}

type Result<T, E = ArtifactError> = std::result::Result<T, E>;

mod catalog;
mod manifest;
mod parquet;
mod stage_dir;

pub use catalog::*;
pub use manifest::*;
pub use parquet::*;
pub use stage_dir::*;

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> TableSchema {
        TableSchema {
            table: "demo",
            version: 2,
            columns: vec![("a", DataType::UInt32)],
            target: "corpus",
        }
    }

    #[test]
    fn parquet_round_trip_checks_schema() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.parquet");
        let mut df = df!("a" => [1u32, 2, 3]).expect("df");
        write_parquet(
            &mut df,
            &path,
            &schema(),
            &[("study.stage", "corpus".into())],
        )
        .expect("write");
        let back = read_parquet(&path, &schema()).expect("read");
        assert_eq!(back.height(), 3);
        assert_eq!(
            parquet_metadata(&path, "corpus").expect("meta")["study.stage"],
            "corpus"
        );
        let newer = TableSchema {
            version: 3,
            ..schema()
        };
        let err = read_parquet(&path, &newer).expect_err("version");
        assert!(err.to_string().contains("run `make corpus` again"), "{err}");
        let mut wrong = df!("b" => [1u32]).expect("df");
        assert!(write_parquet(&mut wrong, &path, &schema(), &[]).is_err());
    }

    #[test]
    fn truncated_and_missing_files_name_the_fix() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.parquet");
        let mut df = df!("a" => (0..1000u32).collect::<Vec<_>>()).expect("df");
        write_parquet(&mut df, &path, &schema(), &[]).expect("write");
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        let err = read_parquet(&path, &schema()).expect_err("truncated");
        assert!(matches!(err, ArtifactError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("t.parquet"));
        let err = read_parquet(&dir.path().join("none.parquet"), &schema()).expect_err("missing");
        assert!(err.to_string().contains("run `make corpus`"), "{err}");
    }

    #[test]
    fn uncommitted_stage_dirs_leave_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::new(dir.path(), "tiny", 0);
        let tmp = {
            let sd = StageDir::begin(&cat, Stage::Corpus).expect("begin");
            std::fs::write(sd.path().join("half.parquet"), b"x").expect("write");
            sd.path().to_owned()
        };
        assert!(!tmp.exists());
        assert!(!cat.stage_dir(Stage::Corpus).exists());
    }

    #[test]
    fn a_stage_folder_is_written_by_one_run_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::new(dir.path(), "tiny", 0);
        let first = StageDir::begin(&cat, Stage::Corpus).expect("begin");
        std::fs::write(first.path().join("part.parquet"), b"x").expect("write");
        let err = StageDir::begin(&cat, Stage::Corpus).expect_err("second writer");
        assert!(matches!(err, ArtifactError::Locked { .. }), "{err}");
        assert!(err.to_string().contains("01_corpus.lock"), "{err}");
        // The loser did not clean up the winner's temporary folder.
        assert!(first.path().join("part.parquet").exists());
        // Another stage, or a variant folder, is not blocked.
        drop(StageDir::begin(&cat, Stage::Pretrain).expect("other stage"));
        let a = StageDir::begin_variant(&cat, Stage::Finetune, "ssft-medium").expect("variant");
        let b = StageDir::begin_variant(&cat, Stage::Finetune, "dpo-medium").expect("variant");
        drop((a, b));
        // Released on drop: the next run may begin.
        drop(first);
        drop(StageDir::begin(&cat, Stage::Corpus).expect("after release"));
    }

    #[test]
    fn a_killed_runs_temporary_folder_is_removed_unless_a_run_is_live() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cat = Catalog::new(dir.path(), "tiny", 0);
        let stage = cat.stage_dir(Stage::Corpus);
        let tmp = stage.with_extension("tmp");
        assert!(!remove_stale_tmp(&stage).expect("nothing to do"));
        // A live run's folder stays.
        let live = StageDir::begin(&cat, Stage::Corpus).expect("begin");
        assert!(!remove_stale_tmp(&stage).expect("locked"));
        assert!(tmp.exists());
        drop(live);
        // What a SIGKILL leaves: the folder, no Drop, the lock released by the OS. Removed.
        std::fs::create_dir_all(&tmp).expect("mkdir");
        std::fs::write(tmp.join("half.parquet"), b"x").expect("write");
        assert!(remove_stale_tmp(&stage).expect("stale"));
        assert!(!tmp.exists());
    }
}
