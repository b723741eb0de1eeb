//! `sapo_host::plot`: reading `metrics.jsonl` and writing the SVG training curves.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use sapo_host::plot::{MetricRow, PlotError, plot_training_curves, read_metrics};
use serde_json::json;

/// A fresh, empty directory under the system temp dir, unique to this test and process.
fn scratch_dir(test_name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sapo-plot-metrics-{}-{test_name}", std::process::id()));
    let _ = fs::remove_dir_all(&dir); // Leftovers of an earlier failed run, if any.
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// xorshift64*: reproducible non-zero noise without a dev-dependency.
struct Noise(u64);

impl Noise {
    /// Uniform in [-1, 1).
    fn next(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        let bits = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11;
        bits as f64 / (1u64 << 52) as f64 - 1.0
    }
}

/// A DPO-like run: `n_steps` training lines with every metric, evaluation
/// lines every 50 steps, and event records in between.
fn dpo_metrics_lines(n_steps: u64, seed: u64) -> Vec<String> {
    let mut noise = Noise(seed);
    let mut lines = vec![json!({"event": "start", "step": 0, "loss": 99.0, "model": "SmolLM2-135M"}).to_string()];
    for step in 1..=n_steps {
        let progress = step as f64 / n_steps as f64;
        let margin = 2.0 * progress + 0.3 * noise.next();
        let chosen = 0.4 * progress + 0.2 * noise.next();
        lines.push(
            json!({
                "step": step,
                "epoch": progress * 2.0,
                "loss": 0.693 * (-progress).exp() + 0.05 * noise.next(),
                "rewards/chosen": chosen,
                "rewards/rejected": chosen - margin,
                "rewards/margins": margin,
                "rewards/accuracies": (0.5 + 0.4 * progress + 0.1 * noise.next()).clamp(0.0, 1.0),
                "logps/chosen": -40.0 + 5.0 * progress + noise.next(),
                "logps/rejected": -42.0 - 10.0 * progress + noise.next(),
                "learning_rate": 5e-7 * (1.0 - progress) + 1e-8,
                "grad_norm": 3.0 + noise.next(),
                "tokens_per_second": 1500.0 + 100.0 * noise.next(),
                "replay/size": 16,
                "samples/mean_length": 7.5 + noise.next(),
            })
            .to_string(),
        );
        if step % 50 == 0 {
            lines.push(json!({"step": step, "eval/accuracy": 0.55 + 0.3 * progress, "eval/loss": 0.6}).to_string());
            lines.push(json!({"event": "warning", "step": step, "message": "slow step"}).to_string());
        }
    }
    lines
}

fn write_lines(path: &Path, lines: &[String]) {
    fs::write(path, lines.iter().map(|line| format!("{line}\n")).collect::<String>()).expect("write metrics");
}

fn file_names(paths: &[PathBuf]) -> Vec<String> {
    paths.iter().map(|path| path.file_name().expect("file name").to_string_lossy().into_owned()).collect()
}

/// The contents of every `<text>` element, which is where plotters' SVG
/// backend writes titles, tick labels and legend entries.
fn svg_texts(svg: &str) -> Vec<&str> {
    svg.split("<text")
        .skip(1)
        .filter_map(|element| {
            let content = &element[element.find('>')? + 1..];
            Some(content[..content.find("</text>")?].trim())
        })
        .collect()
}

/// Reads a chart and checks it is a whole SVG document.
fn read_svg(path: &Path) -> String {
    let svg = fs::read_to_string(path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    assert!(svg.starts_with("<svg") || svg.starts_with("<?xml"), "{} does not start as SVG", path.display());
    assert!(svg.trim_end().ends_with("</svg>"), "{} is not a complete SVG document", path.display());
    svg
}

fn assert_legend_has(svg_path: &Path, series_names: &[&str]) {
    let svg = read_svg(svg_path);
    let texts = svg_texts(&svg);
    for name in series_names {
        assert!(
            texts.iter().any(|text| text.starts_with(name)),
            "{}: no text element names {name}; texts: {texts:?}",
            svg_path.display()
        );
    }
}

#[test]
fn dpo_run_writes_one_chart_per_group_with_series_names_in_legend() {
    let seed = 0x5a90_2024;
    let dir = scratch_dir("dpo");
    let metrics_path = dir.join("metrics.jsonl");
    write_lines(&metrics_path, &dpo_metrics_lines(150, seed));

    let rows = read_metrics(&metrics_path).expect("read metrics");
    assert_eq!(rows.len(), 150 + 3, "150 training rows and 3 evaluation rows (seed {seed:#x})");
    let plots_dir = dir.join("plots");
    let written = plot_training_curves(&rows, &plots_dir).expect("plot");

    let expected = ["loss.svg", "rewards.svg", "accuracy.svg", "logps.svg", "optimizer.svg", "throughput.svg"];
    assert_eq!(file_names(&written), expected);
    assert_legend_has(&plots_dir.join("loss.svg"), &["loss", "eval/loss"]);
    assert_legend_has(&plots_dir.join("rewards.svg"), &["rewards/chosen", "rewards/rejected", "rewards/margins"]);
    assert_legend_has(&plots_dir.join("accuracy.svg"), &["rewards/accuracies", "eval/accuracy"]);
    assert_legend_has(&plots_dir.join("logps.svg"), &["logps/chosen", "logps/rejected"]);
    assert_legend_has(&plots_dir.join("optimizer.svg"), &["learning_rate", "grad_norm"]);
    assert_legend_has(&plots_dir.join("throughput.svg"), &["tokens_per_second"]);
    for path in &written {
        let svg = read_svg(path);
        assert!(svg_texts(&svg).contains(&"step"), "{}: no x-axis label 'step'", path.display());
    }

    // Atomic writes leave no temporary files behind.
    let on_disk: BTreeSet<PathBuf> =
        fs::read_dir(&plots_dir).expect("list plots").map(|entry| entry.expect("entry").path()).collect();
    assert_eq!(on_disk, written.iter().cloned().collect::<BTreeSet<_>>());
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn read_metrics_returns_the_values_written() {
    let dir = scratch_dir("values");
    let metrics_path = dir.join("metrics.jsonl");
    let lines = dpo_metrics_lines(60, 0x1234_5678);
    write_lines(&metrics_path, &lines);

    let rows = read_metrics(&metrics_path).expect("read metrics");
    let expected: Vec<serde_json::Value> = lines
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).expect("own JSON"))
        .filter(|value| value.get("event").is_none())
        .collect();
    assert_eq!(rows.len(), expected.len());
    for (row, value) in rows.iter().zip(&expected) {
        let object = value.as_object().expect("object");
        assert_eq!(Some(row.step), object["step"].as_u64());
        assert_eq!(row.values.len(), object.len() - 1, "every field but step, at step {}", row.step);
        for (name, &read) in &row.values {
            let written = object[name].as_f64().expect("numeric");
            // serde_json's default float parser may differ from the shortest round trip by an ulp.
            assert!(
                (read - written).abs() <= 1e-15 * written.abs(),
                "{name} at step {}: {read} != {written}",
                row.step
            );
        }
    }
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn invalid_json_line_is_an_error_naming_file_and_line() {
    let dir = scratch_dir("invalid");
    let metrics_path = dir.join("metrics.jsonl");
    fs::write(
        &metrics_path,
        "{\"step\": 1, \"loss\": 0.71}\n\n{\"step\": 2, \"loss\": 0.68,\n{\"step\": 3, \"loss\": 0.6}\n",
    )
    .expect("write");

    let error = read_metrics(&metrics_path).expect_err("line 3 is not JSON");
    assert!(matches!(error, PlotError::InvalidJson { line: 3, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains(&format!("{}:3:", metrics_path.display())), "{message}");
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn event_lines_and_lines_without_step_are_skipped() {
    let dir = scratch_dir("events");
    let metrics_path = dir.join("metrics.jsonl");
    let lines = [
        json!({"event": "warning", "message": "tokenizer has no pad token"}),
        json!({"step": 10, "loss": 0.64, "grad_norm": 1.7}),
        json!({"event": "checkpoint", "step": 10, "loss": 123.0}),
        json!({"note": "no step here", "loss": 5.0}),
        json!({"step": "eleven", "loss": 5.0}),
        json!([1, 2, 3]),
        json!({"step": 20, "loss": 0.59, "eval/accuracy": 0.625}),
    ];
    write_lines(&metrics_path, &lines.iter().map(|line| line.to_string()).collect::<Vec<_>>());

    let rows = read_metrics(&metrics_path).expect("read metrics");
    let steps: Vec<u64> = rows.iter().map(|row| row.step).collect();
    assert_eq!(steps, [10, 20]);
    assert_eq!(rows[0].values["loss"], 0.64);
    assert_eq!(rows[1].values["eval/accuracy"], 0.625);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn empty_file_gives_no_charts_and_no_error() {
    let dir = scratch_dir("empty");
    let metrics_path = dir.join("metrics.jsonl");
    fs::write(&metrics_path, "").expect("write");

    let rows = read_metrics(&metrics_path).expect("read metrics");
    assert!(rows.is_empty());
    let plots_dir = dir.join("plots");
    let written = plot_training_curves(&rows, &plots_dir).expect("plot");
    assert!(written.is_empty());
    assert_eq!(fs::read_dir(&plots_dir).expect("plots dir is created").count(), 0);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn single_logged_step_still_renders_with_a_marker() {
    let dir = scratch_dir("single");
    let rows = [MetricRow {
        step: 1,
        values: [("loss".to_owned(), 0.6874), ("learning_rate".to_owned(), 5e-7)].into_iter().collect(),
    }];
    let written = plot_training_curves(&rows, &dir).expect("plot");

    assert_eq!(file_names(&written), ["loss.svg", "optimizer.svg"]);
    for path in &written {
        assert!(read_svg(path).contains("<circle"), "{}: the single point has no marker", path.display());
    }
    assert_legend_has(&dir.join("optimizer.svg"), &["learning_rate"]);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn sft_run_writes_only_loss_optimizer_and_throughput() {
    let dir = scratch_dir("sft");
    let mut noise = Noise(0xc0ff_ee11);
    let rows: Vec<MetricRow> = (1..=37)
        .map(|step| MetricRow {
            step: step * 4,
            values: [
                ("loss".to_owned(), 2.3 - 0.01 * step as f64 + 0.1 * noise.next()),
                ("learning_rate".to_owned(), 2e-5),
                ("grad_norm".to_owned(), 1.1 + 0.2 * noise.next()),
                ("tokens_per_second".to_owned(), 2100.0 + 50.0 * noise.next()),
            ]
            .into_iter()
            .collect(),
        })
        .collect();
    let written = plot_training_curves(&rows, &dir).expect("plot");
    assert_eq!(file_names(&written), ["loss.svg", "optimizer.svg", "throughput.svg"]);
    assert_legend_has(&dir.join("loss.svg"), &["loss"]);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn non_finite_values_are_read_but_not_plotted() {
    let dir = scratch_dir("non-finite");
    let metrics_path = dir.join("metrics.jsonl");
    // Python's json.dumps writes these literals; serde_json alone would reject them.
    fs::write(
        &metrics_path,
        concat!(
            "{\"step\": 1, \"loss\": 0.69, \"grad_norm\": Infinity}\n",
            "{\"step\": 2, \"loss\": NaN, \"grad_norm\": -Infinity, \"note\": \"NaN \\\"Infinity\\\"\"}\n",
            "{\"step\": 3, \"loss\": 0.52, \"grad_norm\": NaN, \"rewards/margins\": null}\n",
        ),
    )
    .expect("write");

    let rows = read_metrics(&metrics_path).expect("read metrics");
    assert_eq!(rows.len(), 3);
    assert!(rows[1].values["loss"].is_nan());
    assert_eq!(rows[0].values["grad_norm"], f64::INFINITY);
    assert_eq!(rows[1].values["grad_norm"], f64::NEG_INFINITY);
    assert!(!rows[1].values.contains_key("note"), "a string field is not a metric");
    assert!(!rows[2].values.contains_key("rewards/margins"), "null is absent");

    let written = plot_training_curves(&rows, &dir.join("plots")).expect("plot");
    assert_eq!(file_names(&written), ["loss.svg"], "grad_norm has no finite value, so no optimizer chart");
    let svg = read_svg(&written[0]);
    assert!(!svg.contains("NaN") && !svg.contains("inf"), "a non-finite value reached the SVG");
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn unfinished_last_line_of_a_live_run_is_skipped() {
    let dir = scratch_dir("live");
    let metrics_path = dir.join("metrics.jsonl");
    fs::write(&metrics_path, "{\"step\": 1, \"loss\": 0.69}\n{\"step\": 2, \"loss\": 0.6").expect("write");
    let steps: Vec<u64> = read_metrics(&metrics_path).expect("read metrics").iter().map(|row| row.step).collect();
    assert_eq!(steps, [1]);

    // The same line once terminated is a real error.
    fs::write(&metrics_path, "{\"step\": 1, \"loss\": 0.69}\n{\"step\": 2, \"loss\": 0.6\n").expect("write");
    let error = read_metrics(&metrics_path).expect_err("line 2 is complete and invalid");
    assert!(matches!(error, PlotError::InvalidJson { line: 2, .. }), "{error:?}");
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn fractional_step_is_an_error_but_whole_float_step_is_accepted() {
    let dir = scratch_dir("step");
    let metrics_path = dir.join("metrics.jsonl");
    fs::write(&metrics_path, "{\"step\": 4.0, \"loss\": 0.69}\n{\"step\": 4.5, \"loss\": 0.6}\n").expect("write");
    let error = read_metrics(&metrics_path).expect_err("step 4.5 is not an optimizer step");
    assert!(matches!(error, PlotError::InvalidStep { line: 2, .. }), "{error:?}");
    assert!(error.to_string().contains("4.5"), "{error}");

    fs::write(&metrics_path, "{\"step\": 4.0, \"loss\": 0.69}\n").expect("write");
    assert_eq!(read_metrics(&metrics_path).expect("read metrics")[0].step, 4);
    fs::remove_dir_all(&dir).expect("clean up");
}

#[test]
fn missing_metrics_file_is_an_error_naming_it() {
    let dir = scratch_dir("missing");
    let metrics_path = dir.join("metrics.jsonl");
    let error = read_metrics(&metrics_path).expect_err("no such file");
    assert!(matches!(error, PlotError::Read { .. }), "{error:?}");
    assert!(error.to_string().contains(&metrics_path.display().to_string()), "{error}");
    fs::remove_dir_all(&dir).expect("clean up");
}
