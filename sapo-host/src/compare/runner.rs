//! Runs the grid's `sapo train` processes, a few at a time.
//!
//! Each run is its own process (the same `sapo` binary), so runs cannot
//! share state, a crash takes down one run only, and each run is exactly
//! what `sapo train --config configs/<cell>.toml --seed S` gives by hand. A
//! run that finished holds `compare.json`; `sapo compare` skips it when
//! called again, so an interrupted grid continues where it stopped. A run
//! that did not finish is started again from scratch, so its wall time is
//! the time of one whole run.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use super::grid::{Grid, Layout};
use super::results::{DoneMarker, RunResult, read_run};

/// One `sapo train` run of the grid.
#[derive(Debug, Clone)]
pub struct PlannedRun {
    /// Cell name.
    pub cell: String,
    /// Seed.
    pub seed: u64,
    /// Its run directory.
    pub dir: PathBuf,
    /// The arguments after the `sapo` binary.
    pub args: Vec<String>,
}

/// Writes every cell's config file and lists the runs, in cell-major order
/// with each cell's seeds together.
///
/// # Errors
/// A config file that cannot be written, or a cell whose config does not
/// resolve (an unknown key, a bad value, a missing file), named by cell.
pub fn plan(grid: &Grid, layout: &Layout) -> Result<Vec<PlannedRun>> {
    std::fs::create_dir_all(layout.root.join("configs"))
        .with_context(|| format!("{}", layout.root.join("configs").display()))?;
    let mut runs = Vec::new();
    for cell in &grid.cells {
        let config_path = layout.config_path(&cell.name);
        crate::atomic_file::write_atomically(&config_path, grid.cell_config(cell).as_bytes())?;
        crate::train::config::resolve(Some(&config_path), &["seed=1".into()])
            .with_context(|| format!("cell `{}`", cell.name))?;
        for &seed in &grid.seeds {
            let dir = layout.run_dir(&cell.name, seed);
            let args = [
                "train",
                "--config",
                &config_path.display().to_string(),
                "--seed",
                &seed.to_string(),
                "--output-dir",
                &dir.display().to_string(),
                "--quiet",
            ]
            .map(String::from)
            .to_vec();
            runs.push(PlannedRun { cell: cell.name.clone(), seed, dir, args });
        }
    }
    Ok(runs)
}

/// Reads the marker of a finished run, if there is one.
pub fn done(layout: &Layout, cell: &str, seed: u64) -> Option<DoneMarker> {
    let text = std::fs::read_to_string(layout.done_marker(cell, seed)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Runs every planned run that has not finished, `jobs` at a time, with the
/// `sapo` binary `exe`; prints one line per finished run. Returns the
/// results of all runs that finished (now or before) and one message per
/// failed run.
pub fn run_all(exe: &Path, layout: &Layout, runs: &[PlannedRun], jobs: usize) -> Result<(Vec<RunResult>, Vec<String>)> {
    let pending: Vec<&PlannedRun> = runs.iter().filter(|run| done(layout, &run.cell, run.seed).is_none()).collect();
    let already = runs.len() - pending.len();
    if already > 0 {
        eprintln!("sapo compare: {already} of {} runs already finished (kept)", runs.len());
    }
    let queue = Mutex::new(pending.iter().copied().enumerate());
    let failures = Mutex::new(Vec::new());
    let total = pending.len();
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1).min(total.max(1)) {
            scope.spawn(|| {
                loop {
                    let next = queue.lock().map(|mut queue| queue.next()).ok().flatten();
                    let Some((index, run)) = next else { break };
                    match run_one(exe, layout, run) {
                        Ok(result) => eprintln!(
                            "[{}/{total}] {} seed {}: task accuracy {:.1}% → {:.1}% in {:.0} s ({:.0} s elapsed)",
                            index + 1,
                            run.cell,
                            run.seed,
                            100.0 * result.accuracy_before,
                            100.0 * result.accuracy_after,
                            result.wall_seconds,
                            started.elapsed().as_secs_f64()
                        ),
                        Err(error) => {
                            let message = format!("{} seed {}: {error:#}", run.cell, run.seed);
                            eprintln!("[{}/{total}] FAILED {message}", index + 1);
                            if let Ok(mut failures) = failures.lock() {
                                failures.push(message);
                            }
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().unwrap_or_default();
    Ok((finished(layout, runs)?, failures))
}

/// The results of the planned runs that have finished, in plan order.
///
/// # Errors
/// A finished run whose `metrics.jsonl` does not read back.
pub fn finished(layout: &Layout, runs: &[PlannedRun]) -> Result<Vec<RunResult>> {
    runs.iter()
        .filter_map(|run| Some((run, done(layout, &run.cell, run.seed)?)))
        .map(|(run, marker)| read_run(&run.dir, &run.cell, run.seed, &marker))
        .collect()
}

/// Runs one `sapo train` from scratch and marks it done.
fn run_one(exe: &Path, layout: &Layout, run: &PlannedRun) -> Result<RunResult> {
    if run.dir.exists() {
        std::fs::remove_dir_all(&run.dir).with_context(|| format!("{}", run.dir.display()))?;
    }
    std::fs::create_dir_all(&run.dir).with_context(|| format!("{}", run.dir.display()))?;
    let log_path = run.dir.join("train.log");
    let log = std::fs::File::create(&log_path).with_context(|| format!("{}", log_path.display()))?;
    let started = Instant::now();
    let status = Command::new(exe)
        .args(&run.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .status()
        .with_context(|| format!("starting {}", exe.display()))?;
    let wall_seconds = started.elapsed().as_secs_f64();
    if !status.success() {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let last = text.lines().rev().find(|line| !line.trim().is_empty()).unwrap_or("(no output)");
        bail!("sapo train exited with {status}: {last} (log: {})", log_path.display());
    }
    let mut command = vec![exe.display().to_string()];
    command.extend(run.args.iter().cloned());
    let marker = DoneMarker { wall_seconds, command };
    let result = read_run(&run.dir, &run.cell, run.seed, &marker)?;
    // The report needs metrics.jsonl and final/ only; a grid's checkpoints
    // would fill a small disk (the optimizer moments are twice the weights).
    let checkpoints = run.dir.join("checkpoints");
    if checkpoints.exists() {
        std::fs::remove_dir_all(&checkpoints).with_context(|| format!("{}", checkpoints.display()))?;
    }
    let json = serde_json::to_string_pretty(&marker)?;
    crate::atomic_file::write_atomically(&layout.done_marker(&run.cell, run.seed), json.as_bytes())?;
    Ok(result)
}
