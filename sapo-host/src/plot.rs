//! Training curves drawn from `metrics.jsonl`.
//!
//! `sapo train` appends one JSON object per logged step to `metrics.jsonl`,
//! using TRL's metric names (`loss`, `rewards/margins`, `logps/chosen`, …).
//! This module turns that file into a handful of SVG charts so that a run can
//! be judged without Python or a notebook: [`read_metrics`] parses the file
//! into [`MetricRow`]s, and [`plot_training_curves`] writes one chart per
//! metric group that has data.
//!
//! SVG is the only output because it needs no fonts and no C libraries:
//! plotters' SVG backend writes labels as `<text>` elements and leaves font
//! rendering to the viewer, so the build stays pure Rust.
//!
//! | file | series |
//! |---|---|
//! | `loss.svg` | `loss`, `nll_loss` (ORPO), `eval/loss` |
//! | `rewards.svg` | `rewards/chosen`, `rewards/rejected`, `rewards/margins` |
//! | `accuracy.svg` | `rewards/accuracies`, `eval/accuracy` and other `eval/…accuracy` keys |
//! | `logps.svg` | `logps/chosen`, `logps/rejected` |
//! | `optimizer.svg` | `learning_rate` and `grad_norm`, one panel each |
//! | `throughput.svg` | `tokens_per_second` |
//!
//! ```
//! use sapo_host::plot::{plot_training_curves, read_metrics};
//!
//! let run_dir = std::env::temp_dir().join(format!("sapo-plot-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&run_dir)?;
//! let metrics_path = run_dir.join("metrics.jsonl");
//! std::fs::write(
//!     &metrics_path,
//!     concat!(
//!         "{\"step\": 1, \"loss\": 0.693, \"rewards/margins\": 0.012}\n",
//!         "{\"event\": \"warning\", \"message\": \"lr warm-up is short\"}\n",
//!         "{\"step\": 2, \"loss\": 0.651, \"rewards/margins\": 0.087}\n",
//!     ),
//! )?;
//!
//! let rows = read_metrics(&metrics_path)?;
//! assert_eq!(rows.len(), 2);
//! let written = plot_training_curves(&rows, &run_dir.join("plots"))?;
//! let names: Vec<_> = written.iter().map(|path| path.file_name().unwrap().to_owned()).collect();
//! assert_eq!(names, ["loss.svg", "rewards.svg"]);
//! std::fs::remove_dir_all(&run_dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use serde_json::{Map, Number, Value};

/// One logged step of `metrics.jsonl`: its step and every numeric field.
///
/// Fields are kept by their TRL names in a sorted map rather than as struct
/// fields because the set differs by method (SFT logs `loss` only, ORPO adds
/// `nll_loss`) and grows as the trainer learns to log more.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricRow {
    /// The optimizer step the line was logged at (the JSON `step` key).
    pub step: u64,
    /// Every other numeric field by name, e.g. `"rewards/margins" → 0.03`.
    /// Null, missing, string and boolean fields are absent. Non-finite values
    /// (`NaN`, `Infinity`) are kept so a caller can see a run diverge; the
    /// plots skip them.
    pub values: BTreeMap<String, f64>,
}

/// Why the metrics could not be read or the charts not written.
///
/// Every variant names the file, and parse errors the 1-based line, so that
/// the message alone says where to look.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    /// The metrics file could not be opened or read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The metrics file.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// A complete line of the metrics file is not JSON.
    #[error("{}:{line}: invalid JSON: {source}", path.display())]
    InvalidJson {
        /// The metrics file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The parser's error.
        source: serde_json::Error,
    },
    /// A line's `step` is a number but not a non-negative integer.
    #[error("{}:{line}: step must be a non-negative integer, got {step}", path.display())]
    InvalidStep {
        /// The metrics file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// The offending value as written.
        step: Number,
    },
    /// The output directory or a chart file could not be written.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        /// The directory or file being written.
        path: PathBuf,
        /// The underlying I/O error.
        source: io::Error,
    },
    /// plotters failed while drawing a chart.
    #[error("cannot draw {}: {message}", path.display())]
    Draw {
        /// The chart file being drawn.
        path: PathBuf,
        /// plotters' error, as text because its type is generic over the backend.
        message: String,
    },
}

/// Reads `metrics.jsonl` into one [`MetricRow`] per logged step, in file order.
///
/// Lines without a numeric `step`, and records with an `"event"` key (warnings,
/// checkpoints), are skipped because they are not points on a curve. Blank
/// lines are skipped. Python-style `NaN`, `Infinity` and `-Infinity` literals
/// are accepted since a diverging run is exactly when the curves are wanted.
/// A final line with no newline that does not parse is taken to be still
/// being written by a live run and is skipped; any other invalid line is an
/// error naming the file and line.
pub fn read_metrics(path: &Path) -> Result<Vec<MetricRow>, PlotError> {
    let read_error = |source| PlotError::Read { path: path.to_owned(), source };
    let mut reader = BufReader::new(File::open(path).map_err(read_error)?);
    let mut rows = Vec::new();
    let mut line = String::new();
    let mut line_number = 0;
    loop {
        line.clear();
        if reader.read_line(&mut line).map_err(read_error)? == 0 {
            return Ok(rows);
        }
        line_number += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        match parse_json_line(text) {
            Ok(Value::Object(object)) => rows.extend(row_from_object(&object, path, line_number)?),
            Ok(_) => {}
            Err(_) if !line.ends_with('\n') => return Ok(rows),
            Err(source) => return Err(PlotError::InvalidJson { path: path.to_owned(), line: line_number, source }),
        }
    }
}

/// Parses one line, retrying with `NaN`/`Infinity` literals quoted when plain
/// JSON fails; the original error is reported if the retry fails too.
fn parse_json_line(text: &str) -> Result<Value, serde_json::Error> {
    serde_json::from_str(text).or_else(|error| match quote_non_finite_literals(text) {
        Some(quoted) => serde_json::from_str(&quoted).map_err(|_| error),
        None => Err(error),
    })
}

/// Wraps bare `NaN`, `Infinity` and `-Infinity` outside strings in quotes, or
/// returns `None` if there are none. [`numeric_value`] reads them back.
fn quote_non_finite_literals(text: &str) -> Option<String> {
    const LITERALS: [&str; 3] = ["-Infinity", "Infinity", "NaN"];
    let mut quoted = String::with_capacity(text.len() + 8);
    let (mut in_string, mut escaped, mut replaced) = (false, false, false);
    let mut rest = text;
    while let Some(character) = rest.chars().next() {
        let literal = LITERALS.iter().find(|literal| !in_string && rest.starts_with(**literal));
        if let Some(literal) = literal {
            quoted.push('"');
            quoted.push_str(literal);
            quoted.push('"');
            rest = &rest[literal.len()..];
            replaced = true;
            continue;
        }
        if in_string {
            in_string = escaped || character != '"';
            escaped = !escaped && character == '\\';
        } else {
            in_string = character == '"';
        }
        quoted.push(character);
        rest = &rest[character.len_utf8()..];
    }
    replaced.then_some(quoted)
}

/// The row for one JSON object, or `None` for event records and lines with no
/// numeric step.
fn row_from_object(object: &Map<String, Value>, path: &Path, line: usize) -> Result<Option<MetricRow>, PlotError> {
    if object.contains_key("event") {
        return Ok(None);
    }
    let Some(Value::Number(step)) = object.get("step") else {
        return Ok(None);
    };
    let step =
        integer_step(step).ok_or_else(|| PlotError::InvalidStep { path: path.to_owned(), line, step: step.clone() })?;
    let values = object
        .iter()
        .filter(|(name, _)| name.as_str() != "step")
        .filter_map(|(name, value)| Some((name.clone(), numeric_value(value)?)))
        .collect();
    Ok(Some(MetricRow { step, values }))
}

/// Accepts `3` and also `3.0`, since some loggers write every number as a float.
fn integer_step(step: &Number) -> Option<u64> {
    const LARGEST_EXACT_INTEGER: f64 = 9_007_199_254_740_992.0; // 2^53
    step.as_u64().or_else(|| {
        let float = step.as_f64()?;
        // The cast is exact: float is a whole number in [0, 2^53].
        (float >= 0.0 && float.fract() == 0.0 && float <= LARGEST_EXACT_INTEGER).then_some(float as u64)
    })
}

fn numeric_value(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => match text.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// One chart file: a title and one or more panels stacked vertically.
struct ChartSpec {
    file_name: &'static str,
    title: &'static str,
    panels: &'static [PanelSpec],
}

/// One set of axes. Series are the `keys` present, in that order, then any
/// other key `also_matches` accepts, alphabetically.
struct PanelSpec {
    y_label: &'static str,
    keys: &'static [&'static str],
    also_matches: fn(&str) -> bool,
    /// A y range always shown, e.g. [0, 1] for accuracies, widened if the data leave it.
    base_y_range: Option<(f64, f64)>,
    /// Whether noisy per-step series get a trailing moving average; the
    /// learning rate follows a schedule and is drawn as is.
    smooth: bool,
}

const CHARTS: &[ChartSpec] = &[
    ChartSpec {
        file_name: "loss.svg",
        title: "Loss",
        panels: &[PanelSpec {
            y_label: "loss",
            keys: &["loss", "nll_loss", "eval/loss"],
            also_matches: matches_nothing,
            base_y_range: None,
            smooth: true,
        }],
    },
    ChartSpec {
        file_name: "rewards.svg",
        title: "Implicit rewards",
        panels: &[PanelSpec {
            y_label: "reward",
            keys: &["rewards/chosen", "rewards/rejected", "rewards/margins"],
            also_matches: matches_nothing,
            base_y_range: None,
            smooth: true,
        }],
    },
    ChartSpec {
        file_name: "accuracy.svg",
        title: "Preference accuracy",
        panels: &[PanelSpec {
            y_label: "accuracy",
            keys: &["rewards/accuracies", "eval/accuracy"],
            also_matches: is_eval_accuracy,
            base_y_range: Some((0.0, 1.0)),
            smooth: true,
        }],
    },
    ChartSpec {
        file_name: "logps.svg",
        title: "Log-probabilities",
        panels: &[PanelSpec {
            y_label: "log p",
            keys: &["logps/chosen", "logps/rejected"],
            also_matches: matches_nothing,
            base_y_range: None,
            smooth: true,
        }],
    },
    ChartSpec {
        file_name: "optimizer.svg",
        title: "Optimizer",
        panels: &[
            PanelSpec {
                y_label: "learning rate",
                keys: &["learning_rate"],
                also_matches: matches_nothing,
                base_y_range: None,
                smooth: false,
            },
            PanelSpec {
                y_label: "grad norm",
                keys: &["grad_norm"],
                also_matches: matches_nothing,
                base_y_range: None,
                smooth: true,
            },
        ],
    },
    ChartSpec {
        file_name: "throughput.svg",
        title: "Throughput",
        panels: &[PanelSpec {
            y_label: "tokens / s",
            keys: &["tokens_per_second"],
            also_matches: matches_nothing,
            base_y_range: None,
            smooth: true,
        }],
    },
];

fn matches_nothing(_key: &str) -> bool {
    false
}

/// Evaluation accuracies under any name the trainer may choose, e.g.
/// `eval/rewards/accuracies`.
fn is_eval_accuracy(key: &str) -> bool {
    key.starts_with("eval/") && (key.ends_with("accuracy") || key.ends_with("accuracies"))
}

/// The finite points `(step, value)` of one metric, in file order.
struct Series {
    name: String,
    points: Vec<(u64, f64)>,
    smooth: bool,
}

/// A panel with the series that have data.
struct Panel {
    y_label: String,
    series: Vec<Series>,
    base_y_range: Option<(f64, f64)>,
}

/// Writes one SVG chart per metric group that has finite data into `out_dir`
/// (created if missing) and returns the paths written, in the order of the
/// table in the module doc.
///
/// Each file is written to a temporary name in `out_dir` and renamed into
/// place, so a viewer refreshing the charts during a run never sees half a
/// file. Non-finite values are skipped; a series with a single point is drawn
/// as a marker; series with enough points to be noisy get a faint raw line
/// under a trailing moving average, whose window the legend states.
pub fn plot_training_curves(rows: &[MetricRow], out_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    plot_charts(CHARTS, "step", rows, out_dir)
}

/// The per-iteration charts of SPPO and AIPO (`iterations.svg`): mean
/// response length of all samples and of the chosen and rejected ones, the
/// oracle's mean score, and the win rate against the previous iteration,
/// from `metrics.jsonl`'s `iteration_samples` events (x = iteration).
///
/// # Errors
/// The metrics file cannot be read, or a chart cannot be written.
pub fn plot_iteration_curves(metrics: &Path, out_dir: &Path) -> Result<Vec<PathBuf>, PlotError> {
    let text =
        std::fs::read_to_string(metrics).map_err(|source| PlotError::Read { path: metrics.to_owned(), source })?;
    let rows: Vec<MetricRow> = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|value| value.get("event").and_then(Value::as_str) == Some("iteration_samples"))
        .filter_map(|value| {
            let object = value.as_object()?;
            let step = object.get("iteration")?.as_u64()?;
            let values = object.iter().filter_map(|(name, value)| Some((name.clone(), value.as_f64()?))).collect();
            Some(MetricRow { step, values })
        })
        .collect();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    plot_charts(ITERATION_CHARTS, "iteration", &rows, out_dir)
}

const ITERATION_CHARTS: &[ChartSpec] = &[ChartSpec {
    file_name: "iterations.svg",
    title: "Per iteration (samples of the model each iteration starts from)",
    panels: &[
        PanelSpec {
            y_label: "mean tokens",
            keys: &["samples/mean_length", "samples/chosen_mean_length", "samples/rejected_mean_length"],
            also_matches: matches_nothing,
            base_y_range: None,
            smooth: false,
        },
        PanelSpec {
            y_label: "oracle",
            keys: &["oracle/mean_score", "oracle/win_rate_vs_previous"],
            also_matches: matches_nothing,
            base_y_range: None,
            smooth: false,
        },
    ],
}];

/// One named line of [`plot_lines`].
#[derive(Debug, Clone)]
pub struct NamedLine {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points in x order; non-finite y values are skipped.
    pub points: Vec<(u64, f64)>,
}

/// Draws `series` as lines with markers in one panel and writes the SVG to
/// `path` (its directory is created), atomically as the training charts are.
/// `sapo compare` draws accuracy per step and length per iteration with it.
///
/// # Errors
/// No finite point at all, a drawing error or an I/O error.
pub fn plot_lines(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[NamedLine],
    path: &Path,
) -> Result<(), PlotError> {
    let series: Vec<Series> = series
        .iter()
        .map(|line| Series {
            name: line.name.clone(),
            points: line.points.iter().copied().filter(|(_, y)| y.is_finite()).collect(),
            smooth: false,
        })
        .filter(|line| !line.points.is_empty())
        .collect();
    if series.is_empty() {
        return Err(PlotError::Draw { path: path.to_owned(), message: "no finite point to draw".into() });
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| PlotError::Write { path: dir.to_owned(), source })?;
    }
    let panel = Panel { y_label: y_label.to_string(), series, base_y_range: None };
    let svg = render_chart(title, std::slice::from_ref(&panel), x_label)
        .map_err(|message| PlotError::Draw { path: path.to_owned(), message })?;
    write_atomically(path, svg.as_bytes())
}

fn plot_charts(
    charts: &[ChartSpec],
    x_label: &str,
    rows: &[MetricRow],
    out_dir: &Path,
) -> Result<Vec<PathBuf>, PlotError> {
    std::fs::create_dir_all(out_dir).map_err(|source| PlotError::Write { path: out_dir.to_owned(), source })?;
    let keys: BTreeSet<&str> = rows.iter().flat_map(|row| row.values.keys().map(String::as_str)).collect();
    let mut written = Vec::new();
    for chart in charts {
        let panels: Vec<Panel> = chart
            .panels
            .iter()
            .map(|panel| collect_panel(panel, rows, &keys))
            .filter(|panel| !panel.series.is_empty())
            .collect();
        if panels.is_empty() {
            continue;
        }
        let path = out_dir.join(chart.file_name);
        let svg = render_chart(chart.title, &panels, x_label)
            .map_err(|message| PlotError::Draw { path: path.clone(), message })?;
        write_atomically(&path, svg.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

fn collect_panel(spec: &PanelSpec, rows: &[MetricRow], keys: &BTreeSet<&str>) -> Panel {
    let extra_keys = keys.iter().copied().filter(|key| !spec.keys.contains(key) && (spec.also_matches)(key));
    let series = spec
        .keys
        .iter()
        .copied()
        .chain(extra_keys)
        .map(|key| Series {
            name: key.to_owned(),
            points: rows
                .iter()
                .filter_map(|row| Some((row.step, *row.values.get(key)?)))
                .filter(|(_, value)| value.is_finite())
                .collect(),
            // Evaluation is logged sparsely, so averaging it would hide real changes.
            smooth: spec.smooth && !key.starts_with("eval/"),
        })
        .filter(|series| !series.points.is_empty())
        .collect();
    Panel { y_label: spec.y_label.to_string(), series, base_y_range: spec.base_y_range }
}

const CHART_WIDTH: u32 = 900;
const PANEL_HEIGHT: u32 = 420;
const TITLE_HEIGHT: u32 = 40;
/// Tableau's ten colours, distinguishable in print and (the first six) by
/// most colour-blind readers; the comparison plots need all ten.
const COLOURS: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
/// Series with fewer points than this also get a marker per point, so that
/// sparse evaluation results and single points are visible.
const MARKER_LIMIT: usize = 40;

/// Draws the panels stacked under one title and returns the SVG text.
fn render_chart(title: &str, panels: &[Panel], x_label: &str) -> Result<String, String> {
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels.len() as u32;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (CHART_WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|error| error.to_string())?;
        let body = root.titled(title, ("sans-serif", 24)).map_err(|error| error.to_string())?;
        let x_range = step_range(panels.iter().flat_map(|panel| &panel.series).flat_map(|series| &series.points));
        for (area, panel) in body.split_evenly((panels.len(), 1)).iter().zip(panels) {
            draw_panel(area, panel, x_range.clone(), x_label).map_err(|error| error.to_string())?;
        }
        root.present().map_err(|error| error.to_string())?;
    }
    Ok(svg)
}

fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    x_range: Range<u64>,
    x_label: &str,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    let y_range = padded_range(
        panel.series.iter().flat_map(|series| series.points.iter().map(|point| point.1)),
        panel.base_y_range,
    );
    let format_y = tick_formatter(&y_range);
    let mut chart = ChartBuilder::on(area)
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(x_range, y_range)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(&panel.y_label)
        .y_label_formatter(&format_y)
        .label_style(("sans-serif", 14))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()?;
    for (index, series) in panel.series.iter().enumerate() {
        let colour = COLOURS[index % COLOURS.len()];
        let window = if series.smooth { smoothing_window(series.points.len()) } else { 1 };
        let labelled = if window > 1 {
            chart.draw_series(LineSeries::new(series.points.iter().copied(), colour.mix(0.25).stroke_width(1)))?;
            let smoothed = trailing_mean(&series.points, window);
            chart.draw_series(LineSeries::new(smoothed, colour.stroke_width(2)))?
        } else {
            chart.draw_series(LineSeries::new(series.points.iter().copied(), colour.stroke_width(2)))?
        };
        labelled
            .label(if window > 1 { format!("{} (mean of {window})", series.name) } else { series.name.clone() })
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        if series.points.len() < MARKER_LIMIT {
            chart.draw_series(series.points.iter().map(|&point| Circle::new(point, 3, colour.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(180, 180, 180))
        .label_font(("sans-serif", 14))
        .draw()
}

/// About 5% of the points, so the average follows trends over a run but not
/// step-to-step noise; 1 (no smoothing) below 60 points.
fn smoothing_window(n_points: usize) -> usize {
    let window = (n_points / 20).min(50);
    if window >= 3 { window } else { 1 }
}

/// Mean of each point and up to `window - 1` points before it, so the curve
/// never uses values from later steps.
fn trailing_mean(points: &[(u64, f64)], window: usize) -> Vec<(u64, f64)> {
    let mut sum = 0.0;
    let mut means = Vec::with_capacity(points.len());
    for (index, &(step, value)) in points.iter().enumerate() {
        sum += value;
        if index >= window {
            sum -= points[index - window].1;
        }
        means.push((step, sum / (index + 1).min(window) as f64));
    }
    means
}

/// The steps spanned by `points`, one step wider each side for a single step
/// so that its point sits inside the axes. The x axis counts in whole steps, so
/// its ticks are never fractional.
fn step_range<'a>(points: impl Iterator<Item = &'a (u64, f64)>) -> Range<u64> {
    let (low, high) = points.fold((u64::MAX, 0), |(low, high), &(step, _)| (low.min(step), high.max(step)));
    if low < high {
        low..high
    } else if low == high {
        low.saturating_sub(1)..high.saturating_add(1)
    } else {
        0..1 // No points; callers only draw panels with data.
    }
}

/// The range of `values` (all finite) joined with `base`, widened by 5% each
/// side; a single value gets a margin of 10% of its size, or 1 around zero.
fn padded_range(values: impl Iterator<Item = f64>, base: Option<(f64, f64)>) -> Range<f64> {
    let (low, high) = values.fold(base.unwrap_or((f64::INFINITY, f64::NEG_INFINITY)), |(low, high), value| {
        (low.min(value), high.max(value))
    });
    if !(low.is_finite() && high.is_finite()) {
        return 0.0..1.0;
    }
    let span = high - low;
    let margin = if span > 0.0 {
        0.05 * span
    } else if low != 0.0 {
        0.1 * low.abs()
    } else {
        1.0
    };
    (low - margin)..(high + margin)
}

/// Tick labels with as many decimals as the range needs, in scientific
/// notation for learning-rate-sized or very large values.
fn tick_formatter(range: &Range<f64>) -> impl Fn(&f64) -> String + use<> {
    let magnitude = range.start.abs().max(range.end.abs());
    let span = range.end - range.start;
    let scientific = !(1e-2..1e6).contains(&magnitude);
    let decimals = (1.0 - span.log10().floor()).clamp(0.0, 4.0) as usize;
    move |value| if scientific { format!("{value:.2e}") } else { format!("{value:.decimals$}") }
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over
/// `path`, so readers see either the old chart or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    let file_name = path.file_name().map(|name| name.to_string_lossy()).unwrap_or_default();
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = File::create(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    result.map_err(|source| {
        // Best effort: the write already failed, and a leftover temporary file is only clutter.
        let _ = std::fs::remove_file(&temporary);
        PlotError::Write { path: path.to_owned(), source }
    })
}
