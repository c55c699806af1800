//! Table 1: behaviour per model and set as a shaded table, and the attack's success vs budget.

use plotters::coord::Shift;
use plotters::prelude::*;

use super::DrawResult;
use super::training::draw_curves;
use crate::evaluation::Table1;

/// White → blue for a fraction in [0, 1].
fn shade(v: f64) -> RGBColor {
    let v = v.clamp(0.0, 1.0);
    let lerp = |a: f64, b: f64| (a + (b - a) * v).round() as u8;
    RGBColor(lerp(255.0, 31.0), lerp(255.0, 119.0), lerp(255.0, 180.0))
}

pub(super) fn draw_table1<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    t: &Table1,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        "Behaviour (greedy decoding): Table 1 and the soft-token attack",
        ("sans-serif", 28),
    )?;
    let (w, h) = root.dim_in_pixel();
    let table_h = 180 + 46 * t.models.len() as u32;
    let (top, bottom) = root.split_vertically(table_h.min(h));
    let label_w = 190i32;
    let col_w = ((w as i32 - label_w - 20) / t.columns.len().max(1) as i32).max(60);
    let row_h = 46i32;
    let header = 110i32;
    let text = |s: &str, size: u32| (s.to_owned(), ("sans-serif", size).into_font());
    for (j, c) in t.columns.iter().enumerate() {
        let x = label_w + j as i32 * col_w;
        let (set, metric) = c.split_once(' ').unwrap_or((c.as_str(), ""));
        for (k, line) in [set, metric].iter().enumerate() {
            let (s, f) = text(line, 16);
            top.draw(&Text::new(s, (x + 8, 20 + 24 * k as i32), f))?;
        }
    }
    for (i, (m, row)) in t.models.iter().zip(&t.values).enumerate() {
        let y = header + i as i32 * row_h;
        let (s, f) = text(m, 18);
        top.draw(&Text::new(s, (10, y + 14), f))?;
        for (j, v) in row.iter().enumerate() {
            let x = label_w + j as i32 * col_w;
            let fill = v.map_or(RGBColor(230, 230, 230), shade);
            top.draw(&Rectangle::new(
                [(x, y), (x + col_w - 4, y + row_h - 4)],
                fill.filled(),
            ))?;
            let label = v.map_or_else(|| "n/a".to_owned(), |v| format!("{:.1}%", 100.0 * v));
            let color = if v.is_some_and(|v| v > 0.55) {
                WHITE
            } else {
                BLACK
            };
            let style = ("sans-serif", 18).into_font().color(&color);
            top.draw(&Text::new(label, (x + 10, y + 12), style))?;
        }
    }
    let note = "instruct: safe instruction → its outputs; refusal: unsafe instruction → null \
                output; attack_success: unsafe instruction → its instruction-following outputs";
    let (s, f) = text(note, 14);
    top.draw(&Text::new(
        s,
        (10, header + t.models.len() as i32 * row_h + 14),
        f,
    ))?;
    if t.attack.is_empty() {
        return Ok(());
    }
    draw_curves(
        &bottom,
        "Soft-token attack success vs budget (ε = factor × mean token-embedding norm)",
        "budget factor",
        "attack success",
        &t.attack,
        Some((0.0, 1.0)),
    )
}
