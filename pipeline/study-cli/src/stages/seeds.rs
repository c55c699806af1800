//! `study seeds`: every figure quantity of several seeds' `06_spectra/` tables as mean and 95 %
//! CI over seeds ([`study::spectra::combine_seeds`]) → `<data-root>/<preset>/seeds/seeds.parquet`.

use anyhow::{Context, Result};
use clap::Args;
use study::spectra::{self, TableRow, Tables};
use study::{Catalog, Stage, artifacts};

use crate::runtime::Runtime;

/// Arguments of `study seeds`.
#[derive(Debug, Clone, Args)]
pub struct SeedsArgs {
    /// Preset: a folder of `pipeline/configs/`.
    #[arg(long, default_value = "cpu")]
    pub preset: String,
    /// The seeds to combine (comma-separated; each needs `make spectra SEED=<k>`).
    #[arg(long, value_delimiter = ',', required = true)]
    pub seeds: Vec<u64>,
}

/// The combined table's path.
pub fn output(rt: &Runtime, preset: &str) -> std::path::PathBuf {
    rt.data_root
        .join(preset)
        .join("seeds")
        .join("seeds.parquet")
}

/// Run the stage.
pub fn run(args: &SeedsArgs, rt: &Runtime) -> Result<()> {
    let mut seeds = args.seeds.clone();
    seeds.sort_unstable();
    seeds.dedup();
    let mut tables = Vec::with_capacity(seeds.len());
    for &seed in &seeds {
        let catalog = Catalog::new(&rt.data_root, &args.preset, seed);
        artifacts::Manifest::read(&catalog.manifest(Stage::Spectra), "spectra")
            .with_context(|| format!("seed {seed}: run `make spectra SEED={seed}` first"))?;
        tables.push(
            Tables::read(&catalog)
                .with_context(|| format!("seed {seed}: run `make spectra SEED={seed}` again"))?,
        );
    }
    let rows = spectra::combine_seeds(&tables)?;
    let path = output(rt, &args.preset);
    let dir = path.parent().context("the seeds folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Written beside, then renamed: a killed run leaves the old table or none, never half of one.
    let tmp = path.with_extension("parquet.tmp");
    let list = seeds
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let (mut df, schema) = (
        spectra::frame(&rows)?,
        spectra::schema::<spectra::SeedRow>(),
    );
    artifacts::write_parquet(&mut df, &tmp, &schema, &[("seeds", list.clone())])?;
    std::fs::rename(&tmp, &path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    tracing::info!(
        "{} quantities over seeds {list} → {} ({} table)",
        rows.len(),
        path.display(),
        spectra::SeedRow::TABLE
    );
    Ok(())
}
