//! Atomic stage folders: written as `<stage>.tmp/` under an exclusive lock, renamed into place.

use std::path::{Path, PathBuf};

use super::*;

/// A stage folder being written: `<stage>.tmp/`, renamed into place by [`StageDir::commit`] and
/// removed if dropped uncommitted. While it lives, it holds an exclusive OS lock on
/// `<stage>.lock` beside the folder, so two runs cannot write the same folder at once (the
/// second fails with [`ArtifactError::Locked`]); the OS releases the lock when the process ends,
/// so a killed run never leaves a folder locked. The empty lock file stays.
#[derive(Debug)]
pub struct StageDir {
    tmp: PathBuf,
    final_dir: PathBuf,
    run_root: PathBuf,
    committed: bool,
    _lock: std::fs::File,
}

impl StageDir {
    /// Start writing `stage` of `catalog` (removing any stale temporary folder).
    pub fn begin(catalog: &Catalog, stage: Stage) -> Result<Self> {
        Self::begin_at(catalog, catalog.stage_dir(stage))
    }

    /// Start writing variant `variant` of `stage` (its own folder inside the stage's).
    pub fn begin_variant(catalog: &Catalog, stage: Stage, variant: &str) -> Result<Self> {
        Self::begin_at(catalog, catalog.variant_dir(stage, variant))
    }

    fn begin_at(catalog: &Catalog, final_dir: PathBuf) -> Result<Self> {
        let tmp = final_dir.with_extension("tmp");
        // Lock first: the stale-folder clean-up below must never remove a live run's folder.
        let lock_path = final_dir.with_extension("lock");
        let Some(lock) = try_lock_stage(&final_dir)? else {
            return Err(ArtifactError::Locked {
                path: final_dir,
                lock: lock_path,
            });
        };
        let write = |source| ArtifactError::Write {
            path: tmp.clone(),
            source,
        };
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(write)?;
        }
        std::fs::create_dir_all(&tmp).map_err(write)?;
        Ok(Self {
            tmp,
            final_dir,
            run_root: catalog.root().to_owned(),
            committed: false,
            _lock: lock,
        })
    }

    /// The temporary folder outputs go into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    /// A record of output `file` (inside the temporary folder), with its path as it will be
    /// after the rename.
    pub fn record(
        &self,
        name: &str,
        file: &str,
        rows: Option<usize>,
        columns: Vec<String>,
    ) -> Result<FileRecord> {
        let path = self.tmp.join(file);
        let write = |source| ArtifactError::Write {
            path: path.clone(),
            source,
        };
        let bytes = std::fs::metadata(&path).map_err(write)?.len();
        let rel = self.final_dir.join(file);
        let rel = rel.strip_prefix(&self.run_root).unwrap_or(&rel);
        Ok(FileRecord {
            name: name.to_owned(),
            path: rel.to_string_lossy().into_owned(),
            hash: hash_file(&path).map_err(write)?,
            bytes,
            rows,
            columns,
        })
    }

    /// Write the manifest last, then swap the folder into place.
    pub fn commit(mut self, manifest: &Manifest) -> Result<PathBuf> {
        let mpath = self.tmp.join("manifest.yaml");
        let write = |path: &Path| {
            let path = path.to_owned();
            move |source| ArtifactError::Write { path, source }
        };
        let text = serde_yaml::to_string(manifest).expect("manifests serialize");
        std::fs::write(&mpath, text).map_err(write(&mpath))?;
        let old = self.final_dir.with_extension("old");
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(write(&old))?;
        }
        if self.final_dir.exists() {
            std::fs::rename(&self.final_dir, &old).map_err(write(&self.final_dir))?;
        }
        std::fs::rename(&self.tmp, &self.final_dir).map_err(write(&self.final_dir))?;
        if old.exists() {
            std::fs::remove_dir_all(&old).map_err(write(&old))?;
        }
        self.committed = true;
        Ok(self.final_dir.clone())
    }
}

/// An exclusive OS lock on `<final_dir>.lock` (created if missing), or `None` when another
/// process holds it.
fn try_lock_stage(final_dir: &Path) -> Result<Option<std::fs::File>> {
    let lock_path = final_dir.with_extension("lock");
    let err = |source| ArtifactError::Write {
        path: lock_path.clone(),
        source,
    };
    if let Some(parent) = lock_path.parent() {
        std::fs::create_dir_all(parent).map_err(err)?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(err)?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(err(e)),
    }
}

/// Remove `<final_dir>.tmp` left behind by a killed run (a SIGKILL skips [`StageDir`]'s clean-up),
/// unless a live run holds the stage's lock. Returns whether a folder was removed.
pub fn remove_stale_tmp(final_dir: &Path) -> Result<bool> {
    let tmp = final_dir.with_extension("tmp");
    if !tmp.exists() {
        return Ok(false);
    }
    let Some(_lock) = try_lock_stage(final_dir)? else {
        return Ok(false);
    };
    std::fs::remove_dir_all(&tmp).map_err(|source| ArtifactError::Write { path: tmp, source })?;
    Ok(true)
}

impl Drop for StageDir {
    fn drop(&mut self) {
        if !self.committed {
            // Best effort: nothing half-written may remain; an error here has nowhere to go.
            let _ = std::fs::remove_dir_all(&self.tmp);
        }
    }
}
