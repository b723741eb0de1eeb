//! Preference objectives: batch-mean loss, exact gradients, TRL-named metrics.
//!
//! Every objective works on **per-sequence** quantities that the trainer's
//! model produced: the summed log-probability of each response's tokens under
//! the policy (and the reference), the response token counts, and for some
//! objectives extra per-pair inputs (SPPO's win rates, ORPO's NLL sums). It
//! returns the batch-mean loss, the gradient of that loss with respect to
//! every per-sequence float input it read, and the step's metrics. Because a
//! summed log-prob is a plain sum over tokens, the backward pass gives each
//! response token of sequence `i` the gradient `grad[i]` (times its mask).
//!
//! Whatever `T` is, the arithmetic runs in `f64` with the stable forms of
//! [`stable`]; results are finite for any finite input or an
//! [`ObjectiveError::NonFiniteResult`] is returned — never a NaN.
//!
//! | objective | file | per-pair loss (docs/algorithms.md) |
//! |---|---|---|
//! | [`Objective::Dpo`] | `dpo.rs` | `−(1−ε)·logσ(βz) − ε·logσ(−βz)` |
//! | [`Objective::Hinge`] | `hinge.rs` | `relu(1 − βz)` |
//! | [`Objective::Ipo`] | `ipo.rs` | `(z̄ − 1/(2β))²` on mean log-probs |
//! | [`Objective::Orpo`] | `orpo.rs` | `NLL − λ·mean logσ(o)` |
//! | [`Objective::Sppo`] | `sppo.rs` | `½[(r_w − (P̂_w−½)/β)² + (r_l − (P̂_l−½)/β)²]` |
//! | [`Objective::SppoHard`] | `sppo_hard.rs` | `(r_c − 0.5/β)² + (r_l + 0.5/β)²` |
//! | [`Objective::Aipo`] | `aipo.rs` | `dpo(β·a) − λ·logπ(y_w)/|y_w|` |
//! | [`Objective::Spin`] | `spin.rs` | the `dpo` formula, SPIN's defaults |
//! | [`sft::compute`] | `sft.rs` | token-mean NLL |

use alloc::vec::Vec;

use crate::Real;

mod accumulate;
pub mod aipo;
pub mod dpo;
pub mod hinge;
pub mod ipo;
mod metrics;
pub mod orpo;
pub mod sft;
pub mod spin;
pub mod sppo;
pub mod sppo_hard;
pub mod stable;

pub(crate) use accumulate::{Accumulator, check_param, reward_metrics};
pub use aipo::AipoParams;
pub use dpo::DpoParams;
pub use hinge::HingeParams;
pub use ipo::IpoParams;
pub use metrics::Metrics;
pub use orpo::{NllScope, OrpoParams};
pub use spin::SpinParams;
pub use sppo::SppoParams;
pub use sppo_hard::SppoHardParams;

/// Why an objective refused its inputs.
///
/// ```
/// use sapo_core::objectives::{DpoParams, Objective, ObjectiveError, PairBatch};
/// let (chosen, rejected) = ([-1.0_f64, -2.0], [-1.5]);
/// let batch = PairBatch::new(&chosen, &rejected).with_reference(&chosen, &chosen);
/// let error = Objective::Dpo(DpoParams::default()).compute(&batch).unwrap_err();
/// assert_eq!(
///     error,
///     ObjectiveError::LengthMismatch { objective: "dpo", input: "policy_rejected_logps", expected: 2, got: 1 }
/// );
/// assert_eq!(error.to_string(), "dpo: input `policy_rejected_logps` has 1 entries, expected 2");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ObjectiveError {
    /// The batch has no pairs; a mean over nothing is undefined.
    #[error("{objective}: empty batch")]
    EmptyBatch {
        /// The objective that was asked.
        objective: &'static str,
    },
    /// An input slice has a different length from `policy_chosen_logps`.
    #[error("{objective}: input `{input}` has {got} entries, expected {expected}")]
    LengthMismatch {
        /// The objective that was asked.
        objective: &'static str,
        /// The input's field name in [`PairBatch`].
        input: &'static str,
        /// The batch size, from `policy_chosen_logps`.
        expected: usize,
        /// The input's length.
        got: usize,
    },
    /// The objective needs an input the batch does not carry.
    #[error("{objective}: needs input `{input}`, which the batch does not carry")]
    MissingInput {
        /// The objective that was asked.
        objective: &'static str,
        /// The missing field of [`PairBatch`].
        input: &'static str,
    },
    /// An input value is NaN or infinite.
    #[error("{objective}: input `{input}`[{index}] is not finite ({value})")]
    NonFiniteInput {
        /// The objective that was asked.
        objective: &'static str,
        /// The field of [`PairBatch`].
        input: &'static str,
        /// The pair's index in the batch.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// An input value is outside its domain (a zero token count, a win rate
    /// outside [0, 1]).
    #[error("{objective}: input `{input}`[{index}] = {value} is out of range: {reason}")]
    InputOutOfRange {
        /// The objective that was asked.
        objective: &'static str,
        /// The field of [`PairBatch`].
        input: &'static str,
        /// The pair's index in the batch.
        index: usize,
        /// The offending value.
        value: f64,
        /// What the value must satisfy.
        reason: &'static str,
    },
    /// A hyper-parameter is outside its range.
    #[error("{objective}: parameter `{name}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The objective that was asked.
        objective: &'static str,
        /// The parameter's name (paper symbol in the docs).
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the parameter must satisfy.
        reason: &'static str,
    },
    /// Finite inputs so large that the loss or a gradient overflowed the
    /// output type (e.g. log-probs near `f32::MAX` in magnitude).
    #[error("{objective}: result `{output}` overflowed to a non-finite value")]
    NonFiniteResult {
        /// The objective that was asked.
        objective: &'static str,
        /// The loss, a gradient, or a metric name.
        output: &'static str,
    },
}

/// One batch of preference pairs, as per-sequence numbers.
///
/// All slices that are given must have the same length, the batch size.
/// An empty slice means "not given"; each objective says which inputs it
/// needs and returns [`ObjectiveError::MissingInput`] when one is absent.
/// Log-probs are **sums** over a response's tokens (the end-of-sequence token
/// included, prompt and padding excluded), as docs/algorithms.md defines `logp(y)`.
///
/// ```
/// use sapo_core::objectives::PairBatch;
/// let (pc, pr, rc, rr) = ([-3.0_f32], [-4.0], [-3.5], [-3.9]);
/// let batch = PairBatch::new(&pc, &pr)
///     .with_reference(&rc, &rr)
///     .with_token_counts(&[3], &[5]);
/// assert_eq!(batch.len(), 1);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct PairBatch<'a, T> {
    /// `logπ(y_w)`: policy log-prob of each chosen response.
    pub policy_chosen_logps: &'a [T],
    /// `logπ(y_l)`: policy log-prob of each rejected response.
    pub policy_rejected_logps: &'a [T],
    /// `logref(y_w)`: reference log-prob of each chosen response.
    pub reference_chosen_logps: &'a [T],
    /// `logref(y_l)`: reference log-prob of each rejected response.
    pub reference_rejected_logps: &'a [T],
    /// `|y_w|`: response tokens of each chosen response (a constant).
    pub chosen_token_counts: &'a [u32],
    /// `|y_l|`: response tokens of each rejected response (a constant).
    pub rejected_token_counts: &'a [u32],
    /// SPPO's `P̂_w`: estimated win rate of each chosen response (a constant).
    pub chosen_win_rates: &'a [T],
    /// SPPO's `P̂_l`: estimated win rate of each rejected response (a constant).
    pub rejected_win_rates: &'a [T],
    /// ORPO's NLL numerator per chosen sequence: the summed log-prob over the
    /// tokens of [`NllScope::PromptAndResponse`] (prompt + chosen response).
    pub chosen_nll_logps: &'a [T],
    /// ORPO's NLL denominator per chosen sequence: how many tokens
    /// `chosen_nll_logps` summed (a constant).
    pub chosen_nll_token_counts: &'a [u32],
}

impl<'a, T> PairBatch<'a, T> {
    /// A batch with the policy's log-probs only; add the rest with the
    /// `with_*` methods.
    pub fn new(policy_chosen_logps: &'a [T], policy_rejected_logps: &'a [T]) -> Self {
        PairBatch {
            policy_chosen_logps,
            policy_rejected_logps,
            reference_chosen_logps: &[],
            reference_rejected_logps: &[],
            chosen_token_counts: &[],
            rejected_token_counts: &[],
            chosen_win_rates: &[],
            rejected_win_rates: &[],
            chosen_nll_logps: &[],
            chosen_nll_token_counts: &[],
        }
    }

    /// Adds the reference model's log-probs.
    pub fn with_reference(mut self, chosen: &'a [T], rejected: &'a [T]) -> Self {
        self.reference_chosen_logps = chosen;
        self.reference_rejected_logps = rejected;
        self
    }

    /// Adds the response token counts.
    pub fn with_token_counts(mut self, chosen: &'a [u32], rejected: &'a [u32]) -> Self {
        self.chosen_token_counts = chosen;
        self.rejected_token_counts = rejected;
        self
    }

    /// Adds SPPO's win-rate estimates (see [`crate::sppo`]).
    pub fn with_win_rates(mut self, chosen: &'a [T], rejected: &'a [T]) -> Self {
        self.chosen_win_rates = chosen;
        self.rejected_win_rates = rejected;
        self
    }

    /// Adds ORPO's NLL sums and token counts over prompt + chosen response.
    pub fn with_chosen_nll(mut self, logps: &'a [T], token_counts: &'a [u32]) -> Self {
        self.chosen_nll_logps = logps;
        self.chosen_nll_token_counts = token_counts;
        self
    }

    /// The batch size (number of pairs).
    pub fn len(&self) -> usize {
        self.policy_chosen_logps.len()
    }

    /// Whether the batch has no pairs.
    pub fn is_empty(&self) -> bool {
        self.policy_chosen_logps.is_empty()
    }
}

/// What an objective returns: loss, gradients, metrics.
///
/// Gradients are of the **batch-mean** loss with respect to each per-sequence
/// input; a gradient vector is empty when the objective does not read that
/// input (the reference for ORPO, `chosen_nll_logps` outside ORPO's default
/// scope). Gradients with respect to the reference are reported too (the
/// trainer does not use them, but they are part of the exact derivative and
/// tested as such).
///
/// ```
/// use sapo_core::objectives::{NllScope, Objective, OrpoParams, PairBatch};
/// let (chosen, rejected) = ([-2.0_f64], [-6.0]);
/// let batch = PairBatch::new(&chosen, &rejected).with_token_counts(&[4], &[4]);
/// let params = OrpoParams { lambda: 0.1, nll_scope: NllScope::Response };
/// let out = Objective::Orpo(params).compute(&batch)?;
/// assert!(out.grad_reference_chosen.is_empty()); // ORPO has no reference
/// assert!(out.grad_policy_chosen[0] < 0.0 && out.grad_policy_rejected[0] > 0.0);
/// assert_eq!(out.metrics.get("nll_loss"), Some(0.5));
/// # Ok::<(), sapo_core::objectives::ObjectiveError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PairOutput<T> {
    /// The batch-mean loss.
    pub loss: T,
    /// `∂loss/∂ policy_chosen_logps[i]`.
    pub grad_policy_chosen: Vec<T>,
    /// `∂loss/∂ policy_rejected_logps[i]`.
    pub grad_policy_rejected: Vec<T>,
    /// `∂loss/∂ reference_chosen_logps[i]`.
    pub grad_reference_chosen: Vec<T>,
    /// `∂loss/∂ reference_rejected_logps[i]`.
    pub grad_reference_rejected: Vec<T>,
    /// `∂loss/∂ chosen_nll_logps[i]` (ORPO only).
    pub grad_chosen_nll: Vec<T>,
    /// The step's metrics under TRL's names.
    pub metrics: Metrics<T>,
}

/// A preference objective and its hyper-parameters, matched exhaustively.
///
/// ```
/// use sapo_core::objectives::{Objective, PairBatch, SppoHardParams};
/// let (pc, pr, rc, rr) = ([-3.0_f64], [-4.0], [-3.5], [-3.9]);
/// let batch = PairBatch::new(&pc, &pr).with_reference(&rc, &rr);
/// let out = Objective::SppoHard(SppoHardParams { beta: 0.5 }).compute(&batch)?;
/// // (r_c − 1)² + (r_l + 1)² with r_c = 0.5, r_l = −0.1.
/// assert!((out.loss - (0.25 + 0.81)).abs() < 1e-12);
/// # Ok::<(), sapo_core::objectives::ObjectiveError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum Objective {
    /// DPO, sigmoid loss with optional label smoothing (cDPO).
    Dpo(DpoParams),
    /// The hinge loss of SLiC.
    Hinge(HingeParams),
    /// IPO on mean log-probs.
    Ipo(IpoParams),
    /// ORPO: NLL plus odds-ratio term, no reference model.
    Orpo(OrpoParams),
    /// SPPO with soft win-rate targets.
    Sppo(SppoParams),
    /// SPPO with hard targets (winner 1, loser 0).
    SppoHard(SppoHardParams),
    /// AIPO: agreement-aware DPO with a length-normalised NLL term.
    Aipo(AipoParams),
    /// SPIN: the DPO formula against the previous iteration's model.
    Spin(SpinParams),
}

impl Objective {
    /// The objective's name as used in configs and error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Objective::Dpo(_) => "dpo",
            Objective::Hinge(_) => "hinge",
            Objective::Ipo(_) => "ipo",
            Objective::Orpo(_) => "orpo",
            Objective::Sppo(_) => "sppo",
            Objective::SppoHard(_) => "sppo_hard",
            Objective::Aipo(_) => "aipo",
            Objective::Spin(_) => "spin",
        }
    }

    /// Whether the objective reads reference log-probs (all but ORPO).
    pub fn needs_reference(&self) -> bool {
        !matches!(self, Objective::Orpo(_))
    }

    /// Checks the hyper-parameters against their ranges — the one rule per
    /// parameter that [`Objective::compute`] also applies, so a trainer can
    /// refuse a bad config before its first step.
    ///
    /// ```
    /// use sapo_core::objectives::{DpoParams, Objective, ObjectiveError};
    /// assert!(Objective::Dpo(DpoParams::default()).check().is_ok());
    /// let error = Objective::Dpo(DpoParams { beta: 0.0, label_smoothing: 0.0 }).check().unwrap_err();
    /// assert!(matches!(error, ObjectiveError::InvalidParameter { name: "beta", .. }));
    /// ```
    ///
    /// # Errors
    /// [`ObjectiveError::InvalidParameter`] naming the first bad parameter.
    pub fn check(&self) -> Result<(), ObjectiveError> {
        match self {
            Objective::Dpo(params) => params.check("dpo"),
            Objective::Hinge(params) => hinge::check(params),
            Objective::Ipo(params) => ipo::check(params),
            Objective::Orpo(params) => orpo::check(params),
            Objective::Sppo(params) => sppo::check(params),
            Objective::SppoHard(params) => sppo_hard::check(params),
            Objective::Aipo(params) => aipo::check(params),
            Objective::Spin(params) => DpoParams { beta: params.beta, label_smoothing: 0.0 }.check("spin"),
        }
    }

    /// TRL's reward metrics of a batch (`rewards/chosen`, `rewards/rejected`,
    /// `rewards/accuracies`, `rewards/margins`, `logps/chosen`,
    /// `logps/rejected`) under this objective's implicit reward
    /// `β·(logπ − logref)`, as [`Objective::compute`] logs them; `None` for
    /// ORPO, whose reward is not measured against a reference. An evaluation
    /// on held-out pairs reads them without needing the objective's other
    /// inputs (token counts, win rates).
    ///
    /// ```
    /// use sapo_core::objectives::{DpoParams, Objective, OrpoParams, PairBatch};
    /// let (pc, pr, rc, rr) = ([-3.0_f64], [-4.0], [-3.5], [-3.9]);
    /// let batch = PairBatch::new(&pc, &pr).with_reference(&rc, &rr);
    /// let metrics = Objective::Dpo(DpoParams::default()).reward_metrics(&batch)?.expect("DPO has a reference");
    /// // β·z = 0.1·((−3 + 3.5) − (−4 + 3.9)) = 0.06.
    /// assert!((metrics.get("rewards/margins").unwrap() - 0.06).abs() < 1e-12);
    /// assert!(Objective::Orpo(OrpoParams::default()).reward_metrics(&batch)?.is_none());
    /// # Ok::<(), sapo_core::objectives::ObjectiveError>(())
    /// ```
    ///
    /// # Errors
    /// As [`Objective::compute`] for the policy and reference inputs and β.
    pub fn reward_metrics<T: Real>(&self, batch: &PairBatch<'_, T>) -> Result<Option<Metrics<f64>>, ObjectiveError> {
        let beta = match self {
            Objective::Orpo(_) => return Ok(None),
            Objective::Dpo(DpoParams { beta, .. })
            | Objective::Hinge(HingeParams { beta })
            | Objective::Ipo(IpoParams { beta })
            | Objective::Sppo(SppoParams { beta })
            | Objective::SppoHard(SppoHardParams { beta })
            | Objective::Aipo(AipoParams { beta, .. })
            | Objective::Spin(SpinParams { beta }) => *beta,
        };
        self.check()?;
        let inputs = Inputs::check(self.name(), batch, Needs { reference: true, ..Needs::default() })?;
        Ok(Some(reward_metrics(beta, &inputs)))
    }

    /// Computes loss, gradients and metrics for one batch.
    ///
    /// # Errors
    /// Any [`ObjectiveError`]: an empty batch, mismatched lengths, a missing
    /// or non-finite input, an invalid hyper-parameter, or an overflow.
    pub fn compute<T: Real>(&self, batch: &PairBatch<'_, T>) -> Result<PairOutput<T>, ObjectiveError> {
        match self {
            Objective::Dpo(params) => dpo::compute(params, batch),
            Objective::Hinge(params) => hinge::compute(params, batch),
            Objective::Ipo(params) => ipo::compute(params, batch),
            Objective::Orpo(params) => orpo::compute(params, batch),
            Objective::Sppo(params) => sppo::compute(params, batch),
            Objective::SppoHard(params) => sppo_hard::compute(params, batch),
            Objective::Aipo(params) => aipo::compute(params, batch),
            Objective::Spin(params) => spin::compute(params, batch),
        }
    }
}

/// The checked, `f64` view of a batch that every objective works on.
pub(crate) struct Inputs {
    pub policy_chosen: Vec<f64>,
    pub policy_rejected: Vec<f64>,
    pub reference_chosen: Vec<f64>,
    pub reference_rejected: Vec<f64>,
    pub chosen_counts: Vec<f64>,
    pub rejected_counts: Vec<f64>,
    pub chosen_win_rates: Vec<f64>,
    pub rejected_win_rates: Vec<f64>,
    pub chosen_nll: Vec<f64>,
    pub chosen_nll_counts: Vec<f64>,
}

/// Which optional inputs an objective needs.
#[derive(Default, Clone, Copy)]
pub(crate) struct Needs {
    pub reference: bool,
    pub token_counts: bool,
    pub win_rates: bool,
    pub chosen_nll: bool,
}

impl Inputs {
    pub fn batch_size(&self) -> usize {
        self.policy_chosen.len()
    }

    /// Validates `batch` for `objective` and converts what it needs to f64.
    pub fn check<T: Real>(
        objective: &'static str,
        batch: &PairBatch<'_, T>,
        needs: Needs,
    ) -> Result<Inputs, ObjectiveError> {
        let size = batch.len();
        if size == 0 {
            return Err(ObjectiveError::EmptyBatch { objective });
        }
        let reals = |input: &'static str, values: &[T], needed: bool| -> Result<Vec<f64>, ObjectiveError> {
            if !needed {
                return Ok(Vec::new());
            }
            if values.is_empty() {
                return Err(ObjectiveError::MissingInput { objective, input });
            }
            if values.len() != size {
                return Err(ObjectiveError::LengthMismatch { objective, input, expected: size, got: values.len() });
            }
            values
                .iter()
                .enumerate()
                .map(|(index, value)| {
                    let value = value.to_f64();
                    if value.is_finite() {
                        Ok(value)
                    } else {
                        Err(ObjectiveError::NonFiniteInput { objective, input, index, value })
                    }
                })
                .collect()
        };
        let counts = |input: &'static str, values: &[u32], needed: bool| -> Result<Vec<f64>, ObjectiveError> {
            if !needed {
                return Ok(Vec::new());
            }
            if values.is_empty() {
                return Err(ObjectiveError::MissingInput { objective, input });
            }
            if values.len() != size {
                return Err(ObjectiveError::LengthMismatch { objective, input, expected: size, got: values.len() });
            }
            values
                .iter()
                .enumerate()
                .map(|(index, &count)| {
                    if count == 0 {
                        Err(ObjectiveError::InputOutOfRange {
                            objective,
                            input,
                            index,
                            value: 0.0,
                            reason: "a token count must be at least 1",
                        })
                    } else {
                        Ok(f64::from(count))
                    }
                })
                .collect()
        };
        let inputs = Inputs {
            policy_chosen: reals("policy_chosen_logps", batch.policy_chosen_logps, true)?,
            policy_rejected: reals("policy_rejected_logps", batch.policy_rejected_logps, true)?,
            reference_chosen: reals("reference_chosen_logps", batch.reference_chosen_logps, needs.reference)?,
            reference_rejected: reals("reference_rejected_logps", batch.reference_rejected_logps, needs.reference)?,
            chosen_counts: counts("chosen_token_counts", batch.chosen_token_counts, needs.token_counts)?,
            rejected_counts: counts("rejected_token_counts", batch.rejected_token_counts, needs.token_counts)?,
            chosen_win_rates: reals("chosen_win_rates", batch.chosen_win_rates, needs.win_rates)?,
            rejected_win_rates: reals("rejected_win_rates", batch.rejected_win_rates, needs.win_rates)?,
            chosen_nll: reals("chosen_nll_logps", batch.chosen_nll_logps, needs.chosen_nll)?,
            chosen_nll_counts: counts("chosen_nll_token_counts", batch.chosen_nll_token_counts, needs.chosen_nll)?,
        };
        for (input, rates) in
            [("chosen_win_rates", &inputs.chosen_win_rates), ("rejected_win_rates", &inputs.rejected_win_rates)]
        {
            if let Some((index, &value)) = rates.iter().enumerate().find(|(_, rate)| !(0.0..=1.0).contains(*rate)) {
                return Err(ObjectiveError::InputOutOfRange {
                    objective,
                    input,
                    index,
                    value,
                    reason: "a win rate lies in [0, 1]",
                });
            }
        }
        Ok(inputs)
    }
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objectives::test_support::{assert_gradients_match_finite_differences, random_batch};

    fn every_objective() -> [Objective; 8] {
        [
            Objective::Dpo(DpoParams { beta: 1.0, label_smoothing: 0.1 }),
            Objective::Hinge(HingeParams { beta: 1.0 }),
            Objective::Ipo(IpoParams { beta: 1.0 }),
            Objective::Orpo(OrpoParams::default()),
            Objective::Sppo(SppoParams::default()),
            Objective::SppoHard(SppoHardParams::default()),
            Objective::Aipo(AipoParams { beta: 1.0, ..AipoParams::default() }),
            Objective::Spin(SpinParams { beta: 1.0 }),
        ]
    }

    #[test]
    fn every_objective_is_finite_and_exact_when_beta_z_reaches_ten_thousand() {
        // Log-probs down to −2e4 with β = 1: |βz| up to about 1e4.
        for (seed, objective) in (70..).zip(every_objective()) {
            let data = random_batch(seed, 6, 2e4);
            let out = objective.compute(&data.batch()).expect("finite inputs");
            assert!(out.loss.is_finite(), "{}", objective.name());
            assert_gradients_match_finite_differences(&objective, &data, seed);
        }
    }

    #[test]
    fn empty_batch_is_an_error() {
        let empty: [f64; 0] = [];
        for objective in every_objective() {
            let error = objective.compute(&PairBatch::new(&empty, &empty)).expect_err("empty");
            assert_eq!(error, ObjectiveError::EmptyBatch { objective: objective.name() });
        }
    }

    #[test]
    fn mismatched_lengths_are_an_error_naming_the_input() {
        let data = random_batch(80, 4, 10.0);
        for objective in every_objective() {
            let mut batch = data.batch();
            batch.policy_rejected_logps = &data.policy_rejected[..3];
            let error = objective.compute(&batch).expect_err("mismatch");
            assert_eq!(
                error,
                ObjectiveError::LengthMismatch {
                    objective: objective.name(),
                    input: "policy_rejected_logps",
                    expected: 4,
                    got: 3
                }
            );
        }
    }

    #[test]
    fn non_finite_inputs_are_an_error_naming_input_and_index() {
        let mut data = random_batch(81, 4, 10.0);
        data.policy_chosen[2] = f64::NAN;
        for objective in every_objective() {
            let error = objective.compute(&data.batch()).expect_err("NaN");
            assert!(
                matches!(error, ObjectiveError::NonFiniteInput { input: "policy_chosen_logps", index: 2, .. }),
                "{error}"
            );
        }
        let (chosen, rejected) = ([f32::INFINITY], [-1.0_f32]);
        let error = Objective::Orpo(OrpoParams { nll_scope: NllScope::Response, ..OrpoParams::default() })
            .compute(&PairBatch::new(&chosen, &rejected).with_token_counts(&[1], &[1]))
            .expect_err("inf");
        assert!(matches!(error, ObjectiveError::NonFiniteInput { .. }));
    }

    #[test]
    fn invalid_hyper_parameters_are_an_error() {
        let data = random_batch(82, 2, 10.0);
        let invalid = [
            Objective::Dpo(DpoParams { beta: 0.0, label_smoothing: 0.0 }),
            Objective::Dpo(DpoParams { beta: 0.1, label_smoothing: 0.7 }),
            Objective::Hinge(HingeParams { beta: f64::NAN }),
            Objective::Ipo(IpoParams { beta: -1.0 }),
            Objective::Orpo(OrpoParams { lambda: -0.1, ..OrpoParams::default() }),
            Objective::Sppo(SppoParams { beta: f64::INFINITY }),
            Objective::SppoHard(SppoHardParams { beta: 0.0 }),
            Objective::Aipo(AipoParams { alpha: -1.0, ..AipoParams::default() }),
            Objective::Spin(SpinParams { beta: 0.0 }),
        ];
        for objective in invalid {
            let error = objective.compute(&data.batch()).expect_err("invalid parameter");
            assert!(matches!(error, ObjectiveError::InvalidParameter { .. }), "{error}");
        }
    }

    #[test]
    fn overflowing_f32_results_are_an_error_not_inf() {
        // Finite f32 inputs whose margin overflows f32 after the f64 arithmetic.
        let (pc, pr, rc, rr) = ([f32::MAX], [-f32::MAX], [0.0_f32], [0.0_f32]);
        let batch = PairBatch::new(&pc, &pr).with_reference(&rc, &rr);
        let error = Objective::SppoHard(SppoHardParams::default()).compute(&batch).expect_err("overflow");
        assert!(matches!(error, ObjectiveError::NonFiniteResult { .. }), "{error}");
    }
}
