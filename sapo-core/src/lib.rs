//! # sapo-core
//!
//! The mathematics of preference optimization for language models, as small,
//! exact, documented pieces that take plain slices and numbers: no I/O, no
//! threads, `#![no_std]` + `alloc`.
//!
//! A Rust trainer (candle, burn, or your own) computes per-sequence summed
//! log-probabilities with its model, hands them to an [`objectives::Objective`],
//! and gets back the batch-mean loss, the exact gradient with respect to every
//! per-sequence input, and the metrics under TRL's names. The SAPO machinery
//! around the loss lives beside it:
//!
//! | module | what it does |
//! |---|---|
//! | [`objectives`] | DPO (with label smoothing), hinge, IPO, ORPO, SPPO (soft and hard), AIPO, SPIN, SFT |
//! | [`ema`] | θ_ema ← β·θ_ema + (1−β)·θ over f32, f64, bf16 and f16 slices, and the reference refresh |
//! | [`replay`] | SAPO's FIFO replay buffer with weighted (1/(draws+1)) and uniform sampling |
//! | [`segment`] | SAPO's segment truncation and the assembly of the rejected sequence and loss masks |
//! | [`sppo`] | SPPO's win-rate estimate P̂ and chosen/rejected selection |
//! | [`rng`] | the deterministic, serialisable generator every random choice goes through |
//!
//! The numerical contract is `docs/algorithms.md` of the project; every formula in
//! these docs cites it.
//!
//! ```
//! use sapo_core::objectives::{DpoParams, Objective, PairBatch};
//!
//! // Summed response log-probs of two pairs under the policy and the reference.
//! let policy_chosen = [-12.0_f64, -30.5];
//! let policy_rejected = [-14.0, -29.0];
//! let reference_chosen = [-13.0, -30.0];
//! let reference_rejected = [-13.5, -29.5];
//! let batch = PairBatch::new(&policy_chosen, &policy_rejected)
//!     .with_reference(&reference_chosen, &reference_rejected);
//!
//! let out = Objective::Dpo(DpoParams::default()).compute(&batch)?;
//! assert!(out.loss > 0.0);
//! // The gradient the backward pass spreads over the chosen response's tokens.
//! assert!(out.grad_policy_chosen[0] < 0.0);
//! assert_eq!(out.metrics.get("rewards/accuracies"), Some(0.5));
//! # Ok::<(), sapo_core::objectives::ObjectiveError>(())
//! ```
#![no_std]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod backend;
#[cfg(feature = "cpu")]
pub mod cpu;
pub mod ema;
pub mod model;
pub mod objectives;
pub mod optim;
#[cfg(feature = "std")]
pub mod profile;
pub mod real;
pub mod replay;
pub mod rng;
pub mod sampling;
pub mod segment;
pub mod sppo;

pub use real::Real;
