//! The probe passes of the mechanistic study (reference/analysis_spec.md §1–§5): activations at
//! the hooks of [`crate::gpt::Trace`] pooled over the positions the analyses read, the local
//! Lipschitz proxy (§4.2), and the MLP weights as [`study::mechanism::Matrix`].

use candle_core::{D, DType, Result, Tensor, Var};
use study::config::probe::Dump;
use study::grammar::layout::Spans;
use study::mechanism::Matrix;
use study::mechanism::interpolation::interpolate_values;
use study::probe::{Activation, Hook, Pool};
use study::spectra::{MlpWeights, ModelWeights};

use crate::gpt::{Gpt, GptConfig, LayerTrace, Params, Trace};

/// Rows per forward pass.
const CHUNK: usize = 256;

/// One prompt to probe: input ids (all of one length within a call) and its text length L.
#[derive(Debug, Clone)]
pub struct ProbeRow<'a> {
    /// Input ids (model coordinates).
    pub x: &'a [u32],
    /// Text length L; EOT sits at `L + 6` (plus `shift`).
    pub text_len: usize,
}

impl<'a> From<&'a study::training::Example> for ProbeRow<'a> {
    /// The example's input ids and text length.
    fn from(e: &'a study::training::Example) -> Self {
        Self {
            x: &e.x,
            text_len: e.text_len,
        }
    }
}

/// The positions a pool averages, for a row whose EOT is at `eot` and whose first output has
/// `text_len` letters, in a sequence of `t` positions: EOT alone, or EOT and the first
/// teacher-forced letters, at most `output_positions` and never past the first output.
pub fn pool_positions(
    pool: Pool,
    eot: usize,
    text_len: usize,
    output_positions: usize,
    t: usize,
) -> std::ops::Range<usize> {
    let n = match pool {
        Pool::Eot => 1,
        Pool::Output => output_positions.min(text_len + 1),
    };
    eot..(eot + n).min(t)
}

fn hook_tensor(layer: &LayerTrace, hook: Hook) -> &Tensor {
    match hook {
        Hook::MlpIn => &layer.mlp_in,
        Hook::MlpPre => &layer.mlp_pre,
        Hook::MlpPost => &layer.mlp_post,
        Hook::MlpOut => &layer.mlp_out,
        Hook::BlockOut => &layer.block_out,
    }
}

/// The pooled activations of a traced pass, per row: every layer × dump.
fn pooled(
    trace: &Trace,
    eots: &[usize],
    text_lens: &[usize],
    dumps: &[Dump],
    output_positions: usize,
) -> Result<Vec<Vec<Activation>>> {
    let mut out: Vec<Vec<Activation>> = vec![Vec::new(); eots.len()];
    for (l, layer) in trace.layers.iter().enumerate() {
        for dump in dumps {
            let values = hook_tensor(layer, dump.hook)
                .to_dtype(DType::F32)?
                .to_vec3::<f32>()?;
            for (b, rows) in values.iter().enumerate() {
                let range = pool_positions(
                    dump.pool,
                    eots[b],
                    text_lens[b],
                    output_positions,
                    rows.len(),
                );
                let n = range.len() as f32;
                let mut mean = vec![0f32; rows[0].len()];
                for r in &rows[range] {
                    for (m, v) in mean.iter_mut().zip(r) {
                        *m += v / n;
                    }
                }
                out[b].push(Activation {
                    layer: l as u16,
                    hook: dump.hook,
                    pool: dump.pool,
                    values: mean,
                });
            }
        }
    }
    Ok(out)
}

/// Activations of clean prompts, per row: every layer × dump (EOT at `L + 6`).
pub fn activations(
    model: &Gpt,
    rows: &[ProbeRow<'_>],
    dumps: &[Dump],
    output_positions: usize,
) -> Result<Vec<Vec<Activation>>> {
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(CHUNK) {
        let t = part[0].x.len();
        if part.iter().any(|r| r.x.len() != t) {
            candle_core::bail!("probe rows of one call must have one length");
        }
        let flat: Vec<u32> = part.iter().flat_map(|r| r.x.iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (part.len(), t), model.device())?;
        let mut trace = Trace::default();
        model.forward(&ids, Some(&mut trace))?;
        let eots: Vec<usize> = part.iter().map(|r| Spans::new(r.text_len).eot()).collect();
        let lens: Vec<usize> = part.iter().map(|r| r.text_len).collect();
        out.extend(pooled(&trace, &eots, &lens, dumps, output_positions)?);
    }
    Ok(out)
}

/// Activations of inputs given as embeddings (1, T, d) each — the attacked inputs of
/// [`crate::attack::adversarial_input`] — with EOT at `eots[i]`; inputs of one length run as one
/// batch, and the result keeps the input order.
pub fn activations_of_embeddings(
    model: &Gpt,
    inputs: &[Tensor],
    eots: &[usize],
    text_lens: &[usize],
    dumps: &[Dump],
    output_positions: usize,
) -> Result<Vec<Vec<Activation>>> {
    let mut out: Vec<Option<Vec<Activation>>> = vec![None; inputs.len()];
    let mut lens: Vec<usize> = inputs.iter().map(|x| x.dim(1)).collect::<Result<_>>()?;
    let by_len = lens.clone();
    lens.sort_unstable();
    lens.dedup();
    for t in lens {
        let idx: Vec<usize> = (0..inputs.len()).filter(|&i| by_len[i] == t).collect();
        for part in idx.chunks(CHUNK) {
            let batch = Tensor::cat(&part.iter().map(|&i| &inputs[i]).collect::<Vec<_>>(), 0)?;
            let mut trace = Trace::default();
            model.forward_embeds(&batch, Some(&mut trace))?;
            let e: Vec<usize> = part.iter().map(|&i| eots[i]).collect();
            let l: Vec<usize> = part.iter().map(|&i| text_lens[i]).collect();
            for (&i, acts) in part
                .iter()
                .zip(pooled(&trace, &e, &l, dumps, output_positions)?)
            {
                out[i] = Some(acts);
            }
        }
    }
    Ok(out
        .into_iter()
        .map(|o| o.expect("every input is in one length group"))
        .collect())
}

/// The Lipschitz proxy of every row (§4.2): ‖∂ max_v z_v / ∂E[0..s]‖_F, where z is the logit
/// vector at EOT (position s), E the token embeddings before positions are added, and the
/// gradient covers the s positions before EOT. Rows are independent, so one backward pass of
/// the batch's summed maxima gives every row's gradient; the maximising token is fixed at the
/// forward pass (the gradient of a max is that of its argmax).
pub fn lipschitz(model: &Gpt, rows: &[ProbeRow<'_>]) -> Result<Vec<f64>> {
    let mut out = Vec::with_capacity(rows.len());
    for part in rows.chunks(CHUNK) {
        let (b, t) = (part.len(), part[0].x.len());
        let flat: Vec<u32> = part.iter().flat_map(|r| r.x.iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (b, t), model.device())?;
        let emb = Var::from_tensor(&model.embed(&ids)?.detach())?;
        let logits = model.forward_embeds(emb.as_tensor(), None)?;
        let eots: Vec<usize> = part.iter().map(|r| Spans::new(r.text_len).eot()).collect();
        let at = |mask: &dyn Fn(usize, usize) -> bool| -> Result<Tensor> {
            let m: Vec<f32> = (0..b)
                .flat_map(|i| (0..t).map(move |p| (i, p)))
                .map(|(i, p)| if mask(i, p) { 1.0 } else { 0.0 })
                .collect();
            Tensor::from_vec(m, (b, t, 1), model.device())
        };
        let z = logits.broadcast_mul(&at(&|i, p| p == eots[i])?)?.sum(1)?; // (B, V)
        let best = z.detach().argmax_keepdim(D::Minus1)?;
        let f = z.gather(&best, 1)?.sum_all()?;
        let grads = f.backward()?;
        let g = grads
            .get(emb.as_tensor())
            .ok_or_else(|| candle_core::Error::Msg("no gradient reached the embeddings".into()))?;
        let prefix = g.broadcast_mul(&at(&|i, p| p < eots[i])?)?;
        let norms = prefix.sqr()?.sum((1, 2))?.sqrt()?.to_vec1::<f32>()?;
        out.extend(norms.into_iter().map(f64::from));
    }
    Ok(out)
}

/// The largest logit at EOT of each row for embeddings `emb` (B, T, d): the function whose
/// gradient [`lipschitz`] measures (for finite-difference checks).
pub fn max_logit_at_eot(model: &Gpt, emb: &Tensor, eot: usize) -> Result<Vec<f32>> {
    let logits = model.forward_embeds(emb, None)?;
    logits
        .narrow(1, eot, 1)?
        .squeeze(1)?
        .max(D::Minus1)?
        .to_vec1::<f32>()
}

/// The MLP weights of every layer (`c_fc.weight`, `c_proj.weight`, out × in).
pub fn mlp_weights(model: &Gpt) -> Result<ModelWeights> {
    let get = |name: String| -> Result<Matrix> {
        let w = model
            .params()
            .get(&name)?
            .as_tensor()
            .to_dtype(DType::F32)?;
        let (rows, cols) = w.dims2()?;
        let data = w.flatten_all()?.to_vec1::<f32>()?;
        Matrix::from_f32(rows, cols, &data)
            .map_err(|e| candle_core::Error::Msg(format!("{name}: {e}")))
    };
    (0..model.config().n_layer)
        .map(|l| {
            Ok(MlpWeights {
                c_fc: get(format!("transformer.h.{l}.c_fc.weight"))?,
                c_proj: get(format!("transformer.h.{l}.c_proj.weight"))?,
            })
        })
        .collect()
}

/// `it + α (st − it)` for every parameter (the α-interpolation of reference/analysis_spec.md
/// §8, by [`study::mechanism::interpolation::interpolate_values`]; α > 1 extrapolates), as a
/// model of shape `cfg`. α = 0 and α = 1 return `it` and `st` exactly (no rounding), so the
/// ends reproduce the evaluate stage's numbers. Both must have the same names and shapes (a
/// fine-tuned model of this IT model).
pub fn interpolate(cfg: &GptConfig, it: &Params, st: &Params, alpha: f64) -> Result<Params> {
    let mut tensors = std::collections::BTreeMap::new();
    for (name, w_it) in it.iter() {
        let w_st = st.get(name)?;
        if w_st.dims() != w_it.dims() {
            candle_core::bail!(
                "parameter `{name}`: fine-tuned shape {:?}, IT shape {:?}",
                w_st.dims(),
                w_it.dims()
            );
        }
        let w = if alpha == 0.0 {
            w_it.as_tensor().copy()?
        } else if alpha == 1.0 {
            w_st.as_tensor().copy()?
        } else {
            let flat = |v: &Var| v.as_tensor().flatten_all()?.to_vec1::<f32>();
            let values = interpolate_values(&flat(w_it)?, &flat(w_st)?, alpha)
                .map_err(|e| candle_core::Error::Msg(format!("parameter `{name}`: {e}")))?;
            Tensor::from_vec(values, w_it.dims(), w_it.device())?
        };
        tensors.insert(name.to_owned(), w);
    }
    if let Some((extra, _)) = st.iter().find(|(k, _)| it.get(k).is_err()) {
        candle_core::bail!("the fine-tuned model has a parameter `{extra}` the IT model lacks");
    }
    Params::from_tensors(cfg, tensors)
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::gpt::{GptConfig, Params};

    fn model() -> Gpt {
        let cfg = GptConfig {
            n_layer: 2,
            n_head: 2,
            n_embd: 16,
            block_size: 32,
            vocab_size: 24,
            mlp_ratio: 4,
            gelu: crate::gpt::Gelu::Exact,
        };
        let params = Params::init(&cfg, 7, &Device::Cpu).expect("init");
        Gpt::new(cfg, params).expect("model")
    }

    #[test]
    fn interpolation_hits_both_ends_and_extrapolates_linearly() {
        let (it, st) = (model(), {
            let cfg = *model().config();
            Gpt::new(cfg, Params::init(&cfg, 8, &Device::Cpu).expect("init")).expect("st")
        });
        let at =
            |alpha| interpolate(it.config(), it.params(), st.params(), alpha).expect("interpolate");
        let get = |p: &Params| {
            p.get("transformer.h.1.c_fc.weight")
                .expect("c_fc")
                .as_tensor()
                .flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .expect("values")
        };
        let (w_it, w_st) = (get(it.params()), get(st.params()));
        for alpha in [0.0, 0.5, 1.0, 2.0] {
            let w = get(&at(alpha));
            let worst = w
                .iter()
                .zip(w_it.iter().zip(&w_st))
                .map(|(w, (a, b))| (w - (a + alpha as f32 * (b - a))).abs())
                .fold(0f32, f32::max);
            assert!(worst < 1e-6, "α = {alpha}: off by {worst}");
        }
        assert_eq!(get(&at(0.0)), w_it, "α = 0 is the IT model exactly");
        assert_eq!(get(&at(1.0)), w_st, "α = 1 is the fine-tuned model exactly");
        let cfg = GptConfig {
            n_layer: 1,
            ..*it.config()
        };
        let other = Params::init(&cfg, 9, &Device::Cpu).expect("init");
        let err = interpolate(it.config(), it.params(), &other, 1.0).expect_err("shapes differ");
        assert!(err.to_string().contains("no parameter"), "{err}");
    }

    fn row(seed: u32, t: usize) -> Vec<u32> {
        (0..t as u32).map(|i| (i * 7 + seed * 3) % 24).collect()
    }

    #[test]
    fn pools_cover_eot_and_the_first_output_only() {
        assert_eq!(pool_positions(Pool::Eot, 12, 6, 10, 27), 12..13);
        assert_eq!(
            pool_positions(Pool::Output, 12, 6, 10, 27),
            12..19,
            "EOT + 6 letters"
        );
        assert_eq!(
            pool_positions(Pool::Output, 31, 25, 10, 158),
            31..41,
            "the paper's 10"
        );
        assert_eq!(
            pool_positions(Pool::Output, 20, 6, 10, 24),
            20..24,
            "never past T"
        );
    }

    #[test]
    fn pooled_activations_are_the_traced_tensors_at_the_positions() -> Result<()> {
        let m = model();
        let (x0, x1) = (row(1, 24), row(2, 24));
        let rows = [
            ProbeRow {
                x: &x0,
                text_len: 4,
            },
            ProbeRow {
                x: &x1,
                text_len: 4,
            },
        ];
        let dumps = [
            Dump {
                hook: Hook::MlpIn,
                pool: Pool::Eot,
            },
            Dump {
                hook: Hook::MlpPost,
                pool: Pool::Output,
            },
        ];
        let acts = activations(&m, &rows, &dumps, 3)?;
        assert_eq!(acts.len(), 2);
        assert_eq!(acts[1].len(), 2 * dumps.len(), "layers × dumps");
        // By hand for row 1, layer 1: EOT = L + 6 = 10; output = positions 10, 11, 12.
        let ids = Tensor::from_vec(x1.clone(), (1, 24), &Device::Cpu)?;
        let mut trace = Trace::default();
        m.forward(&ids, Some(&mut trace))?;
        let mlp_in = trace.layers[1].mlp_in.squeeze(0)?.to_vec2::<f32>()?;
        let post = trace.layers[1].mlp_post.squeeze(0)?.to_vec2::<f32>()?;
        let a = &acts[1][2];
        assert_eq!((a.layer, a.hook, a.pool), (1, Hook::MlpIn, Pool::Eot));
        assert_eq!(a.values, mlp_in[10]);
        let b = &acts[1][3];
        for (j, v) in b.values.iter().enumerate() {
            let want = (post[10][j] + post[11][j] + post[12][j]) / 3.0;
            assert!((v - want).abs() < 1e-6, "unit {j}: {v} vs {want}");
        }
        Ok(())
    }

    #[test]
    fn lipschitz_proxy_matches_finite_differences() -> Result<()> {
        let m = model();
        let (x0, x1) = (row(3, 20), row(5, 20));
        let rows = [
            ProbeRow {
                x: &x0,
                text_len: 4,
            },
            ProbeRow {
                x: &x1,
                text_len: 4,
            },
        ];
        let norms = lipschitz(&m, &rows)?;
        let eot = Spans::new(4).eot();
        for (k, x) in [&x0, &x1].into_iter().enumerate() {
            // Directional derivative along the gradient's own direction equals its norm:
            // the gradient from a second backward pass on this row alone, then central
            // differences of the max logit along it.
            let ids = Tensor::from_vec(x.clone(), (1, 20), &Device::Cpu)?;
            let e = m.embed(&ids)?.detach();
            let var = Var::from_tensor(&e)?;
            let z = m
                .forward_embeds(var.as_tensor(), None)?
                .narrow(1, eot, 1)?
                .squeeze(1)?;
            let best = z.detach().argmax_keepdim(D::Minus1)?;
            let grads = z.gather(&best, 1)?.sum_all()?.backward()?;
            let g = grads.get(var.as_tensor()).expect("gradient");
            let keep: Vec<f32> = (0..20).map(|p| if p < eot { 1.0 } else { 0.0 }).collect();
            let keep = Tensor::from_vec(keep, (1, 20, 1), &Device::Cpu)?;
            let g = g.broadcast_mul(&keep)?;
            let gn = f64::from(g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?);
            assert!(
                (gn - norms[k]).abs() <= 1e-5 * gn,
                "batched {} vs alone {gn}",
                norms[k]
            );
            let dir = (&g / gn)?;
            // The fresh model's gradients are tiny (~1e-4): f32 rounding of the difference grows
            // like 1/h and the curvature error like h²; h = 0.1 keeps both well under 1e-3.
            let h = 0.1;
            let plus = max_logit_at_eot(&m, &(&e + (&dir * h)?)?, eot)?[0];
            let minus = max_logit_at_eot(&m, &(&e - (&dir * h)?)?, eot)?[0];
            let fd = (f64::from(plus) - f64::from(minus)) / (2.0 * h);
            let rel = (fd - norms[k]).abs() / norms[k];
            assert!(
                rel < 1e-3,
                "row {k}: finite differences {fd} vs gradient norm {} (rel {rel:.2e})",
                norms[k]
            );
        }
        Ok(())
    }

    #[test]
    fn mlp_weights_are_the_parameters() -> Result<()> {
        let m = model();
        let w = mlp_weights(&m)?;
        assert_eq!(w.len(), 2);
        assert_eq!((w[1].c_fc.rows(), w[1].c_fc.cols()), (64, 16));
        assert_eq!((w[1].c_proj.rows(), w[1].c_proj.cols()), (16, 64));
        let p = m
            .params()
            .get("transformer.h.1.c_fc.weight")?
            .as_tensor()
            .to_vec2::<f32>()?;
        assert_eq!(w[1].c_fc.get(3, 5), f64::from(p[3][5]));
        Ok(())
    }
}
