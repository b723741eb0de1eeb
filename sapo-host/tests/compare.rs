//! `sapo compare` end to end: a reduced grid (one seed, a few steps, small
//! slices of the task's data) runs and writes a well-formed report; a
//! second call keeps the finished runs; one cell re-run by hand with the
//! command the report gives reproduces its weights bit for bit; the shipped
//! grid plans every method the comparison needs over at least five seeds.
//! Nothing here asserts which method wins.

mod common;

use std::path::Path;
use std::process::Command;

use common::fixtures_dir;
use sapo_host::compare::{Grid, RunResult};

fn sapo() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sapo"))
}

fn head(from: &str, to: &Path, n: usize) {
    let text = std::fs::read_to_string(fixtures_dir().join("task/data").join(from)).unwrap();
    let lines: Vec<&str> = text.lines().take(n).collect();
    std::fs::write(to, lines.join("\n")).unwrap();
}

/// A grid of five cells in two groups over small data slices.
fn smoke_grid(dir: &Path) -> std::path::PathBuf {
    head("train.jsonl", &dir.join("train.jsonl"), 24);
    head("sft.jsonl", &dir.join("sft.jsonl"), 24);
    head("eval.jsonl", &dir.join("eval.jsonl"), 14);
    let model = fixtures_dir().join("task/model");
    let grid = format!(
        r#"
seeds = [1]
[common]
model = "{}"
data = "train.jsonl"
eval_data = "eval.jsonl"
threads = 1
per_device_train_batch_size = 4
max_length = 128
max_prompt_length = 96
max_new_tokens = 12
eval_steps = 2
[[group]]
name = "main"
title = "Main"
[[group]]
name = "length"
title = "Length"
[[cell]]
name = "sft"
label = "SFT"
group = "main"
config = {{ method = "sft", data = "sft.jsonl", learning_rate = 1e-3, max_steps = 4 }}
[[cell]]
name = "dpo"
label = "DPO"
group = "main"
config = {{ method = "dpo", learning_rate = 1e-4, max_steps = 4 }}
[[cell]]
name = "sapo_dpo"
label = "SAPO-DPO"
group = "main"
config = {{ method = "sapo", learning_rate = 1e-4, max_steps = 4, segment_len = 8 }}
[[cell]]
name = "sppo"
label = "SPPO"
group = "main"
config = {{ method = "sppo", learning_rate = 1e-4, iterations = 2, max_steps = 2, num_samples = 3, oracle = "rule" }}
[[cell]]
name = "aipo_length"
label = "AIPO, length judge"
group = "length"
config = {{ method = "aipo", learning_rate = 1e-4, iterations = 2, max_steps = 2, num_samples = 3, oracle = "length" }}
"#,
        model.display()
    );
    let path = dir.join("grid.toml");
    std::fs::write(&path, grid).unwrap();
    path
}

#[test]
fn a_reduced_grid_runs_and_reports_and_a_cell_reproduces() {
    let dir = common::run_dir("compare", "smoke");
    std::fs::create_dir_all(&dir).unwrap();
    let grid = smoke_grid(&dir);
    let out = dir.join("out");
    let run = |extra: &[&str]| {
        let output = sapo()
            .args(["compare", "--grid", grid.to_str().unwrap(), "--output-dir", out.to_str().unwrap()])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr).to_string();
        assert!(output.status.success(), "sapo compare failed: {stderr}");
        stderr
    };
    run(&[]);

    let report = std::fs::read_to_string(out.join("results.md")).unwrap();
    let header = "| cell | method | seeds | accuracy % | gain (points) | score | pairs ranked % | answer length | steps | tokens trained | wall s |";
    assert_eq!(report.matches(header).count(), 2, "one table per group:\n{report}");
    for cell in ["sft", "dpo", "sapo_dpo", "sppo", "aipo_length"] {
        let row = report.lines().find(|line| line.starts_with(&format!("| `{cell}` | "))).unwrap_or_else(|| {
            panic!("no row for {cell}:\n{report}");
        });
        assert_eq!(row.matches('|').count(), 12, "{row}");
        assert!(report.contains(&format!("configs/{cell}.toml")));
    }
    // The iterative cells have per-iteration rows (iterations 1, 2 and the end).
    for cell in ["sppo", "aipo_length"] {
        let rows = report.lines().filter(|line| line.starts_with(&format!("| `{cell}` | "))).count();
        assert_eq!(rows, 1 + 3, "{cell}:\n{report}");
    }
    let results: Vec<RunResult> =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(results.len(), 5);
    for result in &results {
        assert!((0.0..=1.0).contains(&result.accuracy_after), "{result:?}");
        assert!(result.accuracy_curve.len() >= 2 && result.accuracy_curve[0].0 == 0, "{result:?}");
        assert!(result.tokens_trained > 0 && result.steps == 4 && result.wall_seconds > 0.0, "{result:?}");
    }
    for svg in ["accuracy-main.svg", "accuracy-length.svg", "length-main.svg", "length-length.svg"] {
        let text = std::fs::read_to_string(out.join(svg)).unwrap_or_else(|e| panic!("{svg}: {e}"));
        assert!(text.starts_with("<svg"), "{svg}");
    }

    // A second call runs nothing and reports the same runs.
    let stderr = run(&[]);
    assert!(stderr.contains("5 of 5 runs already finished"), "{stderr}");
    let again: Vec<RunResult> =
        serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap();
    assert_eq!(serde_json::to_string(&again).unwrap(), serde_json::to_string(&results).unwrap());

    // The command the report documents repeats a cell bit for bit.
    let by_hand = dir.join("by-hand");
    let status = sapo()
        .args(["train", "--config", out.join("configs/sapo_dpo.toml").to_str().unwrap(), "--seed", "1"])
        .args(["--output-dir", by_hand.to_str().unwrap(), "--quiet"])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    let weights = |run: &Path| std::fs::read(run.join("final/model.safetensors")).unwrap();
    assert!(weights(&by_hand) == weights(&out.join("runs/sapo_dpo/seed-1")), "the re-run differs");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_shipped_grid_plans_every_method_over_five_seeds() {
    let grid = Grid::load(None).unwrap();
    assert!(grid.seeds.len() >= 5);
    let methods: Vec<String> = grid
        .cells
        .iter()
        .map(|cell| {
            let method = cell.config.get("method").and_then(|m| m.as_str()).unwrap_or("?");
            let objective = cell.config.get("objective").and_then(|m| m.as_str()).unwrap_or("");
            let oracle = cell.config.get("oracle").and_then(|m| m.as_str()).unwrap_or("");
            format!("{method}/{objective}/{oracle}")
        })
        .collect();
    for needed in ["sft//", "dpo//", "orpo//", "sapo/dpo/", "sapo/orpo/", "spin//", "sppo//rule", "sppo_hard//rule"] {
        assert!(methods.iter().any(|m| m == needed), "no {needed} cell in {methods:?}");
    }
    assert!(methods.iter().filter(|m| m.as_str() == "aipo//length").count() >= 2, "{methods:?}");

    let dir = common::run_dir("compare", "dry-run");
    let output = sapo().args(["compare", "--dry-run", "--output-dir", dir.to_str().unwrap()]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let listed = String::from_utf8_lossy(&output.stdout).lines().filter(|l| l.contains(" train --config ")).count();
    assert_eq!(listed, grid.cells.len() * grid.seeds.len());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_cell_that_does_not_resolve_stops_before_any_run() {
    let dir = common::run_dir("compare", "bad-cell");
    std::fs::create_dir_all(&dir).unwrap();
    let grid = dir.join("grid.toml");
    std::fs::write(
        &grid,
        "seeds = [1]\n[[group]]\nname = \"g\"\ntitle = \"G\"\n[[cell]]\nname = \"typo\"\nlabel = \"T\"\n\
         group = \"g\"\nconfig = { method = \"dpo\", learning_rat = 1e-4 }\n",
    )
    .unwrap();
    let output = sapo()
        .args(["compare", "--grid", grid.to_str().unwrap(), "--output-dir", dir.join("out").to_str().unwrap()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("cell `typo`") && stderr.contains("learning_rat"), "{stderr}");
    assert!(!dir.join("out/runs").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
