//! Table 1 as plain data (for the figure and the README), and per-subset markdown.

use std::collections::BTreeMap;

use super::bars::{models_in_order, value};
use super::*;

/// Table 1 as plain data (greedy decoding): one row per model, one column per (set, metric).
#[derive(Debug, Clone, PartialEq)]
pub struct Table1 {
    /// Model names (IT first).
    pub models: Vec<String>,
    /// Column headers, e.g. `std_safe instruct`.
    pub columns: Vec<String>,
    /// `values[model][column]`, fractions; `None` where not measured.
    pub values: Vec<Vec<Option<f64>>>,
    /// Soft-token attack success vs budget factor, one curve per fine-tuned model.
    pub attack: Vec<crate::series::Curve>,
}

/// The columns of Table 1: instruction following on safe inputs, refusal on unsafe ones, and
/// attack success (the unsafe instruction followed) on std_unsafe and every jailbreak set.
pub const TABLE1_COLUMNS: [(EvalSet, Metric); 7] = [
    (EvalSet::StdSafe, Metric::Instruct),
    (EvalSet::StdUnsafe, Metric::Refusal),
    (EvalSet::StdUnsafe, Metric::AttackSuccess),
    (EvalSet::JbCoTask, Metric::AttackSuccess),
    (EvalSet::JbCoText, Metric::AttackSuccess),
    (EvalSet::JbMisgenTokens, Metric::AttackSuccess),
    (EvalSet::JbMisgenText, Metric::AttackSuccess),
];

/// Build [`Table1`] from behaviour rows and the attack's success per (model, factor).
pub fn table1(rows: &[BehaviourRow], attack: &BTreeMap<(ModelId, u64), (f64, usize)>) -> Table1 {
    let ids = models_in_order(rows);
    let values = ids
        .iter()
        .map(|&m| {
            TABLE1_COLUMNS
                .iter()
                .map(|&(set, metric)| value(rows, m, set, metric))
                .collect()
        })
        .collect();
    let mut curves: BTreeMap<&ModelId, Vec<(f64, f64)>> = BTreeMap::new();
    for ((m, f), (rate, _)) in attack {
        curves
            .entry(m)
            .or_default()
            .push((f64::from_bits(*f), *rate));
    }
    let attack = ids
        .iter()
        .filter_map(|&m| {
            curves.get(m).map(|pts| {
                let mut points = pts.clone();
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                crate::series::Curve {
                    label: m.to_string(),
                    points,
                }
            })
        })
        .collect();
    Table1 {
        models: ids.iter().map(ToString::to_string).collect(),
        columns: TABLE1_COLUMNS
            .iter()
            .map(|(s, m)| format!("{s} {m}"))
            .collect(),
        values,
        attack,
    }
}

impl Table1 {
    /// The table as Markdown (percentages), for notebooks and reports.
    pub fn markdown(&self) -> String {
        let mut out = format!("| model | {} |\n", self.columns.join(" | "));
        out.push_str(&format!("|---|{}\n", "---:|".repeat(self.columns.len())));
        for (m, row) in self.models.iter().zip(&self.values) {
            let cells: Vec<String> = row.iter().map(|v| pct(*v)).collect();
            out.push_str(&format!("| {m} | {} |\n", cells.join(" | ")));
        }
        out
    }
}

/// One set and metric split by subset, as Markdown: a row per model; per subset the greedy exact
/// match, the teacher-forced token accuracy (the paper's metric) and the first-token decision
/// (greedy). Shows whether a model refuses by the safety rule (`b_only`) or by the operator
/// alone (`a_operator`).
pub fn subset_markdown(rows: &[BehaviourRow], set: EvalSet, metric: Metric) -> String {
    let scores = [
        (Decoding::Greedy, Score::ExactMatch, "exact"),
        (Decoding::TeacherForced, Score::TokenAccuracy, "token acc."),
        (Decoding::Greedy, Score::FirstToken, "first token"),
    ];
    let models = models_in_order(rows);
    let mut out = format!("{set} {metric}\n\n| model |");
    for sub in Subset::ALL {
        for (_, _, name) in &scores {
            out.push_str(&format!(" {sub} {name} |"));
        }
    }
    out.push_str(&format!(
        "\n|---|{}\n",
        "---:|".repeat(Subset::ALL.len() * scores.len())
    ));
    for m in models {
        out.push_str(&format!("| {m} |"));
        for &sub in Subset::ALL {
            for &(decoding, score, _) in &scores {
                let cell = rows.iter().find(|r| {
                    r.model == *m
                        && r.set == set
                        && r.metric == metric
                        && r.subset == sub
                        && r.decoding == decoding
                        && r.score == score
                });
                out.push_str(&match cell {
                    Some(r) => format!(" {:.1}% (n={}) |", 100.0 * r.value, r.n),
                    None => " n/a |".into(),
                });
            }
        }
        out.push('\n');
    }
    out
}

pub(super) fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".into(), |v| format!("{:.1}%", 100.0 * v))
}
