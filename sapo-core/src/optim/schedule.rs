//! Learning-rate schedules as transformers' `get_scheduler(name, optimizer,
//! num_warmup_steps, num_training_steps)` builds them: a `LambdaLR` whose
//! multiplier of the base learning rate depends on the number of scheduler
//! steps already taken. The Trainer steps the scheduler after each optimizer
//! step, so optimizer step k (1-based) uses `multiplier(k − 1)`.
//!
//! With w warm-up steps, T training steps and s scheduler steps taken, every
//! kind but `constant` first warms up linearly, `s / max(1, w)` for s < w;
//! then (transformers `optimization.py`):
//!
//! | kind | multiplier for s ≥ w |
//! |---|---|
//! | `constant` | 1, with no warm-up at all (transformers ignores `num_warmup_steps`) |
//! | `constant_with_warmup` | 1 |
//! | `linear` | `max(0, (T − s) / max(1, T − w))` |
//! | `cosine` | `max(0, ½·(1 + cos(π·2·0.5·p)))`, `p = (s − w) / max(1, T − w)` |
//! | `inverse_sqrt` | `1 / √((s + τ − w) / τ)`, τ = w, or 10 000 when w = 0 |
//!
//! Every (w, T) pair is accepted, as transformers accepts it, with its
//! consequences mirrored: past T, `cosine` rises again (p > 1); with w > T,
//! `linear` drops from the end of the warm-up straight to 0 and `cosine`
//! alternates between 1 and 0 (p is then a whole number). Each formula
//! is evaluated in `f64` in transformers' order, so the multipliers are
//! Python's to the last bit, `cos` aside (libm's and the C library's may
//! differ in the last ulp).

use super::{OptimError, check_param};

/// The schedule kinds, named as transformers' `lr_scheduler_type` (serde
/// reads and writes `"constant"`, `"constant_with_warmup"`, `"linear"`,
/// `"cosine"`, `"inverse_sqrt"`).
///
/// ```
/// use sapo_core::optim::ScheduleKind;
/// let kind: ScheduleKind = serde_json::from_str("\"inverse_sqrt\"").unwrap();
/// assert_eq!(kind, ScheduleKind::InverseSqrt);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleKind {
    /// Multiplier 1 throughout; the warm-up is ignored, as in transformers.
    Constant,
    /// Linear warm-up from 0, then 1.
    ConstantWithWarmup,
    /// Linear warm-up, then linear decay to 0 at `total_steps` (transformers' default).
    Linear,
    /// Linear warm-up, then half a cosine wave down to 0 at `total_steps` (`num_cycles` = 0.5).
    Cosine,
    /// Linear warm-up, then 1/√ decay with transformers' default timescale.
    InverseSqrt,
}

/// A learning-rate schedule: the kind, its warm-up and the run's length in optimizer steps.
///
/// ```
/// use sapo_core::optim::{LrSchedule, ScheduleKind};
/// let schedule = LrSchedule { kind: ScheduleKind::Cosine, warmup_steps: 10, total_steps: 110 };
/// assert_eq!(schedule.multiplier(5), 0.5);  // half-way through the warm-up
/// assert_eq!(schedule.multiplier(10), 1.0); // the peak
/// assert!((schedule.multiplier(60) - 0.5).abs() < 1e-15); // half-way down
/// assert_eq!(schedule.multiplier(110), 0.0);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LrSchedule {
    /// The shape after the warm-up (`lr_scheduler_type`).
    pub kind: ScheduleKind,
    /// w: optimizer steps of linear warm-up from 0 (`num_warmup_steps`; see
    /// [`warmup_steps_from_ratio`]).
    pub warmup_steps: u64,
    /// T: optimizer steps in the run (`num_training_steps`); `linear` and
    /// `cosine` reach 0 there. Unused by the other kinds.
    pub total_steps: u64,
}

/// transformers' `num_cycles` for `cosine`: half a wave, from 1 down to 0.
const COSINE_NUM_CYCLES: f64 = 0.5;

/// transformers' `inverse_sqrt` timescale when there is no warm-up.
const INVERSE_SQRT_DEFAULT_TIMESCALE: u64 = 10_000;

/// `a / b` for integers, as Python's `float(a) / float(b)`.
fn ratio(numerator: i128, denominator: i128) -> f64 {
    numerator as f64 / denominator as f64
}

impl LrSchedule {
    /// The factor on the base learning rate after `step` scheduler steps
    /// (the multiplier of optimizer step `step + 1`).
    ///
    /// ```
    /// use sapo_core::optim::{LrSchedule, ScheduleKind};
    /// let schedule = LrSchedule { kind: ScheduleKind::Linear, warmup_steps: 4, total_steps: 12 };
    /// let multipliers: Vec<f64> = (0..14).map(|step| schedule.multiplier(step)).collect();
    /// assert_eq!(&multipliers[..6], &[0.0, 0.25, 0.5, 0.75, 1.0, 0.875]);
    /// assert_eq!(&multipliers[12..], &[0.0, 0.0]);
    /// ```
    pub fn multiplier(&self, step: u64) -> f64 {
        let (step, warmup, total) = (i128::from(step), i128::from(self.warmup_steps), i128::from(self.total_steps));
        if self.kind != ScheduleKind::Constant && step < warmup {
            return ratio(step, warmup.max(1));
        }
        match self.kind {
            ScheduleKind::Constant | ScheduleKind::ConstantWithWarmup => 1.0,
            ScheduleKind::Linear => ratio(total - step, (total - warmup).max(1)).max(0.0),
            ScheduleKind::Cosine => {
                let progress = ratio(step - warmup, (total - warmup).max(1));
                let angle = core::f64::consts::PI * COSINE_NUM_CYCLES * 2.0 * progress;
                (0.5 * (1.0 + libm::cos(angle))).max(0.0)
            }
            ScheduleKind::InverseSqrt => {
                let timescale = if warmup == 0 { i128::from(INVERSE_SQRT_DEFAULT_TIMESCALE) } else { warmup };
                let shift = timescale - warmup;
                1.0 / libm::sqrt(ratio(step + shift, timescale))
            }
        }
    }

    /// `base_lr · multiplier(step)`: the learning rate of optimizer step `step + 1`,
    /// as `LambdaLR` computes it.
    ///
    /// ```
    /// use sapo_core::optim::{LrSchedule, ScheduleKind};
    /// let schedule = LrSchedule { kind: ScheduleKind::InverseSqrt, warmup_steps: 100, total_steps: 1000 };
    /// assert_eq!(schedule.learning_rate(1e-3, 400), 5e-4); // 1/√(400/100) = ½
    /// ```
    pub fn learning_rate(&self, base_lr: f64, step: u64) -> f64 {
        base_lr * self.multiplier(step)
    }
}

/// Warm-up steps for a fraction `ratio` of `total_steps`, as transformers'
/// `TrainingArguments.get_warmup_steps`: `ceil(total_steps · ratio)`, with
/// the product rounded in `f64` first, so `0.07 · 100 = 7.000000000000001`
/// gives 8, exactly as transformers does.
///
/// transformers ≥ 5 takes the ratio through `warmup_steps` itself, where a
/// value in [0, 1) is a ratio and anything ≥ 1 a step count (so 1.0 means
/// one step there); this function takes ratios only, and reads 1.0 as the
/// whole run, as the older `warmup_ratio = 1.0` did.
///
/// ```
/// use sapo_core::optim::warmup_steps_from_ratio;
/// assert_eq!(warmup_steps_from_ratio(0.1, 333)?, 34);
/// assert_eq!(warmup_steps_from_ratio(0.07, 100)?, 8);
/// assert!(warmup_steps_from_ratio(1.5, 100).is_err());
/// # Ok::<(), sapo_core::optim::OptimError>(())
/// ```
///
/// # Errors
/// [`OptimError::InvalidParameter`] for a ratio outside [0, 1] or not finite.
pub fn warmup_steps_from_ratio(ratio: f64, total_steps: u64) -> Result<u64, OptimError> {
    check_param("warmup_steps_from_ratio", "ratio", ratio, (0.0..=1.0).contains(&ratio), "must lie in [0, 1]")?;
    // The product lies in [0, total_steps], so the conversion back is exact.
    Ok(libm::ceil(total_steps as f64 * ratio) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(kind: ScheduleKind, warmup_steps: u64, total_steps: u64) -> LrSchedule {
        LrSchedule { kind, warmup_steps, total_steps }
    }

    #[test]
    fn constant_ignores_the_warmup_as_transformers_does() {
        assert_eq!(schedule(ScheduleKind::Constant, 10, 100).multiplier(0), 1.0);
        assert_eq!(schedule(ScheduleKind::ConstantWithWarmup, 10, 100).multiplier(0), 0.0);
    }

    #[test]
    fn inverse_sqrt_without_warmup_uses_timescale_ten_thousand() {
        let inverse_sqrt = schedule(ScheduleKind::InverseSqrt, 0, 0);
        assert_eq!(inverse_sqrt.multiplier(0), 1.0);
        assert_eq!(inverse_sqrt.multiplier(30_000), 0.5);
    }

    #[test]
    fn warmup_longer_than_the_run_is_mirrored_not_refused() {
        let linear = schedule(ScheduleKind::Linear, 50, 30);
        assert_eq!(linear.multiplier(49), 0.98);
        assert_eq!(linear.multiplier(50), 0.0);
        let cosine = schedule(ScheduleKind::Cosine, 50, 30);
        assert_eq!([cosine.multiplier(50), cosine.multiplier(51), cosine.multiplier(52)], [1.0, 0.0, 1.0]);
    }

    #[test]
    fn every_multiplier_is_finite_and_non_negative_for_extreme_settings() {
        let kinds = [
            ScheduleKind::Constant,
            ScheduleKind::ConstantWithWarmup,
            ScheduleKind::Linear,
            ScheduleKind::Cosine,
            ScheduleKind::InverseSqrt,
        ];
        for kind in kinds {
            for (warmup, total) in [(0, 0), (0, 1), (u64::MAX, 0), (0, u64::MAX), (3, 2)] {
                for step in [0, 1, 2, 3, u64::MAX] {
                    let multiplier = schedule(kind, warmup, total).multiplier(step);
                    assert!(multiplier.is_finite() && multiplier >= 0.0, "{kind:?} {warmup} {total} {step}");
                }
            }
        }
    }

    #[test]
    fn ratios_outside_the_unit_interval_are_refused() {
        for ratio in [-0.1, 1.0000001, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                warmup_steps_from_ratio(ratio, 100),
                Err(OptimError::InvalidParameter { name: "ratio", .. })
            ));
        }
        assert_eq!(warmup_steps_from_ratio(1.0, 100), Ok(100));
        assert_eq!(warmup_steps_from_ratio(0.0, 100), Ok(0));
    }
}
