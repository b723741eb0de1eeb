//! `sapo train` end to end on the shipped task model and data: every method
//! for a few steps (finite losses, TRL's metric names, a final model that
//! reloads), the run directory's files, the diagnostics, and bad input
//! stopping with one line and a non-zero exit code.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures_dir;
use sapo_core::cpu::CpuBackend;
use sapo_host::train::config::resolve;
use sapo_host::train::{TrainConfig, Trainer};
use serde_json::Value;

mod common;

fn run_dir(name: &str) -> PathBuf {
    common::run_dir("train-e2e", name)
}

fn config(name: &str, sets: &[&str]) -> TrainConfig {
    let mut overrides: Vec<String> = vec![
        format!("output_dir={:?}", run_dir(name).display().to_string()),
        "max_steps=3".into(),
        "per_device_train_batch_size=4".into(),
        "eval_data=\"\"".into(),
        "learning_rate=1e-4".into(),
    ];
    overrides.extend(sets.iter().map(|s| s.to_string()));
    resolve(None, &overrides).expect("valid config")
}

fn train_subset(name: &str, skip: usize, n: usize) -> PathBuf {
    common::train_subset("train-e2e", name, skip, n)
}

fn metric_lines(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).expect("metrics.jsonl");
    text.lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON line"))
        .filter_map(|value| value.as_object().cloned())
        .collect()
}

/// Runs `cfg` and checks what every run must leave behind; returns the step lines.
fn train_and_check(cfg: TrainConfig, expected: &[&str]) -> Vec<serde_json::Map<String, Value>> {
    let dir = cfg.output_dir.clone();
    let summary = Trainer::new(cfg).expect("trainer").run(true).expect("run");
    assert_eq!(summary.steps, 3);
    let lines = metric_lines(&dir);
    let steps: Vec<_> =
        lines.into_iter().filter(|line| line.contains_key("step") && line.contains_key("loss")).collect();
    assert_eq!(steps.len(), 3, "one metrics line per step");
    for line in &steps {
        for key in expected.iter().chain(&["loss", "learning_rate", "grad_norm", "tokens_per_second", "epoch"]) {
            let value = line.get(*key).and_then(Value::as_f64).unwrap_or_else(|| panic!("{key} missing in {line:?}"));
            assert!(value.is_finite(), "{key} = {value}");
        }
    }
    assert!(dir.join("config.toml").exists());
    let reloaded: TrainConfig = toml::from_str(&std::fs::read_to_string(dir.join("config.toml")).unwrap()).unwrap();
    assert_eq!(reloaded.max_steps, 3);
    let model = sapo_host::model_files::load(&CpuBackend::new(), &dir.join("final")).expect("final model reloads");
    assert!(model.chat_template.is_some(), "the chat template travels with the model");
    assert!(dir.join("plots").join("loss.svg").exists());
    steps
}

const PAIR_METRICS: &[&str] =
    &["rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"];

#[test]
fn sft_runs_and_its_loss_falls() {
    // From random weights (the base directory has a config and tokenizer only).
    let base = format!("model={:?}", fixtures_dir().join("task/base").display().to_string());
    let cfg = config("sft", &["method=\"sft\"", &base, "init=\"random\"", "learning_rate=1e-3"]);
    let steps = train_and_check(cfg, &["num_tokens"]);
    let loss = |i: usize| steps[i]["loss"].as_f64().unwrap();
    assert!(loss(2) < loss(0), "SFT loss {} → {}", loss(0), loss(2));
}

#[test]
fn sapo_dpo_runs_with_replay_and_sampling_metrics() {
    let cfg = config("sapo-dpo", &["method=\"sapo\"", "ref_update_steps=2"]);
    let steps =
        train_and_check(cfg, &[PAIR_METRICS, &["replay/size", "replay/mean_draws", "samples/mean_length"]].concat());
    assert_eq!(steps[2]["replay/size"].as_f64(), Some(12.0), "three steps of four examples");
}

#[test]
fn sapo_orpo_and_whole_response_ablation_run() {
    let cfg =
        config("sapo-orpo", &["method=\"sapo\"", "objective=\"orpo\"", "segment_len=0", "replay_sampling=\"uniform\""]);
    train_and_check(cfg, &[PAIR_METRICS, &["nll_loss", "log_odds_ratio", "log_odds_chosen"]].concat());
}

#[test]
fn offline_methods_run() {
    for method in ["dpo", "ipo", "hinge"] {
        let cfg = config(&format!("offline-{method}"), &[&format!("method=\"{method}\"")]);
        train_and_check(cfg, PAIR_METRICS);
    }
    let cfg = config("offline-orpo", &["method=\"orpo\"", "gradient_accumulation_steps=2"]);
    train_and_check(cfg, &[PAIR_METRICS, &["nll_loss", "log_odds_ratio"]].concat());
    let cfg = config("offline-orpo-response", &["method=\"orpo\"", "nll_scope=\"response\"", "optimizer=\"rmsprop\""]);
    train_and_check(cfg, &["nll_loss"]);
}

#[test]
fn bf16_training_stays_near_the_f32_run() {
    let run = |precision: &str| {
        let sets = ["method=\"dpo\"".to_string(), format!("precision=\"{precision}\"")];
        let sets: Vec<&str> = sets.iter().map(String::as_str).collect();
        train_and_check(config(&format!("dpo-{precision}"), &sets), PAIR_METRICS)
    };
    let (f32, bf16) = (run("f32"), run("bf16"));
    let value = |steps: &[serde_json::Map<String, Value>], i: usize, key: &str| steps[i][key].as_f64().unwrap();
    for (i, key) in [(0, "grad_norm"), (2, "loss"), (2, "grad_norm"), (2, "logps/chosen")] {
        let (a, b) = (value(&f32, i, key), value(&bf16, i, key));
        let relative = (a - b).abs() / a.abs();
        println!("step {} {key}: f32 {a}, bf16 {b}, relative difference {relative:.1e}", i + 1);
        // bf16 rounding moves the numbers (so the products really ran in
        // bf16), by about bf16's precision and no more.
        assert!(relative > 1e-7 && relative < 1e-2, "step {} {key}: f32 {a} against bf16 {b}", i + 1);
    }
}

#[test]
fn spin_runs_its_iterations() {
    // Six prompts keep generation short: 6 pairs → 2 steps per iteration at batch 4 (the
    // second iteration trains on 12 pairs: its own and the first's).
    let path = train_subset("spin-data", 0, 6);
    let cfg = config(
        "spin",
        &["method=\"spin\"", &format!("data={:?}", path.display().to_string()), "max_new_tokens=16", "max_steps=0"],
    );
    let dir = cfg.output_dir.clone();
    let summary = Trainer::new(cfg).expect("trainer").run(true).expect("run");
    assert_eq!(summary.steps, 2 + 3, "two iterations: 6 then 12 pairs at batch 4");
    let lines = metric_lines(&dir);
    let generations =
        lines.iter().filter(|l| l.get("event").and_then(Value::as_str) == Some("spin_generation")).count();
    assert_eq!(generations, 2);
}

#[test]
fn a_zero_margin_run_warns_once_with_the_cause() {
    let cfg = config("zero-margin", &["method=\"dpo\"", "learning_rate=0", "zero_margin_warn_steps=2"]);
    let dir = cfg.output_dir.clone();
    Trainer::new(cfg).expect("trainer").run(true).expect("run");
    let warnings: Vec<String> = metric_lines(&dir)
        .iter()
        .filter(|l| l.get("event").and_then(Value::as_str) == Some("warning"))
        .map(|l| l["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains("exactly 0") && warnings[0].contains("learning rate is 0"), "{}", warnings[0]);
}

#[test]
fn evaluation_before_and_after_is_logged() {
    let cfg = config("eval", &["method=\"dpo\"", "max_steps=3"]);
    let mut cfg = cfg;
    cfg.eval_data = fixtures_dir().join("task/data/eval.jsonl");
    let dir = cfg.output_dir.clone();
    let summary = Trainer::new(cfg).expect("trainer").run(true).expect("run");
    let (before, after) = summary.eval_before_after.expect("evaluated");
    assert!((0.0..=1.0).contains(&before) && (0.0..=1.0).contains(&after));
    assert!(before > 0.05, "the shipped SFT model solves some of its task: {before}");
    let evals = metric_lines(&dir).iter().filter(|l| l.get("event").and_then(Value::as_str) == Some("eval")).count();
    assert_eq!(evals, 2);
}

fn sapo(args: &[&str]) -> (i32, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_sapo")).args(args).output().expect("run sapo");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[test]
fn training_on_a_missing_gpu_stops_with_one_line_and_exit_code_1() {
    if sapo_cuda::unavailable_reason().is_none() {
        println!("skipped: a CUDA device is present");
        return;
    }
    let out = run_dir("no-gpu");
    let (code, stderr) = sapo(&["train", "--quiet", "--device", "cuda:0", "--output-dir", out.to_str().unwrap()]);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no CUDA device:"), "{stderr}");
}

#[test]
fn bad_input_stops_with_one_line_and_exit_code_2() {
    let out = run_dir("bad");
    let out = out.to_str().unwrap();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--set".into(), "learning_rat=1".into()], "unknown config key `learning_rat`"),
        (vec!["--set".into(), "optimizer=sgd".into()], "bad value for `optimizer`"),
        (vec!["--set".into(), "beta=-1".into()], "bad value for `beta`"),
        (vec!["--model".into(), "/no/such/model".into()], "/no/such/model"),
        (vec!["--device".into(), "tpu".into()], "bad value for `device`: `tpu`: expected cpu, cuda or cuda:N"),
        (vec!["--set".into(), "precision=tf32".into()], "tf32 needs device = cuda"),
        (vec!["--set".into(), "precision=fp8".into()], "bad value for `precision`"),
        (vec!["--data".into(), "/no/such/data.jsonl".into()], "/no/such/data.jsonl"),
        (
            vec![
                "--method".into(),
                "dpo".into(),
                "--data".into(),
                fixtures_dir().join("task/data/sft.jsonl").display().to_string(),
            ],
            "sft.jsonl:1",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["train".to_string(), "--quiet".into(), "--output-dir".into(), out.into()];
        all.extend(args.iter().cloned());
        let views: Vec<&str> = all.iter().map(String::as_str).collect();
        let (code, stderr) = sapo(&views);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: one line, got {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
    let config = run_dir("bad-config");
    std::fs::create_dir_all(&config).unwrap();
    let file = config.join("c.toml");
    std::fs::write(&file, "method = \"sapo\"\nlearning_rate = \"fast\"\n").unwrap();
    let (code, stderr) = sapo(&["train", "--quiet", "--config", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("c.toml") && stderr.contains("learning_rate"), "{stderr}");
}

#[test]
fn a_non_finite_loss_stops_with_the_step_number_and_exit_code_1() {
    // The shipped model with one NaN weight in the last layer's MLP.
    let model = run_dir("nan-model");
    std::fs::create_dir_all(&model).unwrap();
    for entry in std::fs::read_dir(fixtures_dir().join("task/model")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), model.join(entry.file_name())).unwrap();
    }
    let bytes = std::fs::read(model.join("model.safetensors")).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let name = "model.layers.3.mlp.down_proj.weight";
    let view = tensors.tensor(name).unwrap();
    let offset = view.data().as_ptr() as usize - bytes.as_ptr() as usize;
    let mut patched = bytes.clone();
    patched[offset..offset + 4].copy_from_slice(&f32::NAN.to_le_bytes());
    std::fs::write(model.join("model.safetensors"), patched).unwrap();
    let out = run_dir("nan-run");
    let (code, stderr) = sapo(&[
        "train",
        "--quiet",
        "--method",
        "dpo",
        "--model",
        model.to_str().unwrap(),
        "--data",
        fixtures_dir().join("task/data/train.jsonl").to_str().unwrap(),
        "--output-dir",
        out.to_str().unwrap(),
        "--max-steps",
        "2",
        "--set",
        "eval_data=\"\"",
    ]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("step 1") || stderr.contains("non-finite"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

#[test]
fn sppo_sppo_hard_and_aipo_run_two_iterations_with_the_rule_oracle() {
    // Any twelve prompts; some tie in all samples, which AIPO drops.
    let path = train_subset("ranked-data", 3, 12);
    for method in ["sppo", "sppo_hard", "aipo"] {
        let cfg = config(
            &format!("ranked-{method}"),
            &[
                &format!("method=\"{method}\""),
                &format!("data={:?}", path.display().to_string()),
                "iterations=2",
                "num_samples=4",
                "max_new_tokens=16",
                "max_steps=0",
            ],
        );
        let dir = cfg.output_dir.clone();
        let summary = Trainer::new(cfg).expect("trainer").run(true).expect(method);
        assert!(summary.steps >= 2, "{method}: {} steps", summary.steps);
        let lines = metric_lines(&dir);
        let iterations: Vec<_> =
            lines.iter().filter(|l| l.get("event").and_then(Value::as_str) == Some("iteration_samples")).collect();
        assert_eq!(iterations.len(), 2, "{method}");
        for (index, event) in iterations.iter().enumerate() {
            for key in ["samples/mean_length", "samples/chosen_mean_length", "oracle/mean_score"] {
                assert!(event[key].as_f64().is_some_and(f64::is_finite), "{method}: {key}");
            }
            // Iteration 2's samples are judged against iteration 1's.
            let win_rate = event["oracle/win_rate_vs_previous"].as_f64();
            if index == 0 {
                assert_eq!(win_rate, None, "{method}: nothing to compare the first iteration with");
            } else {
                assert!(win_rate.is_some_and(|w| (0.0..=1.0).contains(&w)), "{method}: {win_rate:?}");
            }
            let samples = std::fs::read_to_string(dir.join(format!("samples/iteration-{}.jsonl", index + 1))).unwrap();
            assert_eq!(samples.lines().count(), 12, "{method}: one line per prompt");
            for line in samples.lines() {
                let record: Value = serde_json::from_str(line).expect("well-formed JSON");
                assert_eq!(record["responses"].as_array().map(Vec::len), Some(4));
                assert_eq!(record["scores"].as_array().map(Vec::len), Some(4));
                assert_eq!(record["lengths"].as_array().map(Vec::len), Some(4));
                assert_eq!(record["win_rates"].as_array().map(Vec::len), Some(4));
            }
            assert!(dir.join(format!("iterations/iteration-{}/model.safetensors", index + 1)).exists());
        }
        let steps: Vec<_> = lines.iter().filter(|l| l.contains_key("loss")).collect();
        assert!(steps.iter().all(|l| l["loss"].as_f64().is_some_and(f64::is_finite)), "{method}");
        let plot = std::fs::read_to_string(dir.join("plots/iterations.svg")).expect("the per-iteration chart");
        assert!(plot.contains("win_rate_vs_previous") && plot.contains("chosen_mean_length"), "{method}");
        if method == "aipo" {
            assert!(steps[0].contains_key("regularization_term"), "AIPO's metrics");
        }
    }
}
