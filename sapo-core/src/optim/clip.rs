//! The global gradient 2-norm and clipping to a maximum norm, as
//! `torch.nn.utils.clip_grad_norm_(parameters, max_norm)` with
//! `norm_type=2`, `error_if_nonfinite=False`:
//!
//! ```text
//! ‖g‖ = ‖(‖g_1‖, …, ‖g_n‖)‖ = √(Σ_tensors Σ_i g_i²)
//! c   = min(max_norm / (‖g‖ + 1e-6), 1)
//! g   ← c·g                              every gradient, even when c = 1
//! ```
//!
//! The norm is accumulated in `f64`, which is more accurate than torch's
//! `f32` norms of norms: the two agree to about 1e-7 relative (the golden
//! test allows 1e-6). torch then forms c in `f32` (a reciprocal, then a
//! product) from its `f32` norm; here c is computed in `f64` from the `f64`
//! norm and rounded to `f32` once, so the two coefficients can differ by an
//! `f32` ulp or two.
//!
//! One deliberate difference: for a non-finite norm torch multiplies every
//! gradient by `max_norm / (inf + 1e-6) = 0` (or by NaN), destroying them;
//! [`clip_grad_norm`] returns the non-finite norm and leaves the gradients as
//! they were, so the trainer can stop and report the step.

use super::{OptimError, check_param};

/// Torch's guard against dividing by a zero norm, added to the norm.
const NORM_EPS: f64 = 1e-6;

/// Σ g² over every slice, accumulated in `f64` (exact for each square;
/// no overflow for any finite `f32` gradient).
fn sum_of_squares<'a>(grads: impl Iterator<Item = &'a [f32]>) -> f64 {
    grads.flat_map(|grad| grad.iter()).map(|&value| f64::from(value) * f64::from(value)).sum()
}

/// The global 2-norm of all gradients, as if concatenated into one vector:
/// torch's 2-norm of the per-tensor 2-norms, computed as the root of one
/// `f64` sum of squares (the same quantity, rounded once).
///
/// ```
/// use sapo_core::optim::global_grad_norm;
/// let (a, b) = ([3.0_f32], [0.0_f32, 4.0]);
/// assert_eq!(global_grad_norm(&[&a, &b]), 5.0);
/// assert_eq!(global_grad_norm(&[]), 0.0);
/// ```
pub fn global_grad_norm(grads: &[&[f32]]) -> f64 {
    libm::sqrt(sum_of_squares(grads.iter().copied()))
}

/// The factor torch multiplies every gradient by: `max_norm / (total_norm +
/// 1e-6)`, clamped to at most 1. Like torch's clamp it passes NaN through,
/// and an infinite norm gives 0. The split form of [`clip_grad_norm`] for a
/// backend that computes the norm itself; `max_norm` is not checked here.
///
/// ```
/// use sapo_core::optim::clip_coefficient;
/// assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
/// assert!((clip_coefficient(4.0, 1.0) - 0.25).abs() < 1e-7);
/// assert!(clip_coefficient(f64::NAN, 1.0).is_nan());
/// ```
pub fn clip_coefficient(total_norm: f64, max_norm: f64) -> f64 {
    let coefficient = max_norm / (total_norm + NORM_EPS);
    // `f64::min` would turn NaN into 1; torch's clamp keeps it.
    if coefficient > 1.0 { 1.0 } else { coefficient }
}

/// Clips the gradients in place so that their global 2-norm is at most
/// `max_norm`, and returns the norm they had before.
///
/// A non-finite norm (an overflowed or NaN gradient) is returned as it is
/// and the gradients are left untouched, unlike torch, which would zero or
/// poison them: the caller decides to stop, naming the step.
///
/// ```
/// use sapo_core::optim::clip_grad_norm;
/// let (mut a, mut b) = ([3.0_f32], [0.0_f32, 4.0]);
/// let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0)?;
/// assert_eq!(norm, 5.0);
/// assert!((a[0] - 0.6).abs() < 1e-6 && (b[1] - 0.8).abs() < 1e-6);
///
/// let mut overflowed = [f32::INFINITY, 1.0];
/// assert_eq!(clip_grad_norm(&mut [&mut overflowed], 1.0)?, f64::INFINITY);
/// assert_eq!(overflowed, [f32::INFINITY, 1.0]);
/// # Ok::<(), sapo_core::optim::OptimError>(())
/// ```
///
/// # Errors
/// [`OptimError::InvalidParameter`] unless `max_norm` is finite and positive
/// (transformers' Trainer skips clipping for `max_grad_norm` ≤ 0 rather than
/// calling torch with it).
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f64) -> Result<f64, OptimError> {
    check_param("clip_grad_norm", "max_norm", max_norm, max_norm > 0.0, "max_norm must be positive")?;
    let total_norm = libm::sqrt(sum_of_squares(grads.iter().map(|grad| &**grad)));
    if !total_norm.is_finite() {
        return Ok(total_norm);
    }
    // Multiplying by 1 is exact, so scaling unconditionally (as torch does) changes nothing then.
    let coefficient = clip_coefficient(total_norm, max_norm) as f32;
    for value in grads.iter_mut().flat_map(|grad| grad.iter_mut()) {
        *value *= coefficient;
    }
    Ok(total_norm)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_below_max_leaves_gradients_bit_identical() {
        let (mut a, mut b) = ([0.1_f32, -0.2], [0.3_f32]);
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0).expect("valid");
        assert!((norm - 0.14_f64.sqrt()).abs() < 1e-7);
        assert_eq!((a, b), ([0.1, -0.2], [0.3]));
    }

    #[test]
    fn clipped_gradients_have_norm_max_norm_less_torch_epsilon() {
        let mut grads: alloc::vec::Vec<f32> = (1..=37).map(|i| i as f32 * 0.37).collect();
        let before = global_grad_norm(&[&grads]);
        let returned = clip_grad_norm(&mut [&mut grads[..]], 2.0).expect("valid");
        assert_eq!(returned, before);
        let expected = 2.0 * before / (before + NORM_EPS);
        // The f32 coefficient and f32 products: relative 1e-6.
        assert!((global_grad_norm(&[&grads]) - expected).abs() < 1e-6 * expected);
    }

    #[test]
    fn zero_gradients_stay_zero() {
        let mut grads = [0.0_f32; 5];
        assert_eq!(clip_grad_norm(&mut [&mut grads], 1.0), Ok(0.0));
        assert_eq!(grads, [0.0; 5]);
    }

    #[test]
    fn nan_gradient_returns_nan_and_writes_nothing() {
        let mut grads = [1.0_f32, f32::NAN, 3.0];
        assert!(clip_grad_norm(&mut [&mut grads], 1.0).expect("valid max_norm").is_nan());
        assert_eq!((grads[0], grads[2]), (1.0, 3.0));
    }

    #[test]
    fn largest_finite_gradients_do_not_overflow_the_norm() {
        let grads = [f32::MAX; 4];
        assert_eq!(global_grad_norm(&[&grads]), 2.0 * f64::from(f32::MAX));
    }

    #[test]
    fn invalid_max_norm_is_refused_without_writing() {
        let mut grads = [3.0_f32, 4.0];
        for max_norm in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let result = clip_grad_norm(&mut [&mut grads], max_norm);
            assert!(matches!(result, Err(OptimError::InvalidParameter { name: "max_norm", .. })), "{max_norm}");
        }
        assert_eq!(grads, [3.0, 4.0]);
    }

    #[test]
    fn coefficient_of_an_infinite_norm_is_zero_as_in_torch() {
        assert_eq!(clip_coefficient(f64::INFINITY, 1.0), 0.0);
    }
}
