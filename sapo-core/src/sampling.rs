//! Choosing the next token from logits: greedy, or temperature → top-k →
//! top-p filtering and a seeded draw, in the order and with the rules of
//! transformers' logits warpers (`TemperatureLogitsWarper`,
//! `TopKLogitsWarper`, `TopPLogitsWarper`, `min_tokens_to_keep = 1`).

use alloc::vec::Vec;

use crate::rng::SapoRng;

/// How the next token is chosen.
///
/// ```
/// use sapo_core::sampling::SamplingParams;
/// let sapo = SamplingParams::sapo();
/// assert_eq!((sapo.temperature, sapo.top_k, sapo.top_p), (0.7, 50, 0.95));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SamplingParams {
    /// Take the most likely token (the first on ties); the other fields are
    /// then ignored.
    pub greedy: bool,
    /// Logits are divided by it; must be positive.
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (ties at the boundary kept);
    /// 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability
    /// reaches `top_p` (at least one); 1 keeps all.
    pub top_p: f32,
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams { greedy: true, temperature: 1.0, top_k: 0, top_p: 1.0 }
    }

    /// SAPO's segment sampling: temperature 0.7, top-k 50, top-p 0.95.
    pub fn sapo() -> Self {
        SamplingParams { greedy: false, temperature: 0.7, top_k: 50, top_p: 0.95 }
    }
}

/// Why a token could not be chosen.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SamplingError {
    /// No logits.
    #[error("empty logits")]
    Empty,
    /// A logit is NaN or +inf.
    #[error("logit {index} is {value}")]
    NonFinite {
        /// Its index.
        index: usize,
        /// Its value.
        value: f32,
    },
    /// Temperature ≤ 0 or top-p outside (0, 1].
    #[error("invalid sampling parameter `{name}` = {value}")]
    InvalidParameter {
        /// The field.
        name: &'static str,
        /// Its value.
        value: f32,
    },
}

fn check(logits: &[f32], params: &SamplingParams) -> Result<(), SamplingError> {
    if logits.is_empty() {
        return Err(SamplingError::Empty);
    }
    if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| v.is_nan() || **v == f32::INFINITY) {
        return Err(SamplingError::NonFinite { index, value });
    }
    if !params.greedy {
        if !(params.temperature > 0.0 && params.temperature.is_finite()) {
            return Err(SamplingError::InvalidParameter { name: "temperature", value: params.temperature });
        }
        if !(params.top_p > 0.0 && params.top_p <= 1.0) {
            return Err(SamplingError::InvalidParameter { name: "top_p", value: params.top_p });
        }
    }
    Ok(())
}

/// The index of the largest logit, the first on ties (`torch.argmax`).
fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (index, &value) in logits.iter().enumerate() {
        if value > logits[best] {
            best = index;
        }
    }
    best
}

/// The distribution tokens are drawn from after filtering: probabilities
/// summing to 1, zero where a filter removed the token. Greedy gives a
/// one-hot distribution.
///
/// ```
/// use sapo_core::sampling::{filtered_probabilities, SamplingParams};
/// let params = SamplingParams { greedy: false, temperature: 1.0, top_k: 2, top_p: 1.0 };
/// let p = filtered_probabilities(&[0.0, 1.0, 2.0], &params)?;
/// assert_eq!(p[0], 0.0);
/// assert!((p[1] + p[2] - 1.0).abs() < 1e-12);
/// # Ok::<(), sapo_core::sampling::SamplingError>(())
/// ```
///
/// # Errors
/// [`SamplingError`].
pub fn filtered_probabilities(logits: &[f32], params: &SamplingParams) -> Result<Vec<f64>, SamplingError> {
    check(logits, params)?;
    if params.greedy {
        let mut one_hot = alloc::vec![0.0; logits.len()];
        one_hot[argmax(logits)] = 1.0;
        return Ok(one_hot);
    }
    // Temperature, in f32 as the warper divides.
    let mut scores: Vec<f32> = logits.iter().map(|&l| l / params.temperature).collect();
    let descending = |scores: &[f32], a: &usize, b: &usize| scores[*b].total_cmp(&scores[*a]).then(a.cmp(b));
    let mut order: Vec<usize> = (0..scores.len()).collect();
    if params.top_k > 0 && params.top_k < scores.len() {
        // The k-th largest in linear time; everything below it is removed
        // (ties at the boundary stay, as transformers keeps them).
        order.select_nth_unstable_by(params.top_k - 1, |a, b| descending(&scores, a, b));
        let threshold = scores[order[params.top_k - 1]];
        scores.iter_mut().filter(|s| **s < threshold).for_each(|s| *s = f32::NEG_INFINITY);
        order.retain(|&index| scores[index] > f32::NEG_INFINITY);
    }
    // Descending by score; ties by index for determinism.
    order.sort_by(|a, b| descending(&scores, a, b));
    let softmax = |scores: &[f32]| -> Vec<f64> {
        let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        let exps: Vec<f64> = scores.iter().map(|&s| libm::exp(s as f64 - max)).collect();
        let total: f64 = exps.iter().sum();
        exps.into_iter().map(|e| e / total).collect()
    };
    if params.top_p < 1.0 {
        // Ascending cumulative probability; drop tokens whose cumulative
        // mass stays within 1 − top_p, keeping at least the most likely.
        let probabilities = softmax(&scores);
        let mut cumulative = 0.0;
        let mut removed = Vec::new();
        for (rank, &index) in order.iter().rev().enumerate() {
            cumulative += probabilities[index];
            let is_last = rank + 1 == order.len();
            if cumulative <= 1.0 - f64::from(params.top_p) && !is_last {
                removed.push(index);
            }
        }
        removed.into_iter().for_each(|index| scores[index] = f32::NEG_INFINITY);
    }
    Ok(softmax(&scores))
}

/// Chooses a token: the argmax when greedy, else a draw from
/// [`filtered_probabilities`] with one uniform from `rng`.
///
/// ```
/// use sapo_core::rng::SapoRng;
/// use sapo_core::sampling::{sample_token, SamplingParams};
/// let mut rng = SapoRng::from_seed_u64(1);
/// assert_eq!(sample_token(&[0.1, 3.0, -1.0], &SamplingParams::greedy(), &mut rng)?, 1);
/// # Ok::<(), sapo_core::sampling::SamplingError>(())
/// ```
///
/// # Errors
/// [`SamplingError`].
pub fn sample_token(logits: &[f32], params: &SamplingParams, rng: &mut SapoRng) -> Result<u32, SamplingError> {
    if params.greedy {
        check(logits, params)?;
        return Ok(argmax(logits) as u32);
    }
    let probabilities = filtered_probabilities(logits, params)?;
    let target = rng.next_f64();
    let mut cumulative = 0.0;
    let mut last_kept = 0;
    for (index, &p) in probabilities.iter().enumerate() {
        if p > 0.0 {
            cumulative += p;
            last_kept = index;
            if target < cumulative {
                return Ok(index as u32);
            }
        }
    }
    // Rounding left the total just under 1: the last kept token.
    Ok(last_kept as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_the_mass() {
        // Probabilities 0.5, 0.3, 0.2 (exact logs): top-p 0.75 keeps the first two.
        let logits = [libm::logf(0.5), libm::logf(0.3), libm::logf(0.2)];
        let params = SamplingParams { greedy: false, temperature: 1.0, top_k: 0, top_p: 0.75 };
        let p = filtered_probabilities(&logits, &params).expect("valid");
        assert_eq!(p[2], 0.0);
        assert!((p[0] - 0.625).abs() < 1e-7 && (p[1] - 0.375).abs() < 1e-7);
    }

    #[test]
    fn draws_follow_the_filtered_distribution_by_chi_square() {
        let logits: Vec<f32> = (0..20).map(|i| ((i * 37 % 11) as f32) * 0.3).collect();
        let params = SamplingParams { greedy: false, temperature: 0.8, top_k: 12, top_p: 0.9 };
        let p = filtered_probabilities(&logits, &params).expect("valid");
        let mut rng = SapoRng::from_seed_u64(5);
        let draws = 50_000;
        let mut counts = alloc::vec![0u32; logits.len()];
        for _ in 0..draws {
            counts[sample_token(&logits, &params, &mut rng).expect("valid") as usize] += 1;
        }
        let kept: Vec<usize> = (0..p.len()).filter(|&i| p[i] > 0.0).collect();
        assert!(counts.iter().enumerate().all(|(i, &c)| p[i] > 0.0 || c == 0), "a filtered token was drawn");
        let chi: f64 =
            kept.iter().map(|&i| (f64::from(counts[i]) - draws as f64 * p[i]).powi(2) / (draws as f64 * p[i])).sum();
        // kept − 1 degrees of freedom (at most 11): the 99.9th percentile is ≤ 31.3.
        assert!(chi < 31.3, "chi² = {chi} over {} tokens", kept.len());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let mut rng = SapoRng::from_seed_u64(1);
        assert_eq!(sample_token(&[], &SamplingParams::sapo(), &mut rng), Err(SamplingError::Empty));
        assert!(sample_token(&[f32::NAN, 1.0], &SamplingParams::sapo(), &mut rng).is_err());
        let cold = SamplingParams { temperature: 0.0, ..SamplingParams::sapo() };
        assert!(sample_token(&[1.0, 2.0], &cold, &mut rng).is_err());
    }
}
