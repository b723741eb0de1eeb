//! SAPO's segment truncation: where to cut the chosen response, what the EMA
//! model regenerates, and how the rejected sequence and both loss masks are
//! assembled (docs/algorithms.md, SAPO "Segment truncation"; the authors'
//! `SAPODataCollatorWithPadding`).
//!
//! Two steps, with the sampler in between:
//!
//! 1. [`plan`] draws the cut `k` and applies the length limits, giving the
//!    prefix `A = prompt + chosen[..k]` to sample after and the window of at
//!    most [`SegmentPlan::window`] tokens to regenerate.
//! 2. [`assemble`] splices the generated segment `B′` in: up to and including
//!    its first end-of-sequence token if it has one, otherwise followed by
//!    the chosen response's suffix after the replaced window.
//!
//! Deviations from the authors' code, each so that every sequence fits
//! `max_length` and nothing crashes:
//! - when the drawn range is empty because `max_prompt_length + L >
//!   max_length` (Python's `randint(0, negative)` raises there), `k = 0`;
//! - the window is clipped to the kept chosen tokens after the cut
//!   (`min(L, len(chosen′) − k)`), where the authors generate `L` tokens and
//!   let the rejected sequence run past `max_length`.

use alloc::vec::Vec;

use crate::rng::SapoRng;

/// The length limits of segment truncation.
///
/// ```
/// use sapo_core::segment::SegmentConfig;
/// let config = SegmentConfig::default();
/// assert_eq!((config.segment_len, config.max_length, config.max_prompt_length), (Some(256), 2048, 1792));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentConfig {
    /// Tokens the EMA model regenerates (`L` before clipping to the chosen
    /// length); `None` regenerates the whole response (the ablation
    /// `segment_len = ∞`). Default 256.
    pub segment_len: Option<usize>,
    /// Longest prompt + response sequence. Default 2048.
    pub max_length: usize,
    /// Prompt tokens kept (the last ones) when a pair is too long. Must be
    /// below `max_length`. Default 1792.
    pub max_prompt_length: usize,
}

impl Default for SegmentConfig {
    fn default() -> Self {
        SegmentConfig { segment_len: Some(256), max_length: 2048, max_prompt_length: 1792 }
    }
}

/// Why a plan or an assembly was refused.
///
/// ```
/// use sapo_core::rng::SapoRng;
/// use sapo_core::segment::{plan, SegmentConfig, SegmentError};
/// let error = plan(4, 0, &SegmentConfig::default(), &mut SapoRng::from_seed_u64(0)).unwrap_err();
/// assert_eq!(error, SegmentError::EmptyChosen);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// The limits contradict each other.
    #[error("invalid segment config: {0}")]
    InvalidConfig(&'static str),
    /// A chosen response needs at least one token (its end-of-sequence token).
    #[error("the chosen response is empty")]
    EmptyChosen,
    /// The sampler returned more tokens than the window allows.
    #[error("generated segment has {got} tokens, the window allows {max}")]
    GeneratedTooLong {
        /// Tokens returned.
        got: usize,
        /// [`SegmentPlan::window`].
        max: usize,
    },
    /// `assemble` got a prompt or chosen response of other lengths than `plan`.
    #[error("{input} has {got} tokens but the plan was made for {expected}")]
    PlanMismatch {
        /// `prompt` or `chosen`.
        input: &'static str,
        /// Length the plan was made for.
        expected: usize,
        /// Length given.
        got: usize,
    },
}

/// Where to cut one pair and what to regenerate; from [`plan`].
///
/// ```
/// use sapo_core::rng::SapoRng;
/// use sapo_core::segment::{plan, SegmentConfig};
/// let config = SegmentConfig { segment_len: Some(3), max_length: 16, max_prompt_length: 8 };
/// let p = plan(2, 10, &config, &mut SapoRng::from_seed_u64(9))?;
/// let prefix = p.prefix(&[1, 1], &[5; 10])?;
/// assert_eq!(prefix.len(), 2 + p.cut); // the EMA model samples after this
/// # Ok::<(), sapo_core::segment::SegmentError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SegmentPlan {
    /// Length of the prompt the plan was made for.
    pub prompt_len: usize,
    /// Length of the chosen response (with its end-of-sequence token) the
    /// plan was made for.
    pub chosen_len: usize,
    /// Prompt tokens dropped from the front (keep-end truncation).
    pub prompt_start: usize,
    /// Chosen tokens kept (all of them unless the pair was too long; a cut
    /// chosen loses its end-of-sequence token, as in the authors' code).
    pub kept_chosen_len: usize,
    /// `k`: chosen tokens kept before the regenerated window.
    pub cut: usize,
    /// Most tokens the sampler may generate after the prefix.
    pub window: usize,
}

impl SegmentPlan {
    /// Prompt tokens kept.
    pub fn kept_prompt_len(&self) -> usize {
        self.prompt_len - self.prompt_start
    }

    /// The prefix `A = prompt′ + chosen[..k]` the EMA model samples after.
    ///
    /// # Errors
    /// [`SegmentError::PlanMismatch`] if the inputs are not the planned ones.
    pub fn prefix(&self, prompt: &[u32], chosen: &[u32]) -> Result<Vec<u32>, SegmentError> {
        self.check_inputs(prompt, chosen)?;
        let mut prefix = Vec::with_capacity(self.kept_prompt_len() + self.cut);
        prefix.extend_from_slice(&prompt[self.prompt_start..]);
        prefix.extend_from_slice(&chosen[..self.cut]);
        Ok(prefix)
    }

    fn check_inputs(&self, prompt: &[u32], chosen: &[u32]) -> Result<(), SegmentError> {
        if prompt.len() != self.prompt_len {
            return Err(SegmentError::PlanMismatch { input: "prompt", expected: self.prompt_len, got: prompt.len() });
        }
        if chosen.len() != self.chosen_len {
            return Err(SegmentError::PlanMismatch { input: "chosen", expected: self.chosen_len, got: chosen.len() });
        }
        Ok(())
    }
}

/// Draws the cut for a pair of `prompt_len` prompt tokens and `chosen_len`
/// chosen tokens (its end-of-sequence token counted) and applies the limits:
///
/// ```text
/// L       = min(segment_len, len(chosen))
/// space   = max_length − min(len(prompt), max_prompt_length) − L
/// max_cut = len(chosen) − 3 − L
/// k ~ U{0 … min(max_cut, space)} if max_cut > 0, else k = 0     (drawn first)
/// if prompt + chosen > max_length: keep the last max_prompt_length prompt tokens
///   if still too long: k = max(0, max_length − len(prompt′) − L),
///                      chosen′ = chosen[..max_length − len(prompt′)]
/// window = min(L, len(chosen′) − k)
/// ```
///
/// Exactly one value is drawn from `rng` when `max_cut > 0` and the range
/// is non-empty, none otherwise, so a resumed run stays in step.
///
/// ```
/// use sapo_core::rng::SapoRng;
/// use sapo_core::segment::{plan, SegmentConfig};
/// let config = SegmentConfig { segment_len: Some(4), max_length: 64, max_prompt_length: 48 };
/// let mut rng = SapoRng::from_seed_u64(5);
/// let p = plan(10, 20, &config, &mut rng)?;
/// assert!(p.cut <= 20 - 3 - 4);
/// assert_eq!(p.window, 4);
/// # Ok::<(), sapo_core::segment::SegmentError>(())
/// ```
///
/// # Errors
/// [`SegmentError::EmptyChosen`], or [`SegmentError::InvalidConfig`] for a
/// zero `segment_len` or `max_prompt_length ≥ max_length`.
pub fn plan(
    prompt_len: usize,
    chosen_len: usize,
    config: &SegmentConfig,
    rng: &mut SapoRng,
) -> Result<SegmentPlan, SegmentError> {
    if config.segment_len == Some(0) {
        return Err(SegmentError::InvalidConfig("segment_len must be at least 1"));
    }
    if config.max_prompt_length >= config.max_length {
        return Err(SegmentError::InvalidConfig("max_prompt_length must be below max_length"));
    }
    if chosen_len == 0 {
        return Err(SegmentError::EmptyChosen);
    }
    let window_len = config.segment_len.map_or(chosen_len, |segment| segment.min(chosen_len));
    let (max_length, max_prompt) = (config.max_length as i128, config.max_prompt_length as i128);
    let (prompt, chosen, window) = (prompt_len as i128, chosen_len as i128, window_len as i128);

    let space = max_length - prompt.min(max_prompt) - window;
    let max_cut = chosen - 3 - window;
    let mut cut: i128 = 0;
    if max_cut > 0 {
        let upper = max_cut.min(space);
        if upper >= 0 {
            cut = rng.uniform_inclusive(0, upper as u64).map_or(0, i128::from);
        }
    }

    let mut prompt_start = 0;
    let mut kept_prompt = prompt;
    let mut kept_chosen = chosen;
    if prompt + chosen > max_length {
        if prompt > max_prompt {
            prompt_start = prompt - max_prompt;
            kept_prompt = max_prompt;
        }
        if kept_prompt + chosen > max_length {
            cut = (max_length - kept_prompt - window).max(0);
            kept_chosen = max_length - kept_prompt;
        }
    }
    let clipped_window = window.min(kept_chosen - cut);
    Ok(SegmentPlan {
        prompt_len,
        chosen_len,
        prompt_start: prompt_start as usize,
        kept_chosen_len: kept_chosen as usize,
        cut: cut as usize,
        window: clipped_window as usize,
    })
}

/// One training pair as token sequences with loss masks; from [`assemble`].
///
/// ```
/// use sapo_core::rng::SapoRng;
/// use sapo_core::segment::{assemble, plan, SegmentConfig};
/// let config = SegmentConfig { segment_len: None, max_length: 16, max_prompt_length: 8 };
/// let p = plan(2, 3, &config, &mut SapoRng::from_seed_u64(0))?;
/// let pair = assemble(&[7, 8], &[4, 5, 2], &p, &[6, 2], 2)?;
/// assert_eq!(pair.rejected, vec![7, 8, 6, 2]);
/// assert_eq!(pair.rejected_loss_mask, vec![false, false, true, true]);
/// # Ok::<(), sapo_core::segment::SegmentError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PreferenceSequences {
    /// Prompt tokens at the start of both sequences.
    pub prompt_len: usize,
    /// Prompt′ + chosen′ (the full kept chosen response).
    pub chosen: Vec<u32>,
    /// Prompt′ + chosen[..k] + B′ (+ the chosen suffix after the window).
    pub rejected: Vec<u32>,
    /// `true` on every response token of `chosen`, `false` on the prompt.
    pub chosen_loss_mask: Vec<bool>,
    /// `true` on every response token of `rejected` (the shared prefix
    /// `chosen[..k]` included), `false` on the prompt.
    pub rejected_loss_mask: Vec<bool>,
}

/// Splices the generated segment into the planned pair.
///
/// If `generated` contains `eos_id`, the rejected response ends at its first
/// occurrence (inclusive); otherwise it continues with the chosen response
/// after the window, `chosen′[k + window..]`.
///
/// ```
/// use sapo_core::rng::SapoRng;
/// use sapo_core::segment::{assemble, plan, SegmentConfig};
/// const EOS: u32 = 2;
/// let config = SegmentConfig { segment_len: Some(2), max_length: 32, max_prompt_length: 16 };
/// let (prompt, chosen) = ([10, 11], [20, 21, 22, 23, 24, 25, EOS]);
/// let p = plan(prompt.len(), chosen.len(), &config, &mut SapoRng::from_seed_u64(1))?;
///
/// // No EOS in the segment: the chosen suffix after the window follows.
/// let pair = assemble(&prompt, &chosen, &p, &[90, 91], EOS)?;
/// assert_eq!(pair.rejected.len(), pair.chosen.len());
/// assert_eq!(&pair.rejected[..2 + p.cut], &pair.chosen[..2 + p.cut]);
///
/// // An EOS ends the rejected response there.
/// let pair = assemble(&prompt, &chosen, &p, &[EOS], EOS)?;
/// assert_eq!(pair.rejected.last(), Some(&EOS));
/// assert_eq!(pair.rejected.len(), 2 + p.cut + 1);
/// # Ok::<(), sapo_core::segment::SegmentError>(())
/// ```
///
/// # Errors
/// [`SegmentError::PlanMismatch`] or [`SegmentError::GeneratedTooLong`].
pub fn assemble(
    prompt: &[u32],
    chosen: &[u32],
    plan: &SegmentPlan,
    generated: &[u32],
    eos_id: u32,
) -> Result<PreferenceSequences, SegmentError> {
    if generated.len() > plan.window {
        return Err(SegmentError::GeneratedTooLong { got: generated.len(), max: plan.window });
    }
    let mut rejected = plan.prefix(prompt, chosen)?;
    let kept_chosen = &chosen[..plan.kept_chosen_len];
    match generated.iter().position(|&token| token == eos_id) {
        Some(eos_position) => rejected.extend_from_slice(&generated[..=eos_position]),
        None => {
            rejected.extend_from_slice(generated);
            rejected.extend_from_slice(&kept_chosen[plan.cut + plan.window..]);
        }
    }
    let prompt_len = plan.kept_prompt_len();
    let mut chosen_sequence = Vec::with_capacity(prompt_len + kept_chosen.len());
    chosen_sequence.extend_from_slice(&prompt[plan.prompt_start..]);
    chosen_sequence.extend_from_slice(kept_chosen);
    let mask = |len: usize| (0..len).map(|position| position >= prompt_len).collect::<Vec<bool>>();
    Ok(PreferenceSequences {
        prompt_len,
        chosen_loss_mask: mask(chosen_sequence.len()),
        rejected_loss_mask: mask(rejected.len()),
        chosen: chosen_sequence,
        rejected,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_long_pair_keeps_prompt_end_and_moves_cut_to_the_last_window() {
        let config = SegmentConfig { segment_len: Some(4), max_length: 20, max_prompt_length: 8 };
        let mut rng = SapoRng::from_seed_u64(3);
        // Prompt 12 > 8 is cut to its last 8; 8 + 30 > 20 so chosen is cut to 12
        // and k = 20 − 8 − 4 = 8 whatever was drawn.
        let p = plan(12, 30, &config, &mut rng).expect("valid");
        assert_eq!((p.prompt_start, p.kept_chosen_len, p.cut, p.window), (4, 12, 8, 4));
    }

    #[test]
    fn whole_response_regeneration_starts_at_the_prompt() {
        let config = SegmentConfig { segment_len: None, ..SegmentConfig::default() };
        let p = plan(30, 100, &config, &mut SapoRng::from_seed_u64(1)).expect("valid");
        assert_eq!((p.cut, p.window), (0, 100));
    }

    #[test]
    fn short_chosen_is_never_cut() {
        let config = SegmentConfig { segment_len: Some(256), ..SegmentConfig::default() };
        let p = plan(30, 5, &config, &mut SapoRng::from_seed_u64(1)).expect("valid");
        assert_eq!((p.cut, p.window), (0, 5));
    }

    #[test]
    fn contradictory_limits_and_empty_chosen_are_errors() {
        let mut rng = SapoRng::from_seed_u64(1);
        let bad = SegmentConfig { segment_len: Some(4), max_length: 10, max_prompt_length: 10 };
        assert!(matches!(plan(3, 3, &bad, &mut rng), Err(SegmentError::InvalidConfig(_))));
        assert_eq!(plan(3, 0, &SegmentConfig::default(), &mut rng), Err(SegmentError::EmptyChosen));
    }

    #[test]
    fn an_empty_draw_range_gives_cut_zero_instead_of_failing() {
        // max_prompt_length + L > max_length: the authors' randint would raise.
        let config = SegmentConfig { segment_len: Some(8), max_length: 16, max_prompt_length: 12 };
        let p = plan(12, 14, &config, &mut SapoRng::from_seed_u64(1)).expect("valid");
        assert_eq!(p.cut, 0);
        assert!(p.kept_prompt_len() + p.kept_chosen_len <= 16);
    }
}
