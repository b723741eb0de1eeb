//! IPO on length-normalised log-ratios, as TRL's `ipo`.
//!
//! ```text
//! z̄ = (logπ(y_w) − logref(y_w))/|y_w| − (logπ(y_l) − logref(y_l))/|y_l|
//! ℓ = (z̄ − 1/(2β))²          ∂ℓ/∂z̄ = 2·(z̄ − 1/(2β))
//! ```
//!
//! The division by the response token counts is TRL's (confirmed with the
//! IPO authors, per TRL's comment); the metrics stay on summed log-probs, as
//! TRL 1.16 logs them.

use super::{Accumulator, Inputs, Needs, ObjectiveError, PairBatch, PairOutput, check_param, reward_metrics};
use crate::Real;

/// Hyper-parameters of [`super::Objective::Ipo`].
///
/// ```
/// use sapo_core::objectives::IpoParams;
/// assert_eq!(IpoParams::default().beta, 0.1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct IpoParams {
    /// β > 0, the IPO paper's τ: the target mean log-ratio margin is 1/(2β).
    /// Default 0.1.
    pub beta: f64,
}

impl Default for IpoParams {
    fn default() -> Self {
        IpoParams { beta: 0.1 }
    }
}

/// The per-pair loss `(z̄ − 1/(2β))²` of the mean log-ratio margin `z̄`.
///
/// ```
/// use sapo_core::objectives::{ipo, IpoParams};
/// assert_eq!(ipo::pair_loss(5.0, &IpoParams::default()), 0.0);
/// ```
pub fn pair_loss(mean_margin: f64, params: &IpoParams) -> f64 {
    let error = mean_margin - 0.5 / params.beta;
    error * error
}

/// `∂ℓ/∂z̄ = 2·(z̄ − 1/(2β))`.
///
/// ```
/// use sapo_core::objectives::{ipo, IpoParams};
/// assert_eq!(ipo::pair_loss_grad(0.0, &IpoParams::default()), -10.0);
/// ```
pub fn pair_loss_grad(mean_margin: f64, params: &IpoParams) -> f64 {
    2.0 * (mean_margin - 0.5 / params.beta)
}

/// The hyper-parameter's range: β > 0.
pub(crate) fn check(params: &IpoParams) -> Result<(), ObjectiveError> {
    const NAME: &str = "ipo";
    check_param(NAME, "beta", params.beta, params.beta > 0.0, "β must be positive")
}

/// Needs the reference log-probs and both token counts.
pub(crate) fn compute<T: Real>(params: &IpoParams, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
    const NAME: &str = "ipo";
    check(params)?;
    let inputs = Inputs::check(NAME, batch, Needs { reference: true, token_counts: true, ..Needs::default() })?;
    let mut acc = Accumulator::new(NAME, inputs.batch_size(), true);
    let scale = acc.inv_batch();
    for i in 0..inputs.batch_size() {
        let chosen_mean = (inputs.policy_chosen[i] - inputs.reference_chosen[i]) / inputs.chosen_counts[i];
        let rejected_mean = (inputs.policy_rejected[i] - inputs.reference_rejected[i]) / inputs.rejected_counts[i];
        let mean_margin = chosen_mean - rejected_mean;
        acc.add_loss(pair_loss(mean_margin, params));
        let d_margin = pair_loss_grad(mean_margin, params) * scale;
        acc.grad_policy_chosen[i] = d_margin / inputs.chosen_counts[i];
        acc.grad_reference_chosen[i] = -d_margin / inputs.chosen_counts[i];
        acc.grad_policy_rejected[i] = -d_margin / inputs.rejected_counts[i];
        acc.grad_reference_rejected[i] = d_margin / inputs.rejected_counts[i];
    }
    acc.finish(reward_metrics(params.beta, &inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences_for_ordinary_and_huge_log_probs() {
        let objective = Objective::Ipo(IpoParams { beta: 0.1 });
        assert_gradients_match_finite_differences(&objective, &random_batch(21, 6, 50.0), 21);
        assert_gradients_match_finite_differences(&objective, &random_batch(22, 6, 1e4), 22);
    }

    #[test]
    fn missing_token_counts_is_an_error_not_a_panic() {
        let (pc, pr, rc, rr) = ([-1.0_f64], [-2.0], [-1.0], [-2.0]);
        let batch = PairBatch::new(&pc, &pr).with_reference(&rc, &rr);
        let error = Objective::Ipo(IpoParams::default()).compute(&batch).expect_err("counts are missing");
        assert_eq!(error, ObjectiveError::MissingInput { objective: "ipo", input: "chosen_token_counts" });
    }
}
