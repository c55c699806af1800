//! Planted-signal and round-trip tests of the spectra stage's analyses and tables.

use super::*;

const CONTROL: [&str; 5] = ["observed", "chance_mean", "chance_sd", "ratio", "z"];

fn has_control<T: TableRow>() -> bool {
    CONTROL
        .iter()
        .all(|c| T::COLUMNS.iter().any(|(n, _)| n == c))
}

use crate::mechanism::testing::{N, planted, random_update};
use crate::probe::{Activation, ActivationKey};

/// One model's table: `safe`/`unsafe` rows split half reference (std_safe), half test
/// (std_unsafe), stored both as `mlp_in@eot` and `mlp_post@output` at layer 0.
fn table(model: &str, safe: &Matrix, unsafe_acts: &Matrix) -> ActivationTable {
    let mut keys = Vec::new();
    for (group, m) in [(Group::Safe, safe), (Group::Unsafe, unsafe_acts)] {
        for i in 0..m.rows() {
            let (set, split) = if i < N / 2 {
                ("std_safe", Split::Reference)
            } else {
                ("std_unsafe", Split::Test)
            };
            let key = ActivationKey {
                set: set.into(),
                group,
                split,
                row: i as u32,
                sample_id: i as u32,
            };
            for (hook, pool) in [(Hook::MlpIn, Pool::Eot), (Hook::MlpPost, Pool::Output)] {
                let values = m.row(i).iter().map(|&x| x as f32).collect();
                keys.push((
                    model.to_owned(),
                    key.clone(),
                    Activation {
                        layer: 0,
                        hook,
                        pool,
                        values,
                    },
                ));
            }
        }
    }
    ActivationTable { keys }
}

fn lip(model: &str, group: Group, v: f64) -> LipschitzRow {
    LipschitzRow {
        model: model.into(),
        set: "std_unsafe".into(),
        group,
        row: 0,
        sample_id: 0,
        prefix_len: 12,
        grad_fro: v,
    }
}

#[test]
fn a_planted_update_is_found_and_a_random_one_is_chance() {
    let p = planted(&[3.0, 2.0], 11).expect("planted");
    let (rand_st, rand_it) = random_update(12).expect("random");
    let it = vec![MlpWeights {
        c_fc: p.w_it.clone(),
        c_proj: rand_it,
    }];
    let variants = BTreeMap::from([(
        "ssft-medium".to_owned(),
        vec![MlpWeights {
            c_fc: p.w_st.clone(),
            c_proj: rand_st,
        }],
    )]);
    // The IT model does not separate: its unsafe rows are drawn like its safe rows.
    let it_unsafe = Matrix::from_fn(p.safe.rows(), p.safe.cols(), |i, j| {
        p.safe.get((i + 7) % p.safe.rows(), j) * 1.01
    });
    let activations = BTreeMap::from([
        ("it".to_owned(), table("it", &p.safe, &it_unsafe)),
        (
            "ssft-medium".to_owned(),
            table("ssft-medium", &p.safe, &p.unsafe_acts),
        ),
    ]);
    let lipschitz = vec![
        lip("it", Group::Safe, 1.0),
        lip("it", Group::Unsafe, 2.0),
        lip("ssft-medium", Group::Unsafe, 0.5),
        lip("ssft-medium", Group::Safe, 1.5),
    ];
    let sets = vec!["std_safe".to_owned(), "std_unsafe".to_owned()];
    // α = 0 is the IT model's activations, α = 1 the fine-tuned model's.
    let interpolation = BTreeMap::from([
        (
            "ssft-medium@1".to_owned(),
            table("ssft-medium@1", &p.safe, &p.unsafe_acts),
        ),
        (
            "ssft-medium@0".to_owned(),
            table("ssft-medium@0", &p.safe, &it_unsafe),
        ),
    ]);
    let behaviour: Vec<BehaviourRow> = [("ssft-medium@0", 0.1, 0.9), ("ssft-medium@1", 0.8, 0.85)]
        .into_iter()
        .flat_map(|(m, refusal, instruct)| {
            [
                behaviour_row(m, "std_unsafe", Metric::Refusal, refusal),
                behaviour_row(m, "std_safe", Metric::Instruct, instruct),
            ]
        })
        .collect();
    let inputs = Inputs {
        it: &it,
        variants: &variants,
        activations: &activations,
        adversarial: &[],
        lipschitz: &lipschitz,
        sets: &sets,
        reference_sets: &sets,
        interpolation: &interpolation,
        interpolation_behaviour: &behaviour,
    };
    let cfg = SpectraConfig {
        seed: 3,
        control_draws: 24,
        tau: crate::config::spectra::TauConfig {
            references: TauReferences::Pooled,
            first_units: None,
        },
        row_space_top_k: 5,
        direction_top_k: 3,
        lipschitz_bins: 4,
    };
    let t = analyse(&inputs, &cfg).expect("analyses run");
    let col = |m: &str| {
        t.column_summary
            .iter()
            .find(|r| r.matrix == m)
            .expect("summary")
    };
    let (fc, proj) = (col("c_fc"), col("c_proj"));
    assert_eq!(fc.k, 2, "two planted directions carry 90 % of ΔW's energy");
    assert!(
        fc.mean_null_projection.ratio > 3.0 && fc.mean_null_projection.z > 5.0,
        "{fc:?}"
    );
    assert!(
        (0.8..1.25).contains(&proj.mean_null_projection.ratio),
        "random ΔW is chance: {proj:?}"
    );
    let sp = t
        .spectrum_summary
        .iter()
        .find(|r| r.matrix == "c_fc")
        .expect("spectrum");
    assert!((sp.top_energy_share - 9.0 / 13.0).abs() < 0.01, "{sp:?}");
    let gain = |g: &str| {
        t.gain
            .iter()
            .find(|r| r.set == "std" && r.group == g)
            .expect("gain")
    };
    assert!(gain("unsafe").mean_gain.observed > 100.0 * gain("safe").mean_gain.observed);
    assert!(gain("unsafe").mean_gain.ratio > 3.0, "{:?}", gain("unsafe"));
    let sep = |m: &str| {
        t.tau
            .iter()
            .find(|r| r.model == m && r.metric == "l2" && r.group == "unsafe")
            .expect("τ")
            .separation
    };
    assert!(
        sep("ssft-medium") > 2.0,
        "planted clusters separate: {}",
        sep("ssft-medium")
    );
    assert!(
        sep("it").abs() < 0.5,
        "the IT model does not: {}",
        sep("it")
    );
    let d = &t.direction[0];
    assert!(
        d.max_abs_cosine.observed > 0.95 && d.max_abs_cosine.ratio > 3.0,
        "{d:?}"
    );
    let counts: u64 = t.lipschitz_hist.iter().map(|h| h.count).sum();
    assert_eq!(counts, 4);
    assert_eq!(t.lipschitz_summary.len(), 4, "two models × two groups");
    let alphas: Vec<f64> = t.interpolation.iter().map(|r| r.alpha).collect();
    assert_eq!(alphas, [0.0, 1.0], "one row per α, in α order");
    let (a0, a1) = (&t.interpolation[0], &t.interpolation[1]);
    assert_eq!(a0.model, "ssft-medium");
    assert!((a0.tau_separation - sep("it")).abs() < 1e-12, "{a0:?}");
    assert!(
        (a1.tau_separation - sep("ssft-medium")).abs() < 1e-12,
        "{a1:?}"
    );
    assert_eq!((a0.refusal, a0.instruct, a1.refusal), (0.1, 0.9, 0.8));
    assert!(a0.refusal_b_only.is_nan(), "no b_only cell: NaN, not 0");
    let no_behaviour = Inputs {
        interpolation_behaviour: &behaviour[..2],
        ..inputs
    };
    let err = analyse(&no_behaviour, &cfg).expect_err("ssft-medium@1 has no behaviour");
    assert!(
        err.to_string().contains("ssft-medium@1") && err.to_string().contains("make probe"),
        "{err}"
    );
}

#[test]
fn seeds_combine_to_mean_and_a_student_t_interval() {
    let lip = |model: &str, median: f64| LipschitzSummary {
        model: model.into(),
        group: "unsafe".into(),
        n: 10,
        mean: median,
        median,
        q05: 0.0,
        q95: 1.0,
    };
    let seed = |median: f64, extra: bool| Tables {
        lipschitz_summary: std::iter::once(lip("it", median))
            .chain(extra.then(|| lip("dpo-medium", 7.0)))
            .collect(),
        ..Tables::default()
    };
    let rows =
        combine_seeds(&[seed(1.0, true), seed(2.0, false), seed(6.0, false)]).expect("combined");
    let get = |model: &str, q: &str| {
        rows.iter()
            .find(|r| r.model == model && r.quantity == q)
            .expect("row")
    };
    let m = get("it", "median");
    assert_eq!(
        (m.table.as_str(), m.key.as_str(), m.n_seeds),
        ("lipschitz_summary", "group=unsafe", 3)
    );
    assert!((m.mean - 3.0).abs() < 1e-12);
    // sd = √((4 + 1 + 9) / 2) = √7; t(0.975, 2) = 4.302653 (tables); half = t·sd/√3.
    assert!((m.sd - 7f64.sqrt()).abs() < 1e-12, "{m:?}");
    let half = 4.302_652_729_911 * 7f64.sqrt() / 3f64.sqrt();
    assert!(
        (m.ci95_hi - 3.0 - half).abs() < 1e-6 && (3.0 - m.ci95_lo - half).abs() < 1e-6,
        "{m:?}"
    );
    let one = get("dpo-medium", "median");
    assert_eq!((one.n_seeds, one.mean), (1, 7.0));
    assert!(
        one.sd.is_nan() && one.ci95_lo.is_nan(),
        "one seed has no interval: {one:?}"
    );
}

fn behaviour_row(model: &str, set: &str, metric: Metric, value: f64) -> BehaviourRow {
    BehaviourRow {
        model: model.parse().expect("model id"),
        set: set.parse().expect("evaluation set"),
        subset: Subset::All,
        metric,
        decoding: crate::evaluation::Decoding::Greedy,
        score: crate::evaluation::Score::ExactMatch,
        value,
        n: 10,
    }
}

#[test]
fn frames_follow_their_declared_columns() {
    let row = GainRow {
        model: "ssft-medium".into(),
        layer: 2,
        set: "std".into(),
        group: "unsafe".into(),
        n: 5,
        sd: 0.5,
        mean_gain: Control {
            observed: 2.0,
            chance_mean: 0.0,
            chance_sd: 0.1,
            ratio: f64::INFINITY,
            z: 20.0,
        },
    };
    let df = frame(&[row]).expect("frame");
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let want: Vec<&str> = GainRow::COLUMNS.iter().map(|c| c.0).collect();
    assert_eq!(names, want);
    assert!(
        df.column("ratio")
            .expect("col")
            .f64()
            .expect("f64")
            .get(0)
            .expect("value")
            .is_nan(),
        "∞ is stored as undefined"
    );
    assert!(
        has_control::<GainRow>() && has_control::<ColumnSummary>() && has_control::<DirectionRow>()
    );
    let back: Vec<GainRow> = rows_of(&df).expect("rows");
    assert!(
        back[0].mean_gain.ratio.is_nan() && back[0].mean_gain.observed == 2.0 && back[0].n == 5
    );
    let empty = frame::<TauRow>(&[]).expect("empty frame");
    assert_eq!(empty.width(), TauRow::COLUMNS.len());
    assert_eq!(empty.height(), 0);
}
