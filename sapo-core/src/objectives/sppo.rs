//! SPPO with soft targets from estimated win rates (the authors' `sppo`).
//!
//! ```text
//! ℓ = ½·[(r_w − (P̂_w − ½)/β)² + (r_l − (P̂_l − ½)/β)²]
//! ∂ℓ/∂r_w = r_w − (P̂_w − ½)/β      ∂ℓ/∂r_l = r_l − (P̂_l − ½)/β
//! ```
//! with `r = logπ(y) − logref(y)` and `P̂` from [`crate::sppo`]
//! (docs/algorithms.md, `sppo`). The win rates are targets: constants, no
//! gradient flows into them.

use super::{Accumulator, Inputs, Needs, ObjectiveError, PairBatch, PairOutput, check_param, reward_metrics};
use crate::Real;

/// Hyper-parameters of [`super::Objective::Sppo`].
///
/// ```
/// use sapo_core::objectives::SppoParams;
/// assert_eq!(SppoParams::default().beta, 0.001);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SppoParams {
    /// β = 1/η > 0: the log-ratio target is `(P̂ − ½)/β`. Default 0.001
    /// (η = 1000, the paper's).
    pub beta: f64,
}

impl Default for SppoParams {
    fn default() -> Self {
        SppoParams { beta: 0.001 }
    }
}

/// The hyper-parameter's range: β > 0.
pub(crate) fn check(params: &SppoParams) -> Result<(), ObjectiveError> {
    const NAME: &str = "sppo";
    check_param(NAME, "beta", params.beta, params.beta > 0.0, "β must be positive")
}

/// Needs the reference log-probs and both win rates.
pub(crate) fn compute<T: Real>(params: &SppoParams, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
    const NAME: &str = "sppo";
    check(params)?;
    let inputs = Inputs::check(NAME, batch, Needs { reference: true, win_rates: true, ..Needs::default() })?;
    let mut acc = Accumulator::new(NAME, inputs.batch_size(), true);
    let scale = acc.inv_batch();
    let eta = 1.0 / params.beta;
    for i in 0..inputs.batch_size() {
        let chosen_error =
            inputs.policy_chosen[i] - inputs.reference_chosen[i] - eta * (inputs.chosen_win_rates[i] - 0.5);
        let rejected_error =
            inputs.policy_rejected[i] - inputs.reference_rejected[i] - eta * (inputs.rejected_win_rates[i] - 0.5);
        acc.add_loss(0.5 * (chosen_error * chosen_error + rejected_error * rejected_error));
        acc.grad_policy_chosen[i] = chosen_error * scale;
        acc.grad_reference_chosen[i] = -chosen_error * scale;
        acc.grad_policy_rejected[i] = rejected_error * scale;
        acc.grad_reference_rejected[i] = -rejected_error * scale;
    }
    acc.finish(reward_metrics(params.beta, &inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences() {
        let objective = Objective::Sppo(SppoParams::default());
        assert_gradients_match_finite_differences(&objective, &random_batch(41, 6, 600.0), 41);
        assert_gradients_match_finite_differences(&objective, &random_batch(42, 6, 1e4), 42);
    }

    #[test]
    fn win_rate_outside_unit_interval_is_refused() {
        let (pc, pr, rc, rr) = ([-1.0_f64], [-2.0], [-1.0], [-2.0]);
        let batch = PairBatch::new(&pc, &pr).with_reference(&rc, &rr).with_win_rates(&[1.5], &[0.2]);
        let error = Objective::Sppo(SppoParams::default()).compute(&batch).expect_err("1.5 is no probability");
        assert!(matches!(error, ObjectiveError::InputOutOfRange { input: "chosen_win_rates", .. }));
    }
}
