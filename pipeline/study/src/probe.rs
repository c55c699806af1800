//! The probe stage's tables, without candle: what `study probe` writes to `05_probe/` and how the
//! `spectra` stage and the notebooks read it back.
//!
//! - `activations/<model>.parquet`: one row per (set, group, split, row, layer, hook, pool), the
//!   activation vector in `values` (reference/analysis_spec.md §0 hook names, §1.2 positions);
//! - `adversarial_activations.parquet`: the same hooks for the attacked inputs of `04_evaluate`,
//!   with each attack's budget and success (successful *and* failed attacks are kept; the paper
//!   keeps only the successful ones, §5.4);
//! - `lipschitz.parquet`: one row per (model, group, row), the norm of the gradient of the
//!   largest logit at EOT with respect to the prompt's token embeddings (§4.2).

use std::fmt;
use std::str::FromStr;

use polars::prelude::*;
use serde::{Deserialize, Serialize};

use crate::artifacts::{self, ArtifactError, TableSchema};
pub use crate::config::probe::{Hook, Pool};
use crate::mechanism::Matrix;
use crate::names::named_enum;

mod adversarial;
mod lipschitz;

pub use adversarial::*;
pub use lipschitz::*;

/// Version of the activation tables' schema.
pub const ACTIVATIONS_SCHEMA_VERSION: u32 = 1;
/// Version of the Lipschitz table's schema.
pub const LIPSCHITZ_SCHEMA_VERSION: u32 = 1;
/// Folder of the per-model activation tables.
pub const ACTIVATIONS_DIR: &str = "activations";
/// File of the attacked inputs' activations.
pub const ADVERSARIAL_ACTIVATIONS_FILE: &str = "adversarial_activations.parquet";
/// File of the Lipschitz proxies.
pub const LIPSCHITZ_FILE: &str = "lipschitz.parquet";
/// The interpolated models' behaviour (schema of `04_evaluate/behaviour.parquet`, models named
/// `<variant>@<α>`: [`crate::model_id::ModelId::Interpolated`]).
pub const INTERPOLATION_BEHAVIOUR_FILE: &str = "interpolation_behaviour.parquet";
/// The interpolated models' τ activations (schema of `activations/<model>.parquet`, models named
/// `<variant>@<α>`).
pub const INTERPOLATION_ACTIVATIONS_FILE: &str = "interpolation_activations.parquet";

named_enum!(
    /// Which prompt of a row was fed.
    Group {
        /// The row as stored (safe operators): `x_safe`.
        Safe => "safe",
        /// The same text with unsafe operators, teacher-forced with the instruction-following
        /// output: `x_unsafe_target` (§1.1).
        Unsafe => "unsafe",
    }
);

named_enum!(
    /// Which rows of a set: cluster references or test points, disjoint by construction.
    Split {
        /// Rows `0 .. reference_rows`: the cluster means of τ and the refusal direction.
        Reference => "reference",
        /// The next `test_rows` rows.
        Test => "test",
    }
);

/// Where a stored activation came from (one prompt of one row).
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationKey {
    /// Evaluation set (without `eval_`).
    pub set: String,
    /// Which prompt.
    pub group: Group,
    /// Reference or test row.
    pub split: Split,
    /// Row index in the set.
    pub row: u32,
    /// The row's `sample_id`.
    pub sample_id: u32,
}

/// One stored vector.
#[derive(Debug, Clone, PartialEq)]
pub struct Activation {
    /// Layer (0-based).
    pub layer: u16,
    /// The tensor.
    pub hook: Hook,
    /// The positions.
    pub pool: Pool,
    /// The vector.
    pub values: Vec<f32>,
}

/// The activations of one model: one key per prompt, each with its vectors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelActivations {
    /// `it` or the variant.
    pub model: String,
    /// Prompts and their vectors.
    pub rows: Vec<(ActivationKey, Vec<Activation>)>,
}

fn list_f32() -> DataType {
    DataType::List(Box::new(DataType::Float32))
}

/// Schema of `activations/<model>.parquet`.
pub fn activations_schema() -> TableSchema {
    TableSchema {
        table: "activations",
        version: ACTIVATIONS_SCHEMA_VERSION,
        columns: vec![
            ("model", DataType::String),
            ("set", DataType::String),
            ("group", DataType::String),
            ("split", DataType::String),
            ("row", DataType::UInt32),
            ("sample_id", DataType::UInt32),
            ("layer", DataType::UInt16),
            ("hook", DataType::String),
            ("pool", DataType::String),
            ("values", list_f32()),
        ],
        target: "probe",
    }
}

fn values_series(values: Vec<&[f32]>) -> Series {
    let inner: Vec<Series> = values
        .into_iter()
        .map(|v| Series::new(PlSmallStr::EMPTY, v))
        .collect();
    Series::new("values".into(), inner)
}

impl ModelActivations {
    /// The long-form table of [`activations_schema`].
    pub fn frame(&self) -> PolarsResult<DataFrame> {
        let flat: Vec<(&ActivationKey, &Activation)> = self
            .rows
            .iter()
            .flat_map(|(k, acts)| acts.iter().map(move |a| (k, a)))
            .collect();
        let s = |f: fn(&ActivationKey) -> &str| flat.iter().map(|(k, _)| f(k)).collect::<Vec<_>>();
        let mut df = df!(
            "model" => vec![self.model.as_str(); flat.len()],
            "set" => s(|k| &k.set),
            "group" => s(|k| k.group.as_str()),
            "split" => s(|k| k.split.as_str()),
            "row" => flat.iter().map(|(k, _)| k.row).collect::<Vec<_>>(),
            "sample_id" => flat.iter().map(|(k, _)| k.sample_id).collect::<Vec<_>>(),
            "layer" => flat.iter().map(|(_, a)| a.layer).collect::<Vec<_>>(),
            "hook" => flat.iter().map(|(_, a)| a.hook.as_str()).collect::<Vec<_>>(),
            "pool" => flat.iter().map(|(_, a)| a.pool.as_str()).collect::<Vec<_>>(),
        )?;
        df.with_column(Column::from(values_series(
            flat.iter().map(|(_, a)| a.values.as_slice()).collect(),
        )))?;
        Ok(df)
    }
}

/// The vectors of a table, with their keys, in table order.
#[derive(Debug, Clone, PartialEq)]
pub struct ActivationTable {
    /// One entry per table row.
    pub keys: Vec<(String, ActivationKey, Activation)>,
}

fn strings(df: &DataFrame, name: &str) -> PolarsResult<Vec<String>> {
    df.column(name)?
        .str()?
        .iter()
        .enumerate()
        .map(|(i, v)| {
            v.map(str::to_owned)
                .ok_or_else(|| polars_err!(ComputeError: "column `{name}` row {i}: null"))
        })
        .collect()
}

fn parsed<T: FromStr<Err = String>>(df: &DataFrame, name: &str) -> PolarsResult<Vec<T>> {
    strings(df, name)?
        .iter()
        .enumerate()
        .map(|(i, s)| {
            s.parse()
                .map_err(|e| polars_err!(ComputeError: "column `{name}` row {i}: {e}"))
        })
        .collect()
}

fn numbers<T>(df: &DataFrame, name: &str) -> PolarsResult<Vec<T::Native>>
where
    T: PolarsNumericType,
{
    df.column(name)?
        .as_materialized_series()
        .unpack::<T>()?
        .iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| polars_err!(ComputeError: "column `{name}` row {i}: null")))
        .collect()
}

fn vectors(df: &DataFrame) -> PolarsResult<Vec<Vec<f32>>> {
    let list = df.column("values")?.list()?.clone();
    (0..list.len())
        .map(|i| (i, list.get_as_series(i)))
        .map(|(i, s)| {
            let s = s.ok_or_else(|| polars_err!(ComputeError: "column `values` row {i}: null"))?;
            s.f32()?
                .iter()
                .map(|x| {
                    x.ok_or_else(
                        || polars_err!(ComputeError: "column `values` row {i}: null element"),
                    )
                })
                .collect()
        })
        .collect()
}

/// Every row of an activation table (strict: a null or unknown name is an error naming the
/// column and row).
pub fn activation_rows(df: &DataFrame) -> PolarsResult<ActivationTable> {
    let model = strings(df, "model")?;
    let set = strings(df, "set")?;
    let group: Vec<Group> = parsed(df, "group")?;
    let split: Vec<Split> = parsed(df, "split")?;
    let row = numbers::<UInt32Type>(df, "row")?;
    let sample_id = numbers::<UInt32Type>(df, "sample_id")?;
    let layer = numbers::<UInt16Type>(df, "layer")?;
    let hook: Vec<Hook> = parsed(df, "hook")?;
    let pool: Vec<Pool> = parsed(df, "pool")?;
    let values = vectors(df)?;
    Ok(ActivationTable {
        keys: values
            .into_iter()
            .enumerate()
            .map(|(i, values)| {
                (
                    model[i].clone(),
                    ActivationKey {
                        set: set[i].clone(),
                        group: group[i],
                        split: split[i],
                        row: row[i],
                        sample_id: sample_id[i],
                    },
                    Activation {
                        layer: layer[i],
                        hook: hook[i],
                        pool: pool[i],
                        values,
                    },
                )
            })
            .collect(),
    })
}

/// Read `activations/<model>.parquet` (hint: `make probe`).
pub fn read_activations(path: &std::path::Path) -> Result<ActivationTable, ArtifactError> {
    let df = artifacts::read_parquet(path, &activations_schema())?;
    activation_rows(&df).map_err(|e| ArtifactError::Schema {
        path: path.to_owned(),
        message: e.to_string(),
        target: "probe".into(),
    })
}

/// Which vectors of a table to stack into a matrix.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Select<'a> {
    /// Sets (any of them).
    pub sets: &'a [&'a str],
    /// The prompt.
    pub group: Group,
    /// Reference or test rows.
    pub split: Split,
    /// Layer.
    pub layer: u16,
    /// Tensor.
    pub hook: Hook,
    /// Positions.
    pub pool: Pool,
}

impl ActivationTable {
    /// The selected vectors as a samples × width matrix (in table order), and their row keys;
    /// an error names the selection when it is empty or the widths differ.
    pub fn matrix(&self, sel: &Select<'_>) -> Result<(Matrix, Vec<&ActivationKey>), String> {
        let picked: Vec<(&ActivationKey, &Activation)> = self
            .keys
            .iter()
            .filter(|(_, k, a)| {
                sel.sets.contains(&k.set.as_str())
                    && k.group == sel.group
                    && k.split == sel.split
                    && a.layer == sel.layer
                    && a.hook == sel.hook
                    && a.pool == sel.pool
            })
            .map(|(_, k, a)| (k, a))
            .collect();
        let describe = || {
            format!(
                "{} {} rows of {} at layer {} {}@{}",
                sel.group,
                sel.split,
                sel.sets.join("+"),
                sel.layer,
                sel.hook,
                sel.pool
            )
        };
        let width = picked.first().map(|(_, a)| a.values.len()).ok_or_else(|| {
            format!(
                "no {} in the probe table (is the hook in probe.yaml `dumps`?)",
                describe()
            )
        })?;
        if picked.iter().any(|(_, a)| a.values.len() != width) {
            return Err(format!("{}: vectors of different widths", describe()));
        }
        let data: Vec<f32> = picked
            .iter()
            .flat_map(|(_, a)| a.values.iter().copied())
            .collect();
        let m = Matrix::from_f32(picked.len(), width, &data).map_err(|e| e.to_string())?;
        Ok((m, picked.into_iter().map(|(k, _)| k).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(set: &str, group: Group, split: Split, row: u32) -> ActivationKey {
        ActivationKey {
            set: set.into(),
            group,
            split,
            row,
            sample_id: 100 + row,
        }
    }

    fn act(layer: u16, hook: Hook, values: Vec<f32>) -> Activation {
        Activation {
            layer,
            hook,
            pool: Pool::Eot,
            values,
        }
    }

    #[test]
    fn activations_round_trip_and_select() {
        let m = ModelActivations {
            model: "ssft-medium".into(),
            rows: vec![
                (
                    key("std_safe", Group::Safe, Split::Test, 3),
                    vec![
                        act(0, Hook::MlpIn, vec![1.0, 2.0]),
                        act(1, Hook::MlpIn, vec![3.0, 4.0]),
                    ],
                ),
                (
                    key("std_safe", Group::Unsafe, Split::Test, 3),
                    vec![act(0, Hook::MlpIn, vec![5.0, 6.0])],
                ),
                (
                    key("std_unsafe", Group::Safe, Split::Test, 4),
                    vec![act(0, Hook::MlpIn, vec![7.0, 8.0])],
                ),
            ],
        };
        let df = m.frame().expect("frame");
        assert_eq!(df.height(), 4);
        let table = activation_rows(&df).expect("rows");
        assert_eq!(table.keys[0].0, "ssft-medium");
        assert_eq!(
            table.keys[3].1,
            key("std_unsafe", Group::Safe, Split::Test, 4)
        );
        let sel = Select {
            sets: &["std_safe", "std_unsafe"],
            group: Group::Safe,
            split: Split::Test,
            layer: 0,
            hook: Hook::MlpIn,
            pool: Pool::Eot,
        };
        let (mat, keys) = table.matrix(&sel).expect("selected");
        assert_eq!(mat.as_slice(), &[1.0, 2.0, 7.0, 8.0]);
        assert_eq!(keys.iter().map(|k| k.row).collect::<Vec<_>>(), vec![3, 4]);
        let missing = table
            .matrix(&Select {
                hook: Hook::MlpPost,
                ..sel
            })
            .expect_err("no such hook");
        assert!(missing.contains("mlp_post@eot"), "{missing}");
    }

    #[test]
    fn null_and_unknown_names_are_errors_naming_the_column() {
        let mut df = ModelActivations {
            model: "it".into(),
            rows: vec![(
                key("std_safe", Group::Safe, Split::Reference, 0),
                vec![act(0, Hook::MlpOut, vec![1.0])],
            )],
        }
        .frame()
        .expect("frame");
        df.replace("hook", Series::new("hook".into(), ["mlp_mid"]).into())
            .expect("same length");
        let e = activation_rows(&df).expect_err("unknown hook");
        assert!(e.to_string().contains("column `hook` row 0"), "{e}");
        assert!(
            e.to_string().contains("mlp_in"),
            "the error lists the names: {e}"
        );
    }

    #[test]
    fn lipschitz_and_adversarial_tables_round_trip() {
        let rows = vec![LipschitzRow {
            model: "it".into(),
            set: "std_unsafe".into(),
            group: Group::Unsafe,
            row: 2,
            sample_id: 9,
            prefix_len: 16,
            grad_fro: 8.0,
        }];
        let df = lipschitz_frame(&rows).expect("frame");
        let per_token = df
            .column("grad_fro_per_token")
            .expect("col")
            .f64()
            .expect("f64")
            .get(0);
        assert_eq!(per_token, Some(2.0));
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(LIPSCHITZ_FILE);
        artifacts::write_parquet(&mut df.clone(), &path, &lipschitz_schema(), &[]).expect("write");
        assert_eq!(read_lipschitz(&path).expect("read"), rows);
        let adv = vec![AdversarialActivation {
            model: "ssft-medium".into(),
            factor: 0.5,
            sample_id: 7,
            success: true,
            activation: act(2, Hook::MlpPost, vec![0.5, -0.5, 1.5]),
        }];
        let path = dir.path().join(ADVERSARIAL_ACTIVATIONS_FILE);
        let mut df = adversarial_activations_frame(&adv).expect("frame");
        artifacts::write_parquet(&mut df, &path, &adversarial_activations_schema(), &[])
            .expect("write");
        assert_eq!(read_adversarial_activations(&path).expect("read"), adv);
    }
}
