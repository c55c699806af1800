//! Every figure quantity over seeds as mean and 95 % CI (the `seeds` stage).

use super::*;

/// One figure quantity over seeds: mean, sd and the 95 % confidence interval of the mean
/// (Student t with n − 1 degrees of freedom), from [`combine_seeds`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedRow {
    /// The spectra table it comes from (`tau`, `gain`, …).
    pub table: String,
    /// `it` or the fine-tuned variant.
    pub model: String,
    /// The row's coordinates in its table, readable (`layer=2 set=std group=unsafe metric=l2`).
    pub key: String,
    /// The column (`separation`, `ratio`, …).
    pub quantity: String,
    /// Seeds with this row.
    pub n_seeds: usize,
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (NaN with one seed).
    pub sd: f64,
    /// Lower end of the 95 % CI of the mean (NaN with one seed).
    pub ci95_lo: f64,
    /// Upper end of the 95 % CI of the mean (NaN with one seed).
    pub ci95_hi: f64,
}

/// The figure quantities of one seed's tables: (table, model, key, quantity, value).
fn figure_quantities(t: &Tables) -> Vec<(&'static str, String, String, &'static str, f64)> {
    let mut out = Vec::new();
    let mut push = |table, model: &str, key: String, q: &[(&'static str, f64)]| {
        for &(name, v) in q {
            out.push((table, model.to_owned(), key.clone(), name, v));
        }
    };
    for r in &t.tau {
        let key = format!(
            "layer={} set={} group={} metric={}",
            r.layer, r.set, r.group, r.metric
        );
        push(
            "tau",
            &r.model,
            key,
            &[
                ("mean", r.mean),
                ("separation", r.separation),
                ("assignment_accuracy", r.assignment_accuracy),
            ],
        );
    }
    for r in &t.spectrum_summary {
        let key = format!("layer={} matrix={}", r.layer, r.matrix);
        push(
            "spectrum_summary",
            &r.model,
            key,
            &[
                ("top_energy_share", r.top_energy_share),
                ("effective_rank", r.effective_rank),
                ("stable_rank", r.stable_rank),
            ],
        );
    }
    for r in &t.column_summary {
        let key = format!("layer={} matrix={}", r.layer, r.matrix);
        let c = &r.mean_null_projection;
        push(
            "column_summary",
            &r.model,
            key,
            &[("observed", c.observed), ("ratio", c.ratio)],
        );
    }
    for r in &t.row_space {
        let key = format!(
            "layer={} set={} group={} j={}",
            r.layer, r.set, r.group, r.j
        );
        push(
            "row_space",
            &r.model,
            key,
            &[("mean_abs_projection", r.mean_abs_projection)],
        );
    }
    for r in &t.gain {
        let key = format!("layer={} set={} group={}", r.layer, r.set, r.group);
        let c = &r.mean_gain;
        push(
            "gain",
            &r.model,
            key,
            &[("observed", c.observed), ("ratio", c.ratio)],
        );
    }
    for r in &t.direction {
        let key = format!("layer={}", r.layer);
        let c = &r.max_abs_cosine;
        push(
            "direction",
            &r.model,
            key,
            &[("observed", c.observed), ("ratio", c.ratio)],
        );
    }
    for r in &t.lipschitz_summary {
        let key = format!("group={}", r.group);
        push(
            "lipschitz_summary",
            &r.model,
            key,
            &[("median", r.median), ("mean", r.mean)],
        );
    }
    for r in &t.interpolation {
        let key = format!("alpha={}", r.alpha);
        push(
            "interpolation",
            &r.model,
            key,
            &[
                ("refusal", r.refusal),
                ("refusal_b_only", r.refusal_b_only),
                ("instruct", r.instruct),
                ("tau_separation", r.tau_separation),
            ],
        );
    }
    out
}

/// Every figure quantity of the seeds' tables as mean and 95 % CI over seeds (issue #12's
/// seeds table). A quantity missing in some seeds is combined over the seeds that have it
/// (`n_seeds` says how many); non-finite values (a NaN `refusal_b_only`) are left out the same way.
pub fn combine_seeds(seeds: &[Tables]) -> Result<Vec<SeedRow>, SpectraError> {
    use statrs::distribution::{ContinuousCDF, StudentsT};
    let mut values: BTreeMap<(&'static str, String, String, &'static str), Vec<f64>> =
        BTreeMap::new();
    for t in seeds {
        for (table, model, key, q, v) in figure_quantities(t) {
            if v.is_finite() {
                values.entry((table, model, key, q)).or_default().push(v);
            }
        }
    }
    let mut out = Vec::with_capacity(values.len());
    for ((table, model, key, quantity), v) in values {
        let n = v.len();
        let mean = v.iter().sum::<f64>() / n as f64;
        let (sd, half) = if n < 2 {
            (f64::NAN, f64::NAN)
        } else {
            let sd = (v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt();
            let t = StudentsT::new(0.0, 1.0, (n - 1) as f64).map_err(|e| SpectraError {
                what: "the seeds' CI".into(),
                message: e.to_string(),
            })?;
            (sd, t.inverse_cdf(0.975) * sd / (n as f64).sqrt())
        };
        out.push(SeedRow {
            table: table.into(),
            model,
            key,
            quantity: quantity.into(),
            n_seeds: n,
            mean,
            sd,
            ci95_lo: mean - half,
            ci95_hi: mean + half,
        });
    }
    Ok(out)
}
