//! Checkpoints and resume: a run stopped by a signal and resumed ends with
//! the same weights (bytes) and the same metric rows as a run never
//! stopped; a corrupted newest checkpoint is skipped with its reason and the
//! run resumes from the previous one, still bit-identical; corrupted files
//! are refused naming the file.

use std::path::{Path, PathBuf};
use std::process::Command;

use common::fixtures_dir;
use serde_json::Value;

mod common;

fn run_dir(name: &str) -> PathBuf {
    common::run_dir("resume", name)
}

fn train_subset(name: &str, skip: usize, n: usize) -> PathBuf {
    common::train_subset("resume", name, skip, n)
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
            row.retain(|key, _| {
                !key.starts_with("time/") && !["step_seconds", "tokens_per_second", "seconds"].contains(&key.as_str())
            });
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

/// SIGKILL at pseudo-random instants (some inside a checkpoint write, which a
/// debug pause widens), then `sapo train` again with the same arguments: it
/// resumes from the newest complete checkpoint (or starts afresh) and must
/// end bit-identical to a run never killed. `SAPO_KILL_TRIALS` sets the
/// number of trials (`bench/kill_trials.sh` runs many).
#[test]
fn killed_at_random_instants_then_rerun_ends_bit_identical() {
    let trials: u64 = std::env::var("SAPO_KILL_TRIALS").ok().and_then(|v| v.parse().ok()).unwrap_or(4);
    let method = ["--set", "save_steps=1"];
    let straight = run_dir("kill-straight");
    let started = std::time::Instant::now();
    let (code, stderr) = sapo(&args(&straight, &method), None);
    assert_eq!(code, 0, "{stderr}");
    // The killed runs pause 20 ms per checkpoint file: allow for it.
    let span_ms = (started.elapsed().as_millis() as u64).max(200) + 6 * 6 * 20;
    let (mut state, mut inside_writes, mut before_any) = (0x9e37_79b9_7f4a_7c15_u64, 0, 0);
    for trial in 0..trials {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let delay = (state >> 33) % span_ms;
        let dir = run_dir(&format!("kill-{trial}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_sapo"))
            .args(args(&dir, &method))
            .env("SAPO_DEBUG_SAVE_PAUSE_MS", "20")
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn");
        std::thread::sleep(std::time::Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let checkpoints = dir.join("checkpoints");
        if let Ok(entries) = std::fs::read_dir(&checkpoints) {
            inside_writes +=
                usize::from(entries.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".tmp-")));
        } else {
            before_any += 1;
        }
        let (code, stderr) = sapo(&args(&dir, &method), None);
        assert_eq!(code, 0, "trial {trial} (killed after {delay} ms): {stderr}");
        assert_eq!(rows(&dir), rows(&straight), "trial {trial} (killed after {delay} ms): metric rows differ");
        assert!(final_weights(&dir) == final_weights(&straight), "trial {trial}: final weights differ");
        let _ = std::fs::remove_dir_all(&dir);
    }
    println!(
        "{trials} kill trials: all resumed bit-identical; {inside_writes} killed inside a checkpoint write, {before_any} before the first checkpoint"
    );
}

#[test]
fn a_nan_gradient_stops_naming_step_and_tensor_and_the_last_checkpoint_resumes() {
    let straight = run_dir("nan-straight");
    let (code, stderr) = sapo(&args(&straight, &[]), None);
    assert_eq!(code, 0, "{stderr}");
    let dir = run_dir("nan");
    let mut command = Command::new(env!("CARGO_BIN_EXE_sapo"));
    let output = command.args(args(&dir, &[])).env("SAPO_DEBUG_NAN_AT_STEP", "3").output().expect("run");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("step 3") && stderr.contains("model.embed_tokens.weight"), "{stderr}");
    assert!(!dir.join("checkpoints/step-3").exists(), "no checkpoint of the bad state");
    // The step-2 checkpoint resumes, and the run ends as if nothing happened.
    let (code, stderr) = sapo(&args(&dir, &[]), None);
    assert_eq!(code, 0, "{stderr}");
    assert!(final_weights(&dir) == final_weights(&straight));
    // With skip_nonfinite_steps the bad update is skipped and counted.
    let skipping = run_dir("nan-skip");
    let output = Command::new(env!("CARGO_BIN_EXE_sapo"))
        .args(args(&skipping, &["--set", "skip_nonfinite_steps=true"]))
        .env("SAPO_DEBUG_NAN_AT_STEP", "3")
        .output()
        .expect("run");
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let last = rows(&skipping).into_iter().rfind(|row| row.contains_key("loss")).expect("rows");
    assert_eq!(last["skipped_nonfinite_steps"].as_f64(), Some(1.0));
}

#[test]
fn reference_log_probs_are_cached_in_the_run_directory_and_keyed_by_model_and_data() {
    let dir = run_dir("ref-cache");
    let mut first: Vec<String> = args(&dir, &["--method", "dpo", "--overwrite"]);
    first.retain(|arg| arg != "--quiet");
    let (code, stderr) = sapo(&first, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("computing reference log-probs"), "{stderr}");
    let cached: Vec<_> = std::fs::read_dir(dir.join("ref_logps")).unwrap().collect();
    assert_eq!(cached.len(), 1);
    let weights = final_weights(&dir);
    // The same run again: the cache is reused, the result is the same.
    let (code, stderr) = sapo(&first, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("reusing the reference log-probs"), "{stderr}");
    assert!(final_weights(&dir) == weights);
    // Other data: a new cache entry, never the stale one.
    let mut other = first.clone();
    other.extend(["--set".into(), "max_length=24".into(), "--set".into(), "max_prompt_length=16".into()]);
    let (code, stderr) = sapo(&other, None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("computing reference log-probs"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.join("ref_logps")).unwrap().count(), 2);
}

#[test]
fn sigint_and_sigterm_finish_the_step_save_and_exit_130_143_then_resume_identically() {
    let longer = ["--set", "max_steps=40", "--set", "save_steps=0"];
    let straight = run_dir("signal-straight");
    let (code, stderr) = sapo(&args(&straight, &longer), None);
    assert_eq!(code, 0, "{stderr}");
    for (signal, expected_code) in [("INT", 130), ("TERM", 143)] {
        let dir = run_dir(&format!("signal-{signal}"));
        let child = Command::new(env!("CARGO_BIN_EXE_sapo"))
            .args(args(&dir, &longer))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn");
        // Wait for the second step line, then signal.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let steps = std::fs::read_to_string(dir.join("metrics.jsonl")).map_or(0, |t| t.matches("\"loss\"").count());
            if steps >= 2 || std::time::Instant::now() > deadline {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        let status = Command::new("kill").args([format!("-{signal}"), child.id().to_string()]).status().expect("kill");
        assert!(status.success());
        let output = child.wait_with_output().expect("wait");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(expected_code), "SIG{signal}: {stderr}");
        assert!(stderr.contains("checkpoint saved"), "{stderr}");
        let (code, stderr) = sapo(&args(&dir, &longer), None);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(rows(&dir), rows(&straight), "SIG{signal}");
        assert!(final_weights(&dir) == final_weights(&straight), "SIG{signal}");
    }
}

#[test]
fn incomplete_half_deleted_and_wrong_version_checkpoints_are_refused_naming_the_file() {
    use sapo_host::train::checkpoint;
    let dir = run_dir("corrupt");
    let (code, stderr) = sapo(&args(&dir, &[]), Some(2));
    assert_eq!(code, 130, "{stderr}");
    let backend = sapo_core::cpu::CpuBackend::new();
    let config = sapo_host::model_files::load(&backend, &fixtures_dir().join("task/model")).expect("model").config;
    let step = dir.join("checkpoints/step-2");
    checkpoint::load(&backend, &config, &step).expect("the checkpoint verifies");

    let copy = |name: &str| {
        let target = dir.join("checkpoints").join(name);
        std::fs::create_dir_all(&target).unwrap();
        for entry in std::fs::read_dir(&step).unwrap() {
            let entry = entry.unwrap();
            std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
        }
        target
    };
    let half_deleted = copy("step-10");
    std::fs::remove_file(half_deleted.join("ema.safetensors")).unwrap();
    let error = format!("{:#}", checkpoint::load(&backend, &config, &half_deleted).unwrap_err());
    assert!(error.contains("step-10/ema.safetensors") && error.contains("unreadable"), "{error}");

    let wrong_version = copy("step-11");
    let manifest = std::fs::read_to_string(wrong_version.join("manifest.json")).unwrap();
    std::fs::write(
        wrong_version.join("manifest.json"),
        manifest.replace(&format!("\"format\": {}", checkpoint::FORMAT_VERSION), "\"format\": 9"),
    )
    .unwrap();
    let error = format!("{:#}", checkpoint::load(&backend, &config, &wrong_version).unwrap_err());
    assert!(error.contains("step-11/manifest.json") && error.contains("format 9"), "{error}");

    let no_manifest = copy("step-12");
    std::fs::remove_file(no_manifest.join("manifest.json")).unwrap();
    let error = format!("{:#}", checkpoint::load(&backend, &config, &no_manifest).unwrap_err());
    assert!(error.contains("no manifest"), "{error}");

    // Resuming skips all three (the manifest-less one is not a checkpoint at
    // all) and continues from step 2.
    let (code, stderr) = sapo(&args(&dir, &[]).into_iter().filter(|a| a != "--quiet").collect::<Vec<_>>(), None);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("skipped a checkpoint") && stderr.contains("(step 2)"), "{stderr}");
}

#[test]
fn spin_resumes_inside_an_iteration_and_at_its_boundary_bit_identically() {
    let path = train_subset("spin-data", 0, 6);
    let data_set = format!("data={:?}", path.display().to_string());
    // Iteration 1: 6 pairs → 2 steps; iteration 2: 12 pairs → 3 steps.
    let method = ["--method", "spin", "--set", &data_set, "--set", "max_new_tokens=12", "--set", "max_steps=0"];
    check_resumes_at("spin", &method, &[2, 4]);
}

/// Runs `method` straight, then stopped by SIGINT after each step of `stops`
/// and resumed: the metric rows and final weights must equal the straight run's.
fn check_resumes_at(name: &str, method: &[&str], stops: &[u64]) {
    let straight = run_dir(&format!("{name}-straight"));
    let (code, stderr) = sapo(&args(&straight, method), None);
    assert_eq!(code, 0, "{stderr}");
    for &stop in stops {
        let dir = run_dir(&format!("{name}-stop-{stop}"));
        let (code, stderr) = sapo(&args(&dir, method), Some(stop));
        assert_eq!(code, 130, "{stderr}");
        let (code, stderr) = sapo(&args(&dir, method), None);
        assert_eq!(code, 0, "{stderr}");
        assert_eq!(rows(&dir), rows(&straight), "{name}: stopped at step {stop}");
        assert!(final_weights(&dir) == final_weights(&straight), "{name}: stopped at step {stop}");
    }
}

#[test]
fn sppo_resumes_inside_an_iteration_bit_identically() {
    let path = train_subset("sppo-data", 0, 8);
    let data_set = format!("data={:?}", path.display().to_string());
    let method = [
        "--method",
        "sppo",
        "--set",
        &data_set,
        "--set",
        "max_new_tokens=12",
        "--set",
        "max_steps=0",
        "--set",
        "iterations=2",
        "--set",
        "num_samples=3",
    ];
    check_resumes_at("sppo", &method, &[1, 3]);
}
