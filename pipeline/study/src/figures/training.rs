//! Training curves (pre-training and fine-tuning metrics), and the curve panel they share with
//! Table 1's attack sweep.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::corpus::set_color;
use crate::analysis::training::{Curve, TrainingCurves};

pub(super) fn draw_training<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    c: &TrainingCurves,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        "Pre-training: loss, learning rate, accuracy",
        ("sans-serif", 28),
    )?;
    let panels = root.split_evenly((2, 2));
    let mut loss = vec![c.train_loss_smooth.clone()];
    loss.extend(c.eval_loss.iter().cloned());
    draw_curves(
        &panels[0],
        "Loss (token-mean cross-entropy)",
        "step",
        "loss",
        &loss,
        None,
    )?;
    draw_curves(
        &panels[1],
        "Learning rate",
        "step",
        "lr",
        std::slice::from_ref(&c.lr),
        None,
    )?;
    // Held-out rows only: the training-mix curves stay in metrics.parquet.
    let held_out = |cs: &[Curve]| -> Vec<Curve> {
        cs.iter()
            .filter(|c| c.label.starts_with("test "))
            .cloned()
            .collect()
    };
    draw_curves(
        &panels[2],
        "Held-out teacher-forced token accuracy (text, S1, S2)",
        "step",
        "token accuracy",
        &held_out(&c.token_accuracy),
        Some((0.0, 1.0)),
    )?;
    let mut em = held_out(&c.exact_match);
    em.extend(c.greedy.iter().cloned());
    draw_curves(
        &panels[3],
        "Exact match: teacher-forced per segment, greedy of both outputs",
        "step",
        "exact match",
        &em,
        Some((0.0, 1.0)),
    )?;
    Ok(())
}

pub(super) fn draw_curves<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    x_desc: &str,
    y_desc: &str,
    curves: &[Curve],
    y_range: Option<(f64, f64)>,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let pts = curves.iter().flat_map(|c| c.points.iter());
    let (x_hi, y_lo, y_hi) = pts.fold((1.0f64, f64::MAX, f64::MIN), |(x, lo, hi), p| {
        (x.max(p.0), lo.min(p.1), hi.max(p.1))
    });
    let (y_lo, y_hi) = y_range.unwrap_or(if y_lo <= y_hi {
        let pad = ((y_hi - y_lo) * 0.05).max(1e-9);
        (y_lo - pad, y_hi + pad)
    } else {
        (0.0, 1.0)
    });
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_hi, y_lo..y_hi)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .x_label_formatter(&|v| {
            if x_hi > 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.2}")
            }
        })
        .y_label_formatter(&|v| {
            if *v != 0.0 && v.abs() < 0.01 {
                format!("{v:.1e}")
            } else {
                format!("{v:.2}")
            }
        })
        .draw()?;
    for (i, c) in curves.iter().enumerate() {
        let color = set_color(i);
        chart
            .draw_series(LineSeries::new(c.points.clone(), color.stroke_width(2)))?
            .label(c.label.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 13))
        .position(SeriesLabelPosition::UpperRight)
        .draw()?;
    Ok(())
}
