//! `sapo train`: every method behind one trainer.
//!
//! * [`checkpoint`] — checkpoints: weights, run state, manifest; verified loading;
//! * [`config`] — the TOML configuration, its defaults per method and `--set` overrides;
//! * [`data`] — the dataset shape each method needs, tokenised and cut;
//! * [`passes`] — packing, forward, objective and backward of one micro-batch;
//! * [`sampler`] — batched KV-cache generation (SAPO's segments, SPIN, evaluation);
//! * [`eval`] — task accuracy on held-out prompts with the shipped judge;
//! * [`report`] — `metrics.jsonl`, the progress bar, the zero-margin diagnostic;
//! * [`run`] — the [`Trainer`] that holds all run state, and the loop of each method.

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod oracle;
pub mod passes;
pub mod report;
pub mod run;
pub mod sampler;

pub use config::{Method, TrainConfig};
pub use run::{RunSummary, Trainer, train};

/// A backend the trainer runs on (the CPU reference or `sapo_cuda::CudaBackend`):
/// one the model loads onto, whose errors become `anyhow` errors.
pub trait TrainBackend: crate::model_files::LoadBackend + std::fmt::Debug {}

impl<B: crate::model_files::LoadBackend + std::fmt::Debug> TrainBackend for B {}
