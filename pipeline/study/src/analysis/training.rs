//! Training curves from a training stage's `metrics.parquet`: the tidy metric table, filtered
//! into the series the training figure draws.

use polars::prelude::*;

use crate::artifacts::{ArtifactError, Catalog, METRICS_FILE, Stage};
use crate::training::{MetricRow, metrics_rows, metrics_schema};

/// The metric rows of a training stage, read through the catalog with their schema checked.
pub fn read_metrics(catalog: &Catalog, stage: Stage) -> Result<DataFrame, ArtifactError> {
    let target = match stage {
        Stage::Pretrain => "pretrain",
        _ => "finetune",
    };
    crate::artifacts::read_parquet(
        &catalog.stage_file(stage, METRICS_FILE),
        &metrics_schema(target),
    )
}

pub use crate::series::Curve;

/// The series of the training figure.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainingCurves {
    /// Training loss per step, and its running mean over `smooth` steps.
    pub train_loss: Curve,
    /// Smoothed training loss.
    pub train_loss_smooth: Curve,
    /// Held-out and training-mix teacher-forced loss at each evaluation.
    pub eval_loss: Vec<Curve>,
    /// Learning rate per step.
    pub lr: Curve,
    /// Teacher-forced token accuracy per split, sample type and window at each evaluation.
    pub token_accuracy: Vec<Curve>,
    /// Teacher-forced exact match per split, sample type and window at each evaluation.
    pub exact_match: Vec<Curve>,
    /// Greedy exact match of both outputs per split at each evaluation.
    pub greedy: Vec<Curve>,
}

fn curve(rows: &[MetricRow], label: &str, keep: impl Fn(&MetricRow) -> bool) -> Curve {
    let mut points: Vec<(f64, f64)> = rows
        .iter()
        .filter(|r| keep(r))
        .map(|r| (f64::from(r.step), r.value))
        .collect();
    points.sort_by(|a, b| a.0.total_cmp(&b.0));
    Curve {
        label: label.to_owned(),
        points,
    }
}

/// Group rows matching `keep` into one curve per `(split, sample type, metric)`.
fn curves_by_key(rows: &[MetricRow], keep: impl Fn(&MetricRow) -> bool) -> Vec<Curve> {
    let mut keys: Vec<(String, String, String)> = rows
        .iter()
        .filter(|r| keep(r))
        .map(|r| (r.split.clone(), r.sample_type.clone(), r.metric.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .map(|(s, t, m)| {
            curve(rows, &format!("{s} {t} {m}"), |r| {
                r.split == s && r.sample_type == t && r.metric == m
            })
        })
        .collect()
}

/// The training figure's series from a metrics table; `smooth` is the running-mean window of
/// the training loss, in steps.
pub fn training_curves(df: &DataFrame, smooth: usize) -> PolarsResult<TrainingCurves> {
    let rows = metrics_rows(df)?;
    let scalar = |m: &'static str| move |r: &MetricRow| r.split == "train" && r.metric == m;
    let train_loss = curve(&rows, "train loss", scalar("loss"));
    let w = smooth.max(1);
    let smoothed = train_loss
        .points
        .iter()
        .enumerate()
        .map(|(i, &(x, _))| {
            let lo = i.saturating_sub(w - 1);
            let win = &train_loss.points[lo..=i];
            (x, win.iter().map(|p| p.1).sum::<f64>() / win.len() as f64)
        })
        .collect();
    Ok(TrainingCurves {
        train_loss_smooth: Curve {
            label: format!("train loss (mean of {w} steps)"),
            points: smoothed,
        },
        train_loss,
        eval_loss: curves_by_key(&rows, |r| r.metric == "eval_loss"),
        lr: curve(&rows, "learning rate", scalar("lr")),
        token_accuracy: curves_by_key(&rows, |r| r.metric.starts_with("acc_")),
        exact_match: curves_by_key(&rows, |r| r.metric.starts_with("em_s")),
        greedy: curves_by_key(&rows, |r| r.metric == "greedy_em_both"),
    })
}

/// The metrics of the last evaluation, without the per-step training scalars: what a reader
/// checks first (held-out loss, exact match per segment, greedy exact match and its bar).
pub fn final_metrics(df: &DataFrame) -> PolarsResult<DataFrame> {
    let step = df.column("step")?.u32()?;
    let Some(last) = step.max() else {
        return Ok(df.clear());
    };
    let keep = step.equal(last) & df.column("split")?.str()?.not_equal("train");
    df.filter(&keep)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::metrics_frame;

    fn row(step: u32, split: &str, ty: &str, metric: &str, value: f64) -> MetricRow {
        MetricRow {
            step,
            split: split.into(),
            sample_type: ty.into(),
            metric: metric.into(),
            value,
            n: 1,
        }
    }

    #[test]
    fn curves_group_and_smooth() {
        let rows = vec![
            row(2, "train", "all", "loss", 3.0),
            row(1, "train", "all", "loss", 5.0),
            row(3, "train", "all", "loss", 1.0),
            row(1, "train", "all", "lr", 0.1),
            row(0, "test", "full", "em_s1", 0.0),
            row(3, "test", "full", "em_s1", 0.5),
            row(3, "test", "full", "em_s2", 0.25),
            row(3, "std_safe", "full", "greedy_em_both", 0.75),
        ];
        let c = training_curves(&metrics_frame(&rows).expect("frame"), 2).expect("curves");
        assert_eq!(c.train_loss.points, [(1.0, 5.0), (2.0, 3.0), (3.0, 1.0)]);
        assert_eq!(
            c.train_loss_smooth.points,
            [(1.0, 5.0), (2.0, 4.0), (3.0, 2.0)]
        );
        let labels: Vec<&str> = c.exact_match.iter().map(|c| c.label.as_str()).collect();
        assert_eq!(labels, ["test full em_s1", "test full em_s2"]);
        assert_eq!(c.exact_match[0].points, [(0.0, 0.0), (3.0, 0.5)]);
        assert_eq!(c.greedy[0].label, "std_safe full greedy_em_both");
        assert_eq!(c.lr.points, [(1.0, 0.1)]);
        let fin = final_metrics(&metrics_frame(&rows).expect("frame")).expect("final");
        assert_eq!(
            fin.height(),
            3,
            "test em_s1, em_s2 and std_safe greedy at step 3"
        );
    }
}
