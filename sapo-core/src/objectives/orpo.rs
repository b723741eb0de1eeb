//! ORPO: a negative log-likelihood term plus an odds-ratio term, no
//! reference model (docs/algorithms.md, `orpo`; TRL's `trl.experimental.orpo`).
//!
//! With `p̄ = logπ(y)/|y|` the mean response log-prob of each side:
//!
//! ```text
//! o     = (p̄_c − p̄_r) − (log1mexp(p̄_c) − log1mexp(p̄_r))
//! loss  = NLL − λ·mean_pairs logσ(o)
//! ∂o/∂p̄_c = 1 − log1mexp′(p̄_c) = 1/(1 − e^{p̄_c})
//! ∂o/∂p̄_r = −1 + log1mexp′(p̄_r)
//! ```
//!
//! `NLL` is one token mean **pooled over the whole batch**:
//! `−Σ_i s_i / Σ_i n_i`, where `(s_i, n_i)` are the summed log-prob and the
//! token count of chosen sequence `i` over the [`NllScope`]. TRL pools over
//! prompt + chosen tokens (TRL PR #1516), the default here.
//!
//! Deviation from TRL: `log1mexp` clamps its argument to at most −1e-7
//! ([`super::stable::LOG1MEXP_MAX_ARG`]), so a response predicted with
//! probability 1 (mean log-prob exactly 0) gives a finite loss instead of
//! TRL's NaN. The clamp is flat, so no gradient flows through the
//! `log1mexp` term of a clamped side.

use super::stable::{log_sigmoid, log1mexp, log1mexp_grad, sigmoid};
use super::{Accumulator, Inputs, Metrics, Needs, ObjectiveError, PairBatch, PairOutput, check_param};
use crate::Real;

/// Which tokens ORPO's NLL term averages over.
///
/// ```
/// use sapo_core::objectives::NllScope;
/// assert_eq!(NllScope::default(), NllScope::PromptAndResponse);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum NllScope {
    /// Prompt and chosen response tokens, as TRL does: needs
    /// [`PairBatch::chosen_nll_logps`] and its token counts.
    #[default]
    PromptAndResponse,
    /// Chosen response tokens only: reuses `policy_chosen_logps` and
    /// `chosen_token_counts`.
    Response,
}

/// Hyper-parameters of [`super::Objective::Orpo`].
///
/// ```
/// use sapo_core::objectives::{OrpoParams, NllScope};
/// let params = OrpoParams::default();
/// assert_eq!((params.lambda, params.nll_scope), (0.1, NllScope::PromptAndResponse));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OrpoParams {
    /// λ ≥ 0: weight of the odds-ratio term (TRL calls it `beta`). Default
    /// 0.1; the SAPO authors used 0.05.
    pub lambda: f64,
    /// The NLL term's token scope. Default: prompt and response, as TRL.
    pub nll_scope: NllScope,
}

impl Default for OrpoParams {
    fn default() -> Self {
        OrpoParams { lambda: 0.1, nll_scope: NllScope::PromptAndResponse }
    }
}

/// ORPO's log odds `o` of the chosen over the rejected response, from mean
/// log-probs.
///
/// ```
/// use sapo_core::objectives::orpo;
/// assert_eq!(orpo::log_odds(-1.0, -1.0), 0.0);
/// assert!(orpo::log_odds(0.0, -3.0).is_finite()); // TRL gives inf here
/// ```
pub fn log_odds(chosen_mean_logp: f64, rejected_mean_logp: f64) -> f64 {
    (chosen_mean_logp - rejected_mean_logp) - (log1mexp(chosen_mean_logp) - log1mexp(rejected_mean_logp))
}

/// The hyper-parameter's range: λ ≥ 0.
pub(crate) fn check(params: &OrpoParams) -> Result<(), ObjectiveError> {
    const NAME: &str = "orpo";
    check_param(NAME, "lambda", params.lambda, params.lambda >= 0.0, "λ must be non-negative")
}

/// Needs both token counts, and for the default scope the chosen NLL sums
/// and counts. Reference log-probs are ignored.
pub(crate) fn compute<T: Real>(params: &OrpoParams, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
    const NAME: &str = "orpo";
    check(params)?;
    let needs_nll = params.nll_scope == NllScope::PromptAndResponse;
    let inputs = Inputs::check(NAME, batch, Needs { token_counts: true, chosen_nll: needs_nll, ..Needs::default() })?;
    let size = inputs.batch_size();
    let mut acc = Accumulator::new(NAME, size, false);
    let scale = acc.inv_batch();

    let mut log_sigmoid_sum = 0.0;
    let mut log_odds_sum = 0.0;
    let mut chosen_mean_sum = 0.0;
    let mut rejected_mean_sum = 0.0;
    let mut accurate = 0.0;
    for i in 0..size {
        let chosen_mean = inputs.policy_chosen[i] / inputs.chosen_counts[i];
        let rejected_mean = inputs.policy_rejected[i] / inputs.rejected_counts[i];
        let odds = log_odds(chosen_mean, rejected_mean);
        let ratio = log_sigmoid(odds);
        log_sigmoid_sum += ratio;
        log_odds_sum += odds;
        chosen_mean_sum += chosen_mean;
        rejected_mean_sum += rejected_mean;
        if params.lambda * chosen_mean > params.lambda * rejected_mean {
            accurate += 1.0;
        }
        acc.add_loss(-params.lambda * ratio);
        // ∂(−λ·logσ(o))/∂o = −λ·σ(−o)
        let d_odds = -params.lambda * sigmoid(-odds) * scale;
        let d_chosen_mean = d_odds * (1.0 - log1mexp_grad(chosen_mean));
        let d_rejected_mean = d_odds * (-1.0 + log1mexp_grad(rejected_mean));
        acc.grad_policy_chosen[i] = d_chosen_mean / inputs.chosen_counts[i];
        acc.grad_policy_rejected[i] = d_rejected_mean / inputs.rejected_counts[i];
    }

    let (nll_sums, nll_counts) = match params.nll_scope {
        NllScope::PromptAndResponse => (&inputs.chosen_nll, &inputs.chosen_nll_counts),
        NllScope::Response => (&inputs.policy_chosen, &inputs.chosen_counts),
    };
    let total_tokens: f64 = nll_counts.iter().sum();
    let nll = -nll_sums.iter().sum::<f64>() / total_tokens;
    acc.add_mean_term(nll);
    let d_nll_sum = -1.0 / total_tokens;
    match params.nll_scope {
        NllScope::PromptAndResponse => acc.grad_chosen_nll = alloc::vec![d_nll_sum; size],
        NllScope::Response => acc.grad_policy_chosen.iter_mut().for_each(|grad| *grad += d_nll_sum),
    }

    let size_f = size as f64;
    let mut metrics = Metrics::with_capacity(9);
    metrics.push("rewards/chosen", params.lambda * chosen_mean_sum / size_f);
    metrics.push("rewards/rejected", params.lambda * rejected_mean_sum / size_f);
    metrics.push("rewards/accuracies", accurate / size_f);
    metrics.push("rewards/margins", params.lambda * (chosen_mean_sum - rejected_mean_sum) / size_f);
    metrics.push("logps/chosen", chosen_mean_sum / size_f);
    metrics.push("logps/rejected", rejected_mean_sum / size_f);
    metrics.push("nll_loss", nll);
    metrics.push("log_odds_ratio", log_sigmoid_sum / size_f);
    metrics.push("log_odds_chosen", log_odds_sum / size_f);
    acc.finish(metrics)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::Objective;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    #[test]
    fn gradients_match_finite_differences_in_both_scopes() {
        for (seed, nll_scope) in [(51, NllScope::PromptAndResponse), (52, NllScope::Response)] {
            let objective = Objective::Orpo(OrpoParams { lambda: 0.1, nll_scope });
            assert_gradients_match_finite_differences(&objective, &random_batch(seed, 7, 60.0), seed);
        }
    }

    #[test]
    fn gradients_match_finite_differences_for_very_negative_log_probs() {
        let objective = Objective::Orpo(OrpoParams { lambda: 0.05, nll_scope: NllScope::Response });
        assert_gradients_match_finite_differences(&objective, &random_batch(53, 5, 1e4), 53);
    }

    #[test]
    fn gradients_match_finite_differences_near_certain_responses() {
        // Mean log-probs around −1e-4: the log1mexp cancellation regime.
        let mut data = random_batch(54, 5, 1.0);
        for (i, value) in data.policy_chosen.iter_mut().enumerate() {
            *value = -1e-4 * (i as f64 + 1.0) * f64::from(data.chosen_counts[i]);
        }
        let objective = Objective::Orpo(OrpoParams::default());
        assert_gradients_match_finite_differences(&objective, &data, 54);
    }

    #[test]
    fn mean_log_prob_of_exactly_zero_is_finite() {
        let (chosen, rejected) = ([0.0_f32, -3.0], [-2.0_f32, 0.0]);
        let batch = PairBatch::new(&chosen, &rejected).with_token_counts(&[4, 2], &[3, 1]);
        let params = OrpoParams { lambda: 0.1, nll_scope: NllScope::Response };
        let out = Objective::Orpo(params).compute(&batch).expect("finite inputs");
        assert!(out.loss.is_finite());
        assert!(out.grad_policy_chosen.iter().chain(&out.grad_policy_rejected).all(|g| g.is_finite()));
        assert!(out.metrics.iter().all(|(_, value)| value.is_finite()));
    }
}
