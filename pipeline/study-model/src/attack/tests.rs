//! End-to-end tests of the attack: budgets, errors, and the perturbation placement.

#![allow(clippy::unwrap_used)]

use candle_core::{Device, Tensor};
use study::grammar::vocab::{EOT, NULL_LETTER, Token};

use super::fixtures::*;
use super::*;

#[test]
fn every_soft_token_stays_inside_its_l2_budget() {
    let m = model();
    let rows: Vec<Vec<Token>> = vec![row(4, 1), row(5, 2), row(4, 9), row(6, 4)];
    let ar: Vec<AttackRow<'_>> = rows
        .iter()
        .map(|r| AttackRow {
            row: r,
            text_len: r.iter().skip(6).take_while(|&&t| t != EOT).count(),
        })
        .collect();
    for (seed, factor) in [(1, 0.05), (2, 0.5), (3, 3.0), (4, 1.0), (5, 0.2)] {
        let spec = AttackSpec {
            n_soft: 3,
            steps: 6,
            factor,
            mode: AttackMode::Intended,
            seed,
            iterate: AttackIterate::Last,
        };
        let out = attack(&m, &ar, &spec).unwrap();
        for o in &out {
            assert_eq!(o.delta.len(), 3 * 16);
            for tok in o.delta.chunks(16) {
                let n = f64::from(tok.iter().map(|x| x * x).sum::<f32>().sqrt());
                assert!(n <= o.eps * (1.0 + 1e-4), "‖δ‖ {n} > ε {}", o.eps);
            }
            assert!(o.final_loss.is_finite() && o.eps > 0.0);
        }
        // Normalised steps of size 2ε/T for T steps can reach the boundary: a large budget
        // is used (the projection is active), a tiny one is saturated.
        if factor == 0.05 {
            assert!(out.iter().all(|o| o.delta_norm_max > 0.5 * o.eps));
        }
    }
    // Same seed, same result; literal mode clamps each coordinate instead.
    let spec = AttackSpec {
        n_soft: 3,
        steps: 4,
        factor: 0.5,
        mode: AttackMode::Literal,
        seed: 1,
        iterate: AttackIterate::Last,
    };
    let a = attack(&m, &ar, &spec).unwrap();
    let b = attack(&m, &ar, &spec).unwrap();
    assert_eq!(a[0].delta, b[0].delta);
    for o in &a {
        assert_eq!(o.delta.len(), 4 * 16, "literal: soft tokens = steps");
        assert!(
            o.delta
                .iter()
                .all(|&v| f64::from(v.abs()) <= o.eps * (1.0 + 1e-5))
        );
    }
}

#[test]
fn too_many_soft_tokens_is_a_clear_error() {
    let m = model();
    let r = row(6, 0);
    let spec = AttackSpec {
        n_soft: 9,
        steps: 2,
        factor: 1.0,
        mode: AttackMode::Intended,
        seed: 0,
        iterate: AttackIterate::Last,
    };
    let e = attack(
        &m,
        &[AttackRow {
            row: &r,
            text_len: 6,
        }],
        &spec,
    )
    .unwrap_err();
    assert!(e.to_string().contains("lower attack.n_soft"), "{e}");
}

/// Perturbation: every vector inside its L2 ball; the attacked input has the clean row's
/// length, EOT where it was, the chosen positions moved by exactly δ and every other
/// position's embedding bit-identical to the clean one; the reported loss is that input's.
#[test]
fn perturbation_stays_in_budget_and_moves_no_position() {
    let m = model();
    let rows: Vec<Vec<Token>> = vec![row(4, 1), row(5, 2), row(4, 9), row(6, 4)];
    let ar = attack_rows(&rows);
    let d = 16;
    for positions in POSITIONS {
        let placement = Placement::Perturb(positions);
        for (seed, factor) in [(1, 0.05), (2, 0.5), (3, 3.0), (4, 1.0), (5, 0.2)] {
            let spec = AttackSpec {
                n_soft: 3,
                steps: 6,
                factor,
                mode: AttackMode::Intended,
                seed,
                iterate: AttackIterate::Last,
            };
            let out = attack_placed(&m, &ar, &spec, placement).unwrap();
            for (r, o) in ar.iter().zip(&out) {
                let l = r.text_len;
                let range = positions.range(l);
                assert!(range.end <= l + 6, "only prompt positions");
                assert_eq!(o.delta.len(), range.len() * d);
                for v in o.delta.chunks(d) {
                    assert!(l2(v) <= o.eps * (1.0 + 1e-4), "‖δ‖ {} > ε {}", l2(v), o.eps);
                }
                assert!(o.final_loss.is_finite() && o.eps > 0.0);
                if factor == 0.05 {
                    assert!(o.delta_norm_max > 0.5 * o.eps, "the budget is used");
                }
                let x = adversarial_input(&m, r, &spec, placement, &o.delta).unwrap();
                let clean = clean_embeddings(&m, r);
                assert_eq!(x.dims(), &[1, 2 * l + 7, d], "length unchanged");
                let eot = placement.eot_position(&spec, l);
                assert_eq!((eot, r.row[eot]), (l + 6, EOT), "EOT does not move");
                let xv: Vec<Vec<f32>> = x.squeeze(0).unwrap().to_vec2().unwrap();
                for (p, (got, want)) in xv.iter().zip(&clean).enumerate() {
                    if range.contains(&p) {
                        let dp = &o.delta[(p - range.start) * d..(p - range.start + 1) * d];
                        let moved: Vec<f32> = want.iter().zip(dp).map(|(a, b)| a + b).collect();
                        assert_eq!(bits(got), bits(&moved), "position {p} = clean + δ");
                        assert_ne!(bits(got), bits(want), "position {p} is perturbed");
                    } else {
                        assert_eq!(bits(got), bits(want), "position {p} untouched");
                    }
                }
                let (loss, _, _) = readout(&m, r, &x, eot);
                assert!(
                    (loss - o.final_loss).abs() <= 1e-4 * (1.0 + loss.abs()),
                    "{loss} vs {}",
                    o.final_loss
                );
            }
        }
    }
    // Literal mode clamps each coordinate of the perturbation instead; same seed, same δ.
    let spec = AttackSpec {
        n_soft: 3,
        steps: 4,
        factor: 0.5,
        mode: AttackMode::Literal,
        seed: 1,
        iterate: AttackIterate::Last,
    };
    let placement = Placement::Perturb(PerturbPositions::Prefix);
    let a = attack_placed(&m, &ar, &spec, placement).unwrap();
    let b = attack_placed(&m, &ar, &spec, placement).unwrap();
    assert_eq!(a[0].delta, b[0].delta);
    for o in &a {
        assert_eq!(o.delta.len(), 6 * d, "perturbation: not tied to the steps");
        assert!(
            o.delta
                .iter()
                .all(|&v| f64::from(v.abs()) <= o.eps * (1.0 + 1e-5))
        );
    }
    // A δ of the wrong size is refused.
    let e = adversarial_input(&m, &ar[0], &spec, placement, &[0.0; 5]).unwrap_err();
    assert!(e.to_string().contains("6 × 16"), "{e}");
}

/// With a large budget the perturbation lowers the targeted loss below its value at the
/// initialisation (same seed, 0 steps) for every row and position set, by more than a nat on
/// average, and it can succeed: some rows' greedy output becomes the target exactly
/// (checked by decoding the attacked input token by token, not only teacher-forced).
#[test]
fn perturbation_lowers_the_targeted_loss_and_can_succeed() {
    let m = sharp(25.0);
    let rows: Vec<Vec<Token>> = vec![row(4, 1), row(5, 2), row(4, 9), row(6, 4), row(3, 5)];
    let ar = attack_rows(&rows);
    let mean = |o: &[AttackOutcome]| o.iter().map(|o| o.final_loss).sum::<f64>() / 5.0;
    for positions in POSITIONS {
        let placement = Placement::Perturb(positions);
        let start = AttackSpec {
            n_soft: 3,
            steps: 0,
            factor: 4.0,
            mode: AttackMode::Intended,
            seed: 11,
            iterate: AttackIterate::Last,
        };
        let spec = AttackSpec { steps: 30, ..start };
        let before = attack_placed(&m, &ar, &start, placement).unwrap();
        let after = attack_placed(&m, &ar, &spec, placement).unwrap();
        for (b, a) in before.iter().zip(&after) {
            assert!(
                a.final_loss < b.final_loss,
                "{positions:?}: {} → {}",
                b.final_loss,
                a.final_loss
            );
        }
        assert!(
            mean(&before) - mean(&after) > 1.0,
            "{positions:?}: mean loss {} → {}",
            mean(&before),
            mean(&after)
        );
    }
    let placement = Placement::Perturb(PerturbPositions::AllPrompt);
    let spec = AttackSpec {
        n_soft: 3,
        steps: 100,
        factor: 10.0,
        mode: AttackMode::Intended,
        seed: 11,
        iterate: AttackIterate::Last,
    };
    let out = attack_placed(&m, &ar, &spec, placement).unwrap();
    assert!(out.iter().any(|o| o.success), "no row succeeds");
    for (r, o) in ar.iter().zip(&out) {
        let l = r.text_len;
        let x = adversarial_input(&m, r, &spec, placement, &o.delta).unwrap();
        let target: Vec<u32> = r.row[l + 7..2 * l + 8]
            .iter()
            .map(|&t| u32::from(t))
            .collect();
        let decoded = greedy(&m, &x, placement.eot_position(&spec, l), l);
        assert_eq!(o.success, decoded == target, "row with L = {l}");
        assert_eq!(o.null_first, decoded[0] == u32::from(NULL_LETTER));
        assert_eq!(o.success, o.token_acc == 1.0);
    }
}

/// As the budget goes to 0 the perturbed model is the clean one: success, refusal, token
/// accuracy and loss equal the clean teacher-forced pass (δ = 0 exactly at budget 0).
#[test]
fn perturbation_with_a_vanishing_budget_is_the_clean_model() {
    let m = sharp(25.0);
    let rows: Vec<Vec<Token>> = vec![row(4, 1), row(5, 2), row(4, 9), row(6, 4), row(3, 5)];
    let ar = attack_rows(&rows);
    for factor in [0.0, 1e-7] {
        for positions in POSITIONS {
            let spec = AttackSpec {
                n_soft: 3,
                steps: 5,
                factor,
                mode: AttackMode::Intended,
                seed: 2,
                iterate: AttackIterate::Last,
            };
            let out = attack_placed(&m, &ar, &spec, Placement::Perturb(positions)).unwrap();
            for (r, o) in ar.iter().zip(&out) {
                let l = r.text_len;
                let ids: Vec<u32> = r.row[..2 * l + 7].iter().map(|&x| u32::from(x)).collect();
                let x = m
                    .embed(&Tensor::from_vec(ids, (1, 2 * l + 7), &Device::Cpu).unwrap())
                    .unwrap();
                let (loss, tf, target) = readout(&m, r, &x, l + 6);
                let correct = tf.iter().zip(&target).filter(|(a, b)| a == b).count();
                assert_eq!(o.success, tf == target);
                assert_eq!(o.null_first, tf[0] == u32::from(NULL_LETTER));
                assert_eq!(o.token_acc, correct as f64 / (l + 1) as f64);
                assert!(
                    (o.final_loss - loss).abs() <= 1e-5,
                    "{} vs {loss}",
                    o.final_loss
                );
                if factor == 0.0 {
                    assert!(o.delta.iter().all(|&v| v == 0.0));
                }
            }
        }
    }
}
