//! SPPO with hard probabilities (winner 1, loser 0), as TRL's `sppo_hard`.
//!
//! ```text
//! ℓ = (r_c − 0.5/β)² + (r_l + 0.5/β)²
//! ∂ℓ/∂r_c = 2·(r_c − 0.5/β)      ∂ℓ/∂r_l = 2·(r_l + 0.5/β)
//! ```
//! with `r = logπ(y) − logref(y)` (docs/algorithms.md, `sppo_hard`).

use super::{Accumulator, Inputs, Needs, ObjectiveError, PairBatch, PairOutput, check_param, reward_metrics};
use crate::Real;

/// Hyper-parameters of [`super::Objective::SppoHard`].
///
/// ```
/// use sapo_core::objectives::SppoHardParams;
/// assert_eq!(SppoHardParams::default().beta, 0.001);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SppoHardParams {
    /// β = 1/η > 0. Default 0.001, the SPPO paper's recipe (TRL's
    /// `DPOConfig` default of 0.1 is a DPO value).
    pub beta: f64,
}

impl Default for SppoHardParams {
    fn default() -> Self {
        SppoHardParams { beta: 0.001 }
    }
}

/// The hyper-parameter's range: β > 0.
pub(crate) fn check(params: &SppoHardParams) -> Result<(), ObjectiveError> {
    const NAME: &str = "sppo_hard";
    check_param(NAME, "beta", params.beta, params.beta > 0.0, "β must be positive")
}

pub(crate) fn compute<T: Real>(
    params: &SppoHardParams,
    batch: &PairBatch<'_, T>,
) -> Result<PairOutput<T>, ObjectiveError> {
    const NAME: &str = "sppo_hard";
    check(params)?;
    let inputs = Inputs::check(NAME, batch, Needs { reference: true, ..Needs::default() })?;
    let mut acc = Accumulator::new(NAME, inputs.batch_size(), true);
    let scale = acc.inv_batch();
    let target = 0.5 / params.beta;
    for i in 0..inputs.batch_size() {
        let chosen_error = inputs.policy_chosen[i] - inputs.reference_chosen[i] - target;
        let rejected_error = inputs.policy_rejected[i] - inputs.reference_rejected[i] + target;
        acc.add_loss(chosen_error * chosen_error + rejected_error * rejected_error);
        acc.grad_policy_chosen[i] = 2.0 * chosen_error * scale;
        acc.grad_reference_chosen[i] = -2.0 * chosen_error * scale;
        acc.grad_policy_rejected[i] = 2.0 * rejected_error * scale;
        acc.grad_reference_rejected[i] = -2.0 * rejected_error * scale;
    }
    acc.finish(reward_metrics(params.beta, &inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences_at_the_paper_beta() {
        let objective = Objective::SppoHard(SppoHardParams::default());
        assert_gradients_match_finite_differences(&objective, &random_batch(31, 5, 800.0), 31);
        assert_gradients_match_finite_differences(&objective, &random_batch(32, 5, 1e4), 32);
    }
}
