//! The machinery every objective shares: the hyper-parameter check, the
//! f64 accumulator of losses and gradients that refuses a non-finite
//! result, and TRL's reward metrics.

use alloc::vec::Vec;

use super::{Inputs, Metrics, ObjectiveError, PairOutput};
use crate::Real;

/// Checks that a hyper-parameter is finite and satisfies `valid`.
pub(crate) fn check_param(
    objective: &'static str,
    name: &'static str,
    value: f64,
    valid: bool,
    reason: &'static str,
) -> Result<(), ObjectiveError> {
    if value.is_finite() && valid {
        Ok(())
    } else {
        Err(ObjectiveError::InvalidParameter { objective, name, value, reason })
    }
}

/// Accumulates per-pair losses and gradients in f64 and produces the
/// `PairOutput<T>`, refusing any non-finite result.
pub(crate) struct Accumulator {
    objective: &'static str,
    batch_size: usize,
    loss_sum: f64,
    pub grad_policy_chosen: Vec<f64>,
    pub grad_policy_rejected: Vec<f64>,
    pub grad_reference_chosen: Vec<f64>,
    pub grad_reference_rejected: Vec<f64>,
    pub grad_chosen_nll: Vec<f64>,
}

impl Accumulator {
    pub fn new(objective: &'static str, batch_size: usize, with_reference: bool) -> Self {
        let zeros = |on: bool| if on { alloc::vec![0.0; batch_size] } else { Vec::new() };
        Accumulator {
            objective,
            batch_size,
            loss_sum: 0.0,
            grad_policy_chosen: zeros(true),
            grad_policy_rejected: zeros(true),
            grad_reference_chosen: zeros(with_reference),
            grad_reference_rejected: zeros(with_reference),
            grad_chosen_nll: Vec::new(),
        }
    }

    /// `1/B`, the factor of every per-pair term in a batch mean.
    pub fn inv_batch(&self) -> f64 {
        1.0 / self.batch_size as f64
    }

    /// Adds one pair's loss (the batch mean divides later).
    pub fn add_loss(&mut self, pair_loss: f64) {
        self.loss_sum += pair_loss;
    }

    /// Adds a batch-level term (already a mean) to the loss.
    pub fn add_mean_term(&mut self, term: f64) {
        self.loss_sum += term * self.batch_size as f64;
    }

    pub fn finish<T: Real>(self, metrics: Metrics<f64>) -> Result<PairOutput<T>, ObjectiveError> {
        let objective = self.objective;
        let scalar = |output: &'static str, value: f64| -> Result<T, ObjectiveError> {
            let converted = T::from_f64(value);
            if converted.to_f64().is_finite() {
                Ok(converted)
            } else {
                Err(ObjectiveError::NonFiniteResult { objective, output })
            }
        };
        let vector = |output: &'static str, values: Vec<f64>| -> Result<Vec<T>, ObjectiveError> {
            values.into_iter().map(|value| scalar(output, value)).collect()
        };
        let mut converted_metrics = Metrics::with_capacity(metrics.len());
        for (name, value) in metrics.iter() {
            converted_metrics.push(name, scalar(name, value)?);
        }
        Ok(PairOutput {
            loss: scalar("loss", self.loss_sum / self.batch_size as f64)?,
            grad_policy_chosen: vector("grad_policy_chosen", self.grad_policy_chosen)?,
            grad_policy_rejected: vector("grad_policy_rejected", self.grad_policy_rejected)?,
            grad_reference_chosen: vector("grad_reference_chosen", self.grad_reference_chosen)?,
            grad_reference_rejected: vector("grad_reference_rejected", self.grad_reference_rejected)?,
            grad_chosen_nll: vector("grad_chosen_nll", self.grad_chosen_nll)?,
            metrics: converted_metrics,
        })
    }
}

/// The metrics every reference-based objective logs, as TRL names them:
/// `rewards/chosen = mean β·r_c`, `rewards/rejected = mean β·r_l`,
/// `rewards/accuracies = mean 1[β·r_c > β·r_l]`, `rewards/margins`,
/// `logps/chosen`, `logps/rejected` (policy log-probs, batch means).
pub(crate) fn reward_metrics(beta: f64, inputs: &Inputs) -> Metrics<f64> {
    let size = inputs.batch_size() as f64;
    let mut chosen = 0.0;
    let mut rejected = 0.0;
    let mut accurate = 0.0;
    for i in 0..inputs.batch_size() {
        let chosen_reward = beta * (inputs.policy_chosen[i] - inputs.reference_chosen[i]);
        let rejected_reward = beta * (inputs.policy_rejected[i] - inputs.reference_rejected[i]);
        chosen += chosen_reward;
        rejected += rejected_reward;
        if chosen_reward > rejected_reward {
            accurate += 1.0;
        }
    }
    let mut metrics = Metrics::with_capacity(6);
    metrics.push("rewards/chosen", chosen / size);
    metrics.push("rewards/rejected", rejected / size);
    metrics.push("rewards/accuracies", accurate / size);
    metrics.push("rewards/margins", (chosen - rejected) / size);
    metrics.push("logps/chosen", inputs.policy_chosen.iter().sum::<f64>() / size);
    metrics.push("logps/rejected", inputs.policy_rejected.iter().sum::<f64>() / size);
    metrics
}
