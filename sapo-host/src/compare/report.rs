//! The comparison's outputs: `results.md` (a table per group, a table per
//! iteration for iterative cells, the commands), `results.json` (every
//! run's figures) and the plots.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use super::grid::{Cell, Grid, Layout};
use super::results::RunResult;
use super::stats::{Estimate, mean_interval};
use crate::plot::{NamedLine as Line, plot_lines};

/// One cell's figures over its seeds.
#[derive(Debug, Clone)]
pub struct CellSummary {
    /// The cell.
    pub cell: Cell,
    /// Final held-out task accuracy.
    pub accuracy: Estimate,
    /// Final minus starting accuracy, per seed.
    pub gain: Estimate,
    /// Mean judge score (partial credit).
    pub score: Estimate,
    /// Held-out pairs ranked correctly by log-probability (when the evaluation data has pairs).
    pub pair_accuracy: Option<Estimate>,
    /// Mean answer length (tokens) on held-out prompts.
    pub answer_length: Estimate,
    /// Optimizer steps (mean over seeds).
    pub steps: f64,
    /// Tokens trained (mean over seeds).
    pub tokens_trained: f64,
    /// Wall seconds.
    pub wall_seconds: Estimate,
    /// Mean accuracy over seeds at each step every seed evaluated.
    pub curve: Vec<(u64, f64)>,
    /// Per iteration, over seeds.
    pub iterations: Vec<IterationSummary>,
}

/// One iteration of an iterative cell, over seeds.
#[derive(Debug, Clone)]
pub struct IterationSummary {
    /// 1-based iteration.
    pub iteration: u64,
    /// Mean tokens of the iteration's samples.
    pub sample_length: Estimate,
    /// The oracle's mean score of those samples (SPIN has none).
    pub oracle_score: Option<Estimate>,
    /// Held-out accuracy of the model the iteration starts from (when that step was evaluated).
    pub start_accuracy: Option<Estimate>,
}

/// Aggregates the runs of each cell that has at least one finished run.
pub fn summarise(grid: &Grid, results: &[RunResult]) -> Vec<CellSummary> {
    grid.cells
        .iter()
        .filter_map(|cell| {
            let runs: Vec<&RunResult> = results.iter().filter(|r| r.cell == cell.name).collect();
            summarise_cell(cell, &runs)
        })
        .collect()
}

/// One cell's figures over its runs; `None` when it has none.
fn summarise_cell(cell: &Cell, runs: &[&RunResult]) -> Option<CellSummary> {
    let estimate = |f: fn(&RunResult) -> f64| mean_interval(&runs.iter().map(|r| f(r)).collect::<Vec<_>>());
    let mean = |f: fn(&RunResult) -> f64| estimate(f).map(|e| e.mean);
    let mut by_step: BTreeMap<u64, Vec<f64>> = BTreeMap::new();
    for run in runs {
        for &(step, value) in &run.accuracy_curve {
            by_step.entry(step).or_default().push(value);
        }
    }
    let curve = by_step
        .into_iter()
        .filter(|(_, values)| values.len() == runs.len())
        .map(|(step, values)| (step, values.iter().sum::<f64>() / values.len() as f64))
        .collect();
    // Per iteration: sample lengths, oracle scores, accuracies at its start.
    type Samples = (Vec<f64>, Vec<f64>, Vec<f64>);
    let mut by_iteration: BTreeMap<u64, Samples> = BTreeMap::new();
    for run in runs {
        for figures in &run.iterations {
            let entry = by_iteration.entry(figures.iteration).or_default();
            entry.0.push(figures.mean_length);
            entry.1.extend(figures.oracle_score);
            let start = run.accuracy_curve.iter().find(|(step, _)| *step == figures.start_step);
            entry.2.extend(start.map(|(_, accuracy)| *accuracy));
        }
    }
    let iterations = by_iteration
        .into_iter()
        .filter_map(|(iteration, (lengths, scores, starts))| {
            Some(IterationSummary {
                iteration,
                sample_length: mean_interval(&lengths)?,
                oracle_score: mean_interval(&scores),
                start_accuracy: mean_interval(&starts),
            })
        })
        .collect();
    Some(CellSummary {
        cell: cell.clone(),
        accuracy: estimate(|r| r.accuracy_after)?,
        gain: estimate(|r| r.accuracy_after - r.accuracy_before)?,
        score: estimate(|r| r.score_after)?,
        pair_accuracy: mean_interval(&runs.iter().filter_map(|r| r.pair_accuracy).collect::<Vec<_>>()),
        answer_length: estimate(|r| r.answer_length)?,
        steps: mean(|r| r.steps as f64)?,
        tokens_trained: mean(|r| r.tokens_trained as f64)?,
        wall_seconds: estimate(|r| r.wall_seconds)?,
        curve,
        iterations,
    })
}

/// Writes `results.md`, `results.json` and the plots under the output
/// directory; returns the paths written.
///
/// # Errors
/// An I/O or drawing error.
pub fn write_report(
    grid: &Grid,
    layout: &Layout,
    results: &[RunResult],
    machine: &str,
    command: &str,
) -> Result<Vec<PathBuf>> {
    let summaries = summarise(grid, results);
    let mut written = Vec::new();
    let mut md = String::new();
    let base: Vec<f64> = results.iter().map(|r| r.accuracy_before).collect();
    let _ = writeln!(md, "# sapo compare: results\n");
    let _ = writeln!(md, "Command: `{command}`  ");
    let _ = writeln!(md, "Machine: {machine}  ");
    let _ = writeln!(
        md,
        "Seeds: {:?}; {} runs finished of {}.\n",
        grid.seeds,
        results.len(),
        grid.cells.len() * grid.seeds.len()
    );
    if let Some(start) = mean_interval(&base) {
        let pairs = mean_interval(&results.iter().filter_map(|r| r.pair_accuracy_before).collect::<Vec<_>>())
            .map_or_else(String::new, |p| format!(", held-out pairs ranked correctly {:.1}%", 100.0 * p.mean));
        let _ = writeln!(
            md,
            "Starting model: held-out task accuracy {:.1}%{pairs} (the same for every seed).\n",
            100.0 * start.mean
        );
    }
    let _ = writeln!(
        md,
        "Each figure is the mean over seeds ± the half-width of its 95% Student-t interval. \
         Accuracy: share of held-out prompts the judge marks correct (greedy answers); \
         score: mean partial credit; pairs ranked: share of held-out (correct, wrong) pairs \
         where the model gives the correct answer the higher log-probability; length: mean answer tokens; tokens: tokens through the \
         policy's forward and backward passes; wall: whole `sapo train` process (evaluations, \
         sampling and saving included).\n"
    );
    for group in &grid.groups {
        let rows: Vec<&CellSummary> = summaries.iter().filter(|s| s.cell.group == group.name).collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(md, "## {}\n", group.title);
        if !group.about.is_empty() {
            let _ = writeln!(md, "{}\n", group.about.trim());
        }
        let _ = writeln!(
            md,
            "| cell | method | seeds | accuracy % | gain (points) | score | pairs ranked % | answer length | steps | tokens trained | wall s |"
        );
        let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for row in &rows {
            let _ = writeln!(
                md,
                "| `{}` | {} | {} | {} | {} | {} | {} | {} | {:.0} | {:.0} | {} |",
                row.cell.name,
                row.cell.label,
                row.accuracy.n,
                row.accuracy.format(100.0, 1),
                row.gain.format(100.0, 1),
                row.score.format(1.0, 3),
                row.pair_accuracy.map_or_else(|| "n/a".to_string(), |p| p.format(100.0, 1)),
                row.answer_length.format(1.0, 2),
                row.steps,
                row.tokens_trained,
                row.wall_seconds.format(1.0, 1),
            );
        }
        let _ = writeln!(md);
        let curves: Vec<Line> = rows
            .iter()
            .filter(|row| row.curve.len() > 1)
            .map(|row| Line { name: row.cell.name.clone(), points: row.curve.clone() })
            .collect();
        if !curves.is_empty() {
            let path = layout.root.join(format!("accuracy-{}.svg", group.name));
            plot_lines(&format!("Held-out accuracy: {}", group.title), "step", "accuracy", &curves, &path)?;
            let _ = writeln!(md, "![accuracy vs steps]({})\n", relative(&path, layout));
            written.push(path);
        }
        let iterative: Vec<&&CellSummary> = rows.iter().filter(|row| !row.iterations.is_empty()).collect();
        if !iterative.is_empty() {
            let _ = writeln!(md, "Per iteration (samples drawn by the model each iteration starts from):\n");
            let _ = writeln!(
                md,
                "| cell | iteration | held-out accuracy % at its start | mean sample length (tokens) | oracle mean score |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|");
            for row in &iterative {
                for it in &row.iterations {
                    let na = || "n/a".to_string();
                    let score = it.oracle_score.map_or_else(na, |s| s.format(1.0, 3));
                    let start = it.start_accuracy.map_or_else(na, |s| s.format(100.0, 1));
                    let _ = writeln!(
                        md,
                        "| `{}` | {} | {start} | {} | {score} |",
                        row.cell.name,
                        it.iteration,
                        it.sample_length.format(1.0, 2)
                    );
                }
                let _ = writeln!(md, "| `{}` | end | {} | | |", row.cell.name, row.accuracy.format(100.0, 1));
            }
            let _ = writeln!(md);
            let lines: Vec<Line> = iterative
                .iter()
                .map(|row| Line {
                    name: row.cell.name.clone(),
                    points: row.iterations.iter().map(|it| (it.iteration, it.sample_length.mean)).collect(),
                })
                .collect();
            let path = layout.root.join(format!("length-{}.svg", group.name));
            plot_lines(&format!("Sample length per iteration: {}", group.title), "iteration", "tokens", &lines, &path)?;
            let _ = writeln!(md, "![sample length vs iteration]({})\n", relative(&path, layout));
            written.push(path);
        }
    }
    let _ = writeln!(md, "## Repeating a run\n");
    let _ = writeln!(
        md,
        "Every run is `sapo train --config configs/<cell>.toml --seed <seed> --output-dir <dir>` \
         (paths relative to this directory); on the CPU with the same thread count it gives the \
         same numbers bit for bit. The configs:\n"
    );
    for cell in &grid.cells {
        let _ = writeln!(md, "- `{}`: [configs/{}.toml](configs/{}.toml)", cell.name, cell.name, cell.name);
    }
    let md_path = layout.root.join("results.md");
    crate::atomic_file::write_atomically(&md_path, md.as_bytes())?;
    written.insert(0, md_path);
    let json_path = layout.root.join("results.json");
    crate::atomic_file::write_atomically(&json_path, serde_json::to_string_pretty(results)?.as_bytes())?;
    written.insert(1, json_path);
    Ok(written)
}

fn relative(path: &std::path::Path, layout: &Layout) -> String {
    path.strip_prefix(&layout.root).unwrap_or(path).display().to_string()
}
