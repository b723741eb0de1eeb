//! The hinge loss of SLiC, as TRL's `hinge`.
//!
//! ```text
//! ℓ(z)  = relu(1 − βz)
//! ∂ℓ/∂z = −β if 1 − βz > 0, else 0   (autograd's choice at the kink)
//! ```

use super::{Accumulator, Inputs, Needs, ObjectiveError, PairBatch, PairOutput, check_param, reward_metrics};
use crate::Real;

/// Hyper-parameters of [`super::Objective::Hinge`].
///
/// ```
/// use sapo_core::objectives::HingeParams;
/// assert_eq!(HingeParams::default().beta, 0.1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct HingeParams {
    /// β > 0: the margin is reached at `z = 1/β`. Default 0.1.
    pub beta: f64,
}

impl Default for HingeParams {
    fn default() -> Self {
        HingeParams { beta: 0.1 }
    }
}

/// The per-pair loss `relu(1 − βz)`.
///
/// ```
/// use sapo_core::objectives::{hinge, HingeParams};
/// assert_eq!(hinge::pair_loss(20.0, &HingeParams::default()), 0.0);
/// assert_eq!(hinge::pair_loss(0.0, &HingeParams::default()), 1.0);
/// ```
pub fn pair_loss(z: f64, params: &HingeParams) -> f64 {
    (1.0 - params.beta * z).max(0.0)
}

/// `∂ℓ/∂z`: −β inside the margin, 0 outside and at the kink.
///
/// ```
/// use sapo_core::objectives::{hinge, HingeParams};
/// assert_eq!(hinge::pair_loss_grad(0.0, &HingeParams::default()), -0.1);
/// ```
pub fn pair_loss_grad(z: f64, params: &HingeParams) -> f64 {
    if 1.0 - params.beta * z > 0.0 { -params.beta } else { 0.0 }
}

/// The hyper-parameter's range: β > 0.
pub(crate) fn check(params: &HingeParams) -> Result<(), ObjectiveError> {
    const NAME: &str = "hinge";
    check_param(NAME, "beta", params.beta, params.beta > 0.0, "β must be positive")
}

pub(crate) fn compute<T: Real>(
    params: &HingeParams,
    batch: &PairBatch<'_, T>,
) -> Result<PairOutput<T>, ObjectiveError> {
    const NAME: &str = "hinge";
    check(params)?;
    let inputs = Inputs::check(NAME, batch, Needs { reference: true, ..Needs::default() })?;
    let mut acc = Accumulator::new(NAME, inputs.batch_size(), true);
    let scale = acc.inv_batch();
    for i in 0..inputs.batch_size() {
        let z = (inputs.policy_chosen[i] - inputs.reference_chosen[i])
            - (inputs.policy_rejected[i] - inputs.reference_rejected[i]);
        acc.add_loss(pair_loss(z, params));
        let dz = pair_loss_grad(z, params) * scale;
        acc.grad_policy_chosen[i] = dz;
        acc.grad_policy_rejected[i] = -dz;
        acc.grad_reference_chosen[i] = -dz;
        acc.grad_reference_rejected[i] = dz;
    }
    acc.finish(reward_metrics(params.beta, &inputs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences_on_both_sides_of_the_margin() {
        // z spreads over ±40 so with β = 0.1 pairs fall on both sides of z = 10.
        let objective = Objective::Hinge(HingeParams { beta: 0.1 });
        assert_gradients_match_finite_differences(&objective, &random_batch(5, 9, 40.0), 5);
    }
}
