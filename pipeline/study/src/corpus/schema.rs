//! The corpus tables' schemas ([`schema`]), one per kind of set.

use polars::prelude::*;

use super::{CorpusSet, SetKind};
use crate::artifacts::TableSchema;

/// Version of the corpus tables' schemas.
pub const SCHEMA_VERSION: u32 = 1;

fn u8_list() -> DataType {
    DataType::List(Box::new(DataType::UInt8))
}

fn meta_columns() -> Vec<(&'static str, DataType)> {
    vec![
        ("sample_id", DataType::UInt32),
        ("pcfg", DataType::UInt8),
        ("text_len", DataType::UInt8),
        ("crop_start", DataType::UInt16),
        ("full_len", DataType::UInt16),
        ("branch", DataType::String),
        ("ops", u8_list()),
        ("is_unsafe", DataType::Boolean),
    ]
}

/// The schema of a set's table.
pub fn schema(set: CorpusSet) -> TableSchema {
    let mut columns = meta_columns();
    let table = match set.kind() {
        SetKind::Pretrain => {
            columns.push(("tokens", u8_list()));
            if set == CorpusSet::PretrainTest {
                columns.push(("sample_type", DataType::String));
                "corpus_pretrain_heldout"
            } else {
                "corpus_pretrain_pool"
            }
        }
        SetKind::Finetune | SetKind::Eval => {
            columns.insert(1, ("split", DataType::String));
            columns.insert(3, ("family", DataType::String));
            columns.extend([
                ("unsafe_ops", u8_list()),
                ("unsafe_ops_is_unsafe", DataType::Boolean),
                ("apply_second", DataType::Boolean),
                ("x_safe", u8_list()),
                ("y_safe", u8_list()),
                ("x_unsafe", u8_list()),
                ("y_unsafe", u8_list()),
                ("x_unsafe_target", u8_list()),
                ("y_unsafe_target", u8_list()),
                ("x_safe_target", u8_list()),
                ("y_safe_target", u8_list()),
            ]);
            "corpus_safety"
        }
    };
    TableSchema {
        table,
        version: SCHEMA_VERSION,
        columns,
        target: "corpus",
    }
}
