//! End-to-end tests of the `study` binary on the tiny preset: stage outputs (snapshots of
//! readable summaries), determinism, re-runs, bad input, figures and notebook hygiene.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use study::Catalog;
use study::analysis::corpus::{corpus_overview, summarize_set};
use study::artifacts::{Manifest, Stage};
use study::corpus::{self, CorpusSet};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Run `study` from the repository root with `args`.
fn study(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_study"))
        .current_dir(repo())
        .args(["--quiet", "--threads", "2"])
        .args(args)
        .output()
        .expect("study runs")
}

fn ok(out: &Output) {
    assert!(
        out.status.success(),
        "study failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn fails_with(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected failure, got success");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}:\n{err}");
    }
}

/// The tiny DAG, run once per test binary into a temporary data root.
fn tiny() -> &'static (tempfile::TempDir, Catalog) {
    static RUN: OnceLock<(tempfile::TempDir, Catalog)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path().to_str().expect("utf-8 path").to_owned();
        ok(&study(&[
            "--data-root",
            &root,
            "corpus",
            "--preset",
            "tiny",
        ]));
        let catalog = Catalog::new(dir.path(), "tiny", 0);
        (dir, catalog)
    })
}

/// Snapshot a stage summary under `snapshots/<stage>/`, one file per variant.
macro_rules! assert_stage_snapshot {
    ($stage:expr, $variant:expr, $value:expr) => {{
        let mut settings = insta::Settings::clone_current();
        settings.set_snapshot_path(repo().join("snapshots").join($stage));
        settings.set_prepend_module_to_snapshot(false);
        settings.set_omit_expression(true);
        settings.set_snapshot_suffix($variant);
        settings.set_description(concat!("tiny preset, ", $stage, " stage summary"));
        settings.set_sort_maps(true);
        settings.bind(|| insta::assert_yaml_snapshot!($stage, $value));
    }};
}

#[test]
fn corpus_sets_match_their_snapshots() {
    let (_dir, catalog) = tiny();
    for set in CorpusSet::ALL {
        let df = corpus::read_set(catalog, set).expect("set reads with its schema");
        let summary = summarize_set(&df, set).expect("summary");
        assert_eq!(summary.rows, set.rows(&tiny_config()));
        assert_stage_snapshot!("corpus", set.name(), summary);
    }
}

fn tiny_config() -> study::config::CorpusConfig {
    study::config::load(&repo().join("pipeline/configs/tiny/corpus.yaml"), &[])
        .expect("tiny config")
}

#[test]
fn corpus_manifest_records_every_output() {
    let (_dir, catalog) = tiny();
    let m = Manifest::read(&catalog.manifest(Stage::Corpus), "corpus").expect("manifest");
    assert_eq!(m.stage, Stage::Corpus);
    assert_eq!(m.config_hash, study::config::config_hash(&tiny_config()));
    let names: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
    let mut want = vec!["vocab"];
    want.extend(CorpusSet::ALL.iter().map(|s| s.name()));
    assert_eq!(names, want);
    for o in &m.outputs {
        let path = catalog.root().join(&o.path);
        assert_eq!(
            study::artifacts::hash_file(&path).expect("hash"),
            o.hash,
            "{}",
            o.path
        );
    }
    let vocab: study::grammar::Vocab =
        serde_json::from_str(&std::fs::read_to_string(catalog.vocab()).expect("vocab.json"))
            .expect("vocab parses");
    assert_eq!(vocab, study::grammar::Vocab::study());
    // Redact what varies from run to run; keep the plan and the logical outputs.
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(repo().join("snapshots").join("corpus"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        insta::assert_yaml_snapshot!("manifest", m, {
            ".argv" => "[argv]",
            ".code" => "[code]",
            ".env" => "[env]",
            ".started_at" => "[time]",
            ".wall_seconds" => "[seconds]",
            ".timings" => "[timings]",
            ".peak_rss_mib" => "[MiB]",
            ".outputs[].hash" => "[hash]",
            ".outputs[].bytes" => "[bytes]",
        })
    });
}

fn hashes(catalog: &Catalog) -> Vec<(String, String)> {
    let m = Manifest::read(&catalog.manifest(Stage::Corpus), "corpus").expect("manifest");
    m.outputs.into_iter().map(|o| (o.name, o.hash)).collect()
}

#[test]
fn same_seed_same_bytes_other_seed_other_data() {
    let (_dir, catalog) = tiny();
    let again = tempfile::tempdir().expect("tempdir");
    let root = again.path().to_str().expect("utf-8");
    // One thread instead of two: content must not depend on it.
    let out = Command::new(env!("CARGO_BIN_EXE_study"))
        .current_dir(repo())
        .args([
            "--quiet",
            "--threads",
            "1",
            "--data-root",
            root,
            "corpus",
            "--preset",
            "tiny",
        ])
        .output()
        .expect("runs");
    ok(&out);
    assert_eq!(
        hashes(catalog),
        hashes(&Catalog::new(again.path(), "tiny", 0))
    );
    ok(&study(&[
        "--data-root",
        root,
        "corpus",
        "--preset",
        "tiny",
        "--seed",
        "1",
    ]));
    let other = hashes(&Catalog::new(again.path(), "tiny", 1));
    let same: Vec<_> = hashes(catalog)
        .into_iter()
        .filter(|h| other.contains(h))
        .map(|h| h.0)
        .collect();
    assert_eq!(same, ["vocab"], "only the vocabulary is seed-independent");
}

#[test]
fn rerun_is_a_no_op_and_a_config_change_reruns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    let file = catalog.corpus_set(CorpusSet::PretrainTrain);
    let before = std::fs::metadata(&file)
        .expect("meta")
        .modified()
        .expect("mtime");
    let manifest = std::fs::read_to_string(catalog.manifest(Stage::Corpus)).expect("manifest");
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    assert_eq!(
        std::fs::metadata(&file)
            .expect("meta")
            .modified()
            .expect("mtime"),
        before
    );
    assert_eq!(
        std::fs::read_to_string(catalog.manifest(Stage::Corpus)).expect("manifest"),
        manifest
    );
    ok(&study(&[
        "--data-root",
        root,
        "corpus",
        "--preset",
        "tiny",
        "--set",
        "sizes.eval=50",
    ]));
    let df = corpus::read_set(&catalog, CorpusSet::EvalStdSafe).expect("read");
    assert_eq!(df.height(), 50);
    // Deleting an output makes the stage run again.
    std::fs::remove_file(&file).expect("rm");
    ok(&study(&[
        "--data-root",
        root,
        "corpus",
        "--preset",
        "tiny",
        "--set",
        "sizes.eval=50",
    ]));
    assert!(file.exists());
}

/// `make` asks the binary every time and the binary decides: a `--set` run written into the
/// preset's folder is replaced by the next plain `make` (before, make saw a manifest newer than the
/// config and ran nothing), and an up-to-date stage leaves its manifest untouched.
#[test]
fn make_always_asks_and_replaces_an_override_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    let make = || {
        let out = Command::new("make")
            .current_dir(repo())
            .args(["--no-print-directory", "corpus", "PRESET=tiny", "SEED=0"])
            .arg("CARGO=true")
            .arg(format!("STUDY={}", env!("CARGO_BIN_EXE_study")))
            .env("STUDY_DATA_ROOT", root)
            .output()
            .expect("make runs");
        assert!(
            out.status.success(),
            "make failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    let eval_rows = || {
        corpus::read_set(&catalog, CorpusSet::EvalStdSafe)
            .expect("read")
            .height()
    };
    let mtime = || {
        std::fs::metadata(catalog.manifest(Stage::Corpus))
            .expect("manifest")
            .modified()
            .expect("mtime")
    };
    make();
    let preset_rows = eval_rows();
    ok(&study(&[
        "--data-root",
        root,
        "corpus",
        "--preset",
        "tiny",
        "--set",
        "sizes.eval=50",
    ]));
    assert_eq!(eval_rows(), 50);
    assert_ne!(preset_rows, 50);
    make();
    assert_eq!(eval_rows(), preset_rows, "make re-ran the override run");
    let made = mtime();
    std::thread::sleep(std::time::Duration::from_millis(20));
    make();
    assert_eq!(
        mtime(),
        made,
        "an up-to-date stage leaves its manifest as it is"
    );
}

fn write_config(dir: &Path, text: &str) -> String {
    let p = dir.join("corpus.yaml");
    std::fs::write(&p, text).expect("write config");
    p.to_str().expect("utf-8").to_owned()
}

#[test]
fn bad_input_gives_clear_errors_and_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("data");
    let root = root.to_str().expect("utf-8");
    let run = |cfg: &str| {
        study(&[
            "--data-root",
            root,
            "corpus",
            "--preset",
            "tiny",
            "--config",
            cfg,
        ])
    };
    fails_with(
        &run(&write_config(dir.path(), "sizes:\n  evals: 10\n")),
        &["corpus.yaml", "unknown field `evals`"],
    );
    fails_with(
        &run(&write_config(dir.path(), "layout:\n  window: wide\n")),
        &["corpus.yaml", "layout.window"],
    );
    fails_with(
        &run(&write_config(
            dir.path(),
            "layout:\n  text_len_max: 40\n  window: 200\n",
        )),
        &["layout.text_len_max", "≤ 35"],
    );
    fails_with(
        &run(&write_config(
            dir.path(),
            "layout:\n  text_len_min: 6\n  text_len_max: 8\n  window: 20\n",
        )),
        &["layout.window", "3·text_len_max + 10 = 34"],
    );
    fails_with(
        &run("/nonexistent/corpus.yaml"),
        &["no config at /nonexistent/corpus.yaml"],
    );
    fails_with(
        &study(&["--data-root", root, "corpus", "--preset", "huge"]),
        &["no config at pipeline/configs/huge/corpus.yaml", "tiny"],
    );
    fails_with(
        &study(&[
            "--data-root",
            root,
            "corpus",
            "--preset",
            "tiny",
            "--set",
            "sizes.eval",
        ]),
        &["bad override", "key.sub=value"],
    );
    assert!(
        !Path::new(root).join("tiny").exists(),
        "failed configs write nothing"
    );
    // An unwritable data root (a file where a folder must go).
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"").expect("file");
    let out = study(&[
        "--data-root",
        blocker.to_str().expect("utf-8"),
        "corpus",
        "--preset",
        "tiny",
    ]);
    fails_with(&out, &["cannot write", "blocker"]);
}

#[test]
fn corrupt_tables_name_the_file_and_the_fix() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    let file = catalog.corpus_set(CorpusSet::EvalStdUnsafe);
    let bytes = std::fs::read(&file).expect("read");
    std::fs::write(&file, &bytes[..bytes.len() / 3]).expect("truncate");
    let err = corpus::read_set(&catalog, CorpusSet::EvalStdUnsafe)
        .expect_err("truncated")
        .to_string();
    assert!(
        err.contains("eval_std_unsafe.parquet") && err.contains("make corpus"),
        "{err}"
    );
    // The stage notices the damaged output and regenerates it.
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    corpus::read_set(&catalog, CorpusSet::EvalStdUnsafe).expect("repaired");
    let missing = Catalog::new(dir.path(), "cpu", 9);
    let err = corpus::read_set(&missing, CorpusSet::PretrainTrain)
        .expect_err("missing")
        .to_string();
    assert!(err.contains("run `make corpus`"), "{err}");
}

#[test]
fn corpus_overview_figure_renders() {
    let (_dir, catalog) = tiny();
    let ov = corpus_overview(catalog).expect("overview tables");
    assert_eq!(
        ov.labels.height(),
        12 * 4 + 2,
        "every set × PCFG, alias sets PCFG1 only"
    );
    let fig = study::figures::corpus_overview(&ov).expect("figure");
    assert!(fig.svg.starts_with("<svg") && fig.svg.contains("Corpus overview"));
    assert!(fig.svg.contains("eval_jb_misgen_tokens"));
    let out = tempfile::tempdir().expect("tempdir");
    let (svg, png) = fig.save(out.path()).expect("save");
    assert!(std::fs::metadata(svg).expect("svg").len() > 10_000);
    assert!(std::fs::metadata(png).expect("png").len() > 10_000);
}

/// Notebook outputs never reach git: every code cell is unexecuted.
#[test]
fn notebooks_are_committed_without_outputs() {
    let dir = repo().join("notebooks");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("notebooks/") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "ipynb") {
            continue;
        }
        seen += 1;
        let nb: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read"))
                .expect("notebook JSON");
        assert_eq!(
            nb["metadata"]["kernelspec"]["name"],
            "rust",
            "{}: kernel",
            path.display()
        );
        // The runner checks that these figures were written (evcxr can fail a cell silently).
        assert!(
            nb["metadata"]["study"]["figures"]
                .as_array()
                .is_some_and(|f| !f.is_empty() && f.iter().all(|n| n.is_string())),
            "{}: metadata.study.figures must list the figures the notebook writes",
            path.display()
        );
        for (i, cell) in nb["cells"].as_array().expect("cells").iter().enumerate() {
            if cell["cell_type"] == "code" {
                assert!(
                    cell["outputs"].as_array().is_none_or(|o| o.is_empty()),
                    "{} cell {i} has outputs",
                    path.display()
                );
                assert!(
                    cell["execution_count"].is_null(),
                    "{} cell {i} has an execution count",
                    path.display()
                );
            }
        }
    }
    assert!(seen >= 1, "no notebooks found in {}", dir.display());
}

// ---------------------------------------------------------------------------------------------
// pretrain

/// The tiny pre-training run, once per test binary, on the shared tiny corpus.
fn tiny_pretrained() -> &'static Catalog {
    static RUN: OnceLock<()> = OnceLock::new();
    let (dir, catalog) = tiny();
    RUN.get_or_init(|| {
        let root = dir.path().to_str().expect("utf-8 path");
        ok(&study(&[
            "--data-root",
            root,
            "pretrain",
            "--preset",
            "tiny",
        ]));
    });
    catalog
}

fn metric_rows(path: &Path) -> Vec<study::training::MetricRow> {
    let df = study::artifacts::read_parquet(path, &study::training::metrics_schema("pretrain"))
        .expect("metrics read with their schema");
    study::training::metrics_rows(&df).expect("rows")
}

fn train_losses(rows: &[study::training::MetricRow]) -> Vec<(u32, f64)> {
    rows.iter()
        .filter(|r| r.split == "train" && r.metric == "loss")
        .map(|r| (r.step, r.value))
        .collect()
}

#[test]
fn tiny_pretrain_loss_falls_and_its_summary_matches_the_snapshot() {
    use study::artifacts::{METRICS_FILE, MODEL_CONFIG_FILE};
    let catalog = tiny_pretrained();
    let m = Manifest::read(&catalog.manifest(Stage::Pretrain), "pretrain").expect("manifest");
    let outputs: Vec<&str> = m.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(
        outputs,
        [
            "model",
            "model_config",
            "optimizer",
            "train_state",
            "summary",
            "metrics"
        ]
    );
    assert!(
        !catalog.checkpoint_dir(Stage::Pretrain).exists(),
        "a finished run removes its checkpoint"
    );
    let rows = metric_rows(&catalog.stage_file(Stage::Pretrain, METRICS_FILE));
    let losses = train_losses(&rows);
    assert_eq!(losses.len(), 60);
    let mean = |v: &[(u32, f64)]| v.iter().map(|x| x.1).sum::<f64>() / v.len() as f64;
    let (first, last) = (mean(&losses[..5]), mean(&losses[55..]));
    assert!(
        last < first - 0.5,
        "the training loss must fall: first 5 steps {first:.3}, last 5 {last:.3}"
    );
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(catalog.stage_file(Stage::Pretrain, MODEL_CONFIG_FILE))
            .expect("config.json"),
    )
    .expect("json");
    // A readable, rounded summary: what was measured when, and the coarse numbers.
    let mut evaluated: Vec<String> = rows
        .iter()
        .filter(|r| r.split != "train" || r.metric.starts_with("acc") || r.metric.starts_with("em"))
        .map(|r| {
            format!(
                "{} {} {} {} (n={})",
                r.step, r.split, r.sample_type, r.metric, r.n
            )
        })
        .collect();
    evaluated.sort();
    evaluated.dedup();
    let summary = serde_json::json!({
        "model_config": cfg,
        "train_loss_at_step_1": format!("{:.1}", losses[0].1),
        "metric_rows": rows.len(),
        "evaluations": evaluated,
    });
    assert_stage_snapshot!("pretrain", "tiny", summary);
}

/// A run stopped exactly at its last step has no final evaluation to resume from: `--resume` names
/// the checkpoint and the fix (it used to panic in the library's summary) and writes no stage.
#[test]
fn resuming_a_checkpoint_of_the_last_step_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    let args = ["--data-root", root, "pretrain", "--preset", "tiny"];
    ok(&study(
        &[&args[..], &["--set", "steps=10", "--stop-after", "10"]].concat(),
    ));
    fails_with(
        &study(&[&args[..], &["--set", "steps=10", "--resume"]].concat()),
        &["no evaluation at its last step", "delete the checkpoint"],
    );
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    assert!(
        !catalog.manifest(Stage::Pretrain).exists(),
        "no stage written"
    );
}

/// The stage is one library call: `study_model::pretrain::pretrain`, called in-process on a copy
/// of the tiny corpus, writes the stage binary's weights, optimiser state and metrics bit for bit
/// (throughput, a wall-clock measure, aside).
#[test]
fn pretrain_library_call_equals_the_stage() {
    use study::artifacts::{MODEL_FILE, OPTIMIZER_FILE, StageDir};
    use study_model::pretrain::{self as lib, Outcome, PretrainData, Run, TrainState};
    let full = tiny_pretrained();
    let dir = tempfile::tempdir().expect("tempdir");
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    std::fs::create_dir_all(catalog.root()).expect("run folder");
    cp_r(
        &full.stage_dir(Stage::Corpus),
        &catalog.stage_dir(Stage::Corpus),
    );
    let cfg: study::config::PretrainConfig =
        study::config::load(&repo().join("pipeline/configs/tiny/pretrain.yaml"), &[])
            .expect("tiny config");
    let mix = lib::corpus_config(&catalog).expect("corpus").pretrain_mix;
    let vocab = study::grammar::vocab::Vocab::study().len();
    let data = PretrainData::read(&catalog, mix, vocab).expect("tables");
    let out = StageDir::begin(&catalog, Stage::Pretrain).expect("stage folder");
    let mut steps = 0;
    let outcome = lib::pretrain(
        Run {
            cfg: &cfg,
            data: &data,
            checkpoint: catalog.checkpoint_dir(Stage::Pretrain),
            stamp: TrainState {
                step: 0,
                config_hash: "test".into(),
                fingerprint: "test".into(),
            },
            resume: false,
            stop_after: None,
            device: &candle_core::Device::Cpu,
        },
        &out,
        |p| steps = p.step,
    )
    .expect("pre-training");
    let Outcome::Trained { summary, files, .. } = outcome else {
        panic!("stopped without being asked");
    };
    assert_eq!(steps, cfg.steps, "progress reaches the last step");
    assert_eq!(summary.steps, cfg.steps);
    let names: Vec<&str> = files.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "model",
            "model_config",
            "optimizer",
            "train_state",
            "summary",
            "metrics"
        ]
    );
    for file in [MODEL_FILE, OPTIMIZER_FILE] {
        assert_eq!(
            study::artifacts::hash_file(&out.path().join(file)).expect("hash"),
            study::artifacts::hash_file(&full.stage_file(Stage::Pretrain, file)).expect("hash"),
            "{file} differs from the stage's"
        );
    }
    let timeless = |path: &Path| -> Vec<study::training::MetricRow> {
        metric_rows(path)
            .into_iter()
            .filter(|r| r.metric != "tokens_per_s")
            .collect()
    };
    assert_eq!(
        timeless(&out.path().join(study::artifacts::METRICS_FILE)),
        timeless(&full.stage_file(Stage::Pretrain, study::artifacts::METRICS_FILE)),
        "metrics differ from the stage's"
    );
}

#[test]
fn pretrain_resumed_after_a_kill_equals_an_uninterrupted_run() {
    use study::artifacts::MODEL_FILE;
    let full = tiny_pretrained();
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    let args = ["--data-root", root, "pretrain", "--preset", "tiny"];
    ok(&study(&[&args[..], &["--stop-after", "12"]].concat()));
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    let ckpt = catalog.checkpoint_dir(Stage::Pretrain);
    assert!(ckpt.join("train_state.json").exists(), "checkpoint kept");
    assert!(
        !catalog.manifest(Stage::Pretrain).exists(),
        "no finished stage"
    );
    // Without --resume nothing is resumed; with it, the run continues from step 12
    // (checkpoint at 12) to the end and must equal the uninterrupted run bit for bit.
    ok(&study(&[&args[..], &["--resume"]].concat()));
    let hash = |c: &Catalog| {
        study::artifacts::hash_file(&c.stage_file(Stage::Pretrain, MODEL_FILE)).expect("hash")
    };
    assert_eq!(hash(&catalog), hash(full), "resumed weights differ");
    let metrics = |c: &Catalog| {
        metric_rows(&c.stage_file(Stage::Pretrain, study::artifacts::METRICS_FILE))
            .into_iter()
            .filter(|r| r.metric != "tokens_per_s")
            .collect::<Vec<_>>()
    };
    assert_eq!(metrics(&catalog), metrics(full), "resumed metrics differ");
}

#[test]
fn pretrain_bad_input_gives_clear_errors_and_overwrites_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    let args = ["--data-root", root, "pretrain", "--preset", "tiny"];
    // no corpus yet
    fails_with(&study(&args), &["corpus", "make corpus"]);
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    // a shape the model cannot have
    fails_with(
        &study(&[&args[..], &["--set", "model.n_embd=15"]].concat()),
        &["model.n_embd", "not divisible"],
    );
    // --resume without a checkpoint
    fails_with(
        &study(&[&args[..], &["--resume"]].concat()),
        &["no checkpoint to resume"],
    );
    // a corrupt checkpoint: clear error, the checkpoint left as it was, no stage folder
    ok(&study(&[&args[..], &["--stop-after", "10"]].concat()));
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    let weights = catalog
        .checkpoint_dir(Stage::Pretrain)
        .join("model.safetensors");
    std::fs::write(&weights, b"not safetensors").expect("corrupt");
    fails_with(
        &study(&[&args[..], &["--resume"]].concat()),
        &["corrupt", "delete it"],
    );
    assert_eq!(
        std::fs::read(&weights).expect("still there"),
        b"not safetensors"
    );
    assert!(!catalog.stage_dir(Stage::Pretrain).exists());
    // a vocabulary that is not this code's
    let vocab = catalog.vocab();
    let text = std::fs::read_to_string(&vocab).expect("vocab");
    std::fs::write(&vocab, text.replace("\"dup5\"", "\"dup5\", \"extra\"")).expect("edit");
    fails_with(&study(&args), &["vocabulary", "make corpus"]);
}

#[test]
fn training_figure_renders_from_the_tiny_run() {
    use study::analysis::training::{read_metrics, training_curves};
    let catalog = tiny_pretrained();
    let df = read_metrics(catalog, Stage::Pretrain).expect("metrics");
    let curves = training_curves(&df, 10).expect("curves");
    assert_eq!(curves.train_loss.points.len(), 60);
    assert!(
        curves
            .greedy
            .iter()
            .any(|c| c.label == "std_safe full greedy_em_both")
    );
    let fig = study::figures::training(&curves).expect("figure");
    let dir = tempfile::tempdir().expect("tmp");
    let (svg, png) = fig.save(dir.path()).expect("save");
    let text = std::fs::read_to_string(svg).expect("svg");
    assert!(text.contains("Exact match") && text.contains("test full em_s1"));
    assert!(text.contains("test full acc_s2") && text.contains("std_safe full greedy_em_both"));
    assert!(std::fs::metadata(png).expect("png").len() > 10_000);
}

// ---------------------------------------------------------------------------------------------
// finetune and evaluate

const VARIANTS: [&str; 6] = [
    "ssft-medium",
    "ssft-small",
    "dpo-medium",
    "dpo-small",
    "unlearn-medium",
    "unlearn-small",
];

/// Every tiny fine-tuning variant and the evaluation, once per test binary.
fn tiny_evaluated() -> &'static Catalog {
    static RUN: OnceLock<()> = OnceLock::new();
    let catalog = tiny_pretrained();
    let (dir, _) = tiny();
    RUN.get_or_init(|| {
        let root = dir.path().to_str().expect("utf-8 path");
        for v in VARIANTS {
            ok(&study(&[
                "--data-root",
                root,
                "finetune",
                "--preset",
                "tiny",
                "--variant",
                v,
            ]));
        }
        ok(&study(&[
            "--data-root",
            root,
            "evaluate",
            "--preset",
            "tiny",
        ]));
    });
    catalog
}

#[test]
fn tiny_finetune_losses_start_where_the_objectives_say() {
    use study::artifacts::METRICS_FILE;
    let catalog = tiny_evaluated();
    let first_loss = |v: &str| {
        let path = catalog.variant_dir(Stage::Finetune, v).join(METRICS_FILE);
        let df =
            study::artifacts::read_parquet(&path, &study::training::metrics_schema("finetune"))
                .expect("metrics");
        let rows = study::training::metrics_rows(&df).expect("rows");
        assert_eq!(train_losses(&rows).len(), 8, "{v}: one loss per step");
        train_losses(&rows)[0].1
    };
    // DPO's policy equals its reference at step 1: z = 0, the loss is exactly ln 2.
    for v in ["dpo-medium", "dpo-small"] {
        let l = first_loss(v);
        assert!((l - 2f64.ln()).abs() < 1e-5, "{v}: first loss {l} ≠ ln 2");
    }
    // SSFT is a token-mean cross-entropy of an untrained-ish model: clearly positive; the
    // unlearning loss is a difference of sequence scores divided by T, so far smaller.
    assert!(first_loss("ssft-medium") > 0.5);
    assert!(first_loss("unlearn-medium").abs() < first_loss("ssft-medium"));
    for v in VARIANTS {
        let m = Manifest::read(&catalog.variant_manifest(Stage::Finetune, v), "finetune")
            .expect("manifest");
        assert_eq!(m.variant.as_deref(), Some(v));
        let inputs: Vec<&str> = m.inputs.iter().map(|i| i.name.as_str()).collect();
        assert!(inputs.contains(&"it_model") && inputs.contains(&"finetune_id_mg"));
    }
}

#[test]
fn tiny_behaviour_tables_match_their_snapshot() {
    use study::evaluation::{ADVERSARIAL_FILE, BEHAVIOUR_FILE, EvalSet};
    let catalog = tiny_evaluated();
    let dir = catalog.stage_dir(Stage::Evaluate);
    let rows = study::evaluation::read_behaviour(&dir.join(BEHAVIOUR_FILE)).expect("behaviour");
    use study::evaluation::{Decoding, Score, Subset};
    // Headline cells: 7 models × 6 sets × 4 metrics × 2 decodings of exact match on all rows;
    // teacher-forced passes also give token accuracy and the first token, greedy ones the first
    // token; unsafe sets add their a_operator / b_only subsets.
    let headline = |r: &&study::evaluation::BehaviourRow| {
        r.subset == Subset::All && r.score == Score::ExactMatch
    };
    assert_eq!(
        rows.iter().filter(headline).count(),
        7 * EvalSet::ALL.len() * 4 * 2
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.subset == Subset::All && r.score == Score::TokenAccuracy)
            .count(),
        7 * EvalSet::ALL.len() * 4
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.decoding == Decoding::Greedy && r.score == Score::TokenAccuracy)
    );
    assert!(
        !rows
            .iter()
            .any(|r| r.set == EvalSet::StdSafe && r.subset != Subset::All)
    );
    assert!(
        rows.iter()
            .any(|r| r.set == EvalSet::StdUnsafe && r.subset == Subset::BOnly)
    );
    assert!(
        rows.iter()
            .all(|r| (0.0..=1.0).contains(&r.value) && r.n > 0)
    );
    let adv = study::artifacts::read_parquet(
        &dir.join(ADVERSARIAL_FILE),
        &study::evaluation::adversarial_schema(),
    )
    .expect("adversarial");
    // 6 fine-tuned models × 2 budgets × the attacked rows (16, minus apply_second rows).
    assert_eq!(adv.height() % 12, 0);
    assert!(adv.height() > 0);
    let eps = adv.column("eps").expect("eps").f64().expect("f64").clone();
    let max = adv
        .column("delta_norm_max")
        .expect("col")
        .f64()
        .expect("f64")
        .clone();
    for i in 0..adv.height() {
        let (e, m) = (eps.get(i).expect("eps"), max.get(i).expect("max"));
        assert!(
            m <= e * (1.0 + 1e-4),
            "row {i}: soft token norm {m} over budget {e}"
        );
    }
    // Per model and budget: success, mean targeted loss and mean reported iterate (the tiny
    // preset keeps the best of the 4 + 1 iterates), so a change in the attack shows here.
    let col = |name: &str| adv.column(name).expect(name).clone();
    let (model, factor, success) = (col("model"), col("factor"), col("success"));
    let (loss, iterate, kept) = (col("final_loss"), col("iterate"), col("kept"));
    let mut attack: std::collections::BTreeMap<String, (usize, usize, f64, u32)> =
        Default::default();
    for i in 0..adv.height() {
        assert_eq!(kept.str().expect("str").get(i), Some("best"), "row {i}");
        let it = iterate.u32().expect("u32").get(i).expect("iterate");
        assert!(it <= 4, "row {i}: iterate {it} of 4 steps");
        let key = format!(
            "{} ×{}",
            model.str().expect("str").get(i).expect("model"),
            factor.f64().expect("f64").get(i).expect("factor")
        );
        let e = attack.entry(key).or_default();
        e.0 += 1;
        e.1 += usize::from(success.bool().expect("bool").get(i).expect("success"));
        e.2 += loss.f64().expect("f64").get(i).expect("loss");
        e.3 += it;
    }
    let attack: Vec<String> = attack
        .into_iter()
        .map(|(k, (n, ok, loss, it))| {
            format!(
                "{k}: success {ok}/{n}, mean loss {:.3}, mean iterate {:.2}",
                loss / n as f64,
                f64::from(it) / n as f64
            )
        })
        .collect();
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("summary.json")).expect("summary"))
            .expect("json");
    // Every cell of std_unsafe; the headline cells of the other sets.
    let table: Vec<String> = rows
        .iter()
        .filter(|r| r.set == EvalSet::StdUnsafe || headline(r))
        .map(|r| {
            format!(
                "{} {} {} {} {} {} = {:.3} (n={})",
                r.model, r.set, r.subset, r.metric, r.decoding, r.score, r.value, r.n
            )
        })
        .collect();
    let snapshot = serde_json::json!({
        "behaviour": table,
        "adversarial_rows": adv.height(),
        "attack": attack,
        "bars": summary["bars"].as_array().map(|b| b.iter().map(|c| {
            format!("{}: {}", c["name"].as_str().unwrap_or(""), if c["pass"].as_bool() == Some(true) { "pass" } else { "fail" })
        }).collect::<Vec<_>>()),
    });
    assert_stage_snapshot!("evaluate", "tiny", snapshot);
}

#[test]
fn finetune_is_deterministic_and_a_rerun_is_a_no_op() {
    use study::artifacts::MODEL_FILE;
    let catalog = tiny_evaluated();
    let (dir, _) = tiny();
    let root = dir.path().to_str().expect("utf-8");
    let weights = catalog
        .variant_dir(Stage::Finetune, "dpo-small")
        .join(MODEL_FILE);
    let before = study::artifacts::hash_file(&weights).expect("hash");
    let args = [
        "--data-root",
        root,
        "finetune",
        "--preset",
        "tiny",
        "--variant",
        "dpo-small",
    ];
    let out = Command::new(env!("CARGO_BIN_EXE_study"))
        .current_dir(repo())
        .args(["--threads", "2"])
        .args(args)
        .output()
        .expect("runs");
    ok(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("up to date"));
    // Forced: trained again from the same config, the same bytes.
    ok(&study(&[&args[..], &["--force"]].concat()));
    assert_eq!(study::artifacts::hash_file(&weights).expect("hash"), before);
}

#[test]
fn finetune_and_evaluate_bad_input_gives_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_str().expect("utf-8");
    let ft = |v: &str, extra: &[&str]| {
        study(
            &[
                &[
                    "--data-root",
                    root,
                    "finetune",
                    "--preset",
                    "tiny",
                    "--variant",
                    v,
                ][..],
                extra,
            ]
            .concat(),
        )
    };
    ok(&study(&["--data-root", root, "corpus", "--preset", "tiny"]));
    fails_with(
        &ft("rlhf-medium", &[]),
        &["unknown method `rlhf`", "ssft, dpo, unlearn"],
    );
    fails_with(
        &ft("ssft-huge", &[]),
        &["unknown learning-rate label `huge`"],
    );
    // no IT model yet
    fails_with(&ft("ssft-medium", &[]), &["pretrain", "make pretrain"]);
    ok(&study(&[
        "--data-root",
        root,
        "pretrain",
        "--preset",
        "tiny",
    ]));
    // the bar: the tiny IT model is below it, and fine-tuning refuses unless waived
    fails_with(
        &ft("ssft-medium", &["--set", "require_bar=true"]),
        &["below its accuracy bar", "require_bar"],
    );
    // an IT model whose vocabulary is not the corpus's
    let catalog = Catalog::new(dir.path(), "tiny", 0);
    let cfg_path = catalog.stage_file(Stage::Pretrain, study::artifacts::MODEL_CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).expect("config");
    std::fs::write(
        &cfg_path,
        text.replace("\"vocab_size\": 59", "\"vocab_size\": 54"),
    )
    .expect("edit");
    fails_with(
        &ft("ssft-medium", &[]),
        &["vocabulary of 54 tokens", "make pretrain"],
    );
    assert!(
        !catalog.stage_dir(Stage::Finetune).exists(),
        "nothing written"
    );
    std::fs::write(&cfg_path, text).expect("restore");
    // evaluating a variant that was never fine-tuned
    fails_with(
        &study(&[
            "--data-root",
            root,
            "evaluate",
            "--preset",
            "tiny",
            "--variants",
            "dpo-small",
        ]),
        &["dpo-small", "make finetune"],
    );
    assert!(
        !catalog.stage_dir(Stage::Evaluate).exists(),
        "nothing written"
    );
}

#[test]
fn table1_figure_renders_from_the_tiny_run() {
    let catalog = tiny_evaluated();
    let ev = study::evaluation::read_evaluation(catalog).expect("evaluation");
    let t = study::evaluation::table1(&ev.behaviour, &ev.attack);
    assert_eq!(t.models.len(), 7);
    assert_eq!(t.models[0], "it");
    assert_eq!(t.attack.len(), 6, "one attack curve per fine-tuned model");
    assert!(
        t.attack.iter().all(|c| c.points.len() == 2),
        "two budgets in tiny"
    );
    let fig = study::figures::table1(&t).expect("figure");
    let dir = tempfile::tempdir().expect("tmp");
    let (svg, png) = fig.save(dir.path()).expect("save");
    let text = std::fs::read_to_string(svg).expect("svg");
    assert!(text.contains("jb_misgen_text") && text.contains("ssft-medium"));
    assert!(text.contains("budget factor"));
    assert!(std::fs::metadata(png).expect("png").len() > 10_000);
}

/// The probe and spectra stages after the tiny evaluation, once per test binary.
fn tiny_analysed() -> &'static Catalog {
    static RUN: OnceLock<()> = OnceLock::new();
    let catalog = tiny_evaluated();
    let (dir, _) = tiny();
    RUN.get_or_init(|| {
        let root = dir.path().to_str().expect("utf-8 path");
        for stage in ["probe", "spectra"] {
            ok(&study(&["--data-root", root, stage, "--preset", "tiny"]));
        }
    });
    catalog
}

#[test]
fn tiny_probe_and_spectra_tables_match_their_snapshot() {
    use study::probe::{self, Group, Hook, Pool, Select, Split};
    use study::spectra::Tables;
    let catalog = tiny_analysed();
    let dir = catalog.stage_dir(Stage::Probe);
    let it = probe::read_activations(&dir.join("activations/it.parquet")).expect("activations");
    // 2 std sets × (32 reference + 32 test) + 4 jailbreak sets × 32 test rows, both prompts,
    // 2 layers × 5 dumps.
    assert_eq!(it.keys.len(), (2 * 64 + 4 * 32) * 2 * 2 * 5);
    let sel = Select {
        sets: &["std_safe"],
        group: Group::Safe,
        split: Split::Test,
        layer: 1,
        hook: Hook::MlpPost,
        pool: Pool::Output,
    };
    let (m, keys) = it.matrix(&sel).expect("selected");
    assert_eq!(
        (m.rows(), m.cols()),
        (32, 64),
        "tiny: 4 × 16 post-GELU units"
    );
    assert!(
        keys.iter().all(|k| (32..64).contains(&k.row)),
        "test rows follow the references"
    );
    let lip = probe::read_lipschitz(&dir.join(probe::LIPSCHITZ_FILE)).expect("lipschitz");
    assert_eq!(lip.len(), 7 * 2 * 16);
    assert!(
        lip.iter()
            .all(|r| r.grad_fro.is_finite() && r.grad_fro > 0.0)
    );
    let adv = probe::read_adversarial_activations(&dir.join(probe::ADVERSARIAL_ACTIVATIONS_FILE))
        .expect("adversarial");
    assert!(
        !adv.is_empty() && adv.len().is_multiple_of(2 * 5),
        "every attacked row × layers × dumps"
    );
    // The α-interpolation's ends are the IT and fine-tuned models themselves: their behaviour
    // cells equal the evaluate stage's (tiny scores the same 64 rows in both stages).
    let table1 = study::evaluation::read_behaviour(
        &catalog.stage_file(Stage::Evaluate, study::evaluation::BEHAVIOUR_FILE),
    )
    .expect("behaviour");
    let interp = study::evaluation::read_behaviour(&dir.join(probe::INTERPOLATION_BEHAVIOUR_FILE))
        .expect("interpolation behaviour");
    let cell = |rows: &[study::evaluation::BehaviourRow], model: &str, set: &str, metric| {
        rows.iter()
            .find(|r| {
                r.model.to_string() == model
                    && r.set.as_str() == set
                    && study::evaluation::is_greedy_exact(r, metric, study::evaluation::Subset::All)
            })
            .map(|r| (r.value, r.n))
            .unwrap_or_else(|| panic!("no {metric:?} cell of {model} on {set}"))
    };
    for v in ["ssft-medium", "dpo-small", "unlearn-medium"] {
        for (set, metric) in [
            ("std_unsafe", study::evaluation::Metric::Refusal),
            ("std_safe", study::evaluation::Metric::Instruct),
        ] {
            assert_eq!(
                cell(&interp, &format!("{v}@0"), set, metric),
                cell(&table1, "it", set, metric)
            );
            assert_eq!(
                cell(&interp, &format!("{v}@1"), set, metric),
                cell(&table1, v, set, metric)
            );
        }
    }
    let t = Tables::read(catalog).expect("spectra tables");
    assert_eq!(t.interpolation.len(), 6 * 3, "six variants × three α");
    let models: std::collections::BTreeSet<&str> =
        t.column_summary.iter().map(|r| r.model.as_str()).collect();
    assert_eq!(models.len(), 6, "every fine-tuned model: {models:?}");
    // A tall c_fc has a left null space, so its control varies; a wide c_proj at its numerical
    // rank has none, so its share is exactly 0 and the ratio undefined.
    for r in &t.column_summary {
        match r.matrix.as_str() {
            "c_fc" => assert!(r.mean_null_projection.chance_sd > 0.0, "{r:?}"),
            _ => assert!(r.mean_null_projection.ratio.is_nan(), "{r:?}"),
        }
    }
    let round = |x: f64| format!("{x:.3}");
    let summary = serde_json::json!({
        "tau_l2_std": t.tau.iter().filter(|r| r.metric == "l2" && r.set == "std")
            .map(|r| format!("{} L{} {}: {} ± {} (n={})", r.model, r.layer, r.group, round(r.mean), round(r.sd), r.n)).collect::<Vec<_>>(),
        "top5_sigma_c_fc": t.spectrum.iter().filter(|r| r.matrix == "c_fc" && r.index < 5)
            .map(|r| format!("{} L{} σ{} = {}", r.model, r.layer, r.index + 1, round(r.sigma))).collect::<Vec<_>>(),
        "null_space_ratio": t.column_summary.iter()
            .map(|r| format!("{} L{} {}: {} (k={})", r.model, r.layer, r.matrix, round(r.mean_null_projection.ratio), r.k)).collect::<Vec<_>>(),
        "gain_ratio_to_chance": t.gain.iter().filter(|r| r.set == "std")
            .map(|r| format!("{} L{} {}: {}", r.model, r.layer, r.group, round(r.mean_gain.ratio))).collect::<Vec<_>>(),
        "lipschitz_median": t.lipschitz_summary.iter().map(|r| format!("{} {}: {}", r.model, r.group, round(r.median))).collect::<Vec<_>>(),
        "interpolation": t.interpolation.iter().map(|r| format!("{} α={}: refuse {} (b_only {}), instruct {}, τ sep {}", r.model, r.alpha, round(r.refusal), round(r.refusal_b_only), round(r.instruct), round(r.tau_separation))).collect::<Vec<_>>(),
    });
    assert_stage_snapshot!("spectra", "tiny", summary);
}

#[test]
fn spectra_without_probe_data_names_the_fix_and_writes_nothing() {
    let (_dir, catalog) = tiny();
    let empty = tempfile::tempdir().expect("tempdir");
    let root = empty.path().to_str().expect("utf-8");
    let out = study(&["--data-root", root, "spectra", "--preset", "tiny"]);
    fails_with(&out, &["make probe"]);
    assert!(
        !Catalog::new(empty.path(), "tiny", 0)
            .stage_dir(Stage::Spectra)
            .exists()
    );
    let _ = catalog;
}

/// `cp -r from to`.
fn cp_r(from: &std::path::Path, to: &std::path::Path) {
    let status = Command::new("cp")
        .arg("-r")
        .arg(from)
        .arg(to)
        .status()
        .expect("cp");
    assert!(
        status.success(),
        "cp -r {} {}",
        from.display(),
        to.display()
    );
}

/// A temporary folder holding a copy of `dir` (so a test may break it without touching the
/// shared run).
fn copy_dir(dir: &std::path::Path) -> tempfile::TempDir {
    let copy = tempfile::tempdir().expect("tempdir");
    cp_r(dir, copy.path());
    copy
}

#[test]
fn evaluate_and_probe_tables_do_not_depend_on_the_thread_count() {
    // Both stages score models, attacks and interpolated models side by side; the shared run
    // used two threads, this copy reruns them with one: every table and tensor file must be the
    // same bytes (the manifests and summaries differ only by their timings).
    tiny_analysed();
    let (dir, _) = tiny();
    let copy = copy_dir(&dir.path().join("tiny"));
    let root = copy.path().to_str().expect("utf-8");
    for stage in ["evaluate", "probe"] {
        let out = Command::new(env!("CARGO_BIN_EXE_study"))
            .current_dir(repo())
            .args(["--quiet", "--threads", "1", "--data-root", root])
            .args([stage, "--preset", "tiny", "--force"])
            .output()
            .expect("runs");
        ok(&out);
    }
    let (one, two) = (Catalog::new(copy.path(), "tiny", 0), tiny_analysed());
    for stage in [Stage::Evaluate, Stage::Probe] {
        let manifest = |c: &Catalog| Manifest::read(&c.manifest(stage), "test").expect("manifest");
        let files = |c: &Catalog| -> Vec<(String, String)> {
            manifest(c)
                .outputs
                .into_iter()
                .filter(|o| o.name != "summary")
                .map(|o| (o.name, o.hash))
                .collect()
        };
        let (a, b) = (files(&one), files(two));
        assert!(a.len() >= 3, "{stage:?}: {a:?}");
        assert_eq!(a, b, "{stage:?} at 1 vs 2 threads");
    }
}

#[test]
fn probe_rejects_a_fine_tuned_model_of_another_shape() {
    tiny_analysed();
    let (dir, _) = tiny();
    // A copy of the run, so the shared one stays intact for the other tests.
    let copy = copy_dir(&dir.path().join("tiny"));
    let catalog = Catalog::new(copy.path(), "tiny", 0);
    let cfg = catalog
        .variant_dir(Stage::Finetune, "ssft-small")
        .join("config.json");
    let mut bad: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).expect("config")).expect("json");
    bad["n_embd"] = serde_json::json!(24);
    std::fs::write(&cfg, bad.to_string()).expect("write");
    let before = Manifest::read(&catalog.manifest(Stage::Probe), "probe").expect("manifest");
    let out = study(&[
        "--data-root",
        copy.path().to_str().expect("utf-8"),
        "probe",
        "--preset",
        "tiny",
    ]);
    fails_with(&out, &["ssft-small", "shape", "make finetune"]);
    let after = Manifest::read(&catalog.manifest(Stage::Probe), "probe").expect("manifest");
    assert_eq!(
        before.outputs, after.outputs,
        "the old outputs are untouched"
    );
    assert!(
        !catalog
            .stage_dir(Stage::Probe)
            .with_extension("tmp")
            .exists(),
        "nothing half-written"
    );
}

#[test]
fn variants_of_an_older_it_model_are_refused_downstream() {
    tiny_analysed();
    let (dir, _) = tiny();
    let copy = copy_dir(&dir.path().join("tiny"));
    let root = copy.path().to_str().expect("utf-8");
    // Pre-training runs again with another config: a new IT model beside the old variants.
    ok(&study(&[
        "--data-root",
        root,
        "pretrain",
        "--preset",
        "tiny",
        "--set",
        "steps=61",
    ]));
    for stage in ["evaluate", "probe", "spectra"] {
        let out = study(&["--data-root", root, stage, "--preset", "tiny"]);
        fails_with(
            &out,
            &[
                "ssft-medium",
                "another IT model",
                "make finetune VARIANTS=ssft-medium",
            ],
        );
    }
    // A path is not a variant name.
    let out = study(&[
        "--data-root",
        root,
        "evaluate",
        "--preset",
        "tiny",
        "--variants",
        "../02_pretrain",
    ]);
    fails_with(&out, &["../02_pretrain", "not paths"]);
}

#[test]
fn seeds_combine_every_figure_quantity_and_a_missing_seed_names_the_fix() {
    tiny_analysed();
    let (dir, catalog) = tiny();
    let root = tempfile::tempdir().expect("tempdir");
    for seed in [0, 3] {
        let to = root.path().join("tiny").join(format!("seed-{seed}"));
        std::fs::create_dir_all(to.parent().expect("parent")).expect("mkdir");
        cp_r(&dir.path().join("tiny").join("seed-0"), &to);
    }
    let r = root.path().to_str().expect("utf-8");
    ok(&study(&[
        "--data-root",
        r,
        "seeds",
        "--preset",
        "tiny",
        "--seeds",
        "3,0",
    ]));
    let path = root.path().join("tiny/seeds/seeds.parquet");
    let df =
        study::artifacts::read_parquet(&path, &study::spectra::schema::<study::spectra::SeedRow>())
            .expect("seeds table");
    let rows: Vec<study::spectra::SeedRow> = study::spectra::rows_of(&df).expect("rows");
    let t = study::spectra::Tables::read(catalog).expect("seed 0's tables");
    let sep = t
        .tau
        .iter()
        .find(|r| {
            r.model == "dpo-medium"
                && r.metric == "l2"
                && r.set == "std"
                && r.group == "unsafe"
                && r.layer == 1
        })
        .expect("τ row")
        .separation;
    let combined = rows
        .iter()
        .find(|r| {
            r.table == "tau"
                && r.model == "dpo-medium"
                && r.key == "layer=1 set=std group=unsafe metric=l2"
                && r.quantity == "separation"
        })
        .expect("combined τ separation");
    assert_eq!((combined.n_seeds, combined.mean), (2, sep), "{combined:?}");
    assert!(
        rows.iter().all(|r| r.n_seeds == 2 && r.sd.abs() < 1e-12),
        "two copies of one seed: every quantity in both, no spread"
    );
    for table in [
        "tau",
        "spectrum_summary",
        "column_summary",
        "gain",
        "direction",
        "lipschitz_summary",
        "interpolation",
    ] {
        assert!(rows.iter().any(|r| r.table == table), "no {table} quantity");
    }
    let before = std::fs::read(&path).expect("read");
    let out = study(&[
        "--data-root",
        r,
        "seeds",
        "--preset",
        "tiny",
        "--seeds",
        "0,5",
    ]);
    fails_with(&out, &["seed 5", "make spectra SEED=5"]);
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the old table is untouched"
    );
}

#[test]
fn a_pretrain_summary_without_its_bar_is_an_error_not_a_default() {
    tiny_evaluated();
    let (dir, _) = tiny();
    let copy = copy_dir(&dir.path().join("tiny"));
    let catalog = Catalog::new(copy.path(), "tiny", 0);
    let path = catalog.stage_file(Stage::Pretrain, "summary.json");
    let mut summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("summary")).expect("json");
    summary
        .as_object_mut()
        .expect("object")
        .remove("meets_bar")
        .expect("the field exists");
    std::fs::write(&path, summary.to_string()).expect("write");
    let root = copy.path().to_str().expect("utf-8");
    let out = study(&[
        "--data-root",
        root,
        "finetune",
        "--preset",
        "tiny",
        "--variant",
        "ssft-medium",
        "--force",
    ]);
    fails_with(&out, &["summary.json", "meets_bar", "make pretrain"]);
}
