//! Supervised fine-tuning: the token-mean negative log-likelihood of the
//! response tokens, pooled over the batch as Hugging Face's causal-LM loss
//! pools it (one mean over every unmasked token, not a mean of means).
//!
//! ```text
//! loss = −Σ_i s_i / Σ_i n_i        ∂loss/∂s_i = −1 / Σ_i n_i
//! ```

use alloc::vec::Vec;

use super::{Metrics, ObjectiveError};
use crate::Real;

/// What [`compute`] returns.
///
/// ```
/// let out = sapo_core::objectives::sft::compute(&[-3.0_f32], &[6])?;
/// assert_eq!((out.loss, out.metrics.get("num_tokens")), (0.5, Some(6.0)));
/// # Ok::<(), sapo_core::objectives::ObjectiveError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct SftOutput<T> {
    /// The pooled token-mean NLL.
    pub loss: T,
    /// `∂loss/∂ logps[i]`.
    pub grad_logps: Vec<T>,
    /// `nll_loss` (the loss) and `num_tokens` (tokens in the batch).
    pub metrics: Metrics<T>,
}

/// SFT loss of sequences with summed response log-probs `logps` over
/// `token_counts` tokens each.
///
/// ```
/// use sapo_core::objectives::sft;
/// let out = sft::compute(&[-6.0_f64, -2.0], &[3, 1])?;
/// assert_eq!(out.loss, 2.0);
/// assert_eq!(out.grad_logps, vec![-0.25, -0.25]);
/// # Ok::<(), sapo_core::objectives::ObjectiveError>(())
/// ```
///
/// # Errors
/// An empty batch, mismatched lengths, a zero token count or a non-finite
/// log-prob.
pub fn compute<T: Real>(logps: &[T], token_counts: &[u32]) -> Result<SftOutput<T>, ObjectiveError> {
    const NAME: &str = "sft";
    if logps.is_empty() {
        return Err(ObjectiveError::EmptyBatch { objective: NAME });
    }
    if token_counts.len() != logps.len() {
        return Err(ObjectiveError::LengthMismatch {
            objective: NAME,
            input: "token_counts",
            expected: logps.len(),
            got: token_counts.len(),
        });
    }
    let mut logp_sum = 0.0;
    for (index, value) in logps.iter().enumerate() {
        let value = value.to_f64();
        if !value.is_finite() {
            return Err(ObjectiveError::NonFiniteInput { objective: NAME, input: "logps", index, value });
        }
        logp_sum += value;
    }
    if let Some(index) = token_counts.iter().position(|&count| count == 0) {
        return Err(ObjectiveError::InputOutOfRange {
            objective: NAME,
            input: "token_counts",
            index,
            value: 0.0,
            reason: "a token count must be at least 1",
        });
    }
    let total_tokens: f64 = token_counts.iter().map(|&count| f64::from(count)).sum();
    let loss = T::from_f64(-logp_sum / total_tokens);
    if !loss.to_f64().is_finite() {
        return Err(ObjectiveError::NonFiniteResult { objective: NAME, output: "loss" });
    }
    let mut metrics = Metrics::with_capacity(2);
    metrics.push("nll_loss", loss);
    metrics.push("num_tokens", T::from_f64(total_tokens));
    Ok(SftOutput { loss, grad_logps: alloc::vec![T::from_f64(-1.0 / total_tokens); logps.len()], metrics })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gradient_matches_finite_differences() {
        let logps = [-13.25_f64, -0.5, -1e4, -77.0];
        let counts = [5, 1, 300, 17];
        let out = compute(&logps, &counts).expect("valid");
        for i in 0..logps.len() {
            let step = 1e-3;
            let (mut plus, mut minus) = (logps, logps);
            plus[i] += step;
            minus[i] -= step;
            let numeric = (compute(&plus, &counts).expect("valid").loss
                - compute(&minus, &counts).expect("valid").loss)
                / (plus[i] - minus[i]);
            assert!((numeric - out.grad_logps[i]).abs() <= 1e-6 * out.grad_logps[i].abs());
        }
    }

    #[test]
    fn empty_and_mismatched_batches_are_errors() {
        assert!(matches!(compute::<f32>(&[], &[]), Err(ObjectiveError::EmptyBatch { .. })));
        assert!(matches!(compute(&[-1.0_f32], &[1, 2]), Err(ObjectiveError::LengthMismatch { .. })));
        assert!(matches!(compute(&[f32::NAN], &[1]), Err(ObjectiveError::NonFiniteInput { .. })));
    }
}
