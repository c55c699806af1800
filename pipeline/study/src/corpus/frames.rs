//! Generated rows as Polars tables: the pre-training table ([`pretrain_frame`]) and the
//! fine-tuning or evaluation table ([`safety_frame`]).

use polars::prelude::*;

use super::rows::{self, PretrainRow, SafetyRow};
use super::{CorpusSet, Variant};
use crate::config::CorpusConfig;

fn list_column<'a>(name: &str, values: impl ExactSizeIterator<Item = &'a [u8]>) -> Column {
    let n = values.len();
    let mut b =
        ListPrimitiveChunkedBuilder::<UInt8Type>::new(name.into(), n, n * 64, DataType::UInt8);
    for v in values {
        b.append_slice(v);
    }
    b.finish().into_series().into()
}

fn meta_frame<'a>(metas: impl Iterator<Item = &'a rows::RowMeta> + Clone, n: usize) -> Vec<Column> {
    let col = |name: &str, s: Series| -> Column { s.with_name(name.into()).into() };
    vec![
        col(
            "sample_id",
            Series::new("".into(), (0..n as u32).collect::<Vec<_>>()),
        ),
        col(
            "pcfg",
            Series::new("".into(), metas.clone().map(|m| m.pcfg).collect::<Vec<_>>()),
        ),
        col(
            "text_len",
            Series::new(
                "".into(),
                metas.clone().map(|m| m.text_len).collect::<Vec<_>>(),
            ),
        ),
        col(
            "crop_start",
            Series::new(
                "".into(),
                metas.clone().map(|m| m.crop_start).collect::<Vec<_>>(),
            ),
        ),
        col(
            "full_len",
            Series::new(
                "".into(),
                metas.clone().map(|m| m.full_len).collect::<Vec<_>>(),
            ),
        ),
        col(
            "branch",
            Series::new(
                "".into(),
                metas.clone().map(|m| m.branch.as_str()).collect::<Vec<_>>(),
            ),
        ),
        list_column(
            "ops",
            metas
                .clone()
                .map(|m| &m.ops[..])
                .collect::<Vec<_>>()
                .into_iter(),
        ),
        col(
            "is_unsafe",
            Series::new("".into(), metas.map(|m| m.is_unsafe).collect::<Vec<_>>()),
        ),
    ]
}

/// The table of pre-training rows.
pub fn pretrain_frame(rows: &[PretrainRow], set: CorpusSet) -> PolarsResult<DataFrame> {
    let mut cols = meta_frame(rows.iter().map(|r| &r.meta), rows.len());
    cols.push(list_column("tokens", rows.iter().map(|r| &r.tokens[..])));
    if set == CorpusSet::PretrainTest {
        let types: Vec<&str> = rows
            .iter()
            .map(|r| r.sample_type.map_or("full", |t| t.as_str()))
            .collect();
        cols.push(Series::new("sample_type".into(), types).into());
    }
    DataFrame::new_infer_height(cols)
}

/// The table of fine-tuning or evaluation rows.
pub fn safety_frame(
    rows: &[SafetyRow],
    set: CorpusSet,
    cfg: &CorpusConfig,
) -> PolarsResult<DataFrame> {
    let family = set.safety_spec(cfg).expect("a safety set").family.as_str();
    let mut cols = meta_frame(rows.iter().map(|r| &r.meta), rows.len());
    cols.insert(
        1,
        Series::new(
            "split".into(),
            rows.iter().map(|r| r.split.as_str()).collect::<Vec<_>>(),
        )
        .into(),
    );
    cols.insert(
        3,
        Series::new("family".into(), vec![family; rows.len()]).into(),
    );
    cols.push(list_column(
        "unsafe_ops",
        rows.iter().map(|r| &r.unsafe_ops[..]),
    ));
    cols.push(
        Series::new(
            "unsafe_ops_is_unsafe".into(),
            rows.iter()
                .map(|r| r.unsafe_ops_is_unsafe)
                .collect::<Vec<_>>(),
        )
        .into(),
    );
    cols.push(
        Series::new(
            "apply_second".into(),
            rows.iter().map(|r| r.apply_second).collect::<Vec<_>>(),
        )
        .into(),
    );
    for (i, v) in Variant::ALL.iter().enumerate() {
        cols.push(list_column(
            &format!("x_{}", v.as_str()),
            rows.iter().map(|r| &r.variants[i].0[..]),
        ));
        cols.push(list_column(
            &format!("y_{}", v.as_str()),
            rows.iter().map(|r| &r.variants[i].1[..]),
        ));
    }
    DataFrame::new_infer_height(cols)
}
