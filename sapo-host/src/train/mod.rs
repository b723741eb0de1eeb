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

/// A backend the trainer runs on (the CPU reference or `sapo_cuda::CudaBackend`):
/// its errors become `anyhow` errors with their message.
pub trait TrainBackend:
    sapo_core::backend::Backend<Error: std::error::Error + Send + Sync + 'static> + std::fmt::Debug
{
}

impl<B> TrainBackend for B where
    B: sapo_core::backend::Backend<Error: std::error::Error + Send + Sync + 'static> + std::fmt::Debug
{
}
pub use run::{RunSummary, Trainer, train};
