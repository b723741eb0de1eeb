//! Random batches and the finite-difference check every objective's tests use.

use alloc::vec::Vec;

use super::{Objective, PairBatch, PairOutput};
use crate::rng::SapoRng;

/// Owned columns of a random batch with every input filled in.
#[derive(Clone)]
pub struct BatchData {
    pub policy_chosen: Vec<f64>,
    pub policy_rejected: Vec<f64>,
    pub reference_chosen: Vec<f64>,
    pub reference_rejected: Vec<f64>,
    pub chosen_counts: Vec<u32>,
    pub rejected_counts: Vec<u32>,
    pub chosen_win_rates: Vec<f64>,
    pub rejected_win_rates: Vec<f64>,
    pub chosen_nll: Vec<f64>,
    pub chosen_nll_counts: Vec<u32>,
}

impl BatchData {
    pub fn batch(&self) -> PairBatch<'_, f64> {
        PairBatch::new(&self.policy_chosen, &self.policy_rejected)
            .with_reference(&self.reference_chosen, &self.reference_rejected)
            .with_token_counts(&self.chosen_counts, &self.rejected_counts)
            .with_win_rates(&self.chosen_win_rates, &self.rejected_win_rates)
            .with_chosen_nll(&self.chosen_nll, &self.chosen_nll_counts)
    }
}

/// A batch of `size` pairs whose summed log-probs lie in `[−spread, 0)`,
/// with references within ±10 % of the policy's and token counts 1..=300.
pub fn random_batch(seed: u64, size: usize, spread: f64) -> BatchData {
    let mut rng = SapoRng::from_seed_u64(seed);
    let logp = |rng: &mut SapoRng| -spread * (0.02 + 0.98 * rng.next_f64());
    let column = |rng: &mut SapoRng| (0..size).map(|_| logp(rng)).collect::<Vec<f64>>();
    let policy_chosen = column(&mut rng);
    let policy_rejected = column(&mut rng);
    let jitter = |rng: &mut SapoRng, values: &[f64]| values.iter().map(|v| v * (0.9 + 0.2 * rng.next_f64())).collect();
    let reference_chosen = jitter(&mut rng, &policy_chosen);
    let reference_rejected = jitter(&mut rng, &policy_rejected);
    let counts =
        |rng: &mut SapoRng| (0..size).map(|_| 1 + rng.below(300).expect("non-empty") as u32).collect::<Vec<u32>>();
    let chosen_counts = counts(&mut rng);
    let rejected_counts = counts(&mut rng);
    let chosen_nll_counts: Vec<u32> =
        chosen_counts.iter().map(|c| c + 1 + rng.below(50).expect("non-empty") as u32).collect();
    let chosen_nll = policy_chosen.iter().map(|v| v * (1.0 + rng.next_f64())).collect();
    let chosen_win_rates = (0..size).map(|_| rng.next_f64()).collect();
    let rejected_win_rates = (0..size).map(|_| rng.next_f64()).collect();
    BatchData {
        policy_chosen,
        policy_rejected,
        reference_chosen,
        reference_rejected,
        chosen_counts,
        rejected_counts,
        chosen_win_rates,
        rejected_win_rates,
        chosen_nll,
        chosen_nll_counts,
    }
}

fn column_mut<'a>(data: &'a mut BatchData, input: &str) -> &'a mut Vec<f64> {
    match input {
        "policy_chosen_logps" => &mut data.policy_chosen,
        "policy_rejected_logps" => &mut data.policy_rejected,
        "reference_chosen_logps" => &mut data.reference_chosen,
        "reference_rejected_logps" => &mut data.reference_rejected,
        "chosen_nll_logps" => &mut data.chosen_nll,
        other => panic!("no float input {other}"),
    }
}

fn gradient<'a>(out: &'a PairOutput<f64>, input: &str) -> &'a [f64] {
    match input {
        "policy_chosen_logps" => &out.grad_policy_chosen,
        "policy_rejected_logps" => &out.grad_policy_rejected,
        "reference_chosen_logps" => &out.grad_reference_chosen,
        "reference_rejected_logps" => &out.grad_reference_rejected,
        "chosen_nll_logps" => &out.grad_chosen_nll,
        other => panic!("no float input {other}"),
    }
}

/// Central differences in f64 against the analytic gradient of every float
/// input, relative error ‖analytic − numeric‖ / ‖numeric‖ ≤ 1e-6 per input.
/// An input the objective does not read must have an empty gradient and a
/// numeric gradient of exactly zero.
pub fn assert_gradients_match_finite_differences(objective: &Objective, data: &BatchData, seed: u64) {
    let analytic = objective.compute(&data.batch()).expect("valid batch");
    assert!(analytic.loss.is_finite(), "seed {seed}: loss {}", analytic.loss);
    let mut data = data.clone();
    for input in [
        "policy_chosen_logps",
        "policy_rejected_logps",
        "reference_chosen_logps",
        "reference_rejected_logps",
        "chosen_nll_logps",
    ] {
        let mut numeric = Vec::new();
        for i in 0..data.policy_chosen.len() {
            let original = column_mut(&mut data, input)[i];
            let step = 1e-6 * original.abs().max(1.0);
            let plus = original + step;
            let minus = original - step;
            column_mut(&mut data, input)[i] = plus;
            let loss_plus = objective.compute(&data.batch()).expect("valid batch").loss;
            column_mut(&mut data, input)[i] = minus;
            let loss_minus = objective.compute(&data.batch()).expect("valid batch").loss;
            column_mut(&mut data, input)[i] = original;
            numeric.push((loss_plus - loss_minus) / (plus - minus));
        }
        let analytic_grad = gradient(&analytic, input);
        let numeric_norm = norm(&numeric);
        if analytic_grad.is_empty() {
            assert_eq!(numeric_norm, 0.0, "seed {seed}: {} ignores {input} yet the loss moves", objective.name());
            continue;
        }
        let difference: Vec<f64> = analytic_grad.iter().zip(&numeric).map(|(a, n)| a - n).collect();
        let relative = norm(&difference) / numeric_norm.max(f64::MIN_POSITIVE);
        std::println!(
            "finite differences: {} seed {seed} ∂loss/∂{input}: relative error {relative:.1e}",
            objective.name()
        );
        assert!(
            relative <= 1e-6 || norm(&difference) <= 1e-13,
            "seed {seed}: {} ∂loss/∂{input}: relative error {relative:e}\n analytic {analytic_grad:?}\n numeric  {numeric:?}",
            objective.name()
        );
    }
}

fn norm(values: &[f64]) -> f64 {
    libm::sqrt(values.iter().map(|v| v * v).sum())
}
