//! Helpers shared by sapo-host's training tests: fresh run directories and
//! slices of the shipped task's training data.

#![allow(dead_code)] // each test file uses a different subset

use std::path::{Path, PathBuf};

/// The source tree's `fixtures/`: test inputs (the task files, and ones the
/// binary does not ship, such as `task/base` and `reward_model`), read in
/// place. `sapo_host::train::config::fixtures_dir` is the binary's written
/// copy of the shipped subset, made by the code under test.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("fixtures")
}

/// An empty directory for `suite`'s test `name`, under cargo's scratch
/// directory for integration tests (`target/tmp`).
///
/// The name is fixed, not per process: each run empties and reuses the
/// previous run's directory, so a run's files stay there to inspect after a
/// failure, and repeated runs do not pile up (per-process names in the
/// system temp dir left ~400 MB behind per `cargo test`).
pub fn run_dir(suite: &str, name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("sapo-{suite}-{name}"));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// The task's training lines `skip..skip + n`, written to
/// `<run_dir(suite, name)>/subset.jsonl`.
pub fn train_subset(suite: &str, name: &str, skip: usize, n: usize) -> PathBuf {
    let dir = run_dir(suite, name);
    std::fs::create_dir_all(&dir).unwrap();
    let text = std::fs::read_to_string(fixtures_dir().join("task/data/train.jsonl")).unwrap();
    let lines: Vec<&str> = text.lines().skip(skip).take(n).collect();
    let path = dir.join("subset.jsonl");
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}
