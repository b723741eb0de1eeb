//! What one finished run reports, read back from its `metrics.jsonl` and
//! `compare.json`.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Written into a run directory when its `sapo train` finished.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DoneMarker {
    /// Wall-clock seconds of the whole `sapo train` process.
    pub wall_seconds: f64,
    /// The command line, to repeat the run.
    pub command: Vec<String>,
}

/// The figures of one finished run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Cell name.
    pub cell: String,
    /// Seed.
    pub seed: u64,
    /// Held-out task accuracy of the starting model.
    pub accuracy_before: f64,
    /// Held-out task accuracy of the final model.
    pub accuracy_after: f64,
    /// Mean judge score (partial credit) of the final model's answers.
    pub score_after: f64,
    /// Mean tokens of the final model's held-out answers.
    pub answer_length: f64,
    /// Share of held-out pairs where the final model gives the correct
    /// answer a higher log-probability than the wrong one (when the
    /// evaluation file has pairs): finer-grained than greedy accuracy.
    pub pair_accuracy: Option<f64>,
    /// The same share for the starting model.
    pub pair_accuracy_before: Option<f64>,
    /// Optimizer steps.
    pub steps: u64,
    /// Tokens through the policy's forward and backward passes.
    pub tokens_trained: u64,
    /// Wall-clock seconds of the run (evaluations, sampling and saving included).
    pub wall_seconds: f64,
    /// Held-out accuracy at each evaluated step (0 = before training).
    pub accuracy_curve: Vec<(u64, f64)>,
    /// Per iteration (SPIN, SPPO, AIPO): mean sample length and oracle score
    /// (SPIN has no oracle).
    pub iterations: Vec<IterationFigures>,
}

/// The `iteration_samples` (SPPO, AIPO) or `spin_generation` event of one iteration.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IterationFigures {
    /// 1-based iteration.
    pub iteration: u64,
    /// The optimizer step the iteration started at.
    pub start_step: u64,
    /// Mean tokens of every sample the iteration drew.
    pub mean_length: f64,
    /// The oracle's mean score of those samples (when it scores).
    pub oracle_score: Option<f64>,
}

/// Reads one finished run. `metrics.jsonl` must hold the summary event and
/// the before and after evaluations.
///
/// # Errors
/// A missing or malformed file, or a run without those events.
pub fn read_run(run_dir: &Path, cell: &str, seed: u64, marker: &DoneMarker) -> Result<RunResult> {
    let path = run_dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    let mut summary: Option<Value> = None;
    let (mut before, mut after): (Option<Value>, Option<Value>) = (None, None);
    let mut curve: BTreeMap<u64, f64> = BTreeMap::new();
    let mut iterations = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("{}:{}: invalid JSON", path.display(), index + 1))?;
        match value.get("event").and_then(Value::as_str) {
            Some("eval") => {
                let (Some(step), Some(accuracy)) =
                    (value.get("step").and_then(Value::as_u64), value.get("eval/accuracy").and_then(Value::as_f64))
                else {
                    bail!("{}:{}: eval event without step or eval/accuracy", path.display(), index + 1);
                };
                curve.insert(step, accuracy);
                match value.get("when").and_then(Value::as_str) {
                    Some("before") => before = Some(value),
                    Some("after") => after = Some(value),
                    _ => {}
                }
            }
            Some("iteration_samples" | "spin_generation") => iterations.push(IterationFigures {
                iteration: value.get("iteration").and_then(Value::as_u64).unwrap_or(0),
                start_step: value.get("step").and_then(Value::as_u64).unwrap_or(0),
                mean_length: value.get("samples/mean_length").and_then(Value::as_f64).unwrap_or(f64::NAN),
                oracle_score: value.get("oracle/mean_score").and_then(Value::as_f64),
            }),
            Some("summary") => summary = Some(value),
            _ => {}
        }
    }
    let missing = |what: &str| anyhow::anyhow!("{}: no {what} (did the run finish?)", path.display());
    let summary = summary.ok_or_else(|| missing("summary event"))?;
    let before = before.ok_or_else(|| missing("evaluation before training (is eval_data empty?)"))?;
    let after = after.ok_or_else(|| missing("evaluation after training"))?;
    let number = |event: &Value, key: &str| {
        event.get(key).and_then(Value::as_f64).ok_or_else(|| anyhow::anyhow!("{}: no `{key}`", path.display()))
    };
    Ok(RunResult {
        cell: cell.to_string(),
        seed,
        accuracy_before: number(&before, "eval/accuracy")?,
        accuracy_after: number(&after, "eval/accuracy")?,
        score_after: number(&after, "eval/mean_score")?,
        answer_length: number(&after, "eval/mean_length")?,
        pair_accuracy: after.get("eval/pair_accuracy").and_then(Value::as_f64),
        pair_accuracy_before: before.get("eval/pair_accuracy").and_then(Value::as_f64),
        steps: summary.get("steps").and_then(Value::as_u64).unwrap_or(0),
        tokens_trained: summary.get("tokens_trained").and_then(Value::as_u64).unwrap_or(0),
        wall_seconds: marker.wall_seconds,
        accuracy_curve: curve.into_iter().collect(),
        iterations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(lines: &[&str]) -> Result<RunResult> {
        static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sapo-read-run-{}-{call}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("metrics.jsonl"), lines.join("\n")).unwrap();
        let marker = DoneMarker { wall_seconds: 2.5, command: vec![] };
        let result = read_run(&dir, "cell", 3, &marker);
        std::fs::remove_dir_all(&dir).unwrap();
        result
    }

    const BEFORE: &str = r#"{"event":"eval","when":"before","step":0,"eval/accuracy":0.25,"eval/mean_score":0.4,"eval/mean_length":5.0}"#;
    const DURING: &str =
        r#"{"event":"eval","when":"during","step":2,"eval/accuracy":0.3,"eval/mean_score":0.4,"eval/mean_length":5.0}"#;
    const ITERATION: &str =
        r#"{"event":"iteration_samples","iteration":1,"step":0,"samples/mean_length":4.5,"oracle/mean_score":0.6}"#;
    const AFTER: &str = r#"{"event":"eval","when":"after","step":4,"eval/accuracy":0.5,"eval/mean_score":0.6,"eval/mean_length":6.0,"eval/pair_accuracy":0.8}"#;
    const SUMMARY: &str = r#"{"event":"summary","steps":4,"tokens_trained":900}"#;

    #[test]
    fn a_finished_run_reads_back_whole() {
        let step = r#"{"step":1,"loss":0.69}"#;
        let run = run_with(&[BEFORE, step, DURING, ITERATION, AFTER, SUMMARY]).unwrap();
        assert_eq!(
            (run.accuracy_before, run.accuracy_after, run.score_after, run.answer_length),
            (0.25, 0.5, 0.6, 6.0)
        );
        assert_eq!((run.steps, run.tokens_trained, run.wall_seconds, run.seed), (4, 900, 2.5, 3));
        assert_eq!(run.accuracy_curve, vec![(0, 0.25), (2, 0.3), (4, 0.5)]);
        assert_eq!(run.pair_accuracy, Some(0.8));
        assert_eq!((run.iterations[0].mean_length, run.iterations[0].oracle_score), (4.5, Some(0.6)));
    }

    #[test]
    fn an_unfinished_or_damaged_run_is_an_error_naming_the_file() {
        let error = run_with(&[BEFORE, DURING]).unwrap_err().to_string();
        assert!(error.contains("metrics.jsonl") && error.contains("no summary event"), "{error}");
        let error = run_with(&[BEFORE, SUMMARY]).unwrap_err().to_string();
        assert!(error.contains("no evaluation after training"), "{error}");
        let error = run_with(&[BEFORE, "{not json"]).unwrap_err().to_string();
        assert!(error.contains("metrics.jsonl:2: invalid JSON"), "{error}");
    }
}
