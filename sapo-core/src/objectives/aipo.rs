//! AIPO: agreement-aware iterative preference optimization
//! (docs/algorithms.md, `aipo`; the authors' `customized_dpo_trainer.py`).
//!
//! ```text
//! a = (logπ(y_w) − logπ(y_l)) − (1+α)·(logref(y_w) − logref(y_l)) − γ
//! ℓ = −(1−ε)·logσ(β·a) − ε·logσ(−β·a) − λ·logπ(y_w)/|y_w|
//! g = ∂ℓ/∂a = −β·[(1−ε)·σ(−βa) − ε·σ(βa)]
//! ∂ℓ/∂logπ(y_w) = g − λ/|y_w|     ∂ℓ/∂logπ(y_l) = −g
//! ∂ℓ/∂logref(y_w) = −(1+α)·g      ∂ℓ/∂logref(y_l) = (1+α)·g
//! ```
//!
//! Metrics, as the authors log them: TRL's reward metrics, `margin/policy`
//! (mean β·(logπ(y_w) − logπ(y_l))), `margin/reference` (mean
//! β·(logref(y_w) − logref(y_l)), without the 1+α), `length/chosen`,
//! `length/rejected` (mean token counts) and `regularization_term` (the
//! constant −β·γ their code adds to the logits, divided by β).

use super::dpo::{DpoParams, pair_loss, pair_loss_grad};
use super::{Accumulator, Inputs, Needs, ObjectiveError, PairBatch, PairOutput, check_param, reward_metrics};
use crate::Real;

/// Hyper-parameters of [`super::Objective::Aipo`].
///
/// ```
/// use sapo_core::objectives::AipoParams;
/// let p = AipoParams::default();
/// assert_eq!((p.beta, p.alpha, p.lambda, p.gamma, p.label_smoothing), (0.1, 0.07, 0.2, 0.0, 0.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AipoParams {
    /// β > 0, as in DPO. Default 0.1.
    pub beta: f64,
    /// α > −1: the reference margin is scaled by (1+α), which counters the
    /// reference's agreement with self-generated data. Default 0.07 (paper).
    pub alpha: f64,
    /// λ ≥ 0: weight of the length-normalised NLL of the chosen response.
    /// Default 0.2 (paper; the authors' code leaves it unset).
    pub lambda: f64,
    /// γ: a constant target margin subtracted from `a`. Default 0.
    pub gamma: f64,
    /// ε ∈ [0, 0.5]: label smoothing of the sigmoid term. Default 0.
    pub label_smoothing: f64,
}

impl Default for AipoParams {
    fn default() -> Self {
        AipoParams { beta: 0.1, alpha: 0.07, lambda: 0.2, gamma: 0.0, label_smoothing: 0.0 }
    }
}

/// The hyper-parameters' ranges: β > 0, ε ∈ [0, 0.5], α > −1, λ ≥ 0, γ finite.
pub(crate) fn check(params: &AipoParams) -> Result<(), ObjectiveError> {
    const NAME: &str = "aipo";
    let sigmoid_params = DpoParams { beta: params.beta, label_smoothing: params.label_smoothing };
    sigmoid_params.check(NAME)?;
    check_param(NAME, "alpha", params.alpha, params.alpha > -1.0, "α must exceed −1")?;
    check_param(NAME, "lambda", params.lambda, params.lambda >= 0.0, "λ must be non-negative")?;
    check_param(NAME, "gamma", params.gamma, true, "γ must be finite")
}

/// Needs the reference log-probs and both token counts.
pub(crate) fn compute<T: Real>(params: &AipoParams, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
    const NAME: &str = "aipo";
    check(params)?;
    let sigmoid_params = DpoParams { beta: params.beta, label_smoothing: params.label_smoothing };
    let inputs = Inputs::check(NAME, batch, Needs { reference: true, token_counts: true, ..Needs::default() })?;
    let size = inputs.batch_size();
    let mut acc = Accumulator::new(NAME, size, true);
    let scale = acc.inv_batch();
    let reference_scale = 1.0 + params.alpha;
    let (mut policy_margin, mut reference_margin) = (0.0, 0.0);
    for i in 0..size {
        let policy_diff = inputs.policy_chosen[i] - inputs.policy_rejected[i];
        let reference_diff = inputs.reference_chosen[i] - inputs.reference_rejected[i];
        policy_margin += params.beta * policy_diff;
        reference_margin += params.beta * reference_diff;
        let a = policy_diff - reference_scale * reference_diff - params.gamma;
        let normalised_chosen = inputs.policy_chosen[i] / inputs.chosen_counts[i];
        acc.add_loss(pair_loss(a, &sigmoid_params) - params.lambda * normalised_chosen);
        let d_a = pair_loss_grad(a, &sigmoid_params) * scale;
        acc.grad_policy_chosen[i] = d_a - params.lambda / inputs.chosen_counts[i] * scale;
        acc.grad_policy_rejected[i] = -d_a;
        acc.grad_reference_chosen[i] = -reference_scale * d_a;
        acc.grad_reference_rejected[i] = reference_scale * d_a;
    }
    let size_f = size as f64;
    let mut metrics = reward_metrics(params.beta, &inputs);
    metrics.push("margin/policy", policy_margin / size_f);
    metrics.push("margin/reference", reference_margin / size_f);
    metrics.push("length/chosen", inputs.chosen_counts.iter().sum::<f64>() / size_f);
    metrics.push("length/rejected", inputs.rejected_counts.iter().sum::<f64>() / size_f);
    metrics.push("regularization_term", -params.beta * params.gamma);
    acc.finish(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences_with_every_term_on() {
        let params = AipoParams { beta: 0.1, alpha: 0.07, lambda: 0.2, gamma: 0.3, label_smoothing: 0.1 };
        assert_gradients_match_finite_differences(&Objective::Aipo(params), &random_batch(61, 6, 50.0), 61);
        assert_gradients_match_finite_differences(&Objective::Aipo(params), &random_batch(62, 6, 1e4), 62);
    }
}
