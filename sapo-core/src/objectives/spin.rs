//! SPIN: the DPO formula under its own name and defaults.
//!
//! The objective is [`super::dpo`]'s with ε = 0; what makes it SPIN is the
//! data: the rejected response is the previous iteration's own generation
//! and the reference is that previous model, fixed for the iteration
//! (docs/algorithms.md, `spin`).

use super::dpo::{DpoParams, compute_named};
use super::{ObjectiveError, PairBatch, PairOutput};
use crate::Real;

/// Hyper-parameters of [`super::Objective::Spin`].
///
/// ```
/// use sapo_core::objectives::SpinParams;
/// assert_eq!(SpinParams::default().beta, 0.1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SpinParams {
    /// β > 0 (the authors' λ, 0.1; their iteration-3 script uses 5.0).
    pub beta: f64,
}

impl Default for SpinParams {
    fn default() -> Self {
        SpinParams { beta: 0.1 }
    }
}

pub(crate) fn compute<T: Real>(params: &SpinParams, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
    compute_named("spin", &DpoParams { beta: params.beta, label_smoothing: 0.0 }, batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::random_batch;

    #[test]
    fn spin_equals_dpo_without_smoothing() {
        let batch_data = random_batch(11, 5, 30.0);
        let batch = batch_data.batch();
        let spin = Objective::Spin(SpinParams { beta: 0.3 }).compute(&batch).expect("valid batch");
        let dpo = Objective::Dpo(DpoParams { beta: 0.3, label_smoothing: 0.0 }).compute(&batch).expect("valid batch");
        assert_eq!(spin, dpo);
    }
}
