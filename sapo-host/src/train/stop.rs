//! How a run stops early: the signal flag `sapo` sets on SIGINT and
//! SIGTERM, the error a signal ends the run with, and the marker that
//! tells a training error (exit code 1) from an input error (exit code 2).

use std::sync::atomic::AtomicUsize;

/// Marks an error raised while training (exit code 1) rather than while
/// reading the inputs (exit code 2); it reads "while training" in messages.
#[derive(Debug, Clone, Copy)]
pub struct WhileTraining;

impl std::fmt::Display for WhileTraining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("while training")
    }
}

/// The signal that asked the run to stop (0: none). `sapo` registers
/// SIGINT and SIGTERM to set it; the trainer finishes the step, writes a
/// checkpoint and stops with [`Interrupted`].
pub static INTERRUPT: std::sync::LazyLock<std::sync::Arc<AtomicUsize>> =
    std::sync::LazyLock::new(|| std::sync::Arc::new(AtomicUsize::new(0)));

/// The run stopped on a signal after saving a checkpoint.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error(
    "stopped by signal {signal} after step {step}; checkpoint saved, `sapo train` with the same output directory resumes"
)]
pub struct Interrupted {
    /// The signal number (2 SIGINT, 15 SIGTERM).
    pub signal: usize,
    /// The last step taken.
    pub step: u64,
}
