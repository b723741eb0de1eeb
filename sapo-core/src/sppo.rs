//! SPPO's win-rate estimate and pair selection (docs/algorithms.md, "SPPO's
//! win-rate estimate"; the authors' `scripts/compute_prob.py`).
//!
//! For one prompt with K sampled responses, a preference oracle gives either
//! K scores `s_i` (then `P[i][j] = σ(s_i − s_j)`) or a K×K matrix `P[i][j]`
//! = probability that response i beats response j. The estimated win rate is
//! `P̂_i = (1/K)·Σ_j P[i][j]`, the self term (½ from scores) included.
//! Chosen = argmax score, rejected = argmin score, first index on ties.

use alloc::vec::Vec;

use crate::objectives::stable::sigmoid;

/// Why a win-rate computation or selection was refused.
///
/// ```
/// use sapo_core::sppo::{win_rates_from_matrix, WinRateError};
/// assert_eq!(win_rates_from_matrix(&[0.5, 2.0, 0.0, 0.5], 2), Err(WinRateError::NotAProbability { index: 1, value: 2.0 }));
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WinRateError {
    /// No responses to compare.
    #[error("no responses to compare")]
    Empty,
    /// A score or probability is NaN or infinite.
    #[error("{input}[{index}] is not finite ({value})")]
    NonFinite {
        /// `scores`, `matrix` or `win_rates`.
        input: &'static str,
        /// Flat index of the value.
        index: usize,
        /// The value.
        value: f64,
    },
    /// A preference matrix entry lies outside [0, 1].
    #[error("matrix[{index}] = {value} is not a probability")]
    NotAProbability {
        /// Flat (row-major) index.
        index: usize,
        /// The value.
        value: f64,
    },
    /// The matrix is not K×K or the inputs disagree on K.
    #[error("{input} has {got} entries, expected {expected}")]
    ShapeMismatch {
        /// The input with the wrong size.
        input: &'static str,
        /// Entries expected.
        expected: usize,
        /// Entries given.
        got: usize,
    },
}

/// What to do with a prompt whose K responses all tie.
///
/// ```
/// assert_eq!(sapo_core::sppo::TiePolicy::default(), sapo_core::sppo::TiePolicy::Keep);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TiePolicy {
    /// The authors' behaviour: chosen and rejected are the same response
    /// (index 0) with P̂ = ½; the soft loss pulls both log-ratios to 0.
    #[default]
    Keep,
    /// Drop the prompt from the iteration's training data.
    Skip,
}

/// A selected chosen/rejected pair with its win-rate targets.
///
/// ```
/// use sapo_core::sppo::{select_pair, TiePolicy};
/// let pair = select_pair(&[0.1, 0.9], &[0.4, 0.6], TiePolicy::Keep)?.unwrap();
/// assert_eq!((pair.chosen, pair.chosen_win_rate, pair.rejected_win_rate), (1, 0.6, 0.4));
/// # Ok::<(), sapo_core::sppo::WinRateError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SppoPair {
    /// Index of the chosen (highest-scored) response.
    pub chosen: usize,
    /// Index of the rejected (lowest-scored) response.
    pub rejected: usize,
    /// `P̂_w`.
    pub chosen_win_rate: f64,
    /// `P̂_l`.
    pub rejected_win_rate: f64,
}

fn check_finite(input: &'static str, values: &[f64]) -> Result<(), WinRateError> {
    match values.iter().enumerate().find(|(_, value)| !value.is_finite()) {
        Some((index, &value)) => Err(WinRateError::NonFinite { input, index, value }),
        None => Ok(()),
    }
}

/// `P̂_i = (1/K)·Σ_j σ(s_i − s_j)` from K scores.
///
/// ```
/// use sapo_core::sppo::win_rates_from_scores;
/// let rates = win_rates_from_scores(&[1.0, 1.0])?;
/// assert_eq!(rates, vec![0.5, 0.5]);
/// # Ok::<(), sapo_core::sppo::WinRateError>(())
/// ```
///
/// # Errors
/// [`WinRateError::Empty`] or [`WinRateError::NonFinite`].
pub fn win_rates_from_scores(scores: &[f64]) -> Result<Vec<f64>, WinRateError> {
    if scores.is_empty() {
        return Err(WinRateError::Empty);
    }
    check_finite("scores", scores)?;
    let k = scores.len() as f64;
    Ok(scores.iter().map(|&own| scores.iter().map(|&other| sigmoid(own - other)).sum::<f64>() / k).collect())
}

/// `P̂_i = (1/K)·Σ_j P[i][j]` from a row-major K×K preference matrix, used as
/// given (a judge's diagonal should be ½, as the score form's is).
///
/// ```
/// use sapo_core::sppo::win_rates_from_matrix;
/// let rates = win_rates_from_matrix(&[0.5, 0.9, 0.1, 0.5], 2)?;
/// assert!((rates[0] - 0.7).abs() < 1e-15 && (rates[1] - 0.3).abs() < 1e-15);
/// # Ok::<(), sapo_core::sppo::WinRateError>(())
/// ```
///
/// # Errors
/// [`WinRateError::Empty`], [`WinRateError::ShapeMismatch`],
/// [`WinRateError::NonFinite`] or [`WinRateError::NotAProbability`].
pub fn win_rates_from_matrix(matrix: &[f64], k: usize) -> Result<Vec<f64>, WinRateError> {
    if k == 0 {
        return Err(WinRateError::Empty);
    }
    if matrix.len() != k * k {
        return Err(WinRateError::ShapeMismatch { input: "matrix", expected: k * k, got: matrix.len() });
    }
    check_finite("matrix", matrix)?;
    if let Some((index, &value)) = matrix.iter().enumerate().find(|(_, p)| !(0.0..=1.0).contains(*p)) {
        return Err(WinRateError::NotAProbability { index, value });
    }
    Ok(matrix.chunks_exact(k).map(|row| row.iter().sum::<f64>() / k as f64).collect())
}

/// Picks chosen = argmax `ranking`, rejected = argmin `ranking` (first index
/// on ties, as numpy's `argmax`), with their win rates. `ranking` is the
/// oracle's scores, or the win rates themselves when the oracle gave a
/// matrix. Returns `None` only for an all-tie prompt under
/// [`TiePolicy::Skip`].
///
/// ```
/// use sapo_core::sppo::{select_pair, win_rates_from_scores, TiePolicy};
/// let scores = [0.2, 1.5, -0.3, 1.5];
/// let rates = win_rates_from_scores(&scores)?;
/// let pair = select_pair(&scores, &rates, TiePolicy::Keep)?.unwrap();
/// assert_eq!((pair.chosen, pair.rejected), (1, 2));
///
/// let ties = [0.7; 3];
/// let tie_rates = win_rates_from_scores(&ties)?;
/// assert_eq!(select_pair(&ties, &tie_rates, TiePolicy::Skip)?, None);
/// let kept = select_pair(&ties, &tie_rates, TiePolicy::Keep)?.unwrap();
/// assert_eq!((kept.chosen, kept.rejected, kept.chosen_win_rate), (0, 0, 0.5));
/// # Ok::<(), sapo_core::sppo::WinRateError>(())
/// ```
///
/// # Errors
/// [`WinRateError::Empty`], [`WinRateError::ShapeMismatch`] or
/// [`WinRateError::NonFinite`].
pub fn select_pair(ranking: &[f64], win_rates: &[f64], ties: TiePolicy) -> Result<Option<SppoPair>, WinRateError> {
    if ranking.is_empty() {
        return Err(WinRateError::Empty);
    }
    if win_rates.len() != ranking.len() {
        return Err(WinRateError::ShapeMismatch { input: "win_rates", expected: ranking.len(), got: win_rates.len() });
    }
    check_finite("scores", ranking)?;
    check_finite("win_rates", win_rates)?;
    let (mut chosen, mut rejected) = (0, 0);
    for (index, &value) in ranking.iter().enumerate() {
        if value > ranking[chosen] {
            chosen = index;
        }
        if value < ranking[rejected] {
            rejected = index;
        }
    }
    if ranking[chosen] == ranking[rejected] && ties == TiePolicy::Skip {
        return Ok(None);
    }
    Ok(Some(SppoPair { chosen, rejected, chosen_win_rate: win_rates[chosen], rejected_win_rate: win_rates[rejected] }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn score_and_matrix_forms_agree() {
        let scores = [0.3, -1.2, 2.0, 0.0, 0.7];
        let k = scores.len();
        let matrix: Vec<f64> = (0..k * k).map(|flat| sigmoid(scores[flat / k] - scores[flat % k])).collect();
        let from_scores = win_rates_from_scores(&scores).expect("valid");
        let from_matrix = win_rates_from_matrix(&matrix, k).expect("valid");
        for (a, b) in from_scores.iter().zip(&from_matrix) {
            assert!((a - b).abs() < 1e-15);
        }
        // Win rates of a constant-sum game average to ½.
        assert!((from_scores.iter().sum::<f64>() / k as f64 - 0.5).abs() < 1e-15);
    }

    #[test]
    fn malformed_inputs_are_errors() {
        assert_eq!(win_rates_from_scores(&[]), Err(WinRateError::Empty));
        assert!(matches!(win_rates_from_scores(&[1.0, f64::NAN]), Err(WinRateError::NonFinite { .. })));
        assert!(matches!(win_rates_from_matrix(&[0.5; 3], 2), Err(WinRateError::ShapeMismatch { .. })));
        assert!(matches!(win_rates_from_matrix(&[0.5, 1.2, 0.0, 0.5], 2), Err(WinRateError::NotAProbability { .. })));
        assert!(matches!(select_pair(&[1.0], &[0.5, 0.5], TiePolicy::Keep), Err(WinRateError::ShapeMismatch { .. })));
    }
}
