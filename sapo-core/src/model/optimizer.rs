//! Optimizer state over a whole model, and the global gradient norm and
//! clipping, each a walk over the parameter tensors calling the backend's
//! per-tensor update (so the same code drives the CPU and a GPU).

use super::config::LlamaConfig;
use super::params::LlamaParams;
use crate::backend::Backend;
use crate::optim::{AdamWParams, RmspropParams, clip_coefficient};

/// AdamW's moments for every tensor and the step counter
/// (`torch.optim.AdamW` semantics, [`crate::optim::adamw_update`]).
#[derive(Debug)]
pub struct AdamWState<B: Backend> {
    /// First moments `m`.
    pub exp_avg: LlamaParams<B>,
    /// Second moments `v`.
    pub exp_avg_sq: LlamaParams<B>,
    /// Updates taken so far.
    pub step: u64,
}

impl<B: Backend> AdamWState<B> {
    /// Zero moments, step 0.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn new(backend: &B, config: &LlamaConfig) -> Result<Self, B::Error> {
        Ok(AdamWState {
            exp_avg: LlamaParams::zeros(backend, config)?,
            exp_avg_sq: LlamaParams::zeros(backend, config)?,
            step: 0,
        })
    }

    /// One update of every tensor at learning rate `lr`.
    ///
    /// # Errors
    /// A backend error (an invalid hyper-parameter is one).
    pub fn update(
        &mut self,
        backend: &B,
        params: &mut LlamaParams<B>,
        grads: &LlamaParams<B>,
        lr: f64,
        hp: &AdamWParams,
    ) -> Result<(), B::Error> {
        self.step += 1;
        let tensors = params.tensors_mut().into_iter().zip(grads.tensors());
        let moments = self.exp_avg.tensors_mut().into_iter().zip(self.exp_avg_sq.tensors_mut());
        for ((param, grad), (m, v)) in tensors.zip(moments) {
            backend.adamw_step(param, grad, m, v, self.step, lr, hp)?;
        }
        Ok(())
    }
}

/// RMSprop's running average of squared gradients for every tensor
/// (`torch.optim.RMSprop` without momentum or centring, the SAPO and SPIN
/// authors' configuration).
#[derive(Debug)]
pub struct RmspropState<B: Backend> {
    /// Running averages of `g²`.
    pub square_avg: LlamaParams<B>,
}

impl<B: Backend> RmspropState<B> {
    /// Zero averages.
    ///
    /// # Errors
    /// A backend allocation error.
    pub fn new(backend: &B, config: &LlamaConfig) -> Result<Self, B::Error> {
        Ok(RmspropState { square_avg: LlamaParams::zeros(backend, config)? })
    }

    /// One update of every tensor at learning rate `lr`.
    ///
    /// # Errors
    /// A backend error (momentum or centring are refused by the backend).
    pub fn update(
        &mut self,
        backend: &B,
        params: &mut LlamaParams<B>,
        grads: &LlamaParams<B>,
        lr: f64,
        hp: &RmspropParams,
    ) -> Result<(), B::Error> {
        let tensors = params.tensors_mut().into_iter().zip(grads.tensors());
        for ((param, grad), square_avg) in tensors.zip(self.square_avg.tensors_mut()) {
            backend.rmsprop_step(param, grad, square_avg, lr, hp)?;
        }
        Ok(())
    }
}

/// `√(Σ_tensors Σ g²)`, accumulated in f64.
///
/// # Errors
/// A backend error.
pub fn global_grad_norm<B: Backend>(backend: &B, grads: &LlamaParams<B>) -> Result<f64, B::Error> {
    let mut total = 0.0;
    for grad in grads.tensors() {
        total += backend.sum_of_squares(grad)?;
    }
    Ok(libm::sqrt(total))
}

/// Clips gradients to global norm `max_norm` as
/// `torch.nn.utils.clip_grad_norm_` and returns the norm before clipping. A
/// non-finite norm is returned with the gradients untouched, so the trainer
/// can stop with the step number.
///
/// # Errors
/// A backend error.
pub fn clip_grad_norm<B: Backend>(backend: &B, grads: &mut LlamaParams<B>, max_norm: f64) -> Result<f64, B::Error> {
    let norm = global_grad_norm(backend, grads)?;
    if norm.is_finite() {
        let coefficient = clip_coefficient(norm, max_norm) as f32;
        for grad in grads.tensors_mut() {
            backend.scale(grad, coefficient)?;
        }
    }
    Ok(norm)
}
