//! Diagnostic: greedy S1/S2 exact match of a pre-trained model per first-pair operator, on the
//! held-out pre-training rows and on std_safe. `cargo run --release -p study-cli --example
//! diag_ops -- <run root (…/seed-0)>`

use std::collections::BTreeMap;

use study::Catalog;
use study::artifacts::{MODEL_CONFIG_FILE, MODEL_FILE, Stage};
use study::corpus::{CorpusSet, Variant};
use study::finetune::PairTable;
use study::grammar::vocab::Token;
use study::training::read_tokens;
use study_model::gpt::{Gpt, GptConfig, Params};

fn main() -> anyhow::Result<()> {
    let root = std::env::args().nth(1).expect("run root");
    let catalog = Catalog::at(&root);
    let dir = catalog.stage_dir(Stage::Pretrain);
    let dir = if dir.exists() {
        dir
    } else {
        catalog.checkpoint_dir(Stage::Pretrain)
    };
    let cfg: GptConfig =
        serde_json::from_str(&std::fs::read_to_string(dir.join(MODEL_CONFIG_FILE))?)?;
    let dev = candle_core::Device::Cpu;
    let model = Gpt::new(cfg, Params::load(&cfg, &dir.join(MODEL_FILE), &dev)?)?;
    let test = read_tokens(&catalog, CorpusSet::PretrainTest, "tokens", None)?;
    let safe = PairTable::read(&catalog, CorpusSet::EvalStdSafe, None)?;
    type Rows<'a> = Vec<(&'a [Token], usize)>;
    let test_rows: Rows<'_> = (0..test.len().min(1000))
        .map(|i| (test.row(i), usize::from(test.text_len[i])))
        .collect();
    let safe_rows: Rows<'_> = (0..safe.len())
        .map(|i| (safe.row(Variant::Safe, i).0, usize::from(safe.text_len[i])))
        .collect();
    for (name, rows) in [("test", test_rows), ("std_safe", safe_rows)] {
        let res = study_model::train::greedy(&model, &rows, 512)?;
        let mut by: BTreeMap<Token, [usize; 3]> = BTreeMap::new();
        for ((row, _), (s1, s2)) in rows.iter().zip(&res) {
            let c = by.entry(row[1]).or_default();
            c[0] += usize::from(*s1);
            c[1] += usize::from(*s2);
            c[2] += 1;
        }
        #[allow(clippy::print_stdout)]
        for (op, c) in by {
            println!(
                "{name:9} o1={op:2} n={:4} s1 {:.2} s2 {:.2}",
                c[2],
                c[0] as f64 / c[2] as f64,
                c[1] as f64 / c[2] as f64
            );
        }
    }
    Ok(())
}
