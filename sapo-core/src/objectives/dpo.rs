//! DPO, the sigmoid loss, with optional label smoothing ε (cDPO).
//!
//! Per pair, with `z = (logπ(y_w) − logref(y_w)) − (logπ(y_l) − logref(y_l))`:
//!
//! ```text
//! ℓ(z)  = −(1−ε)·logσ(βz) − ε·logσ(−βz)
//! ∂ℓ/∂z = −β·[(1−ε)·σ(−βz) − ε·σ(βz)]
//! ```
//!
//! ε = 0 is current TRL's `sigmoid`; ε > 0 is TRL ≤ 0.28's smoothed form
//! and the one the SPPO/AIPO forks ship (docs/algorithms.md, `dpo`).

use super::stable::{log_sigmoid, sigmoid};
use super::{Accumulator, Inputs, Needs, ObjectiveError, PairBatch, PairOutput, check_param, reward_metrics};
use crate::Real;

/// Hyper-parameters of [`super::Objective::Dpo`].
///
/// ```
/// use sapo_core::objectives::DpoParams;
/// let params = DpoParams::default();
/// assert_eq!((params.beta, params.label_smoothing), (0.1, 0.0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DpoParams {
    /// β > 0: inverse temperature of the implicit reward; how far the policy
    /// may move from the reference. Default 0.1.
    pub beta: f64,
    /// ε ∈ [0, 0.5]: probability that a preference label is flipped
    /// (conservative DPO). Default 0.
    pub label_smoothing: f64,
}

impl Default for DpoParams {
    fn default() -> Self {
        DpoParams { beta: 0.1, label_smoothing: 0.0 }
    }
}

impl DpoParams {
    pub(crate) fn check(&self, objective: &'static str) -> Result<(), ObjectiveError> {
        check_param(objective, "beta", self.beta, self.beta > 0.0, "β must be positive")?;
        check_param(
            objective,
            "label_smoothing",
            self.label_smoothing,
            (0.0..=0.5).contains(&self.label_smoothing),
            "ε must lie in [0, 0.5]",
        )
    }
}

/// The per-pair loss `ℓ(z) = −(1−ε)·logσ(βz) − ε·logσ(−βz)`.
///
/// ```
/// use sapo_core::objectives::{dpo, DpoParams};
/// let loss = dpo::pair_loss(0.0, &DpoParams::default());
/// assert!((loss - core::f64::consts::LN_2).abs() < 1e-15);
/// ```
pub fn pair_loss(z: f64, params: &DpoParams) -> f64 {
    let scaled = params.beta * z;
    let smoothing = params.label_smoothing;
    let mut loss = -(1.0 - smoothing) * log_sigmoid(scaled);
    if smoothing != 0.0 {
        loss -= smoothing * log_sigmoid(-scaled);
    }
    loss
}

/// `∂ℓ/∂z = −β·[(1−ε)·σ(−βz) − ε·σ(βz)]`.
///
/// ```
/// use sapo_core::objectives::{dpo, DpoParams};
/// let params = DpoParams::default();
/// assert!((dpo::pair_loss_grad(0.0, &params) + 0.05).abs() < 1e-15);
/// ```
pub fn pair_loss_grad(z: f64, params: &DpoParams) -> f64 {
    let scaled = params.beta * z;
    let smoothing = params.label_smoothing;
    -params.beta * ((1.0 - smoothing) * sigmoid(-scaled) - smoothing * sigmoid(scaled))
}

/// Loss, gradients and metrics of a batch under `params`, reported under
/// the objective name `objective` (`dpo` or `spin`).
pub(crate) fn compute_named<T: Real>(
    objective: &'static str,
    params: &DpoParams,
    batch: &PairBatch<'_, T>,
) -> Result<PairOutput<T>, ObjectiveError> {
    params.check(objective)?;
    let inputs = Inputs::check(objective, batch, Needs { reference: true, ..Needs::default() })?;
    let mut acc = Accumulator::new(objective, inputs.batch_size(), true);
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

pub(crate) fn compute<T: Real>(params: &DpoParams, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
    compute_named("dpo", params, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences_with_and_without_smoothing() {
        for (seed, label_smoothing) in [(1, 0.0), (2, 0.1), (3, 0.5)] {
            let objective = Objective::Dpo(DpoParams { beta: 0.1, label_smoothing });
            assert_gradients_match_finite_differences(&objective, &random_batch(seed, 7, 40.0), seed);
        }
    }

    #[test]
    fn loss_and_gradient_stay_finite_when_beta_z_is_ten_thousand() {
        let params = DpoParams { beta: 1.0, label_smoothing: 0.2 };
        for z in [1e4, -1e4] {
            assert!(pair_loss(z, &params).is_finite());
            assert!(pair_loss_grad(z, &params).is_finite());
        }
        // At βz = −1e4 the loss is (1−ε)·1e4 to the last digit.
        assert_eq!(pair_loss(-1e4, &params), 0.8 * 1e4);
    }
}
