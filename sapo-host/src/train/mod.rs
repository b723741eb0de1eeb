//! `sapo train`: every method on one trainer.
//!
//! * [`config`] — the TOML configuration: each field declared once with its
//!   help, typed default, per-method recipes and range checks;
//! * [`data`] — the dataset shape each method needs, tokenised and cut;
//! * [`session`] — the model, gradients, optimizer, RNG and counters every
//!   method stands on, and the optimizer step ([`optimizer`], [`plan`]);
//! * [`methods`] — one type per method family (SFT, offline pairs, SAPO,
//!   iterative SPIN/SPPO/AIPO), each owning exactly its state;
//! * [`passes`] — packing, forward, objective and backward of one micro-batch;
//! * [`sampler`] — batched KV-cache generation (SAPO's segments, SPIN, evaluation);
//! * [`eval`] and [`heldout`] — task accuracy and held-out pair figures;
//! * [`oracle`] — SPPO's and AIPO's judges;
//! * [`report`] — `metrics.jsonl`, the progress bar, the zero-margin diagnostic;
//! * [`checkpoint`] and [`state`] — checkpoints: weights, run state, manifest; verified loading;
//! * [`run`] — the [`Trainer`] that drives a method step by step; [`stop`]
//!   (signals) and [`summary`] (what a finished run reports).

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod heldout;
pub mod methods;
pub mod optimizer;
pub mod oracle;
pub mod passes;
pub mod plan;
pub mod report;
pub mod run;
pub mod sampler;
pub mod session;
pub mod state;
pub mod stop;
pub mod summary;

pub use config::{Method, TrainConfig};
pub use run::{Trainer, train};
pub use summary::RunSummary;

/// A backend the trainer runs on (the CPU reference or `sapo_cuda::CudaBackend`):
/// one the model loads onto, whose errors become `anyhow` errors.
pub trait TrainBackend: crate::model_files::LoadBackend + std::fmt::Debug {}

impl<B: crate::model_files::LoadBackend + std::fmt::Debug> TrainBackend for B {}
