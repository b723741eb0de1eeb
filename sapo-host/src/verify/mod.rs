//! `sapo verify`: every backend operation, then a whole SAPO training step,
//! run on the CPU reference and on a candidate backend (the GPU) with the
//! same fresh random inputs, compared by relative error.
//!
//! The comparison is generic over two [`Backend`]s, so the same code runs in
//! the test suite without a GPU (the CPU against itself, where every error is
//! zero) and on a GPU machine. Overwritten outputs start as NaN on both sides
//! (poisoned): an element a backend fails to write stays NaN and fails the
//! check. Accumulated outputs start from the same random values and are
//! compared by what was added, so an unwritten element shows as a missing
//! increment instead of hiding in the starting values.

mod ops;
mod step;
mod table;

use sapo_core::backend::Backend;

pub use ops::{OpShapes, check_matmuls, check_ops};
pub use step::{StepSetup, check_reproducible, check_step, check_step_precisions};
pub use table::render;

/// One comparison: an operation (or a quantity of the training step), its
/// shape, the relative error of the candidate against the reference, and
/// the tolerance it must meet.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// The operation or quantity.
    pub op: String,
    /// Its dimensions, in the trait's names.
    pub shape: String,
    /// The element type compared.
    pub dtype: &'static str,
    /// `‖candidate − reference‖ / ‖reference‖`; infinite when either holds a
    /// non-finite value or their lengths differ.
    pub rel_error: f64,
    /// The largest error that passes.
    pub tolerance: f64,
}

impl Check {
    /// Whether the error is within tolerance (NaN never passes).
    pub fn passed(&self) -> bool {
        self.rel_error <= self.tolerance
    }
}

/// Tolerance of one f32 operation (different summation orders only).
pub const F32_OP_TOLERANCE: f64 = 1e-5;
/// Tolerance of an f32 matrix product run in TF32 on tensor cores.
pub const TF32_MATMUL_TOLERANCE: f64 = 5e-4;
/// Tolerance of a whole f32 training step's loss, gradient norm and
/// log-probs (errors compound through every layer).
pub const F32_STEP_TOLERANCE: f64 = 1e-4;
/// Tolerance of a whole bf16 mixed-precision step against the reference's
/// bf16 step: the two sides' f32 values differ in their last bits, which
/// can round an operand to the other neighbouring bf16 value (2⁻⁸ apart).
pub const BF16_TOLERANCE: f64 = 1e-2;
/// Tolerance of a bf16 step against the f32 step: what the rounding itself
/// costs, far below a broken pass's O(1). On the task model over 40 fresh
/// seeds (CPU) the largest errors were 5.5e-4 (log-probs), 7.5e-3 (DPO
/// loss: a difference of log-probs, so cancellation magnifies it), 7.8e-3
/// (grad norm), 1.8e-2 (gradients) and 1.9e-3 (weights after AdamW); on the
/// tiny transformers models the gradients reach 2.6e-2 against f64 goldens.
pub const BF16_AGAINST_F32_TOLERANCE: f64 = 5e-2;

/// `‖candidate − reference‖₂ / ‖reference‖₂` in f64; `‖candidate‖` itself
/// when the reference is all zeros; infinite if the lengths differ or any
/// value on either side is NaN or infinite (so a poisoned, unwritten
/// element never passes).
///
/// ```
/// use sapo_host::verify::relative_error;
/// assert_eq!(relative_error(&[3.0, 4.0], &[3.0, 4.0]), 0.0);
/// assert!((relative_error(&[3.0, 4.0], &[3.0, 4.5]) - 0.1).abs() < 1e-12);
/// assert!(relative_error(&[1.0], &[f32::NAN]).is_infinite());
/// ```
pub fn relative_error(reference: &[f32], candidate: &[f32]) -> f64 {
    if reference.len() != candidate.len() || reference.iter().chain(candidate).any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let (mut difference, mut norm) = (0.0_f64, 0.0_f64);
    for (&r, &c) in reference.iter().zip(candidate) {
        let (r, c) = (f64::from(r), f64::from(c));
        difference += (c - r) * (c - r);
        norm += r * r;
    }
    if norm == 0.0 { difference.sqrt() } else { (difference / norm).sqrt() }
}

/// [`relative_error`] of two f64 scalars (loss, gradient norm).
pub fn scalar_error(reference: f64, candidate: f64) -> f64 {
    if !reference.is_finite() || !candidate.is_finite() {
        return f64::INFINITY;
    }
    let difference = (candidate - reference).abs();
    if reference == 0.0 { difference } else { difference / reference.abs() }
}

/// A backend error as an `anyhow` error naming the backend.
fn on<T, E: core::fmt::Display>(side: &'static str, result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|error| anyhow::anyhow!("{side} backend: {error}"))
}

/// The two backends under comparison.
#[derive(Debug)]
pub struct Backends<'a, R: Backend, C: Backend> {
    /// The reference (the CPU).
    pub reference: &'a R,
    /// The backend being checked (the GPU).
    pub candidate: &'a C,
}

impl<R: Backend, C: Backend> Clone for Backends<'_, R, C> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<R: Backend, C: Backend> Copy for Backends<'_, R, C> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_error_is_zero_for_equal_inputs_and_infinite_for_poison_or_length() {
        assert_eq!(relative_error(&[1.0, -2.0], &[1.0, -2.0]), 0.0);
        assert!(relative_error(&[1.0, -2.0], &[1.0]).is_infinite());
        assert!(relative_error(&[f32::NAN], &[f32::NAN]).is_infinite());
        assert!(relative_error(&[1.0], &[f32::INFINITY]).is_infinite());
        // An all-zero reference compares by the candidate's own norm.
        assert_eq!(relative_error(&[0.0, 0.0], &[0.0, 0.0]), 0.0);
        assert!((relative_error(&[0.0, 0.0], &[3.0, 4.0]) - 5.0).abs() < 1e-12);
    }

    #[test]
    fn a_nan_error_never_passes() {
        let check = Check { op: "x".into(), shape: String::new(), dtype: "f32", rel_error: f64::NAN, tolerance: 1.0 };
        assert!(!check.passed());
        assert!(scalar_error(1.0, f64::NAN).is_infinite());
        assert_eq!(scalar_error(2.0, 2.0), 0.0);
    }
}
