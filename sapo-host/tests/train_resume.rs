//! Checkpoints and resume: a run stopped by a signal and resumed ends with
//! the same weights (bytes) and the same metric rows as a run never
//! stopped; a corrupted newest checkpoint is skipped with its reason and the
//! run resumes from the previous one, still bit-identical; corrupted files
//! are refused naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use sapo_host::train::config::fixtures_dir;
use serde_json::Value;

fn run_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sapo-resume-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn sapo(args: &[String], interrupt_at: Option<u64>) -> (i32, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sapo"));
    command.args(args);
    if let Some(step) = interrupt_at {
        command.env("SAPO_DEBUG_INTERRUPT_AT_STEP", step.to_string());
    }
    let output = command.output().expect("run sapo");
    (output.status.code().unwrap_or(-1), String::from_utf8_lossy(&output.stderr).into_owned())
}

fn args(dir: &Path, method: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = ["train", "--quiet", "--output-dir"].iter().map(|s| s.to_string()).collect();
    all.push(dir.display().to_string());
    for set in ["max_steps=6", "per_device_train_batch_size=4", "eval_data=\"\"", "save_steps=2", "learning_rate=1e-4"]
    {
        all.push("--set".into());
        all.push(set.into());
    }
    all.extend(method.iter().map(|s| s.to_string()));
    all
}

/// Metric rows without wall-clock fields.
fn rows(dir: &Path) -> Vec<serde_json::Map<String, Value>> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).expect("JSON"))
        .filter_map(|value| value.as_object().cloned())
        .filter(|row| row.get("event").and_then(Value::as_str) != Some("summary"))
        .map(|mut row| {
            row.retain(|key, _| !key.starts_with("time/") && key != "step_seconds" && key != "tokens_per_second");
            row
        })
        .collect()
}

fn final_weights(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("final").join("model.safetensors")).expect("final weights")
}

fn check_resume_is_identical(name: &str, method: &[&str], corrupt_newest: bool) {
    let straight = run_dir(&format!("{name}-straight"));
    let (code, stderr) = sapo(&args(&straight, method), None);
    assert_eq!(code, 0, "{stderr}");

    let stopped = run_dir(&format!("{name}-stopped"));
    let (code, stderr) = sapo(&args(&stopped, method), Some(5));
    assert_eq!(code, 130, "an interrupted run exits 128 + SIGINT: {stderr}");
    assert!(stderr.contains("after step 5") && stderr.contains("checkpoint saved"), "{stderr}");
    assert!(!stopped.join("final").exists(), "an interrupted run writes no final model");
    let checkpoints: Vec<String> = std::fs::read_dir(stopped.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(checkpoints.len(), 2, "save_total_limit keeps two: {checkpoints:?}");
    if corrupt_newest {
        // Flip one byte of the newest checkpoint's policy weights.
        let path = stopped.join("checkpoints/step-5/policy.safetensors");
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();
    }
    let mut resume_args: Vec<String> = vec!["train".into(), "--resume".into(), stopped.display().to_string()];
    resume_args.extend(method.iter().map(|s| s.to_string()));
    let (code, stderr) = sapo(&resume_args, None);
    assert_eq!(code, 0, "{stderr}");
    if corrupt_newest {
        assert!(stderr.contains("step-5/policy.safetensors: checksum mismatch"), "{stderr}");
        assert!(stderr.contains("step 4"), "falls back to the previous checkpoint: {stderr}");
    }
    assert_eq!(rows(&stopped), rows(&straight), "{name}: metric rows differ after resume");
    assert!(final_weights(&stopped) == final_weights(&straight), "{name}: final weights differ after resume");
}

#[test]
fn sapo_dpo_resumes_bit_identically() {
    check_resume_is_identical("sapo", &[], false);
}

#[test]
fn offline_dpo_resumes_bit_identically_from_the_previous_checkpoint_when_the_newest_is_corrupt() {
    check_resume_is_identical("dpo", &["--method", "dpo"], true);
}

#[test]
fn sft_with_adamw_resumes_bit_identically() {
    let base = format!("model={:?}", fixtures_dir().join("task/base").display().to_string());
    check_resume_is_identical(
        "sft",
        &["--method", "sft", "--set", &base, "--set", "init=\"random\"", "--set", "optimizer=\"adamw\""],
        false,
    );
}

#[test]
fn a_changed_config_is_refused_with_the_difference() {
    let dir = run_dir("changed");
    let (code, stderr) = sapo(&args(&dir, &[]), Some(2));
    assert_eq!(code, 130, "{stderr}");
    let mut changed = args(&dir, &[]);
    changed.extend(["--set".to_string(), "beta=0.2".to_string()]);
    let (code, stderr) = sapo(&changed, None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("beta: 0.1 → 0.2") && stderr.contains("--allow-config-change"), "{stderr}");
    // A truncated state file is refused, naming it; no other checkpoint verifies.
    let state = dir.join("checkpoints/step-2/state.bin");
    let bytes = std::fs::read(&state).unwrap();
    std::fs::write(&state, &bytes[..bytes.len() - 3]).unwrap();
    let (code, stderr) = sapo(&args(&dir, &[]), None);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("state.bin") && stderr.contains("truncated"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}
