//! Optimizers, learning-rate schedules and gradient clipping, with the
//! arithmetic of `torch.optim`, `torch.nn.utils.clip_grad_norm_` and
//! transformers' `get_scheduler`.
//!
//! | module | what it does | counterpart |
//! |---|---|---|
//! | [`adamw`] | decoupled-weight-decay Adam | `torch.optim.AdamW`, single-tensor path |
//! | [`rmsprop`] | RMSprop, optionally centered and with momentum | `torch.optim.RMSprop`, single-tensor path |
//! | [`clip`] | global gradient 2-norm and clipping | `torch.nn.utils.clip_grad_norm_` |
//! | [`schedule`] | learning-rate multipliers and warm-up ratios | `transformers.get_scheduler`, `TrainingArguments` |
//!
//! # Design
//!
//! The optimizer state lives in slices the caller owns, one set per
//! parameter tensor (or one flat buffer): a GPU backend holds the same state
//! in device buffers and runs the same arithmetic, so this module exposes
//! both the slice functions and the per-step scalars ([`AdamWStep`],
//! [`RmspropStep`]) a kernel needs.
//!
//! The arithmetic follows torch's to the rounding. The per-step scalars
//! (bias corrections, step size, `1 − lr·λ`) are computed in `f64`, as Python
//! computes them with its floats, and rounded to `f32` once, as ATen rounds a
//! Python scalar to the tensor's dtype. The per-element updates then run in
//! `f32` in the order ATen's CPU kernels use, including where they round once
//! through a fused multiply-add (`lerp_`, `addcmul_`, `add_(…, alpha=…)`;
//! measured on an x86 CPU with FMA and recorded with the goldens).
//!
//! The one exception is the square root. Here it is the IEEE, correctly
//! rounded one (as CUDA's `sqrtf`, and torch's on builds without MKL);
//! torch's x86 builds compute a float32 tensor's `sqrt` with MKL's `vsSqrt`
//! in `VML_HA` mode, which is one ulp off for about a fifth of inputs. So
//! the parameters match torch with a correctly rounded `sqrt` bit for bit,
//! and torch itself to about 1e-7 relative after 100 steps
//! (`sapo-core/tests/optim_torch.rs` replays `fixtures/golden/optim.json`).
//!
//! One training step, as transformers' Trainer orders it (clip, optimizer
//! step with the current learning rate, scheduler step):
//!
//! ```
//! use sapo_core::optim::{adamw_update, clip_grad_norm, AdamWParams, LrSchedule, ScheduleKind};
//!
//! let mut weights = [0.5_f32, -1.0, 2.0];
//! let mut grads = [0.3_f32, -0.4, 1.2];
//! let (mut exp_avg, mut exp_avg_sq) = ([0.0_f32; 3], [0.0_f32; 3]);
//! let schedule = LrSchedule { kind: ScheduleKind::Linear, warmup_steps: 0, total_steps: 100 };
//!
//! let step = 1; // 1-based: this is the first optimizer step
//! let norm = clip_grad_norm(&mut [&mut grads[..]], 1.0)?;
//! assert!((norm - 1.3).abs() < 1e-6);
//! let lr = schedule.learning_rate(1e-3, step - 1); // the scheduler has taken `step − 1` steps
//! adamw_update(&mut weights, &grads, &mut exp_avg, &mut exp_avg_sq, step, lr, &AdamWParams::default())?;
//! // Adam's first step moves every weight by about lr against its gradient.
//! assert!((weights[0] - (0.5 * (1.0 - 1e-5) - 1e-3)).abs() < 1e-6);
//! # Ok::<(), sapo_core::optim::OptimError>(())
//! ```

pub mod adamw;
pub mod clip;
pub mod rmsprop;
pub mod schedule;

pub use adamw::{AdamWParams, AdamWStep, adamw_update};
pub use clip::{clip_coefficient, clip_grad_norm, global_grad_norm};
pub use rmsprop::{RmspropParams, RmspropState, RmspropStep, rmsprop_update};
pub use schedule::{LrSchedule, ScheduleKind, warmup_steps_from_ratio};

/// Why an optimizer step, a clip or a schedule computation was refused.
/// Nothing is written when an error is returned.
///
/// ```
/// use sapo_core::optim::{adamw_update, AdamWParams, OptimError};
/// let mut weights = [1.0_f32; 3];
/// let (mut exp_avg, mut exp_avg_sq) = ([0.0_f32; 3], [0.0_f32; 2]);
/// let error = adamw_update(&mut weights, &[0.1; 3], &mut exp_avg, &mut exp_avg_sq, 1, 1e-3, &AdamWParams::default())
///     .unwrap_err();
/// assert_eq!(error, OptimError::LengthMismatch { op: "adamw_update", slice: "exp_avg_sq", expected: 3, got: 2 });
/// assert_eq!(error.to_string(), "adamw_update: slice `exp_avg_sq` has 2 elements, expected 3 (the length of `params`)");
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OptimError {
    /// A gradient or state slice differs in length from the parameters.
    #[error("{op}: slice `{slice}` has {got} elements, expected {expected} (the length of `params`)")]
    LengthMismatch {
        /// The function that was called.
        op: &'static str,
        /// The argument's name.
        slice: &'static str,
        /// The length of `params`.
        expected: usize,
        /// The slice's length.
        got: usize,
    },
    /// The step count was 0; it counts updates from 1, including this one.
    #[error("{op}: step must be at least 1 (it counts this update)")]
    ZeroStep {
        /// The function that was called.
        op: &'static str,
    },
    /// The configuration needs a state slice that was not given.
    #[error("{op}: state slice `{slice}` is required when {reason}")]
    MissingState {
        /// The function that was called.
        op: &'static str,
        /// The missing field of the state.
        slice: &'static str,
        /// Which setting needs it.
        reason: &'static str,
    },
    /// A hyper-parameter, learning rate or ratio is non-finite or out of range.
    #[error("{op}: parameter `{name}` = {value} is invalid: {reason}")]
    InvalidParameter {
        /// The function that was called.
        op: &'static str,
        /// The parameter's name (torch's name).
        name: &'static str,
        /// The offending value.
        value: f64,
        /// What the parameter must satisfy.
        reason: &'static str,
    },
}

/// Refuses `value` unless it is finite and `in_range`.
pub(crate) fn check_param(
    op: &'static str,
    name: &'static str,
    value: f64,
    in_range: bool,
    reason: &'static str,
) -> Result<(), OptimError> {
    if value.is_finite() && in_range { Ok(()) } else { Err(OptimError::InvalidParameter { op, name, value, reason }) }
}

/// Refuses a slice whose length differs from `expected`, the parameters' length.
pub(crate) fn check_len(op: &'static str, slice: &'static str, expected: usize, got: usize) -> Result<(), OptimError> {
    if expected == got { Ok(()) } else { Err(OptimError::LengthMismatch { op, slice, expected, got }) }
}

/// ATen's `lerp(start, end, weight)` for `f32`: `start + weight·(end − start)`
/// for |weight| < 0.5, else `end − (1 − weight)·(end − start)`, each a single
/// fused multiply-add, as ATen's vectorised CPU kernel (`lerp_vec`) computes it.
pub(crate) fn lerp(start: f32, end: f32, weight: f32) -> f32 {
    let difference = end - start;
    if weight.abs() < 0.5 { fma(weight, difference, start) } else { fma(weight - 1.0, difference, end) }
}

/// ATen's `addcmul(self, t1, t2, value)` for `f32`: `self + (value·t1)·t2`,
/// whose last multiply and add the compiled CPU kernel fuses.
pub(crate) fn addcmul(accumulator: f32, value: f32, factor1: f32, factor2: f32) -> f32 {
    fma(value * factor1, factor2, accumulator)
}

/// `a·b + c` rounded once. With `std` it is the standard library's
/// `mul_add`, one FMA instruction where the target has FMA (x86-64-v3
/// here), so the optimizers' update loops vectorise; libm's `fmaf` picks
/// its implementation at run time through a function pointer on every call.
/// Both round exactly once: the same bits.
#[inline]
pub(crate) fn fma(a: f32, b: f32, c: f32) -> f32 {
    #[cfg(feature = "std")]
    return a.mul_add(b, c);
    #[cfg(not(feature = "std"))]
    return libm::fmaf(a, b, c);
}

/// `√x`, correctly rounded either way: the standard library's (one
/// instruction, vectorisable) with `std`, libm's without.
#[inline]
pub(crate) fn sqrt(x: f32) -> f32 {
    #[cfg(feature = "std")]
    return x.sqrt();
    #[cfg(not(feature = "std"))]
    return libm::sqrtf(x);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lerp_takes_both_branches_and_hits_the_end_points() {
        assert_eq!(lerp(2.0, 6.0, 0.25), 3.0);
        assert_eq!(lerp(2.0, 6.0, 0.75), 5.0);
        assert_eq!(lerp(2.0, 6.0, 0.0), 2.0);
        // The second branch returns `end` exactly at weight 1, which start + 1·(end − start) may miss.
        assert_eq!(lerp(0.1, 1e8, 1.0), 1e8);
    }

    #[test]
    fn addcmul_rounds_once() {
        // (1 + 2⁻¹²)² = 1 + 2⁻¹¹ + 2⁻²⁴; two roundings lose the 2⁻²⁴ term, one keeps it against −1.
        let x = 1.0 + 2.0_f32.powi(-12);
        assert_eq!(addcmul(-1.0, 1.0, x, x), 2.0_f32.powi(-11) + 2.0_f32.powi(-24));
    }

    #[test]
    fn check_param_refuses_non_finite_values_even_when_in_range() {
        assert!(check_param("op", "x", f64::NAN, true, "finite").is_err());
        assert!(check_param("op", "x", f64::INFINITY, true, "finite").is_err());
        assert!(check_param("op", "x", 1.0, true, "finite").is_ok());
    }
}
