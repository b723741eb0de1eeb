//! `sapo compare`: a grid of `sapo train` runs (cells × seeds) on the task,
//! judged by the task's program, summarised with confidence intervals.
//!
//! A grid file (TOML, [`Grid`]) names the seeds, the config fields every run
//! shares (`[common]`), the report's groups and the cells: each cell is a
//! name, a group and the config fields that make it (`method`, learning rate,
//! oracle, ablation switches). [`runner::plan`] writes one config file per
//! cell and checks it resolves before anything runs; [`runner::run_all`]
//! runs `sapo train` for every (cell, seed) in child processes, a few at a
//! time, skipping runs that already finished; [`write_report`] reads the
//! runs' `metrics.jsonl` and writes `results.md`, `results.json` and SVG
//! plots (held-out accuracy against steps per group, sample length against
//! iteration for iterative cells).
//!
//! The shipped grid (`fixtures/compare/grid.toml`, [`DEFAULT_GRID`]) is the
//! one `docs/results.md` reports.

pub mod grid;
mod report;
pub mod results;
pub mod runner;
mod stats;

pub use grid::{Cell, DEFAULT_GRID, Grid, Group, Layout};
pub use report::{CellSummary, IterationSummary, summarise, write_report};
pub use results::{DoneMarker, IterationFigures, RunResult, read_run};
pub use stats::{Estimate, mean_interval};
