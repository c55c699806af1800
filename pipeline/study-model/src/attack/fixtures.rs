//! Test fixtures of the attack's tests: a tiny model, rows, and readouts of an attacked input.

#![allow(clippy::unwrap_used)]

use candle_core::{D, Device, Tensor};
use study::grammar::layout;
use study::grammar::vocab::{EOT, Token};

use super::{AttackRow, PerturbPositions};
use crate::gpt::{Gpt, GptConfig, Params};

pub(super) fn model() -> Gpt {
    let cfg = GptConfig {
        n_layer: 2,
        n_head: 2,
        n_embd: 16,
        block_size: 27,
        vocab_size: 59,
        mlp_ratio: 4,
        gelu: crate::gpt::Gelu::Exact,
    };
    Gpt::new(cfg, Params::init(&cfg, 3, &Device::Cpu).unwrap()).unwrap()
}

pub(super) fn row(l: usize, seed: u8) -> Vec<Token> {
    let text: Vec<Token> = (0..l as u8).map(|i| 22 + (i * 7 + seed) % 30).collect();
    let b1: Vec<Token> = text.iter().map(|t| 22 + (t - 22 + 5) % 30).collect();
    layout::row(&[1, 2, 0, 3], &text, &b1, &b1, 28)
}

pub(super) fn attack_rows(rows: &[Vec<Token>]) -> Vec<AttackRow<'_>> {
    rows.iter()
        .map(|r| AttackRow {
            row: r,
            text_len: r.iter().skip(6).take_while(|&&t| t != EOT).count(),
        })
        .collect()
}

pub(super) fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

pub(super) fn l2(v: &[f32]) -> f64 {
    f64::from(v.iter().map(|x| x * x).sum::<f32>().sqrt())
}

/// Clean embeddings (T, d) of the row up to its first output (`2L + 7` positions).
pub(super) fn clean_embeddings(m: &Gpt, r: &AttackRow<'_>) -> Vec<Vec<f32>> {
    let t = 2 * r.text_len + 7;
    let ids: Vec<u32> = r.row[..t].iter().map(|&x| u32::from(x)).collect();
    m.embed(&Tensor::from_vec(ids, (1, t), &Device::Cpu).unwrap())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// The targeted loss, teacher-forced argmax and targets read from the logits of input
/// embeddings `x` (1, T, d) with EOT at `eot`.
pub(super) fn readout(
    m: &Gpt,
    r: &AttackRow<'_>,
    x: &Tensor,
    eot: usize,
) -> (f64, Vec<u32>, Vec<u32>) {
    let l = r.text_len;
    let out = m
        .forward_embeds(x, None)
        .unwrap()
        .narrow(1, eot, l + 1)
        .unwrap();
    let target: Vec<u32> = r.row[l + 7..2 * l + 8]
        .iter()
        .map(|&t| u32::from(t))
        .collect();
    let tt = Tensor::from_vec(target.clone(), (1, l + 1), &Device::Cpu).unwrap();
    let (loss, _) =
        crate::gpt::cross_entropy(&out, &tt, u32::from(study::grammar::vocab::PAD)).unwrap();
    let tf = out
        .argmax(D::Minus1)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    (f64::from(loss.to_scalar::<f32>().unwrap()), tf, target)
}

pub(super) const POSITIONS: [PerturbPositions; 3] = [
    PerturbPositions::Prefix,
    PerturbPositions::Operators,
    PerturbPositions::AllPrompt,
];

/// [`model`] with every weight but the layer norms' multiplied by `k`: logits that
/// respond to the input (the ×1 initialisation is nearly uniform, loss ≈ ln 59 whatever the
/// input), so an attack has something to move.
pub(super) fn sharp(k: f64) -> Gpt {
    let m = model();
    let map: std::collections::BTreeMap<String, Tensor> = m
        .params()
        .iter()
        .map(|(n, v)| {
            let t = v.as_tensor().clone();
            let t = if n.contains("ln_") {
                t
            } else {
                (t * k).unwrap()
            };
            (n.to_owned(), t)
        })
        .collect();
    Gpt::new(*m.config(), Params::from_tensors(m.config(), map).unwrap()).unwrap()
}

/// Greedy decoding of `l + 1` tokens from input embeddings `x` (1, T, d) cut after EOT.
pub(super) fn greedy(m: &Gpt, x: &Tensor, eot: usize, l: usize) -> Vec<u32> {
    let mut x = x.narrow(1, 0, eot + 1).unwrap();
    let mut out = Vec::new();
    for _ in 0..=l {
        let t = x.dim(1).unwrap();
        let logits = m.forward_embeds(&x, None).unwrap();
        let next: u32 = logits
            .narrow(1, t - 1, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .argmax(0)
            .unwrap()
            .to_scalar()
            .unwrap();
        out.push(next);
        let e = m
            .embed(&Tensor::from_vec(vec![next], (1, 1), &Device::Cpu).unwrap())
            .unwrap();
        x = Tensor::cat(&[&x, &e], 1).unwrap();
    }
    out
}
